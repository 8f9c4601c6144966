#!/usr/bin/env python3
"""Kiln beside PyTorch on the same machine, in the same run.

Runs `kiln bench --json` (the CPU backend's workloads and the machine's
ceilings), then the same workloads in PyTorch eager, and prints one
markdown table with the ratios. PyTorch is optional: without it the script
prints Kiln's numbers alone and says how to install it.

    cargo build --release
    python3 bench/compare_torch.py [--kiln target/release/kiln] [--quick]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time


def timeit(fn, min_time=0.5, min_runs=3):
    """Best-of median-ish: mean seconds per call over at least min_time."""
    fn()  # warm up
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_time:
        fn()
        runs += 1
    return (time.perf_counter() - start) / runs


def torch_numbers(kiln, threads):
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # ImportError, or a broken install
        print(f"note: PyTorch unavailable ({e.__class__.__name__}); install it with `pip install torch` "
              "to compare. Showing Kiln alone.", file=sys.stderr)
        return None
    torch.set_num_threads(threads)
    out = {"version": torch.__version__, "threads": torch.get_num_threads(), "matmul": {}}
    with torch.no_grad():
        for row in kiln["matmul"]:
            n = row["n"]
            a, b = torch.randn(n, n), torch.randn(n, n)
            t = timeit(lambda: torch.matmul(a, b))
            out["matmul"][n] = 2 * n**3 / t / 1e9
        r, c = kiln["layernorm_gelu"]["rows"], kiln["layernorm_gelu"]["cols"]
        x, g, b = torch.randn(r, c), torch.ones(c), torch.zeros(c)
        out["layernorm_gelu_ms"] = 1e3 * timeit(lambda: x + F.gelu(F.layer_norm(x, (c,), g, b)))
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
                "naive_ms": 1e3 * timeit(naive),
                "sdpa_ms": 1e3 * timeit(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)),
            }
    return out


def print_attention(kiln, torch):
    """Fused attention beside the naive graph, PyTorch naive and SDPA."""
    print()
    print("Attention, B=1, H=8, D=64, f32 (ms; speedups of Kiln fused FA2 over each):")
    print()
    print("| S | causal | Kiln FA2 | Kiln FA1 | Kiln naive | PyTorch naive | torch SDPA | vs Kiln naive | vs PyTorch naive | vs SDPA |")
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in kiln.get("attention", []):
        t = torch["attention"].get((row["s"], row["causal"])) if torch else None
        fa2 = row["fa2_ms"]
        tn = f"{t['naive_ms']:.2f}" if t else "-"
        ts = f"{t['sdpa_ms']:.2f}" if t else "-"
        vs_tn = f"{t['naive_ms'] / fa2:.2f}x" if t else "-"
        vs_ts = f"{t['sdpa_ms'] / fa2:.2f}x" if t else "-"
        print(f"| {row['s']} | {'yes' if row['causal'] else 'no'} | {fa2:.2f} | {row['fa1_ms']:.2f} | {row['naive_ms']:.2f} | "
              f"{tn} | {ts} | {row['naive_ms'] / fa2:.2f}x | {vs_tn} | {vs_ts} |")
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


# Training throughput on both sides: the median over STEPS steps after
# WARMUP untimed ones (the first compiles, allocates and faults in memory).
STEPS, WARMUP = 12, 2


def torch_train_tokens_per_s(batch=8, block=256, vocab=512):
    import torch
    model = TorchGPT(torch, block=block, vocab=vocab)
    opt = torch.optim.AdamW(model.modules.parameters(), lr=1e-3, weight_decay=0.1)
    tokens = torch.randint(0, vocab, (batch, block))
    targets = torch.randint(0, vocab, (batch, block))

    def step():
        opt.zero_grad()
        model.loss(tokens, targets).backward()
        opt.step()
    for _ in range(WARMUP):
        step()
    rates = []
    for _ in range(STEPS):
        start = time.perf_counter()
        step()
        rates.append(batch * block / (time.perf_counter() - start))
    return statistics.median(rates)


def kiln_train_tokens_per_s(kiln, batch=8, block=256):
    import csv
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        steps = WARMUP + STEPS
        cmd = [kiln, "train", "models/gpt.kl", "--steps", str(steps), "--batch", str(batch), "--block", str(block),
               "--warmup", "1", "--eval-every", str(steps), "--out", out]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        with open(f"{out}/loss.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["train_loss"]]
    return statistics.median(float(r["tokens_per_s"]) for r in rows[WARMUP:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default="target/release/kiln", help="path to the kiln binary")
    ap.add_argument("--quick", action="store_true", help="fewer sizes, shorter timings")
    args = ap.parse_args()
    cmd = [args.kiln, "bench", "--json"] + (["--quick"] if args.quick else [])
    try:
        kiln = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    except FileNotFoundError:
        sys.exit(f"error: {args.kiln} not found; build it with `cargo build --release`")
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: `{' '.join(cmd)}` failed:\n{e.stderr}")
    torch = torch_numbers(kiln, kiln["threads"])

    peak = kiln["fma_peak_gflops"]
    print(f"Machine: {kiln['threads']} threads; measured f32x4 FMA ceiling {peak:.1f} GFLOP/s "
          f"({kiln['fma_peak_gflops_1t']:.1f} on one thread); copy bandwidth {kiln['copy_gbs']:.1f} GB/s")
    if torch:
        print(f"PyTorch {torch['version']} on {torch['threads']} threads")
    print()
    print("| matmul N | Kiln GFLOP/s | % of FMA ceiling | PyTorch GFLOP/s | Kiln / PyTorch |")
    print("|---:|---:|---:|---:|---:|")
    for row in kiln["matmul"]:
        n, g = row["n"], row["gflops"]
        t = torch["matmul"][n] if torch else None
        ts = f"{t:.1f}" if t else "-"
        ratio = f"{g / t:.2f}x" if t else "-"
        print(f"| {n} | {g:.1f} | {100 * g / peak:.0f}% | {ts} | {ratio} |")
    ln = kiln["layernorm_gelu"]
    print()
    print(f"`y = x + gelu(layernorm(x))` on {ln['rows']} x {ln['cols']} f32:")
    print()
    print("| | time (ms) | effective GB/s | % of copy bandwidth | speed vs PyTorch eager |")
    print("|---|---:|---:|---:|---:|")
    print(f"| Kiln (fused, {ln['kernels']} kernel) | {ln['ms']:.3f} | {ln['gbs']:.1f} | {100 * ln['gbs'] / kiln['copy_gbs']:.0f}% | "
          + (f"{torch['layernorm_gelu_ms'] / ln['ms']:.2f}x |" if torch else "- |"))
    if torch:
        gbs = ln["bytes"] / (torch["layernorm_gelu_ms"] / 1e3) / 1e9
        print(f"| PyTorch eager | {torch['layernorm_gelu_ms']:.3f} | {gbs:.1f} | {100 * gbs / kiln['copy_gbs']:.0f}% | 1.00x |")
    print_attention(kiln, torch)
    print()
    print()
    print("Training the small GPT (n_layer 4, n_head 4, n_embd 256, block 256, vocab 512, batch 8, AdamW), tokens/s:")
    print()
    kt = kiln_train_tokens_per_s(args.kiln)
    tt = torch_train_tokens_per_s() if torch else None
    print("| Kiln | PyTorch eager | Kiln / PyTorch |")
    print("|---:|---:|---:|")
    print(f"| {kt:.0f} | " + (f"{tt:.0f} | {kt / tt:.2f}x |" if tt else "- | - |"))
    print()
    c = kiln["compile"]
    print(f"Compile time of models/gpt.kl `forward` (parse to runnable code, release): "
          f"{c['total_ms']:.0f} ms ({c['kernels']} kernels: front end {c['front_ms']:.0f} ms, "
          f"schedule {c['schedule_ms']:.0f} ms, codegen {c['codegen_ms']:.0f} ms)")


if __name__ == "__main__":
    main()
