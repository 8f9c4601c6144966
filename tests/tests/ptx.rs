//! The PTX backend on every kernel of every model (models/ and
//! tests/fixtures): ptxas accepts each for sm_80 and sm_90a, and each
//! entry point run in the PTX emulator matches the kernel IR's evaluator.

use kiln_codegen::ptx::{self, Arch};
use kiln_ir::interp::Tensor;
use kiln_ir::kernel::Program;
use kiln_lang::compile_file;
use kiln_runtime as rt;
use kiln_tests::repo_root;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every `.kl` model and fixture.
fn models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["models", "tests/fixtures"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo_root().join(d)).expect("model dir"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "kl"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "expected the models and fixtures, found {v:?}");
    v
}

/// Every entry point of a model, scheduled at small dims, with random
/// inputs and initialized parameters.
fn programs(path: &Path) -> Vec<(String, Program, Vec<Tensor>, Vec<Tensor>)> {
    let c = compile_file(path).unwrap_or_else(|e| panic!("{}", e.render()));
    let params = rt::init_params(&c.module, 3).expect("init");
    c.module
        .functions
        .iter()
        .map(|f| {
            let dims: Vec<(String, i64)> = [("B", 2), ("T", 5), ("N", 3)].iter().filter(|(n, _)| f.dim_vars.iter().any(|v| v == n)).map(|(n, v)| (n.to_string(), *v)).collect();
            let bound = rt::bind_dims(f, &vec![None; f.arg_names.len()], &dims).expect("bind");
            let env = |n: &str| bound.get(n);
            let p = kiln_ir::schedule::schedule(&c.module, f, &env, &Default::default()).expect("schedule");
            let inputs = (0..f.arg_names.len()).map(|i| rt::random_input(f, i, &env, 5 + i as u64).expect("input")).collect();
            (format!("{}::{}", path.file_name().expect("name").to_string_lossy(), f.name), p, inputs, params.clone())
        })
        .collect()
}

#[test]
fn ptxas_accepts_every_kernel_of_every_model() {
    let ptxas = std::env::var("KILN_PTXAS").unwrap_or_else(|_| panic!("KILN_PTXAS is not set: run scripts/test.sh (it installs ptxas)"));
    let dir = std::env::temp_dir().join(format!("kiln-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut assembled = 0;
    for path in models() {
        for (name, p, _, _) in programs(&path) {
            for k in &p.kernels {
                for arch in [Arch::Sm80, Arch::Sm90a] {
                    let r = ptx::render(k, arch).unwrap_or_else(|e| panic!("{name}: {e}"));
                    let file = dir.join(format!("{}.ptx", r.manifest.name));
                    std::fs::write(&file, &r.ptx).expect("write ptx");
                    let out = Command::new(&ptxas)
                        .arg(format!("-arch={}", arch.name()))
                        .arg("-v")
                        .arg(&file)
                        .arg("-o")
                        .arg(file.with_extension("cubin"))
                        .output()
                        .unwrap_or_else(|e| panic!("cannot run {ptxas}: {e}"));
                    let log = String::from_utf8_lossy(&out.stderr);
                    assert!(out.status.success(), "{name}: ptxas -arch={} rejected {}:\n{log}\n{}", arch.name(), k.name, r.ptx);
                    let usage: Vec<&str> = log.lines().filter(|l| l.contains("Used") || l.contains("spill")).map(|l| l.trim_start_matches("ptxas info    : ")).collect();
                    println!("{name} {} {}: {}", arch.name(), k.name, usage.join("; "));
                    assembled += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(assembled > 50, "only {assembled} kernels assembled");
}

#[test]
fn every_model_matches_the_kernel_evaluator_in_the_emulator() {
    // gpt.kl's fixed widths (256 wide, 4 layers) take minutes to emulate;
    // tiny_gpt.kl has the same kernels at a small width.
    for path in models().into_iter().filter(|p| !p.ends_with("models/gpt.kl")) {
        for (name, p, inputs, params) in programs(&path) {
            let want = kiln_ir::kernel::eval::run(&p, &inputs, &params).unwrap_or_else(|e| panic!("{name}: eval: {e}"));
            let mut dev = kiln_tests::ptx_emu::EmuDevice::default();
            let got = rt::cuda::run_program(&mut dev, &p, Arch::Sm80, &inputs, &params).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.len(), want.len(), "{name}");
            for (o, (g, w)) in got.iter().zip(&want).enumerate() {
                let scale = w.iter().filter(|x| x.is_finite()).fold(1.0f64, |a, x| a.max(x.abs()));
                for (i, (x, y)) in g.iter().zip(w).enumerate() {
                    assert!((x - y).abs() <= 1e-4 * scale || x == y, "{name}: output {o} element {i}: emulated {x} vs evaluated {y}");
                }
            }
            println!("{name}: {} kernels, {} warp instructions emulated", p.kernels.len(), dev.instructions);
        }
    }
}

/// bf16 and f16 GEMM tiles in whole 16×8×16 blocks take the tensor-core
/// path (row-major and transposed operands); the emulator runs its
/// `mma.sync` and the results match the evaluator to the output's rounding.
#[test]
fn tensor_core_gemm_matches_the_kernel_evaluator() {
    for dt in ["bf16", "f16"] {
        let src = format!("pub fn f(x: {dt}[N, M], y: {dt}[M, N]) -> ({dt}[N, N], f32[M, M]) {{ return (x @ y, cast(transpose(x) @ transpose(y), f32)) }}");
        let c = kiln_lang::compile_source(Path::new("gemm.kl"), src).unwrap_or_else(|e| panic!("{}", e.render()));
        let f = &c.module.functions[0];
        let bound = rt::bind_dims(f, &[None, None], &[("N".into(), 32), ("M".into(), 48)]).expect("bind");
        let env = |n: &str| bound.get(n);
        let p = kiln_ir::schedule::schedule(&c.module, f, &env, &Default::default()).expect("schedule");
        let mma = p.kernels.iter().filter(|k| ptx::render(k, Arch::Sm80).expect("render").ptx.contains("mma.sync.aligned.m16n8k16")).count();
        assert!(mma >= 1, "{dt}: no kernel took the tensor-core path");
        let inputs: Vec<Tensor> = (0..2).map(|i| rt::random_input(f, i, &env, 9 + i as u64).expect("input")).collect();
        let want = kiln_ir::kernel::eval::run(&p, &inputs, &[]).expect("eval");
        let got = rt::cuda::run_program(&mut kiln_tests::ptx_emu::EmuDevice::default(), &p, Arch::Sm80, &inputs, &[]).expect("emulated");
        for (o, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(1.0f64, |a, x| a.max(x.abs()));
            for (i, (x, y)) in g.iter().zip(w).enumerate() {
                assert!((x - y).abs() <= 8e-3 * scale, "{dt} output {o} element {i}: emulated {x} vs evaluated {y}");
            }
        }
    }
}
