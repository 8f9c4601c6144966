//! `vjp_loss`: entries with non-scalar or several outputs get a gradient
//! through `sum(output * cotangent)`, checked against the hand-derived VJP.

#[path = "autodiff_util.rs"]
mod util;

use kiln_ir::autodiff::{grad, vjp_loss, AutodiffError, Wrt};
use kiln_ir::interp::{self, Precision, Tensor};
use kiln_ir::{verify, DType, Function, Module, UnaryOp};
use util::*;

/// `forward(x: f32[2, 3]) -> (y = x @ w, z = tanh(x), k = argmax)`, w: [3, 2].
fn two_outputs() -> (Module, Function, Vec<Tensor>, Vec<Tensor>) {
    let mut rng = Gen::new(5);
    let m = module(&[("w", f32t(&[3, 2]))]);
    let params = vec![rng.f32s(&[3, 2], -1.0, 1.0)];
    let mut b = Gb::new();
    let x = b.input("x", f32t(&[2, 3]), rng.f32s(&[2, 3], -1.0, 1.0));
    let w = b.param(&m, 0);
    let y = b.matmul(x, w);
    let z = b.unary(UnaryOp::Tanh, x);
    let k = b.reduce(kiln_ir::ReduceOp::ArgMax, x, &[1], false);
    let (mut f, inputs) = b.finish("forward", y);
    f.graph.outputs = vec![y, z, k];
    f.output_names = vec!["y".into(), "z".into(), "k".into()];
    (m, f, params, inputs)
}

#[test]
fn gradient_of_one_output_is_its_vjp() {
    let (m, f, params, mut inputs) = two_outputs();
    let v = vjp_loss(&m, &f, &[0]).unwrap();
    verify::function(&m, &v).unwrap();
    assert_eq!(v.arg_names, ["x", "cotangent.y"]);
    let c = Gen::new(9).f32s(&[2, 2], -1.0, 1.0);
    inputs.push(c.clone());
    let g = grad(&m, &v, &Wrt::all_params().with_inputs([0])).unwrap();
    let out = interp::run(&m, &g.graph, &|_| None, &params, &inputs, Precision::F64).unwrap();
    let (x, w) = (&inputs[0].data, &params[0].data);
    // loss = Σ (x @ w) ⊙ c; dw = xᵀ c, dx = c wᵀ; `z` has no cotangent, so no share.
    let loss: f64 = (0..2).flat_map(|i| (0..2).map(move |j| (i, j))).map(|(i, j)| (0..3).map(|k| x[i * 3 + k] * w[k * 2 + j]).sum::<f64>() * c.data[i * 2 + j]).sum();
    assert!((out[0].data[0] - loss).abs() < 1e-12);
    for k in 0..3 {
        for j in 0..2 {
            let dw: f64 = (0..2).map(|i| x[i * 3 + k] * c.data[i * 2 + j]).sum();
            assert!((out[1].data[k * 2 + j] - dw).abs() < 1e-12, "dw[{k},{j}]");
        }
    }
    for i in 0..2 {
        for k in 0..3 {
            let dx: f64 = (0..2).map(|j| c.data[i * 2 + j] * w[k * 2 + j]).sum();
            assert!((out[2].data[i * 3 + k] - dx).abs() < 1e-12, "dx[{i},{k}]");
        }
    }
}

#[test]
fn contributions_of_several_outputs_add() {
    let (m, f, params, mut inputs) = two_outputs();
    let v = vjp_loss(&m, &f, &[1, 0]).unwrap();
    assert_eq!(v.arg_names, ["x", "cotangent.z", "cotangent.y"]);
    let cz = Tensor::new(DType::F32, vec![2, 3], vec![1.0; 6]);
    let cy = Tensor::new(DType::F32, vec![2, 2], vec![0.0; 4]);
    inputs.extend([cz, cy]);
    let g = grad(&m, &v, &Wrt::no_params().with_inputs([0])).unwrap();
    let out = interp::run(&m, &g.graph, &|_| None, &params, &inputs, Precision::F64).unwrap();
    // dx = 1 - tanh(x)^2 from `z` alone (y's cotangent is zero).
    for (d, x) in out[1].data.iter().zip(&inputs[0].data) {
        assert!((d - (1.0 - x.tanh().powi(2))).abs() < 1e-12);
    }
}

#[test]
fn refuses_integer_missing_and_repeated_outputs() {
    let (m, f, _, _) = two_outputs();
    assert!(matches!(vjp_loss(&m, &f, &[2]), Err(AutodiffError::NotFloatOutput { name, .. }) if name == "k"));
    assert!(matches!(vjp_loss(&m, &f, &[]), Err(AutodiffError::NoCotangent { .. })));
    assert!(matches!(vjp_loss(&m, &f, &[0, 0]), Err(AutodiffError::Duplicate { name }) if name == "y"));
    assert!(matches!(vjp_loss(&m, &f, &[3]), Err(AutodiffError::OutputOutOfRange { index: 3, count: 3 })));
}
