//! Where dropout masks come from: every site and every scan step draws its
//! own mask, a pure function of the seed argument, exactly as documented in
//! `lang/src/check/frame.rs` (site offset `k`, scan step offset `t · 2^20`).

use kiln_ir::interp::{Precision, Tensor};
use kiln_ir::{dropout, rng, DType};
use kiln_runtime as rt;
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn every_site_and_scan_step_draws_its_own_mask() {
    let src = "pub fn f(x: f32[N, C]) -> (f32[N, C], f32[N, C]) {\n let hs = scan x_t in x { emit dropout(x_t, 0.5) }\n return (hs, dropout(x, 0.5))\n}";
    let c = kiln_lang::compile_source(Path::new("d.kl"), src.into()).unwrap_or_else(|e| panic!("{}", e.render()));
    let f = &c.module.functions[0];
    assert_eq!(dropout::seed_arg(f), Some(1));
    let (n, cols, seed) = (4usize, 64usize, 0xABCDEFu64);
    let x = Tensor::new(DType::F32, vec![n, cols], vec![1.0; n * cols]);
    let s = Tensor::new(DType::I64, vec![], vec![seed as f64]);
    let dims: BTreeMap<String, i64> = [("N".to_string(), n as i64), ("C".to_string(), cols as i64)].into();
    let out = rt::run_reference(&c.module, f, &[], &[x.clone(), s], &dims, Precision::F64).expect("runs");
    let mask = |t: &Tensor| -> Vec<bool> { t.data.iter().map(|&v| v != 0.0).collect() };
    // Site 0, inside the scan: step t draws with seed + t * 2^20 over its row.
    let want: Vec<bool> = (0..n).flat_map(|t| (0..cols).map(move |j| rng::keep(seed + ((t as u64) << 20), j as u64, 0.5))).collect();
    assert_eq!(mask(&out[0]), want);
    // Site 1, outside: seed + 1 over the whole tensor.
    let want: Vec<bool> = (0..n * cols).map(|i| rng::keep(seed + 1, i as u64, 0.5)).collect();
    assert_eq!(mask(&out[1]), want);
    // So no two steps share a mask, nor the two sites.
    let rows: Vec<&[f64]> = out[0].data.chunks(cols).collect();
    assert!(rows.iter().enumerate().all(|(i, a)| rows[i + 1..].iter().all(|b| a != b)));
    assert_ne!(out[0].data, out[1].data);
    // Evaluation: no seed argument, and the identity.
    let e = dropout::inference(f);
    assert_eq!(e.arg_names, ["x"]);
    let out = rt::run_reference(&c.module, &e, &[], &[x.clone()], &dims, Precision::F64).expect("runs");
    assert_eq!(out[0].data, x.data);
    assert_eq!(out[1].data, x.data);
}
