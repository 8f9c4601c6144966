#!/usr/bin/env python3
"""Kiln beside PyTorch on the same machine, in the same run (issue 12).

Runs `kiln bench --json` (the CPU backend's workloads and the machine's
ceilings), `kiln run` and `kiln train` on the whole models, then the same
math in PyTorch eager on as many threads as Kiln's pool, and prints one
markdown table per group with the ratios and issue 12's targets. PyTorch is
optional: without it the script prints Kiln's numbers alone.

Steady state is the median of repeated runs after a warm-up on both sides.

    cargo build --release
    python3 bench/compare_torch.py [--kiln target/release/kiln] [--quick] [--threads N|all]
"""

import argparse
import array
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Issue 12's targets: the least Kiln / PyTorch speed ratio per group.
TARGETS = {"bert": 1.0, "train": 1.0, "matmul": 0.9, "layernorm": 1.5, "attention": 0.8}
# The attention target covers these sequence lengths.
ATTENTION_TARGET_S = (1024, 2048, 4096)

# models/bert.kl's default config (all-MiniLM-L6-v2's shape): the sizes
# `kiln bench` reads from the model's parameters are checked against these.
BERT = {"vocab": 30522, "layers": 6, "hidden": 384, "heads": 12, "ffn": 1536, "max_pos": 512, "types": 2, "eps": 1e-12}


def timeit(fn, min_time=0.5, min_runs=3):
    """Median seconds per call over at least min_runs calls and min_time,
    after one warm-up call."""
    fn()
    runs, start = [], time.perf_counter()
    while len(runs) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def verdict(ratio, target):
    """The ratio, the target and whether it is met, as three table cells."""
    if ratio is None:
        return f"- | ≥ {target:.1f}x | -"
    return f"{ratio:.2f}x | ≥ {target:.1f}x | {'met' if ratio >= target else '**missed**'}"


class TorchBert:
    """models/bert.kl in PyTorch eager: embeddings (word, position, token
    type) and LayerNorm, then post-LayerNorm blocks of self-attention with a
    key-padding mask (F.scaled_dot_product_attention) and a GELU (erf)
    feed-forward."""

    def __init__(self, torch, c):
        nn = torch.nn
        h = c["hidden"]
        self.torch, self.heads = torch, c["heads"]
        self.word, self.pos, self.type = nn.Embedding(c["vocab"], h), nn.Embedding(c["max_pos"], h), nn.Embedding(c["types"], h)
        self.ln = nn.LayerNorm(h, eps=c["eps"])
        self.layers = [{
            "q": nn.Linear(h, h), "k": nn.Linear(h, h), "v": nn.Linear(h, h), "o": nn.Linear(h, h),
            "ln1": nn.LayerNorm(h, eps=c["eps"]), "up": nn.Linear(h, c["ffn"]), "down": nn.Linear(c["ffn"], h),
            "ln2": nn.LayerNorm(h, eps=c["eps"])} for _ in range(c["layers"])]

    def encode(self, ids, types, mask):
        torch, F = self.torch, self.torch.nn.functional
        B, T = ids.shape
        x = self.ln(self.word(ids) + self.pos(torch.arange(T)) + self.type(types))
        keep = (mask != 0)[:, None, None, :]
        for p in self.layers:
            q, k, v = (p[n](x).view(B, T, self.heads, -1).transpose(1, 2) for n in "qkv")
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            x = p["ln1"](x + p["o"](y.transpose(1, 2).reshape(B, T, -1)))
            x = p["ln2"](x + p["down"](F.gelu(p["up"](x))))
        return x


def bert_batch(torch, b):
    """The padded batch `kiln bench` ran: token ids, one segment, the mask."""
    lengths, seq = b["lengths"], b["seq"]
    ids = torch.randint(0, BERT["vocab"], (len(lengths), seq), dtype=torch.int32)
    mask = torch.tensor([[1 if j < n else 0 for j in range(seq)] for n in lengths], dtype=torch.int32)
    return ids, torch.zeros_like(ids), mask


def torch_numbers(kiln, threads, min_time):
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # ImportError, or a broken install
        print(f"note: PyTorch unavailable ({e.__class__.__name__}); install it with `pip install torch` "
              "to compare. Showing Kiln alone.", file=sys.stderr)
        return None
    torch.set_num_threads(threads)
    t = lambda fn: timeit(fn, min_time)  # noqa: E731
    out = {"version": torch.__version__, "threads": torch.get_num_threads(), "matmul": {}}
    with torch.inference_mode():
        for row in kiln["matmul"]:
            n = row["n"]
            a, b = torch.randn(n, n), torch.randn(n, n)
            out["matmul"][n] = 2 * n**3 / t(lambda: torch.matmul(a, b)) / 1e9
        lin = kiln["linear"]
        x, w = torch.randn(lin["m"], lin["k"]), torch.randn(lin["n"], lin["k"])
        out["linear"] = 2 * lin["m"] * lin["k"] * lin["n"] / t(lambda: x @ w.T) / 1e9
        r, c = kiln["layernorm_gelu"]["rows"], kiln["layernorm_gelu"]["cols"]
        x, g, b = torch.randn(r, c), torch.ones(c), torch.zeros(c)
        out["layernorm_gelu_ms"] = 1e3 * t(lambda: x + F.gelu(F.layer_norm(x, (c,), g, b)))
        out["attention"] = {}
        for row in kiln.get("attention", []):
            s, causal = row["s"], row["causal"]
            q, k, v = (torch.randn(1, 8, s, 64) for _ in range(3))
            mask = torch.tril(torch.ones(s, s, dtype=torch.bool))

            def naive():
                sc = (q @ k.transpose(-1, -2)) / 8.0
                if causal:
                    sc = sc.masked_fill(~mask, float("-inf"))
                return torch.softmax(sc, dim=-1) @ v
            out["attention"][(s, causal)] = {
                "naive_ms": 1e3 * t(naive),
                "sdpa_ms": 1e3 * t(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)),
            }
        model = TorchBert(torch, BERT)
        inputs = bert_batch(torch, kiln["bert"])
        out["bert_ms"] = 1e3 * t(lambda: model.encode(*inputs))
    return out


def print_attention(kiln, torch):
    """Fused attention beside the naive graph, PyTorch naive and SDPA."""
    print("Attention forward, B=1, H=8, D=64, f32 (ms; speedups of Kiln fused FA2 over each; "
          f"the target applies at S = {', '.join(map(str, ATTENTION_TARGET_S))}):")
    print()
    print("| S | causal | Kiln FA2 | Kiln FA1 | Kiln naive | PyTorch naive | torch SDPA | vs Kiln naive | vs PyTorch naive "
          "| vs SDPA | target | verdict |")
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for row in kiln.get("attention", []):
        t = torch["attention"].get((row["s"], row["causal"])) if torch else None
        fa2 = row["fa2_ms"]
        tn = f"{t['naive_ms']:.2f}" if t else "-"
        ts = f"{t['sdpa_ms']:.2f}" if t else "-"
        vs_tn = f"{t['naive_ms'] / fa2:.2f}x" if t else "-"
        target = verdict(t["sdpa_ms"] / fa2 if t else None, TARGETS["attention"])
        if row["s"] not in ATTENTION_TARGET_S:
            target = (f"{t['sdpa_ms'] / fa2:.2f}x" if t else "-") + " | - | -"
        print(f"| {row['s']} | {'yes' if row['causal'] else 'no'} | {fa2:.2f} | {row['fa1_ms']:.2f} | {row['naive_ms']:.2f} | "
              f"{tn} | {ts} | {row['naive_ms'] / fa2:.2f}x | {vs_tn} | {target} |")
    print()
    print("| S | fused forward peak temporaries | naive score matrix |")
    print("|---:|---:|---:|")
    for m in kiln.get("attention_memory", []):
        print(f"| {m['s']} | {m['fused_peak_bytes'] / 2**20:.2f} MiB | {m['naive_score_bytes'] / 2**20:.0f} MiB |")


class TorchGPT:
    """models/gpt.kl in PyTorch eager: pre-LayerNorm blocks, causal attention
    written as plain math, 4x GELU MLP, tied LM head."""

    def __init__(self, torch, n_layer=4, n_head=4, n_embd=256, block=256, vocab=512):
        nn = torch.nn
        self.torch, self.n_head = torch, n_head
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        self.blocks = nn.ModuleList()
        for _ in range(n_layer):
            self.blocks.append(nn.ModuleDict({
                "ln1": nn.LayerNorm(n_embd), "qkv": nn.Linear(n_embd, 3 * n_embd), "proj": nn.Linear(n_embd, n_embd),
                "ln2": nn.LayerNorm(n_embd), "fc": nn.Linear(n_embd, 4 * n_embd), "out": nn.Linear(4 * n_embd, n_embd)}))
        self.ln_f = nn.LayerNorm(n_embd)
        self.modules = nn.ModuleList([self.wte, self.wpe, self.blocks, self.ln_f])

    def loss(self, tokens, targets):
        torch, F = self.torch, self.torch.nn.functional
        B, T = tokens.shape
        x = self.wte(tokens) + self.wpe(torch.arange(T))
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).split(x.shape[-1], dim=-1)
            q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
            s = (q @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)
            y = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ v
            x = x + b["proj"](y.transpose(1, 2).reshape(B, T, -1))
            x = x + b["out"](F.gelu(b["fc"](b["ln2"](x))))
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))


# Training: models/gpt.kl's default config at `kiln train`'s defaults
# (AdamW, lr 1e-3, weight decay 0.1, gradient clipping at norm 1), batch 8,
# block 256. Throughput on both sides is the median over `steps` steps after
# WARMUP untimed ones (the first compiles, allocates and faults in memory).
WARMUP, BATCH, BLOCK = 2, 8, 256


def torch_train_tokens_per_s(steps, vocab=512):
    import torch
    model = TorchGPT(torch, block=BLOCK, vocab=vocab)
    params = model.modules.parameters()
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)
    tokens = torch.randint(0, vocab, (BATCH, BLOCK))
    targets = torch.randint(0, vocab, (BATCH, BLOCK))

    def step():
        opt.zero_grad()
        model.loss(tokens, targets).backward()
        torch.nn.utils.clip_grad_norm_(model.modules.parameters(), 1.0)
        opt.step()
    for _ in range(WARMUP):
        step()
    rates = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        rates.append(BATCH * BLOCK / (time.perf_counter() - start))
    return statistics.median(rates)


def kiln_train_tokens_per_s(kiln, env, steps):
    import csv
    with tempfile.TemporaryDirectory() as out:
        total = WARMUP + steps
        cmd = [kiln, "train", "models/gpt.kl", "--steps", str(total), "--batch", str(BATCH), "--block", str(BLOCK),
               "--optimizer", "adamw", "--warmup", "1", "--eval-every", str(total), "--out", out]
        run(cmd, env)
        with open(f"{out}/loss.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["train_loss"]]
    return statistics.median(float(r["tokens_per_s"]) for r in rows[WARMUP:])


def write_npy_i32(path, shape, values):
    """A little-endian int32 .npy file (NumPy is not needed)."""
    header = f"{{'descr': '<i4', 'fortran_order': False, 'shape': ({', '.join(map(str, shape))},), }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    data = array.array("i", values)
    if sys.byteorder != "little":
        data.byteswap()
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1") + data.tobytes())


def kiln_run_bert_seconds(kiln, env, b):
    """Wall time of one `kiln run` of models/bert.kl's `encode` on the
    benchmark's batch, end to end: a new process that compiles, initializes
    the parameters, runs once and writes the output."""
    lengths, seq = b["lengths"], b["seq"]
    with tempfile.TemporaryDirectory() as d:
        inputs = {
            "input_ids": [(i * 2654435761) % BERT["vocab"] for i in range(len(lengths) * seq)],
            "token_type_ids": [0] * (len(lengths) * seq),
            "attention_mask": [1 if j < n else 0 for n in lengths for j in range(seq)],
        }
        cmd = [kiln, "run", "models/bert.kl", "--entry", "encode", "--out", f"{d}/out"]
        for name, values in inputs.items():
            write_npy_i32(f"{d}/{name}.npy", (len(lengths), seq), values)
            cmd += ["--input", f"{name}={d}/{name}.npy"]
        start = time.perf_counter()
        run(cmd, env)
        return time.perf_counter() - start


def run(cmd, env):
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    except FileNotFoundError:
        sys.exit(f"error: {cmd[0]} not found; build it with `cargo build --release`")
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: `{' '.join(cmd)}` failed:\n{e.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default="target/release/kiln", help="path to the kiln binary")
    ap.add_argument("--quick", action="store_true", help="fewer sizes, shorter timings")
    ap.add_argument("--threads", help="threads on both sides: a number, or `all` for every core "
                    "[default: the Kiln pool's count, which RAYON_NUM_THREADS sets]")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.threads:
        n = os.cpu_count() if args.threads == "all" else int(args.threads)
        env["RAYON_NUM_THREADS"] = str(n)
    kiln = json.loads(run([args.kiln, "bench", "--json"] + (["--quick"] if args.quick else []), env))
    b = kiln["bert"]
    for k in ("vocab", "layers", "hidden", "ffn"):
        if b[k] != BERT[k]:
            sys.exit(f"error: models/bert.kl has {k} = {b[k]}, this script's PyTorch BERT {BERT[k]}")
    steps = 3 if args.quick else 12
    run_s = kiln_run_bert_seconds(args.kiln, env, b)
    kt = kiln_train_tokens_per_s(args.kiln, env, steps)
    torch = torch_numbers(kiln, kiln["threads"], 0.2 if args.quick else 1.0)
    tt = torch_train_tokens_per_s(steps) if torch else None

    peak = kiln["native_peak_gflops"]
    print(f"Machine: {kiln['threads']} threads ({os.cpu_count()} cores); measured FMA ceilings: "
          f"{peak:.1f} GFLOP/s in {kiln['native_isa']} (what GEMMs use), {kiln['fma_peak_gflops']:.1f} GFLOP/s in f32x4 "
          f"(Cranelift's width: everything else; {kiln['fma_peak_gflops_1t']:.1f} on one thread); "
          f"copy bandwidth {kiln['copy_gbs']:.1f} GB/s")
    if torch:
        print(f"PyTorch {torch['version']} on {torch['threads']} threads")
    print()
    real = sum(b["lengths"])
    print(f"BERT encoder (models/bert.kl: {b['layers']} layers, {b['hidden']} hidden, {BERT['heads']} heads, {b['ffn']} FFN), "
          f"batch {b['batch']} x {b['seq']} tokens ({real} real, the rest padding), f32, steady state (ms):")
    print()
    print("| | Kiln | PyTorch eager (SDPA) | Kiln / PyTorch | target | verdict |")
    print("|---|---:|---:|---:|---:|:---:|")
    tb = torch["bert_ms"] if torch else None
    print(f"| `encode` ({b['kernels']} kernels) | {b['ms']:.1f} | " + (f"{tb:.1f}" if tb else "-") + " | "
          + verdict(tb / b["ms"] if tb else None, TARGETS["bert"]) + " |")
    print()
    print(f"Kiln's first-call costs: compile {b['compile_ms']:.0f} ms; one `kiln run models/bert.kl --entry encode` "
          f"of the same batch, end to end (a new process: compile, initialize parameters, run, write the output): "
          f"{run_s * 1e3:.0f} ms.")
    print()
    print(f"Training models/gpt.kl (n_layer 4, n_head 4, n_embd 256, vocab 512; batch {BATCH}, block {BLOCK}, AdamW), "
          f"tokens/s, median of {steps} steps:")
    print()
    print("| Kiln | PyTorch eager | Kiln / PyTorch | target | verdict |")
    print("|---:|---:|---:|---:|:---:|")
    print(f"| {kt:.0f} | " + (f"{tt:.0f}" if tt else "-") + " | " + verdict(kt / tt if tt else None, TARGETS["train"]) + " |")
    print()
    print("matmul, f32 (GFLOP/s):")
    print()
    print(f"| shape | Kiln | % of {kiln['native_isa']} ceiling | PyTorch | Kiln / PyTorch | target | verdict |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    rows = [(f"{r['n']} x {r['n']} x {r['n']}", r["gflops"], torch["matmul"][r["n"]] if torch else None) for r in kiln["matmul"]]
    lin = kiln["linear"]
    rows.append((f"{lin['m']} x {lin['k']} x {lin['n']} `x @ transpose(w)`", lin["gflops"], torch["linear"] if torch else None))
    for shape, g, t in rows:
        print(f"| {shape} | {g:.1f} | {100 * g / peak:.0f}% | " + (f"{t:.1f}" if t else "-") + " | "
              + verdict(g / t if t else None, TARGETS["matmul"]) + " |")
    ln = kiln["layernorm_gelu"]
    print()
    print(f"`y = x + gelu(layernorm(x))` on {ln['rows']} x {ln['cols']} f32:")
    print()
    print("| | time (ms) | effective GB/s | % of copy bandwidth | Kiln / PyTorch | target | verdict |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    tl = torch["layernorm_gelu_ms"] if torch else None
    print(f"| Kiln (fused, {ln['kernels']} kernel) | {ln['ms']:.3f} | {ln['gbs']:.1f} | {100 * ln['gbs'] / kiln['copy_gbs']:.0f}% | "
          + verdict(tl / ln["ms"] if tl else None, TARGETS["layernorm"]) + " |")
    if tl:
        gbs = ln["bytes"] / (tl / 1e3) / 1e9
        print(f"| PyTorch eager | {tl:.3f} | {gbs:.1f} | {100 * gbs / kiln['copy_gbs']:.0f}% | | | |")
    print()
    print_attention(kiln, torch)
    print()
    c = kiln["compile"]
    print(f"Compile time of models/gpt.kl `forward` (parse to runnable code): "
          f"{c['total_ms']:.0f} ms ({c['kernels']} kernels: front end {c['front_ms']:.0f} ms, "
          f"schedule {c['schedule_ms']:.0f} ms, codegen {c['codegen_ms']:.0f} ms)")


if __name__ == "__main__":
    main()
