//! The scheduler against the graph interpreter: every model's entry
//! points, scheduled into kernels (fused and unfused) and run by the kernel
//! IR's reference evaluator, match the graph interpreter in f64.

use kiln_ir::interp::Tensor;
use kiln_ir::schedule::{schedule, ScheduleOptions};
use kiln_lang::compile_file;
use kiln_runtime as rt;
use kiln_tests::repo_root;

fn check_model(name: &str, dims: &[(&str, i64)]) {
    check_file(&repo_root().join("models").join(name), dims);
}

fn check_file(path: &std::path::Path, dims: &[(&str, i64)]) {
    let name = path.display().to_string();
    let name = name.as_str();
    let c = compile_file(path).unwrap_or_else(|e| panic!("{}", e.render()));
    let params = rt::init_params(&c.module, 5).expect("init");
    for f in &c.module.functions {
        let overrides: Vec<(String, i64)> = dims.iter().filter(|(n, _)| f.dim_vars.iter().any(|v| v == n)).map(|(n, v)| (n.to_string(), *v)).collect();
        let bound = rt::bind_dims(f, &vec![None; f.arg_names.len()], &overrides).expect("bind");
        let env = |n: &str| bound.get(n);
        let inputs: Vec<Tensor> = (0..f.arg_names.len()).map(|i| rt::random_input(f, i, &env, 3 + i as u64).expect("input")).collect();
        let want = rt::run_reference(&c.module, f, &params, &inputs, &bound.dims, rt::Precision::F64).expect("reference");
        for fuse in [true, false] {
            let opts = ScheduleOptions { fuse, threads: 2, ..Default::default() };
            let p = schedule(&c.module, f, &env, &opts).unwrap_or_else(|e| panic!("{name} `{}`: {e}", f.name));
            let got = kiln_ir::kernel::eval::run(&p, &inputs, &params).unwrap_or_else(|e| panic!("{name} `{}`: {e}", f.name));
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                let scale = w.data.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                for (k, (x, y)) in g.iter().zip(&w.data).enumerate() {
                    assert!((x - y).abs() <= 2e-5 * scale, "{name} `{}` (fuse {fuse}) element {k}: kernels {x} vs graph {y}", f.name);
                }
            }
        }
    }
}

#[test]
fn gpt_kernels_match_the_graph() {
    check_model("gpt.kl", &[("B", 2), ("T", 5)]);
}

#[test]
fn mlp_kernels_match_the_graph() {
    check_model("mlp.kl", &[("N", 3)]);
}

#[test]
fn lstm_kernels_match_the_graph() {
    check_model("lstm.kl", &[("B", 2), ("T", 4)]);
}

/// The IR file tests' programs cover einsum, rearrange, scan, indexing,
/// masks, losses and imports.
#[test]
fn ir_file_test_programs_match_the_graph() {
    let dir = repo_root().join("tests/filetests/ir");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "kl") {
            check_file(&p, &[("B", 2), ("T", 3), ("N", 4), ("M", 7), ("H", 2), ("S", 5), ("D", 3), ("K", 3), ("C", 5)]);
            n += 1;
        }
    }
    assert!(n >= 5);
}

/// Sums and means that keep the last axis run as column reductions (each
/// tile adds whole rows into a block of outputs) when the last axis splits
/// into blocks; these shapes take that path, on every backend.
#[test]
fn column_reductions_match_the_graph() {
    let src = "
pub fn lead(x: f32[A, B, C]) -> f32[B, C] { return sum(x, over: A) }
pub fn middle(x: f32[A, B, C]) -> f32[A, C] { return mean(x, over: B) }
pub fn both(x: f32[A, B, C], y: f32[A, B, C]) -> f32[C] { return mean(x * y + 1.0, over: [A, B]) }
";
    let c = kiln_lang::compile_source(std::path::Path::new("cols.kl"), src.into()).unwrap_or_else(|e| panic!("{}", e.render()));
    let dims: std::collections::BTreeMap<String, i64> = [("A", 3), ("B", 5), ("C", 40)].into_iter().map(|(n, v)| (n.to_string(), v)).collect();
    let env = |n: &str| dims.get(n).copied();
    for f in &c.module.functions {
        let p = schedule(&c.module, f, &env, &ScheduleOptions { fuse: true, threads: 2, ..Default::default() }).expect("schedule");
        assert!(kiln_ir::kernel::print::program(&p).contains("inout"), "`{}` takes the column path", f.name);
        let inputs: Vec<Tensor> = (0..f.arg_names.len()).map(|i| rt::random_input(f, i, &env, 9 + i as u64).expect("input")).collect();
        let want = rt::run_reference(&c.module, f, &[], &inputs, &dims, rt::Precision::F64).expect("reference");
        for b in kiln_tests::backends::all() {
            let got = b.run(&c.module, f, &[], &inputs, &dims).unwrap_or_else(|e| panic!("{}: {e}", b.name()));
            assert!(got[0].max_abs_diff(&want[0]) < 1e-5, "`{}` on {}: off by {}", f.name, b.name(), got[0].max_abs_diff(&want[0]));
        }
    }
}
