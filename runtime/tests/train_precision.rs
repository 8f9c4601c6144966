//! Mixed precision: bf16/f16 gradients with f32 master weights and
//! dynamic loss scaling.

mod train_common;
use kiln_ir::autodiff::{grad, Wrt};
use kiln_ir::{DType, Graph, Op};
use kiln_runtime::cpu::{compile_cpu, Cache};
use kiln_runtime::train::{precision, Event, TrainDtype};
use kiln_runtime::Tensor;
use std::collections::BTreeMap;
use train_common::*;

#[test]
fn bf16_reaches_the_f32_validation_loss() {
    let m = tiny_gpt();
    let mut out = Vec::new();
    for dtype in [TrainDtype::F32, TrainDtype::Bf16, TrainDtype::F16] {
        // Long enough to be past the unigram plateau (~3.2), where
        // precision starts to matter.
        let mut c = config(300);
        c.schedule.base_lr = 3e-3;
        c.schedule.min_lr = 3e-4;
        c.dtype = dtype;
        let mut t = trainer(&m, c).unwrap();
        t.run(u64::MAX, &mut |_| {}).unwrap();
        let h = t.history();
        let v = h.last().unwrap().val_loss.unwrap();
        eprintln!("{dtype:?}: val {} -> {v}, loss scale {:?}", h[0].val_loss.unwrap(), t.loss_scale());
        out.push(v);
    }
    let (f32_, bf16, f16) = (out[0], out[1], out[2]);
    assert!(f32_ < 0.55 * 256f64.ln(), "f32 did not learn: {f32_}");
    assert!((bf16 - f32_).abs() / f32_ < 0.02, "bf16 {bf16} vs f32 {f32_}");
    assert!((f16 - f32_).abs() / f32_ < 0.02, "f16 {f16} vs f32 {f32_}");
}

/// Counts the float dtypes of a graph's tensor values (casts apart),
/// scan bodies included; the flag marks top-level scalars.
fn dtypes(g: &Graph, top: bool, counts: &mut BTreeMap<(DType, bool), usize>) {
    for n in &g.nodes {
        if let Some(t) = n.ty.tensor() {
            if t.dtype.is_float() && n.op != Op::Cast {
                *counts.entry((t.dtype, top && t.rank() == 0)).or_default() += 1;
            }
        }
        if let Op::Scan { body, .. } = &n.op {
            dtypes(body, false, counts);
        }
    }
}

#[test]
fn the_half_gradient_is_half_but_for_the_loss() {
    let m = tiny_gpt();
    let loss = m.function("loss").unwrap();
    let scaled = precision::with_loss_scale(loss).unwrap();
    assert_eq!(scaled.arg_names.last().unwrap(), precision::LOSS_SCALE_ARG);
    let g = grad(&m, &scaled, &Wrt::all_params()).unwrap();
    let (hm, hg) = precision::to_half(&m, &g, DType::BF16).unwrap();
    assert!(hm.params.iter().all(|p| p.ty.dtype == DType::BF16));
    let mut counts = BTreeMap::new();
    dtypes(&hg.graph, true, &mut counts);
    eprintln!("{counts:?}");
    // f32 is left only in top-level scalars (the loss and its scaling)
    // and in casts to them (the per-token losses the mean reads).
    assert!(!counts.contains_key(&(DType::F32, false)), "{counts:?}");
    assert!(counts[&(DType::BF16, false)] > 300, "{counts:?}");
    assert_eq!(hg.graph.tensor_type(hg.graph.outputs[0]).dtype, DType::F32);
    assert!(precision::to_half(&m, &g, DType::I32).is_err());

    // Numerically: the same loss and nearly the same gradients as f32.
    let dims: BTreeMap<String, i64> = [("B".to_string(), 4), ("T".to_string(), 16)].into();
    let cache = Cache::new();
    let f32_exe = compile_cpu(&m, &g, &dims, cache.pool().clone(), cache.options()).unwrap();
    let bf16_exe = compile_cpu(&hm, &hg, &dims, cache.pool().clone(), cache.options()).unwrap();
    let params = kiln_runtime::init_params(&m, 3).unwrap();
    let half: Vec<Tensor> = params.iter().map(|p| Tensor { dtype: DType::BF16, ..p.clone() }).collect();
    let ids = |k: usize| Tensor {
        dtype: DType::I32,
        shape: vec![4, 16],
        data: (0..64).map(|i| ((i * 37 + k * 11) % 256) as f64).collect(),
    };
    let scale = Tensor { dtype: DType::F32, shape: vec![], data: vec![256.0] };
    let inputs = [ids(0), ids(1), scale];
    let a = f32_exe.run(&params, &inputs).unwrap();
    let b = bf16_exe.run(&half, &inputs).unwrap();
    assert_eq!(b[0].dtype, DType::F32);
    let (la, lb) = (a[0].data[0] / 256.0, b[0].data[0] / 256.0);
    assert!((la - lb).abs() / la < 0.01, "loss {la} vs {lb}");
    for (i, (x, y)) in a[1..].iter().zip(&b[1..]).enumerate() {
        let dot: f64 = x.data.iter().zip(&y.data).map(|(p, q)| p * q).sum();
        let nx = x.data.iter().map(|p| p * p).sum::<f64>().sqrt();
        let ny = y.data.iter().map(|p| p * p).sum::<f64>().sqrt();
        if nx > 0.0 {
            let cos = dot / (nx * ny);
            assert!(cos > 0.98, "gradient of `{}`: cosine {cos}", m.params[i].name);
            assert!((nx - ny).abs() / nx < 0.05, "gradient of `{}`: norm {nx} vs {ny}", m.params[i].name);
        }
    }
}

#[test]
fn f16_overflow_halves_the_scale_and_skips_the_step() {
    let m = tiny_gpt();
    let mut c = config(30);
    c.dtype = TrainDtype::F16;
    // 2^24 overflows f16 (max 65504) in the backward pass at once.
    c.loss_scale = 16_777_216.0;
    c.loss_scale_growth = 1000;
    let mut t = trainer(&m, c).unwrap();
    let mut reports = Vec::new();
    t.run(u64::MAX, &mut |e| {
        if let Event::Step(r) = e {
            reports.push(*r)
        }
    })
    .unwrap();
    let skipped = reports.iter().filter(|r| !r.applied).count();
    eprintln!("skipped {skipped}, scale {:?}", t.loss_scale());
    assert!(skipped >= 1, "no step overflowed");
    assert!(!reports[0].applied);
    assert!(reports.last().unwrap().applied);
    assert!(t.loss_scale().unwrap() < 16_777_216.0 / 2.0);
    // Skipped steps leave the weights alone but still train afterwards.
    let h = t.history();
    assert!(h.last().unwrap().val_loss.unwrap() < h[0].val_loss.unwrap() - 0.5);
}
