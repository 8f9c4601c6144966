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
#    torch.matmul); FlashAttention forward and backward (bf16, B·H = 16·16,
#    S = 1k..16k, D = 64 and 128, causal and not; `kiln bench --backend
#    cuda` for sm_80 and sm_90a) beside torch SDPA; written to
#    bench/RESULTS-gpu.md with the date and GPU.
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
# Causal attention in bf16, which the optimizer fuses and the CUDA backend
# runs on its FlashAttention kernels (D = 64; lengths with partial blocks).
printf 'config { H = 4 \n D = 64 }\ndim S = T\npub fn attn(q: bf16[B, H, T, D], k: bf16[B, H, T, D], v: bf16[B, H, T, D]) -> bf16[B, H, T, D] {\n    let s: bf16[B, H, T, S] = q @ transpose(k) / sqrt(D)\n    return softmax(where(tril(T, S), s, -inf), over: S) @ v\n}\n' >"$work/attn.kl"
# model entry dims tolerance [flash: must run on the FlashAttention kernels]
cases=(
    "$work/attn.kl attn B=2,T=37 3e-2 flash"
    "$work/attn.kl attn B=1,T=300 3e-2 flash"
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
    read -r model entry dims tol flash <<<"$c"
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
    if [ "$flash" = flash ] && ! grep -q "; [1-9][0-9]* attention nodes on FlashAttention kernels" "$out.log"; then
        fail "$model $entry did not run on the FlashAttention kernels: $(cat "$out.log")"
    fi
done

echo "== 2. benchmarks"
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))") || fail "PyTorch sees no GPU"
results=bench/RESULTS-gpu.md
{
    echo "# GPU benchmarks"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $gpu, kiln $("$KILN" --version | cut -d' ' -f2)."
    echo "Kiln's GEMM time is its kernels' (each launch synchronized), its attention time CUDA-event time after warm-up; torch's is CUDA-event time after warm-up."
    echo "Attention TFLOP/s: 4·B·H·S²·D forward (halved when causal), 2.5 times that backward."
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
# Attention: the flash kernels the CUDA backend runs for fused attention
# (sm_80: FA2; sm_90a: the FA3 target, the same kernels until it lands),
# forward and backward, beside torch SDPA on the same problems. kiln's
# rows carry their FLOP counts, used for torch's rate too.
# Each run prints a JSON row per measurement as it goes: a run cut short by
# its timeout keeps its rows (the sm_90a run takes fewer sizes, --quick;
# it needs a Hopper GPU, compute capability 9.x).
runs=("sm_80 150")
major=$(python3 -c "import torch; print(torch.cuda.get_device_capability(0)[0])")
if [ "$major" = 9 ]; then runs+=("sm_90a 90 --quick"); fi
: >"$work/attn-sm_90a.json"
for run in "${runs[@]}"; do
    read -r arch limit quick <<<"$run"
    rc=0
    timeout "$limit" "$KILN" bench --backend cuda --arch "$arch" $quick --json >"$work/attn-$arch.json" 2>"$work/attn-$arch.log" || rc=$?
    case $rc in
        0) ;;
        124) echo "  note: the $arch attention benchmark hit its ${limit}s limit; its table rows stop there" ;;
        *) cat "$work/attn-$arch.log" >&2; fail "attention benchmark for $arch" ;;
    esac
done
timeout 90 python3 - "$work/attn-sm_80.json" "$work/attn-sm_90a.json" >>"$results.tmp" <<'PY' || fail "torch SDPA benchmark"
import json, sys, torch
import torch.nn.functional as F

rows = [json.loads(line) for path in sys.argv[1:] for line in open(path) if line.strip()]

def timed(fn):
    """Milliseconds per call: CUDA events around back-to-back calls after warm-up."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    reps = max(1, min(20, int(250 / max(start.elapsed_time(end), 1e-3))))
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps

torch_ms = {}
for key in sorted({(r["b"], r["h"], r["s"], r["d"], r["causal"]) for r in rows}):
    b, h, s, d, causal = key
    q, k, v, do = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=i < 3) for i in range(4))
    fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    o = fwd()
    bwd = lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)
    torch_ms[key + ("forward",)] = timed(fwd)
    torch_ms[key + ("backward",)] = timed(bwd)
    del q, k, v, do, o
    torch.cuda.empty_cache()
for r in rows:
    t = torch_ms[(r["b"], r["h"], r["s"], r["d"], r["causal"], r["pass"])]
    mask = "causal" if r["causal"] else "full"
    name = f'attention {r["pass"]} bf16 {r["b"]}x{r["h"]} S={r["s"]} D={r["d"]} {mask}, kiln {r["arch"]} vs SDPA'
    print(f'| {name} | {r["ms"]:.3f} | {r["tflops"]:.1f} | {t:.3f} | {r["flops"] / t / 1e9:.1f} |')
PY
mv "$results.tmp" "$results"
cat "$results"
echo "GPU CHECK PASSED"
