//! Every model in models/ checks, lowers to verified IR, and runs on the
//! reference interpreter, with f32 agreeing with exact f64 arithmetic
//! (large models at the smaller config `kiln_tests::compile_model` gives).

use kiln_ir::interp::Tensor;
use kiln_runtime as rt;
use kiln_tests::{compile_model, repo_root};
use std::path::PathBuf;

fn models() -> Vec<PathBuf> {
    kiln_tests::kl_files(&repo_root().join("models"))
}

/// Runs `entry` with small dims and random inputs in both precisions.
fn run_both(path: &std::path::Path, entry: &str) -> (Vec<Tensor>, Vec<Tensor>) {
    let c = compile_model(path);
    kiln_ir::verify::module(&c.module).expect("verified IR");
    let f = c.module.function(entry).unwrap_or_else(|| panic!("{} has no `{entry}`", path.display()));
    let params = rt::init_params(&c.module, 7).expect("init");
    let dims = [("B".to_string(), 2), ("T".to_string(), 5), ("N".to_string(), 3)];
    let dims: Vec<(String, i64)> = dims.into_iter().filter(|(n, _)| f.dim_vars.contains(n)).collect();
    let given = vec![None; f.arg_names.len()];
    let bound = rt::bind_dims(f, &given, &dims).expect("bind");
    let env = |n: &str| bound.get(n);
    let inputs: Vec<Tensor> = (0..f.arg_names.len()).map(|i| rt::random_input(f, i, &env, 11 + i as u64).expect("input")).collect();
    let lo = rt::run_reference(&c.module, f, &params, &inputs, &bound.dims, rt::Precision::F32).expect("f32 run");
    let hi = rt::run_reference(&c.module, f, &params, &inputs, &bound.dims, rt::Precision::F64).expect("f64 run");
    (lo, hi)
}

#[test]
fn every_model_runs_and_f32_tracks_f64() {
    let all = models();
    assert!(all.len() >= 2, "models/ should hold at least gpt.kl and mlp.kl");
    for path in all {
        for entry in ["forward", "loss"] {
            let c = compile_model(&path);
            if c.module.function(entry).is_none() {
                continue;
            }
            let (lo, hi) = run_both(&path, entry);
            for (a, b) in lo.iter().zip(&hi) {
                assert_eq!(a.shape, b.shape);
                let scale = b.data.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                for (x, y) in a.data.iter().zip(&b.data) {
                    assert!(x.is_finite(), "{}: `{entry}` produced {x}", path.display());
                    assert!((x - y).abs() <= 1e-4 * scale, "{}: `{entry}` f32 {x} vs f64 {y}", path.display());
                }
            }
        }
    }
}

#[test]
fn gpt_shapes_and_initial_loss() {
    let gpt = repo_root().join("models/gpt.kl");
    let (logits, _) = run_both(&gpt, "forward");
    assert_eq!(logits[0].shape, vec![2, 5, 512]);
    // Small initial weights give nearly uniform predictions: the loss of a
    // uniform guess over 512 tokens is ln 512 = 6.2383.
    let (loss, _) = run_both(&gpt, "loss");
    assert_eq!(loss[0].shape, Vec::<usize>::new());
    let l = loss[0].data[0];
    assert!((l - 512f64.ln()).abs() < 0.1, "initial loss {l} is far from ln 512");
}

#[test]
fn gpt_is_causal() {
    // Changing a later token must not change earlier positions' logits.
    let path = repo_root().join("models/gpt.kl");
    let c = compile_model(&path);
    let f = c.module.function("forward").expect("forward");
    let params = rt::init_params(&c.module, 3).expect("init");
    let dims = [("B".to_string(), 1), ("T".to_string(), 6)].into_iter().collect();
    let mut tokens = Tensor { dtype: kiln_ir::DType::I32, shape: vec![1, 6], data: vec![1.0, 7.0, 3.0, 9.0, 4.0, 2.0] };
    let a = rt::run_reference(&c.module, f, &params, std::slice::from_ref(&tokens), &dims, rt::Precision::F64).expect("run");
    tokens.data[4] = 300.0;
    let b = rt::run_reference(&c.module, f, &params, &[tokens], &dims, rt::Precision::F64).expect("run");
    let per_pos = 512;
    let (x, y) = (&a[0].data, &b[0].data);
    assert_eq!(x[..4 * per_pos], y[..4 * per_pos], "positions before the change moved");
    assert_ne!(x[4 * per_pos..5 * per_pos], y[4 * per_pos..5 * per_pos], "the changed position did not move");
}

/// Every model's entry points on every backend match the f64 reference,
/// at sizes that straddle the vector width and tile edges, and at zero
/// sizes (empty outputs; a mean over no elements is NaN).
#[test]
fn every_model_on_every_backend() {
    for path in models() {
        let c = compile_model(&path);
        let params = rt::init_params(&c.module, 9).expect("init");
        for f in &c.module.functions {
            for (b, t, n) in [(1, 1, 1), (2, 17, 3), (3, 5, 33), (0, 4, 0), (2, 0, 3)] {
                let dims = [("B".to_string(), b), ("T".to_string(), t), ("N".to_string(), n)];
                let dims: Vec<(String, i64)> = dims.into_iter().filter(|(k, _)| f.dim_vars.contains(k)).collect();
                let bound = rt::bind_dims(f, &vec![None; f.arg_names.len()], &dims).expect("bind");
                let env = |k: &str| bound.get(k);
                let inputs: Vec<Tensor> = (0..f.arg_names.len()).map(|i| rt::random_input(f, i, &env, 21 + i as u64).expect("input")).collect();
                let want = rt::run_reference(&c.module, f, &params, &inputs, &bound.dims, rt::Precision::F64).expect("reference");
                for backend in kiln_tests::backends::all() {
                    let got = backend.run(&c.module, f, &params, &inputs, &bound.dims).unwrap_or_else(|e| panic!("{} on {}: {e}", path.display(), backend.name()));
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(g.shape, w.shape);
                        let scale = w.data.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                        for (x, y) in g.data.iter().zip(&w.data) {
                            assert!((x - y).abs() <= 5e-5 * scale || (x.is_nan() && y.is_nan()), "{} `{}` on {} (B={b}, T={t}): {x} vs {y}", path.display(), f.name, backend.name());
                        }
                    }
                }
            }
        }
    }
}
