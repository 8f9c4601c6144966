//! The example models run on the CPU engine agree with the reference
//! interpreter.

use kiln_runtime::cpu::{run_cpu, Cache};
use kiln_runtime::{bind_dims, init_params, random_input, run_reference, Precision};
use std::path::PathBuf;

/// Compiles `models/<name>.kl` and runs the named entry points (all when
/// empty) on random inputs with default dims, on both engines.
fn check(name: &str, entries: &[&str], tolerance: f64) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(format!("{name}.kl"));
    let compiled = kiln_lang::compile_file(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let m = &compiled.module;
    let params = init_params(m, 1).unwrap();
    let cache = Cache::new();
    for f in m.functions.iter().filter(|f| entries.is_empty() || entries.contains(&f.name.as_str())) {
        let dims = bind_dims(f, &[], &[]).unwrap();
        let env = |n: &str| dims.get(n);
        let inputs: Vec<_> = (0..f.arg_names.len()).map(|i| random_input(f, i, &env, 7).unwrap()).collect();
        let want = run_reference(m, f, &params, &inputs, &dims.dims, Precision::F32).unwrap();
        let (got, _) = run_cpu(m, f, &params, &inputs, &dims.dims, &cache).unwrap_or_else(|e| panic!("{name}.{}: {e}", f.name));
        // Again from the cache, in a reused arena: temps are not cleared
        // between runs, so this catches a kernel reading a temp before
        // any kernel wrote it.
        let (again, stats) = run_cpu(m, f, &params, &inputs, &dims.dims, &cache).unwrap();
        assert!(stats.cached);
        assert_eq!(again, got, "{name}.{}: a second run differs", f.name);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let scale = w.max_abs().max(1.0);
            let diff = g.max_abs_diff(w);
            assert!(diff <= tolerance * scale, "{name}.{}: differs by {diff} (scale {scale})", f.name);
        }
    }
}

#[test]
fn mlp_matches_the_reference() {
    check("mlp", &[], 1e-4);
}

#[test]
fn lstm_matches_the_reference() {
    check("lstm", &[], 1e-4);
}

#[test]
fn gpt_matches_the_reference() {
    // Only `forward`: the reference interpreter is slow on the rest.
    check("gpt", &["forward"], 1e-3);
}
