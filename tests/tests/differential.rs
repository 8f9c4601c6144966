//! The differential suite: every op, in every float dtype, at awkward
//! sizes drawn by proptest, on every backend, against the reference
//! interpreter in exact f64 arithmetic.

use kiln_ir::interp::Tensor;
use kiln_lang::compile_source;
use kiln_runtime as rt;
use kiln_tests::backends;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// One case: a program (with `{dt}` for the dtype) whose entry is `f`.
/// Inputs are random; `N` and `M` are the awkward sizes.
const CASES: &[(&str, &str)] = &[
    ("unary", "pub fn f(x: {dt}[N, M]) -> {dt}[N, M] { return exp(x) + log(abs(x) + 1.0) + sqrt(abs(x)) + rsqrt(abs(x) + 1.0) + tanh(x) + sigmoid(x) + relu(x) - abs(x) }"),
    ("activations", "pub fn f(x: {dt}[N, M]) -> {dt}[N, M] { return gelu(x) + gelu_tanh(x) + silu(x) + erf(x) + sin(x) + cos(x) + -x }"),
    ("binary", "pub fn f(x: {dt}[N, M], y: {dt}[M]) -> {dt}[N, M] { return (x + y) * (x - y) / (abs(y) + 1.0) + maximum(x, y) - minimum(x, y) + pow(abs(x) + 0.5, y) }"),
    ("compare", "pub fn f(x: {dt}[N, M], y: {dt}[N, M]) -> {dt}[N, M] { return where(x < y and not (x == y), x, y) + cast(x >= 0.5, {dt}) }"),
    ("reduce", "pub fn f(x: {dt}[N, M]) -> ({dt}[N], {dt}[M], {dt}[], {dt}[N, 1]) { return (sum(x, over: M), mean(x, over: N), max(x), min(x, over: M, keepdim: true)) }"),
    ("argmax", "pub fn f(x: {dt}[N, M]) -> i64[N] { return argmax(x, over: M) }"),
    ("softmax", "pub fn f(x: {dt}[N, M]) -> ({dt}[N, M], {dt}[N, M]) { return (softmax(x, over: M), log_softmax(x, over: N)) }"),
    ("norms", "pub fn f(x: {dt}[N, M], g: {dt}[M], b: {dt}[M]) -> {dt}[N, M] { return layernorm(x, g, b) + rmsnorm(x, g, eps: 1e-6) }"),
    ("matmul", "pub fn f(x: {dt}[N, M], y: {dt}[M, N], z: {dt}[3, N, M]) -> ({dt}[N, N], {dt}[M, M], {dt}[3, N, N]) { return (x @ y, transpose(x) @ transpose(y), z @ transpose(z)) }"),
    ("vecmat", "pub fn f(v: {dt}[M], x: {dt}[M, N], w: {dt}[N, M]) -> ({dt}[N], {dt}[N]) { return (v @ x, w @ v) }"),
    ("layout", "pub fn f(x: {dt}[N, M], z: {dt}[2, N, M]) -> ({dt}[M, N], {dt}[M, 2, N], {dt}[N * M], {dt}[2 * N, M]) { return (transpose(x), permute(z, 2, 0, 1), reshape(x, [N * M]), concat(z[0], z[1], over: 0)) }"),
    ("slicing", "pub fn f(x: {dt}[N, M]) -> ({dt}[N, 1], {dt}[N], {dt}[N, M]) where M >= 2 { let a, b = split(x, [1, M - 1], over: M) \n return (a, x[:, -1], concat(b, a, over: 1)) }"),
    ("stride", "pub fn f(x: {dt}[N, M]) -> {dt}[N, 2] where M >= 4 { return x[:, 0:4:2] }"),
    ("gather", "config { V = 11 } \n param e: {dt}[V, 4] = normal(std: 1.0) \n pub fn f(ids: i32[N, M]) -> {dt}[N, M, 4] { return e[ids] }"),
    ("one_hot", "pub fn f(ids: i32[N]) -> ({dt}[N, 7], i64[N]) { return (one_hot(ids, 7, dtype: {dt}), iota(N)) }"),
    ("masks", "dim S = N \n pub fn f(x: {dt}[N, S]) -> {dt}[N, S] { return where(tril(N, S), x, -inf) * 0.0 + triu(x, k: 1) }"),
    ("rearrange", "pub fn f(x: {dt}[N, 6]) -> {dt}[2, N, 3] { return rearrange(x, n (h d) -> h n d, h: 2) }"),
    ("einsum", "pub fn f(x: {dt}[N, M], y: {dt}[M, 5], z: {dt}[N, 5]) -> ({dt}[N, 5], {dt}[5]) { return (einsum(x: n m, y: m k -> n k), einsum(x: n m, y: m k, z: n k -> k)) }"),
    ("dropout", "pub fn f(x: {dt}[N, M], y: {dt}[M]) -> ({dt}[N, M], {dt}[N, M], {dt}[M]) { return (dropout(x, 0.3), dropout(exp(x) * y, 0.5) + x, sum(dropout(x, 0.1), over: N)) }"),
    ("dropout_scan", "pub fn f(xs: {dt}[N, M], h0: {dt}[M]) -> {dt}[N, M] { let h, hs = scan x_t in xs with h = h0 { let n = dropout(tanh(x_t + h), 0.25) \n next h = n \n emit n } \n return hs }"),
    ("scan", "pub fn f(xs: {dt}[N, M], h0: {dt}[M]) -> ({dt}[M], {dt}[N, M]) { let h, hs = scan x_t in xs with h = h0 { let n = tanh(x_t + h * 0.5) \n next h = n \n emit n * 2.0 } \n return (h, hs) }"),
];

const SIZES: &[i64] = &[1, 3, 17, 33, 127, 257];

/// Tolerance relative to the output's magnitude, per dtype: the reference
/// is exact, the backends compute in f32 and store in the dtype.
fn tolerance(dt: &str) -> f64 {
    match dt {
        "f32" => 2e-5,
        "f16" => 4e-3,
        _ => 3e-2,
    }
}

/// Runs one case; `Ok(false)` when its `where` clauses exclude the sizes.
fn run_case(name: &str, template: &str, dt: &str, n: i64, m: i64, seed: u64) -> Result<bool, TestCaseError> {
    let src = template.replace("{dt}", dt);
    let c = compile_source(Path::new("case.kl"), src).map_err(|e| TestCaseError::fail(format!("{name}/{dt}: {}", e.render())))?;
    let f = &c.module.functions[0];
    let overrides: Vec<(String, i64)> = [("N", n), ("M", m)].iter().filter(|(k, _)| f.dim_vars.iter().any(|v| v == k)).map(|(k, v)| (k.to_string(), *v)).collect();
    let bound = match rt::bind_dims(f, &vec![None; f.arg_names.len()], &overrides) {
        Ok(b) => b,
        Err(_) => return Ok(false),
    };
    let env = |k: &str| bound.get(k);
    let params = rt::init_params(&c.module, seed).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let inputs: Vec<Tensor> = (0..f.arg_names.len()).map(|i| rt::random_input(f, i, &env, seed + i as u64)).collect::<Result<_, _>>().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let dims: BTreeMap<String, i64> = bound.dims.clone();
    let want = match rt::run_reference(&c.module, f, &params, &inputs, &bound.dims, rt::Precision::F64) {
        Ok(w) => w,
        // Where the reference fails, every backend fails with its message.
        Err(rt::RuntimeError::Interp { message, .. }) => {
            for b in backends::all() {
                let got = b.run(&c.module, f, &params, &inputs, &dims);
                prop_assert!(got.as_ref().is_err_and(|e| e.ends_with(&message)), "{}/{} on {} (N = {}, M = {}): {:?}, reference: {}", name, dt, b.name(), n, m, got.map(|_| ()), message);
            }
            return Ok(true);
        }
        Err(e) => return Err(TestCaseError::fail(e.to_string())),
    };
    for b in backends::all() {
        let got = b.run(&c.module, f, &params, &inputs, &dims).map_err(|e| TestCaseError::fail(format!("{name}/{dt} on {}: {e}", b.name())))?;
        for (o, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(&g.shape, &w.shape);
            let scale = w.data.iter().filter(|x| x.is_finite()).fold(1.0f64, |a, x| a.max(x.abs()));
            let tol = if w.dtype.is_float() { tolerance(dt) * scale } else { 0.0 };
            for (k, (x, y)) in g.data.iter().zip(&w.data).enumerate() {
                let same = (x - y).abs() <= tol || (x.is_nan() && y.is_nan()) || x == y;
                prop_assert!(same, "{}/{} on {} (N = {}, M = {}): output {} element {}: {} vs reference {}", name, dt, b.name(), n, m, o, k, x, y);
            }
        }
    }
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_op_on_every_backend(case in 0..CASES.len(), dt in prop::sample::select(&["f32", "bf16", "f16"][..]),
                                 n in prop::sample::select(SIZES), m in prop::sample::select(SIZES), seed in 0u64..1000) {
        let (name, template) = CASES[case];
        run_case(name, template, dt, n.min(33), m, seed)?;
    }
}

/// Every case at least once, in f32, at sizes that straddle vector and tile edges.
#[test]
fn every_case_once() {
    for (name, template) in CASES {
        let mut ran = 0;
        for (n, m) in [(1, 1), (3, 5), (17, 4), (5, 33)] {
            ran += run_case(name, template, "f32", n, m, 7).unwrap_or_else(|e| panic!("{e}")) as u32;
        }
        assert!(ran >= 2, "{name} ran at only {ran} of the sizes");
    }
}

/// Zero-size tensors (an axis of 0, so empty reductions too) in every
/// case on every backend: empty results, the identities of sum, max and
/// min, NaN for a float mean, and the reference's error for argmax.
#[test]
fn every_case_at_zero_sizes() {
    for (name, template) in CASES {
        let mut ran = 0;
        for (n, m) in [(0, 4), (3, 0), (0, 0)] {
            ran += run_case(name, template, "f32", n, m, 5).unwrap_or_else(|e| panic!("{e}")) as u32;
        }
        assert!(ran >= 1, "{name} ran at no zero size");
    }
}

/// Matmuls large enough to be split into row tiles and remainder tiles
/// (and, with few rows, column tiles), with an epilogue.
#[test]
fn matmul_tiles_and_remainders() {
    let src = "pub fn f(x: {dt}[N, M], y: {dt}[M, N], b: {dt}[N]) -> ({dt}[N, N], {dt}[N, N]) { return (gelu(x @ y + b), transpose(y) @ transpose(x)) }";
    for (n, m) in [(97, 65), (193, 130), (2, 257), (257, 3)] {
        assert!(run_case("matmul_tiles", src, "f32", n, m, 11).unwrap_or_else(|e| panic!("{e}")));
    }
}

/// bf16 and f16 matmuls (plain, both operands transposed, and batched
/// against its own transpose) at sizes that leave partial tensor-core
/// tiles in every dimension; the kernels take the staged tensor-core path
/// on both PTX architectures.
#[test]
fn half_matmuls_at_awkward_sizes() {
    use kiln_codegen::ptx::{self, Arch};
    let (_, template) = CASES.iter().find(|(n, _)| *n == "matmul").expect("the matmul case");
    for dt in ["bf16", "f16"] {
        for (n, m) in [(1, 1), (3, 17), (17, 127), (127, 3)] {
            assert!(run_case("matmul", template, dt, n, m, 13).unwrap_or_else(|e| panic!("{e}")));
        }
        let c = compile_source(Path::new("case.kl"), template.replace("{dt}", dt)).unwrap_or_else(|e| panic!("{}", e.render()));
        let f = &c.module.functions[0];
        let dims = |k: &str| [("N", 3), ("M", 17)].iter().find(|(d, _)| *d == k).map(|(_, v)| *v);
        let p = kiln_ir::schedule::schedule(&c.module, f, &dims, &kiln_ir::schedule::ScheduleOptions { fuse: true, threads: 2, ..Default::default() }).expect("schedule");
        // Three staged GEMM kernels per architecture; on sm_90a, z @ zᵀ
        // (both operands k-contiguous) runs on wgmma.
        for (arch, wgmma) in [(Arch::Sm80, 0), (Arch::Sm90a, 1)] {
            let ptxs: Vec<String> = p.kernels.iter().map(|k| ptx::render(k, arch).expect("render").ptx).collect();
            let staged = ptxs.iter().filter(|t| t.contains("cp.async.wait_group")).count();
            let on_wgmma = ptxs.iter().filter(|t| t.contains("wgmma.mma_async")).count();
            assert!(staged >= 3 && on_wgmma == wgmma, "{dt} {}: {staged} staged GEMM kernels, {on_wgmma} on wgmma", arch.name());
        }
    }
}
