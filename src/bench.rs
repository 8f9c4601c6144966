//! `kiln bench`: the CPU backend's workloads beside the machine's
//! ceilings, measured in one run. `bench/compare_torch.py` adds PyTorch.

use kiln_ir::interp::Tensor;
use kiln_ir::schedule::ScheduleOptions;
use kiln_ir::opt::{optimize, OptOptions};
use kiln_ir::{AttnVariant, Function, Module};
use kiln_runtime::cpu::{compile_cpu, CpuExecutable, Pool, PreparedParams};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Median seconds per call over at least three calls and `min` (after one
/// warm-up call); `f` returns the seconds to count for its call. The
/// median, not the mean: one call slowed by another process on a shared
/// machine does not move it.
fn time(min: Duration, mut f: impl FnMut() -> Result<f64, String>) -> Result<f64, String> {
    f()?;
    let (start, mut runs) = (Instant::now(), Vec::new());
    while runs.len() < 3 || start.elapsed() < min {
        runs.push(f()?);
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[runs.len() / 2])
}

/// One run of a compiled program, timing its kernels (not the conversion
/// of inputs and outputs to and from f64 tensors).
fn exec(exe: &CpuExecutable, params: &PreparedParams, inputs: &[Tensor]) -> Result<f64, String> {
    exe.run_prepared(params, inputs).map(|(_, st)| st.exec_time.as_secs_f64()).map_err(|e| e.to_string())
}

/// A compiled entry point with its parameters prepared.
struct Built {
    module: Module,
    exe: CpuExecutable,
    params: PreparedParams,
    /// Source to runnable code: front end, optimizer, schedule, codegen.
    compile: Duration,
}

impl Built {
    /// Compiles `entry` of the program `src` (named `file` in errors) for
    /// the CPU with concrete dims, through the optimizer as `kiln run`
    /// does; parameters come from their initializers.
    fn new(file: &str, src: &str, entry: &str, dims: &[(&str, i64)], pool: &Arc<Pool>) -> Result<Built, String> {
        let t0 = Instant::now();
        let c = kiln_lang::compile_source(Path::new(file), src.to_string()).map_err(|e| e.render())?;
        let f = c.module.function(entry).ok_or_else(|| format!("{file} has no `{entry}`"))?;
        let (f, _) = optimize(&c.module, f, &OptOptions::default()).map_err(|e| e.to_string())?;
        let dims: BTreeMap<String, i64> = dims.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let exe = compile_cpu(&c.module, &f, &dims, pool.clone(), &ScheduleOptions::default()).map_err(|e| e.to_string())?;
        let compile = t0.elapsed();
        let params = exe.prepare_params(&kiln_runtime::init_params(&c.module, 0).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        Ok(Built { module: c.module, exe, params, compile })
    }

    /// Steady-state seconds of the kernels per call (see [`time`]).
    fn time(&self, min: Duration, inputs: &[Tensor]) -> Result<f64, String> {
        time(min, || exec(&self.exe, &self.params, inputs))
    }
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    // A cheap deterministic fill: the values do not matter for timing.
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| (((i as u64).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f64) / 500.0 - 1.0).collect();
    Tensor { dtype: kiln_ir::DType::F32, shape: shape.to_vec(), data }
}

/// One of `kiln bench`'s workloads, for `--only`.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Workload {
    /// Square f32 matmuls.
    Matmul,
    /// `x + gelu(layernorm(x))` beside the copy bandwidth.
    Layernorm,
    /// Compile time of gpt.kl's forward pass.
    Compile,
    /// Attention written as plain math, naive and fused, and its memory.
    Attention,
    /// models/bert.kl's `encode`, batch 8 x 128 tokens with padding.
    Bert,
    /// The 984 x 384 x 384 `x @ transpose(w)` of every BERT Linear.
    Linear,
}

/// Runs the benchmarks (all, or `only` one workload beside the FMA
/// ceiling); prints a table to stdout, or JSON for `bench/compare_torch.py`.
pub fn run(json: bool, quick: bool, only: Option<Workload>) -> Result<(), String> {
    let wanted = |w: Workload| only.is_none_or(|o| o == w);
    let pool = Arc::new(Pool::global());
    let threads = pool.threads();
    let secs = if quick { 0.2 } else { 1.0 };
    let min = Duration::from_secs_f64(if quick { 0.2 } else { 0.6 });
    let peak = kiln_codegen::cpu::peak::fma_peak_gflops(threads, secs).map_err(|e| e.to_string())?;
    let peak1 = kiln_codegen::cpu::peak::fma_peak_gflops(1, secs).map_err(|e| e.to_string())?;
    // GEMMs run on the widest vectors (codegen's `native`), the rest on f32x4.
    let native = kiln_codegen::cpu::peak::native_fma_peak_gflops(threads, secs).map_err(|e| e.to_string())?;
    if !json {
        println!(
            "FMA ceiling: {peak:.1} GFLOP/s on {threads} threads ({peak1:.1} on one) in f32x4; {:.1} GFLOP/s in {} (GEMMs)",
            native.gflops, native.isa
        );
    }

    let mut out = serde_json::json!({"threads": threads, "fma_peak_gflops": peak, "fma_peak_gflops_1t": peak1,
        "native_peak_gflops": native.gflops, "native_isa": native.isa});
    if wanted(Workload::Matmul) {
        out["matmul"] = matmul(&pool, quick, min, json, native.gflops)?;
    }
    if wanted(Workload::Linear) {
        out["linear"] = linear(&pool, min, json, native.gflops)?;
    }
    if wanted(Workload::Layernorm) {
        let (copy_gbs, ln) = layernorm(&pool, threads, min, json)?;
        (out["copy_gbs"], out["layernorm_gelu"]) = (copy_gbs.into(), ln);
    }
    if wanted(Workload::Compile) {
        out["compile"] = compile(&pool, json)?;
    }
    if wanted(Workload::Attention) {
        (out["attention"], out["attention_memory"]) = attention(&pool, quick, min, json)?;
    }
    if wanted(Workload::Bert) {
        out["bert"] = bert(&pool, quick, min, json)?;
    }
    if json {
        println!("{out}");
    }
    Ok(())
}

/// GFLOP/s of `a @ b` for square sizes.
fn matmul(pool: &Arc<Pool>, quick: bool, min: Duration, json: bool, peak: f64) -> Result<serde_json::Value, String> {
    let sizes: &[i64] = if quick { &[256, 512] } else { &[256, 512, 1024, 2048] };
    let mut matmul = Vec::new();
    for &n in sizes {
        let b = Built::new("matmul.kl", "pub fn mm(a: f32[N, N], b: f32[N, N]) -> f32[N, N] { return a @ b }", "mm", &[("N", n)], pool)?;
        let inputs = [random(&[n as usize, n as usize], 1), random(&[n as usize, n as usize], 2)];
        let g = 2.0 * (n as f64).powi(3) / b.time(min, &inputs)? / 1e9;
        if !json {
            println!("matmul {n:>5}: {g:7.1} GFLOP/s ({:.0}% of the native ceiling)", 100.0 * g / peak);
        }
        matmul.push(serde_json::json!({"n": n, "gflops": g}));
    }
    Ok(serde_json::Value::Array(matmul))
}

/// The Linear layer of models/bert.kl at batch 8 x 123 tokens (984 rows):
/// `x @ transpose(w)` with the weight a parameter, stored [out, in].
const LINEAR: &str = "config { K = 384 \n N = 384 } \n param w: f32[N, K] = normal(std: 0.02) \n pub fn linear(x: f32[M, K]) -> f32[M, N] { return x @ transpose(w) }";

/// GFLOP/s of the Linear shape.
fn linear(pool: &Arc<Pool>, min: Duration, json: bool, peak: f64) -> Result<serde_json::Value, String> {
    let (m, k, n) = (984usize, 384usize, 384usize);
    let b = Built::new("linear.kl", LINEAR, "linear", &[("M", m as i64)], pool)?;
    let g = 2.0 * (m * k * n) as f64 / b.time(min, &[random(&[m, k], 4)])? / 1e9;
    if !json {
        println!("linear {m}x{k} @ transpose({n}x{k}): {g:7.1} GFLOP/s ({:.0}% of the native ceiling)", 100.0 * g / peak);
    }
    Ok(serde_json::json!({"m": m, "k": k, "n": n, "gflops": g}))
}

/// The copy bandwidth, and `x + gelu(layernorm(x))` beside it.
fn layernorm(pool: &Arc<Pool>, threads: usize, min: Duration, json: bool) -> Result<(f64, serde_json::Value), String> {
    // Copy bandwidth: the same bytes moved by plain parallel memcpy.
    let copy_gbs = kiln_runtime::cpu::ceilings::copy_gbs(threads, min);
    let (rows, cols) = (4096usize, 768usize);
    let n = rows * cols;

    let ln_src = "config { C = 768 } \n param g: f32[C] = ones \n param b: f32[C] = zeros \n pub fn f(x: f32[R, C]) -> f32[R, C] { return x + gelu(layernorm(x, g, b)) }";
    let b = Built::new("layernorm.kl", ln_src, "f", &[("R", rows as i64)], pool)?;
    let t = b.time(min, &[random(&[rows, cols], 3)])?;
    let bytes = (2 * n * 4) as f64;
    let ln = serde_json::json!({"rows": rows, "cols": cols, "ms": t * 1e3, "bytes": bytes, "gbs": bytes / t / 1e9, "kernels": b.exe.program().kernels.len()});
    if !json {
        println!("copy bandwidth: {copy_gbs:.1} GB/s; x + gelu(layernorm(x)) {rows}x{cols}: {:.3} ms, {:.1} GB/s ({:.0}% of copy)", t * 1e3, bytes / t / 1e9, 100.0 * bytes / t / 1e9 / copy_gbs);
    }
    Ok((copy_gbs, ln))
}

/// Compile time of gpt.kl's forward pass, by stage.
fn compile(pool: &Arc<Pool>, json: bool) -> Result<serde_json::Value, String> {
    // Compile time of gpt.kl's forward pass, parse to runnable code.
    let t0 = Instant::now();
    let c = kiln_lang::compile_source(Path::new("models/gpt.kl"), crate::GPT.to_string()).map_err(|e| e.render())?;
    let front = t0.elapsed();
    let f = c.module.function("forward").ok_or("gpt.kl has no forward")?;
    let dims: BTreeMap<String, i64> = [("B".to_string(), 1), ("T".to_string(), 256)].into_iter().collect();
    let env = |n: &str| dims.get(n).copied();
    let t1 = Instant::now();
    kiln_ir::schedule::schedule(&c.module, f, &env, &ScheduleOptions::default()).map_err(|e| e.to_string())?;
    let sched = t1.elapsed();
    let exe = compile_cpu(&c.module, f, &dims, pool.clone(), &ScheduleOptions::default()).map_err(|e| e.to_string())?;
    let total = front + exe.compile_time();
    let compile = serde_json::json!({"total_ms": total.as_secs_f64() * 1e3, "front_ms": front.as_secs_f64() * 1e3,
        "schedule_ms": sched.as_secs_f64() * 1e3, "codegen_ms": (exe.compile_time().saturating_sub(sched)).as_secs_f64() * 1e3,
        "kernels": exe.program().kernels.len()});
    if !json {
        println!("compile gpt.kl forward: {:.0} ms", total.as_secs_f64() * 1e3);
    }
    Ok(compile)
}

/// models/bert.kl, the whole-model benchmark.
const BERT: &str = include_str!("../models/bert.kl");

/// The BERT benchmark's batch: 8 sequences of 128 tokens, each real up to
/// its length and padding after it (bench/compare_torch.py gives PyTorch
/// the same lengths from the JSON).
const BERT_SEQ: usize = 128;
const BERT_LENGTHS: [usize; 8] = [128, 97, 128, 64, 113, 128, 80, 121];

/// `encode`'s inputs for sequences of `seq` tokens, real up to `lengths`:
/// token ids below `vocab`, one segment, and the attention mask.
fn bert_inputs(vocab: usize, seq: usize, lengths: &[usize]) -> [Tensor; 3] {
    let shape = vec![lengths.len(), seq];
    let n = lengths.len() * seq;
    let ints = |data: Vec<f64>| Tensor { dtype: kiln_ir::DType::I32, shape: shape.clone(), data };
    let ids = (0..n as u64).map(|i| (i.wrapping_mul(2654435761) % vocab as u64) as f64).collect();
    let mask = (0..n).map(|i| if i % seq < lengths[i / seq] { 1.0 } else { 0.0 }).collect();
    [ints(ids), ints(vec![0.0; n]), ints(mask)]
}

/// The size of axis `axis` of the BERT parameter `name`.
fn bert_size(m: &Module, name: &str, axis: usize) -> Result<usize, String> {
    let p = m.params.iter().find(|p| p.name == name).ok_or_else(|| format!("models/bert.kl has no parameter `{name}`"))?;
    p.ty.shape.get(axis).and_then(|d| d.as_const()).map(|v| v as usize).ok_or_else(|| format!("`{name}` has no constant axis {axis}"))
}

/// models/bert.kl's `encode` on the benchmark's padded batch: compiled
/// once (its time reported apart), then the steady state.
fn bert(pool: &Arc<Pool>, quick: bool, min: Duration, json: bool) -> Result<serde_json::Value, String> {
    let (batch, seq) = (BERT_LENGTHS.len(), BERT_SEQ);
    let b = Built::new("models/bert.kl", BERT, "encode", &[("B", batch as i64), ("T", seq as i64)], pool)?;
    let size = |name: &str, axis| bert_size(&b.module, name, axis);
    let (vocab, hidden) = (size("embeddings.word_embeddings.weight", 0)?, size("embeddings.word_embeddings.weight", 1)?);
    let (layers, ffn) = (size("encoder.layers.intermediate.dense.weight", 0)?, size("encoder.layers.intermediate.dense.weight", 1)?);
    let inputs = bert_inputs(vocab, seq, &BERT_LENGTHS);
    let t = b.time(if quick { min } else { min * 3 }, &inputs)?;
    if !json {
        println!(
            "bert encode {batch}x{seq} ({} real tokens): {:.1} ms steady state; compile {:.0} ms",
            BERT_LENGTHS.iter().sum::<usize>(), t * 1e3, b.compile.as_secs_f64() * 1e3
        );
    }
    Ok(serde_json::json!({"batch": batch, "seq": seq, "lengths": BERT_LENGTHS, "vocab": vocab, "hidden": hidden,
        "layers": layers, "ffn": ffn, "ms": t * 1e3, "compile_ms": b.compile.as_secs_f64() * 1e3,
        "kernels": b.exe.program().kernels.len()}))
}

/// Attention written as plain math (B = 1, H = 8, D = 64, f32), causal or not.
fn naive_attention_source(causal: bool) -> String {
    let scores = if causal { "where(tril(T, S), s, -inf)" } else { "s" };
    format!(
        "config {{ H = 8 \n D = 64 }} \n dim S = T \n pub fn attn(q: f32[B, H, T, D], k: f32[B, H, T, D], v: f32[B, H, T, D]) -> f32[B, H, T, D] {{ \n let s: f32[B, H, T, S] = q @ transpose(k) / sqrt(D) \n return softmax({scores}, over: S) @ v \n }}"
    )
}

/// The naive attention function `f` of `m` through the e-graph optimizer,
/// which must fuse it into one attention node of `variant`.
fn fuse_attention(m: &Module, f: &Function, variant: AttnVariant) -> Result<Function, String> {
    let opts = OptOptions { variant: Some(variant), ..OptOptions::default() };
    let (fused, report) = optimize(m, f, &opts).map_err(|e| e.to_string())?;
    match report.fused().count() {
        1 => Ok(fused),
        n => Err(format!("the optimizer fused {n} attention nodes in the benchmark's naive attention, not 1")),
    }
}

/// Fused (FA2, FA1) against naive attention over sequence lengths, and the
/// fused forward's peak temporary memory against the naive score matrix.
fn attention(pool: &Arc<Pool>, quick: bool, min: Duration, json: bool) -> Result<(serde_json::Value, serde_json::Value), String> {
    let (h, d) = (8usize, 64usize);
    let lengths: &[i64] = if quick { &[256, 512, 1024] } else { &[256, 512, 1024, 2048, 4096] };
    let mut rows = Vec::new();
    for causal in [false, true] {
        let c = kiln_lang::compile_source(Path::new("attention.kl"), naive_attention_source(causal)).map_err(|e| e.render())?;
        let naive = &c.module.functions[0];
        let variants = [("fa2", fuse_attention(&c.module, naive, AttnVariant::Fa2)?), ("fa1", fuse_attention(&c.module, naive, AttnVariant::Fa1)?)];
        for &s in lengths {
            let dims: BTreeMap<String, i64> = [("B".to_string(), 1), ("T".to_string(), s)].into_iter().collect();
            let inputs: Vec<Tensor> = (0..3).map(|i| random(&[1, h, s as usize, d], 10 + i)).collect();
            let mut row = serde_json::json!({"s": s, "causal": causal});
            for (name, f) in std::iter::once(("naive", naive)).chain(variants.iter().map(|(n, f)| (*n, f))) {
                let exe = compile_cpu(&c.module, f, &dims, pool.clone(), &ScheduleOptions::default()).map_err(|e| e.to_string())?;
                let params = exe.prepare_params(&[]).map_err(|e| e.to_string())?;
                row[format!("{name}_ms")] = (1e3 * time(min, || exec(&exe, &params, &inputs))?).into();
            }
            if !json {
                let ms = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
                println!(
                    "attention S={s:>5} causal={causal:<5}: naive {:8.2} ms, fa2 {:8.2} ms ({:.2}x), fa1 {:8.2} ms",
                    ms("naive_ms"), ms("fa2_ms"), ms("naive_ms") / ms("fa2_ms"), ms("fa1_ms")
                );
            }
            rows.push(row);
        }
    }
    let c = kiln_lang::compile_source(Path::new("attention.kl"), naive_attention_source(false)).map_err(|e| e.render())?;
    let fused = fuse_attention(&c.module, &c.module.functions[0], AttnVariant::Fa2)?;
    let mut memory = Vec::new();
    for s in [1024i64, 2048, 4096, 8192] {
        let dims: BTreeMap<String, i64> = [("B".to_string(), 1), ("T".to_string(), s)].into_iter().collect();
        let exe = compile_cpu(&c.module, &fused, &dims, pool.clone(), &ScheduleOptions::default()).map_err(|e| e.to_string())?;
        let scores = (h as u64) * (s as u64) * (s as u64) * 4;
        if !json {
            println!("attention S={s:>5}: fused peak temporaries {} KiB; the naive score matrix alone {} MiB", exe.plan().peak_bytes >> 10, scores >> 20);
        }
        memory.push(serde_json::json!({"s": s, "fused_peak_bytes": exe.plan().peak_bytes, "naive_score_bytes": scores}));
    }
    Ok((serde_json::Value::Array(rows), serde_json::Value::Array(memory)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The optimizer fuses the benchmark's naive attention, and the fused
    /// functions compute what the naive ones do.
    #[test]
    fn fused_attention_matches_the_naive_source() {
        let pool = Arc::new(Pool::global());
        let dims: BTreeMap<String, i64> = [("B".to_string(), 1), ("T".to_string(), 37)].into_iter().collect();
        let inputs: Vec<Tensor> = (0..3).map(|i| random(&[1, 8, 37, 64], 20 + i)).collect();
        for causal in [false, true] {
            let c = kiln_lang::compile_source(Path::new("attention.kl"), naive_attention_source(causal)).expect("compiles");
            let naive = &c.module.functions[0];
            let run = |f: &Function| compile_cpu(&c.module, f, &dims, pool.clone(), &ScheduleOptions::default()).expect("compile").run(&[], &inputs).expect("run");
            let want = run(naive);
            for variant in [AttnVariant::Fa1, AttnVariant::Fa2] {
                let got = run(&fuse_attention(&c.module, naive, variant).expect("fused"));
                assert!(got[0].max_abs_diff(&want[0]) < 1e-5, "{variant:?} causal={causal}: {}", got[0].max_abs_diff(&want[0]));
            }
        }
    }

    /// The Linear workload is `x @ transpose(w)` with `w` stored [out, in]:
    /// against the product computed here from the same parameters.
    #[test]
    fn linear_is_x_times_the_transposed_weight() {
        let pool = Arc::new(Pool::global());
        let (m, k, n) = (5usize, 384usize, 384usize);
        let b = Built::new("linear.kl", LINEAR, "linear", &[("M", m as i64)], &pool).expect("build");
        let w = kiln_runtime::init_params(&b.module, 0).expect("init").remove(0);
        assert_eq!(w.shape, vec![n, k]);
        let x = random(&[m, k], 7);
        let got = b.exe.run_prepared(&b.params, std::slice::from_ref(&x)).expect("run").0.remove(0);
        for (i, j) in [(0, 0), (4, 383), (2, 100)] {
            let want: f64 = (0..k).map(|l| x.data[i * k + l] * w.data[j * k + l]).sum();
            assert!((got.data[i * n + j] - want).abs() < 1e-4, "({i}, {j}): {} vs {want}", got.data[i * n + j]);
        }
    }

    /// The BERT workload has MiniLM's sizes (bench/compare_torch.py's
    /// PyTorch model assumes them) and a mask that keeps each sequence's
    /// real tokens only.
    #[test]
    fn bert_workload_is_minilm_with_padding() {
        let c = kiln_lang::compile_source(Path::new("models/bert.kl"), BERT.to_string()).expect("compiles");
        let size = |name: &str, axis| bert_size(&c.module, name, axis).expect("size");
        assert_eq!(size("embeddings.word_embeddings.weight", 0), 30522);
        assert_eq!(size("embeddings.word_embeddings.weight", 1), 384);
        assert_eq!(size("encoder.layers.intermediate.dense.weight", 0), 6);
        assert_eq!(size("encoder.layers.intermediate.dense.weight", 1), 1536);
        let [ids, types, mask] = bert_inputs(30522, 4, &[4, 1, 3]);
        assert_eq!(mask.data, [1., 1., 1., 1., 1., 0., 0., 0., 1., 1., 1., 0.]);
        assert!(ids.data.iter().all(|&t| (0.0..30522.0).contains(&t)));
        assert!(types.data.iter().all(|&t| t == 0.0));
    }
}
