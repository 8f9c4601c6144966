//! Cross-entropy with an ignored (padding) target index, against values
//! computed here by hand from the softmax formula, on every backend; its
//! gradient; and the run-time check that admits the ignored index.

use kiln_ir::autodiff::{grad, Wrt};
use kiln_ir::interp::{self, Tensor};
use kiln_ir::DType;
use kiln_lang::compile_source;
use kiln_tests::backends;
use std::collections::BTreeMap;
use std::path::Path;

const SRC: &str = "
pub fn nll(logits: f32[N, C], labels: i32[N]) -> f32[] {
    return cross_entropy(logits, labels, over: C, ignore_index: -100)
}
";

const LOGITS: [[f64; 3]; 4] = [[0.5, -1.0, 2.0], [3.0, 0.0, 1.0], [-0.25, 0.75, 0.0], [1.0, 1.0, 1.0]];

fn log_softmax(row: &[f64; 3]) -> [f64; 3] {
    let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
    row.map(|x| x - lse)
}

fn inputs(labels: [i64; 4]) -> Vec<Tensor> {
    vec![
        Tensor::new(DType::F32, vec![4, 3], LOGITS.iter().flatten().copied().collect()),
        Tensor::new(DType::I32, vec![4], labels.iter().map(|&l| l as f64).collect()),
    ]
}

/// The mean over non-ignored rows of `-log softmax(row)[label]`; 0 when
/// every row is ignored.
fn expected(labels: [i64; 4]) -> f64 {
    let kept: Vec<f64> =
        (0..4).filter(|&i| labels[i] != -100).map(|i| -log_softmax(&LOGITS[i])[labels[i] as usize]).collect();
    if kept.is_empty() {
        0.0
    } else {
        kept.iter().sum::<f64>() / kept.len() as f64
    }
}

fn dims() -> BTreeMap<String, i64> {
    [("N".to_string(), 4), ("C".to_string(), 3)].into_iter().collect()
}

#[test]
fn ignored_targets_drop_out_of_the_mean_on_every_backend() {
    let c = compile_source(Path::new("ce.kl"), SRC.into()).unwrap_or_else(|e| panic!("{}", e.render()));
    let f = c.module.function("nll").expect("nll");
    for labels in [[2, -100, 0, -100], [0, 1, 2, 1], [-100, -100, -100, -100]] {
        let want = expected(labels);
        let env = |n: &str| dims().get(n).copied();
        let reference = interp::run(&c.module, &f.graph, &env, &[], &inputs(labels), interp::Precision::F64).expect("reference");
        assert!((reference[0].data[0] - want).abs() < 1e-12, "reference {} vs {want}", reference[0].data[0]);
        for b in backends::all() {
            let got = b.run(&c.module, f, &[], &inputs(labels), &dims()).unwrap_or_else(|e| panic!("{}: {e}", b.name()));
            let x = got[0].data[0];
            assert!((x - want).abs() < 1e-5, "{} labels {labels:?}: {x} vs {want}", b.name());
        }
    }
}

#[test]
fn ignored_rows_get_no_gradient() {
    let c = compile_source(Path::new("ce.kl"), SRC.into()).unwrap_or_else(|e| panic!("{}", e.render()));
    let f = c.module.function("nll").expect("nll");
    let g = grad(&c.module, f, &Wrt { inputs: vec![0], ..Wrt::all_params() }).expect("grad");
    let labels = [2, -100, 0, -100];
    let env = |n: &str| dims().get(n).copied();
    let out = interp::run(&c.module, &g.graph, &env, &[], &inputs(labels), interp::Precision::F64).expect("run");
    let d = out.last().expect("d logits");
    assert_eq!(d.shape, vec![4, 3]);
    // d/dx of the mean NLL over the 2 kept rows: (softmax - one_hot) / 2.
    for (i, row) in LOGITS.iter().enumerate() {
        for j in 0..3 {
            let want = if labels[i] == -100 {
                0.0
            } else {
                (log_softmax(row)[j].exp() - (j as i64 == labels[i]) as u8 as f64) / 2.0
            };
            let got = d.data[i * 3 + j];
            assert!((got - want).abs() < 1e-12, "d logits[{i}][{j}] = {got}, want {want}");
        }
    }
}

#[test]
fn only_valid_or_ignored_targets_are_admitted() {
    let c = compile_source(Path::new("ce.kl"), SRC.into()).unwrap_or_else(|e| panic!("{}", e.render()));
    let f = c.module.function("nll").expect("nll");
    assert_eq!(f.arg_ignore, vec![None, Some(-100)]);
    let bind = |labels| {
        let t = inputs(labels);
        kiln_runtime::bind_dims(f, &[Some(&t[0]), Some(&t[1])], &[]).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(bind([2, -100, 0, 1]), Ok(()));
    for bad in [3, -1] {
        let err = bind([2, bad, 0, 1]).expect_err("out of range");
        assert!(err.contains("outside the valid indices 0..3 (C = 3) or the ignored index -100"), "{err}");
    }
}
