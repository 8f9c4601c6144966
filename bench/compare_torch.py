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
    return out


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
    print("| | time (ms) | effective GB/s | % of copy bandwidth | vs PyTorch eager |")
    print("|---|---:|---:|---:|---:|")
    print(f"| Kiln (fused, {ln['kernels']} kernel) | {ln['ms']:.3f} | {ln['gbs']:.1f} | {100 * ln['gbs'] / kiln['copy_gbs']:.0f}% | "
          + (f"{torch['layernorm_gelu_ms'] / ln['ms']:.2f}x faster |" if torch else "- |"))
    if torch:
        gbs = ln["bytes"] / (torch["layernorm_gelu_ms"] / 1e3) / 1e9
        print(f"| PyTorch eager | {torch['layernorm_gelu_ms']:.3f} | {gbs:.1f} | {100 * gbs / kiln['copy_gbs']:.0f}% | 1.00x |")
    print()
    c = kiln["compile"]
    print(f"Compile time of models/gpt.kl `forward` (parse to runnable code, release): "
          f"{c['total_ms']:.0f} ms ({c['kernels']} kernels: front end {c['front_ms']:.0f} ms, "
          f"schedule {c['schedule_ms']:.0f} ms, codegen {c['codegen_ms']:.0f} ms)")


if __name__ == "__main__":
    main()
