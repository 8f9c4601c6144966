//! The e-graph optimizer preserves meaning: on the f64 reference
//! interpreter, the optimized graph of every form in
//! tests/filetests/optimized/ and of models/gpt.kl (forward and loss)
//! computes what the unoptimized graph computes, for random sizes and
//! inputs. Also: its limits stop it with the right reason and still yield a
//! valid, equivalent graph.

use kiln_ir::interp::Tensor;
use kiln_ir::opt::cost::Backend;
use kiln_ir::opt::{optimize, OptOptions, Report, Stop};
use kiln_ir::{AttnVariant, Function, Module};
use kiln_lang::compile_file;
use kiln_runtime as rt;
use kiln_tests::repo_root;
use proptest::prelude::*;
use std::path::PathBuf;

fn forms() -> Vec<PathBuf> {
    kiln_tests::kl_files(&repo_root().join("tests/filetests/optimized"))
}

/// Runs `f` in f64 on random inputs drawn with `seed`, sizes from `dims`.
fn run(m: &Module, f: &Function, dims: &[(String, i64)], seed: u64) -> Vec<Tensor> {
    run_with(m, f, dims, seed, |_, t| t)
}

/// [`run`] with input `i` replaced by `edit(i, input)`.
fn run_with(m: &Module, f: &Function, dims: &[(String, i64)], seed: u64, edit: impl Fn(usize, Tensor) -> Tensor) -> Vec<Tensor> {
    let dims: Vec<(String, i64)> = dims.iter().filter(|(n, _)| f.dim_vars.contains(n)).cloned().collect();
    let bound = rt::bind_dims(f, &vec![None; f.arg_names.len()], &dims).expect("bind");
    let env = |n: &str| bound.get(n);
    let inputs: Vec<Tensor> =
        (0..f.arg_names.len()).map(|i| edit(i, rt::random_input(f, i, &env, seed + i as u64).expect("input"))).collect();
    let params = rt::init_params(m, seed).expect("init");
    rt::run_reference(m, f, &params, &inputs, &bound.dims, rt::Precision::F64).expect("reference run")
}

/// Asserts equal shapes and values to 1e-9 (relative), NaN matching NaN.
fn assert_close(what: &str, a: &[Tensor], b: &[Tensor]) {
    assert_eq!(a.len(), b.len(), "{what}: output count");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape, y.shape, "{what}: shape");
        for (i, (p, q)) in x.data.iter().zip(&y.data).enumerate() {
            let ok = (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-9 * (1.0 + p.abs().max(q.abs()));
            assert!(ok, "{what}: element {i}: unoptimized {p} vs optimized {q}");
        }
    }
}

/// Optimizes every entry of `path` and compares it with the original.
fn check_equivalent(path: &std::path::Path, dims: &[(String, i64)], seed: u64, opts: &OptOptions) {
    let c = compile_file(path).unwrap_or_else(|e| panic!("{}", e.render()));
    for f in &c.module.functions {
        let (g, _) = optimize(&c.module, f, opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let what = format!("{} `{}` with {dims:?}, seed {seed}", path.display(), f.name);
        assert_close(&what, &run(&c.module, f, dims, seed), &run(&c.module, &g, dims, seed));
    }
}

fn dims(b: i64, h: i64, t: i64, s: i64, e: i64) -> Vec<(String, i64)> {
    [("B", b), ("H", h), ("T", t), ("S", s), ("E", e)].iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn optimized_forms_match_the_originals(
        which in 0usize..64, b in 1i64..3, h in 1i64..3, t in 1i64..6, s in 1i64..6, e in 1i64..4, seed in 0u64..1000,
    ) {
        let all = forms();
        let variant = if seed % 2 == 0 { AttnVariant::Fa1 } else { AttnVariant::Fa2 };
        let opts = OptOptions { variant: Some(variant), ..OptOptions::default() };
        check_equivalent(&all[which % all.len()], &dims(b, h, t, s, e), seed, &opts);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn optimized_gpt_matches_the_original(b in 1i64..3, t in 1i64..5, seed in 0u64..1000) {
        check_equivalent(&repo_root().join("models/gpt.kl"), &dims(b, 1, t, 1, 1), seed, &OptOptions::default());
    }
}

/// Left padding hidden by a large finite bias (`f32::MIN` under a causal
/// mask, −1e9 without): batch row 0 pads 2 keys, so its first queries see
/// only padding, and row 1 pads them all. Those rows are uniform softmaxes
/// in the original graph; the fused node gives the same numbers (the
/// reference's once gave `Σv` next to `f32::MIN`).
#[test]
fn left_padding_by_large_biases_matches_the_originals() {
    for form in ["padding_min_bias.kl", "padding_large_bias.kl"] {
        let path = repo_root().join("tests/filetests/optimized").join(form);
        let c = compile_file(&path).unwrap_or_else(|e| panic!("{}", e.render()));
        let f = &c.module.functions[0];
        let (g, report) = optimize(&c.module, f, &OptOptions::default()).expect("optimize");
        assert_eq!(report.fused().count(), 1, "{report}");
        let s = 4;
        let keep = |i: usize, t: Tensor| match i {
            3 => Tensor { data: (0..2 * s).map(|x| f64::from(u8::from(x % s >= [2, s][x / s]))).collect(), ..t },
            _ => t,
        };
        let dims = dims(2, 2, s as i64, s as i64, 1);
        assert_close(form, &run_with(&c.module, f, &dims, 7, keep), &run_with(&c.module, &g, &dims, 7, keep));
    }
}

/// gpt.kl's attention sits in the layer scan's body; the fused node must
/// come out of it, with the default variant, in both entry points.
#[test]
fn gpt_attention_is_fused_inside_the_scan() {
    let c = compile_file(&repo_root().join("models/gpt.kl")).unwrap_or_else(|e| panic!("{}", e.render()));
    for f in &c.module.functions {
        let (_, report) = optimize(&c.module, f, &OptOptions::default()).expect("optimize");
        let fused: Vec<String> = report.fused().map(|(scope, a)| format!("{scope}: {a}")).collect();
        assert_eq!(fused.len(), 1, "{}: {fused:?}", f.name);
        assert!(fused[0].contains("/scan%") && fused[0].ends_with("scale=0.125, causal=0, fa2"), "{fused:?}");
    }
}

/// Optimizes the file test `causal_where.kl` (gpt.kl's form) with `opts`.
fn optimize_causal(opts: &OptOptions) -> (PathBuf, Function, Report) {
    let path = repo_root().join("tests/filetests/optimized/causal_where.kl");
    let c = compile_file(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    let (g, report) = optimize(&c.module, &c.module.functions[0], opts).expect("optimize");
    (path, g, report)
}

/// A node limit below the initial graph's size stops before any rewrite;
/// the result is still the verified, equivalent original.
#[test]
fn a_tiny_node_limit_stops_with_its_reason() {
    let opts = OptOptions { node_limit: 5, ..OptOptions::default() };
    let (path, g, report) = optimize_causal(&opts);
    assert!(matches!(report.runs[0].stop, Stop::NodeLimit(n) if n >= 5), "{report}");
    assert_eq!(report.fused().count(), 0, "{report}");
    assert!(!g.graph.nodes.iter().any(|n| n.op.name() == "attention"));
    check_equivalent(&path, &dims(2, 2, 3, 3, 1), 5, &opts);
}

/// One iteration is not enough to recognize attention (the scores, scale,
/// mask and softmax@v are peeled off one rule at a time).
#[test]
fn an_iteration_limit_stops_with_its_reason() {
    let opts = OptOptions { iter_limit: 1, ..OptOptions::default() };
    let (path, _, report) = optimize_causal(&opts);
    assert_eq!(report.runs[0].stop, Stop::IterationLimit(1), "{report}");
    assert_eq!(report.fused().count(), 0, "{report}");
    check_equivalent(&path, &dims(1, 2, 4, 4, 1), 9, &opts);
}

/// A zero time budget stops at the first check, still with a valid graph.
#[test]
fn a_time_limit_stops_with_its_reason() {
    let path = repo_root().join("models/gpt.kl");
    let opts = OptOptions { time_limit: std::time::Duration::ZERO, ..OptOptions::default() };
    let c = compile_file(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    let (_, report) = optimize(&c.module, c.module.function("loss").expect("loss"), &opts).expect("optimize");
    assert!(report.runs.iter().all(|r| matches!(r.stop, Stop::TimeLimit(_))), "{report}");
    check_equivalent(&path, &dims(1, 1, 3, 1, 1), 3, &opts);
}

/// Under both backends' cost weights the fused node beats the naive form.
#[test]
fn every_backend_prefers_the_fused_attention() {
    for backend in [Backend::CPU, Backend::PTX] {
        let (_, _, report) = optimize_causal(&OptOptions { backend, ..OptOptions::default() });
        assert_eq!(report.fused().count(), 1, "{backend:?}: {report}");
    }
}
