#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU, a release `kiln` binary
# carried there, Python with numpy and PyTorch, and no Rust or network.
#
#   KILN=path/to/kiln scripts/gpu-check.sh        (default: ./kiln, then target/release/kiln)
#
# 1. Runs every model's entry points with --backend cuda and --backend cpu
#    at a few shapes and compares the outputs; any mismatch or failure
#    stops the script with exit 1 (the CPU backend is itself tested
#    against the f64 reference interpreter).
# 2. Benchmarks: bf16 GEMM at 4096 and 8192 (kiln's kernel time beside
#    torch.matmul), written to bench/RESULTS-gpu.md with the date and GPU.
# Budget: well under 8 minutes (each command has a timeout).
set -euo pipefail
cd "$(dirname "$0")/.."

KILN=${KILN:-}
if [ -z "$KILN" ]; then
    for k in ./kiln target/release/kiln; do [ -x "$k" ] && KILN=$k && break; done
fi
[ -n "$KILN" ] && [ -x "$KILN" ] || { echo "error: no kiln binary (set KILN=path/to/kiln)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "GPU CHECK FAILED: $*" >&2; exit 1; }

# Compares every .npy in $1 with the same file in $2 (relative tolerance $3,
# scaled by the largest magnitude of the CPU output).
compare() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys, pathlib, numpy as np
gpu, cpu, tol = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3])
files = sorted(cpu.glob("*.npy"))
if not files:
    sys.exit("no outputs to compare")
for f in files:
    g, c = np.load(gpu / f.name).astype(np.float64), np.load(f).astype(np.float64)
    if g.shape != c.shape:
        sys.exit(f"{f.name}: shape {g.shape} on cuda vs {c.shape} on cpu")
    scale = max(1.0, float(np.nanmax(np.abs(c))) if c.size else 1.0)
    err = float(np.max(np.abs(g - c))) if c.size else 0.0
    if not (err <= tol * scale) or np.isnan(g).sum() != np.isnan(c).sum():
        sys.exit(f"{f.name}: max |cuda - cpu| = {err:.3e} > {tol} * {scale:.3e}")
    print(f"    {f.name}: max |cuda - cpu| = {err:.2e}")
PY
}

echo "== 1. --backend cuda vs --backend cpu"
# model entry dims tolerance
cases=(
    "models/mlp.kl forward N=1 1e-4"
    "models/mlp.kl loss N=37 1e-4"
    "models/lstm.kl forward B=2,T=7 1e-4"
    "models/lstm.kl loss B=3,T=5 1e-4"
    "models/gpt.kl forward B=1,T=8 1e-4"
    "models/gpt.kl loss B=2,T=33 1e-4"
    "tests/fixtures/tiny_gpt.kl forward B=2,T=5 1e-4"
    "tests/fixtures/tiny_gpt_wide.kl loss B=3,T=7 1e-4"
    "tests/fixtures/bigram_bf16.kl loss B=2,T=9 3e-2"
)
for c in "${cases[@]}"; do
    read -r model entry dims tol <<<"$c"
    args=()
    IFS=, read -ra ds <<<"$dims"
    for d in "${ds[@]}"; do args+=(--dim "$d"); done
    echo "  $model --entry $entry ${args[*]}"
    out="$work/$(basename "$model" .kl)-$entry-${dims//,/_}"
    timeout 120 "$KILN" run "$model" --entry "$entry" "${args[@]}" --backend cpu --out "$out/cpu" >/dev/null 2>"$out.cpu.log" \
        || { cat "$out.cpu.log" >&2; fail "$model $entry on cpu"; }
    timeout 120 "$KILN" run "$model" --entry "$entry" "${args[@]}" --backend cuda --out "$out/cuda" >/dev/null 2>"$out.log" \
        || { cat "$out.log" >&2; fail "$model $entry on cuda"; }
    compare "$out/cuda" "$out/cpu" "$tol" || fail "$model $entry: cuda and cpu disagree"
done

echo "== 2. benchmarks"
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))") || fail "PyTorch sees no GPU"
results=bench/RESULTS-gpu.md
{
    echo "# GPU benchmarks"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $gpu, kiln $("$KILN" --version | cut -d' ' -f2)."
    echo "Kiln's time is its kernels' (each launch synchronized); torch's is CUDA-event time after warm-up."
    echo
    echo "| benchmark | kiln ms | kiln TFLOP/s | torch ms | torch TFLOP/s |"
    echo "|---|---|---|---|---|"
} >"$results.tmp"
echo 'pub fn f(a: bf16[N, N], b: bf16[N, N]) -> bf16[N, N] { return a @ b }' >"$work/gemm.kl"
for n in 4096 8192; do
    flops=$(python3 -c "print(2 * $n ** 3)")
    timeout 240 "$KILN" run "$work/gemm.kl" --entry f --dim N=$n --backend cuda --out "$work/gemm$n" >/dev/null 2>"$work/gemm$n.log" \
        || { cat "$work/gemm$n.log" >&2; fail "bf16 GEMM $n on cuda"; }
    ms=$(sed -n 's/.*, \([0-9.]*\) ms in kernels.*/\1/p' "$work/gemm$n.log")
    [ -n "$ms" ] || fail "no kernel time in: $(cat "$work/gemm$n.log")"
    torch_ms=$(python3 - "$n" <<'PY'
import sys, torch
n = int(sys.argv[1])
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ b
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
reps = 10
start.record()
for _ in range(reps):
    a @ b
end.record()
torch.cuda.synchronize()
print(start.elapsed_time(end) / reps)
PY
)
    python3 -c "f=$flops; k=$ms; t=$torch_ms; print(f'| bf16 GEMM {$n}x{$n}x{$n} | {k:.3f} | {f/k/1e9:.1f} | {t:.3f} | {f/t/1e9:.1f} |')" >>"$results.tmp"
done
# HOOK (attention): once the scheduler emits fused attention kernels, time
# an attention model here with --backend cuda beside
# torch.nn.functional.scaled_dot_product_attention and add a row.
echo "| attention vs torch SDPA | pending: no fused attention kernels yet | | | |" >>"$results.tmp"
mv "$results.tmp" "$results"
cat "$results"
echo "GPU CHECK PASSED"
