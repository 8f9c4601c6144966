//! The gradient function's interface: its name, arguments and outputs,
//! frozen and unused parameters, errors for functions that are not
//! differentiable losses, and verification of the result.

#[path = "autodiff_util.rs"]
mod util;

use kiln_ir::autodiff::{grad, AutodiffError, ParamSet, Wrt};
use kiln_ir::interp::{self, Precision, Tensor};
use kiln_ir::{print, verify, DType, Function, Module, Op, ReduceOp, TensorType, Type, UnaryOp};
use util::*;

/// `loss = Σ tanh(x @ w0 + b1) * w3` over params w0 [2, 3], b1 [3], an
/// unused u2 [4] and w3 [3]; args `x: f32[N, 2]`, `k: i32[N]`.
fn small() -> (Module, Function, Vec<Tensor>, Vec<Tensor>) {
    let mut rng = Gen::new(3);
    let m = module(&[("w0", f32t(&[2, 3])), ("b1", f32t(&[3])), ("u2", f32t(&[4])), ("w3", f32t(&[3]))]);
    let params = vec![
        rng.f32s(&[2, 3], -1.0, 1.0),
        rng.f32s(&[3], -1.0, 1.0),
        rng.f32s(&[4], -1.0, 1.0),
        rng.f32s(&[3], -1.0, 1.0),
    ];
    let mut b = Gb::new();
    let n = var("N");
    let x = b.input("x", TensorType::new(DType::F32, vec![n.clone(), d(2)]), rng.f32s(&[2, 2], -1.0, 1.0));
    let k = b.index_input("k", TensorType::new(DType::I32, vec![n.clone()]), d(3), rng.ints(DType::I32, &[2], 3));
    let (w0, b1, w3) = (b.param(&m, 0), b.param(&m, 1), b.param(&m, 3));
    let z = b.matmul(x, w0);
    let z = b.add_bcast(z, b1);
    let h = b.unary(UnaryOp::Tanh, z);
    let oh = b.push(Op::OneHot, vec![k], TensorType::new(DType::F32, vec![n.clone(), d(3)]));
    let h = b.add(h, oh);
    let h = b.add_bcast(h, w3);
    let l = b.sum_all(h);
    let (f, inputs) = b.finish("loss", l);
    (m, f, params, inputs)
}

fn run(m: &Module, f: &Function, params: &[Tensor], inputs: &[Tensor]) -> Vec<Tensor> {
    interp::run(m, &f.graph, &|v| (v == "N").then_some(2), params, inputs, Precision::F64).unwrap()
}

#[test]
fn outputs_loss_then_params_then_inputs() {
    let (m, f, params, inputs) = small();
    let g = grad(&m, &f, &Wrt::all_params().with_inputs([0])).unwrap();
    assert_eq!(g.name, "loss_grad");
    assert_eq!(g.arg_names, f.arg_names);
    assert_eq!(g.arg_bounds, f.arg_bounds);
    assert_eq!(g.graph.inputs, f.graph.inputs);
    assert_eq!(g.output_names, ["loss", "grad.w0", "grad.b1", "grad.u2", "grad.w3", "grad.x"]);
    verify::function(&m, &g).unwrap();
    let outs = run(&m, &g, &params, &inputs);
    for (i, p) in m.params.iter().enumerate() {
        let t = g.graph.tensor_type(g.graph.outputs[1 + i]);
        assert_eq!(t, &p.ty, "grad.{} has the param's type", p.name);
    }
    assert_eq!(outs[0].data, run(&m, &f, &params, &inputs)[0].data);
    // The unused parameter's gradient is a zero of its shape.
    assert_eq!(outs[3].data, vec![0.0; 4]);
    let p = Problem::new(m, f, params, inputs).with_dims(&[("N", 2)]);
    check(&p, &Wrt::all_params().with_inputs([0])).unwrap();
}

#[test]
fn frozen_params_get_no_output() {
    let (m, f, params, inputs) = small();
    let g = grad(&m, &f, &Wrt::params([3, 0])).unwrap();
    assert_eq!(g.output_names, ["loss", "grad.w3", "grad.w0"]);
    assert_eq!(g.graph.outputs.len(), 3);
    let p = Problem::new(m, f, params, inputs).with_dims(&[("N", 2)]);
    check(&p, &Wrt::params([3, 0])).unwrap();
    // With nothing selected only the loss is returned.
    let g = grad(&p.m, &p.f, &Wrt::no_params()).unwrap();
    assert_eq!(g.output_names, ["loss"]);
    // Frozen params get no adjoint work either: only w3 is active here.
    let g = grad(&p.m, &p.f, &Wrt::params([3])).unwrap();
    let matmuls = g.graph.nodes.iter().filter(|n| matches!(n.op, Op::MatMul)).count();
    assert_eq!(matmuls, 1, "only the forward matmul:\n{}", print::function(&p.m, &g));
}

#[test]
fn non_scalar_or_multiple_outputs_are_errors() {
    let (m, mut f, _, _) = small();
    let x = f.graph.nodes.iter().position(|n| matches!(n.op, Op::Input { index: 0 })).unwrap();
    f.graph.outputs = vec![kiln_ir::ValueId(x as u32)];
    assert!(matches!(grad(&m, &f, &Wrt::all_params()), Err(AutodiffError::NotScalarLoss { .. })));
    let l = f.graph.outputs[0];
    f.graph.outputs = vec![l, l];
    f.output_names = vec!["a".into(), "b".into()];
    let e = grad(&m, &f, &Wrt::all_params()).unwrap_err();
    assert!(matches!(e, AutodiffError::OutputCount { count: 2, .. }), "{e}");
    assert!(e.to_string().contains("exactly one"), "{e}");
}

#[test]
fn integer_loss_is_an_error() {
    let mut b = Gb::new();
    let k = b.input("k", tyc(DType::I64, &[3]), Tensor::new(DType::I64, vec![3], vec![1.0, 2.0, 3.0]));
    let s = b.reduce(ReduceOp::Sum, k, &[0], false);
    let (f, _) = b.finish("f", s);
    let e = grad(&Module::default(), &f, &Wrt::all_params()).unwrap_err();
    assert!(matches!(e, AutodiffError::NotScalarLoss { .. }), "{e}");
}

#[test]
fn bad_selections_are_errors() {
    let (m, f, _, _) = small();
    assert!(matches!(grad(&m, &f, &Wrt::params([9])), Err(AutodiffError::ParamOutOfRange { index: 9, count: 4 })));
    assert!(matches!(grad(&m, &f, &Wrt::params([1, 1])), Err(AutodiffError::Duplicate { .. })));
    assert!(matches!(grad(&m, &f, &Wrt::no_params().with_inputs([5])), Err(AutodiffError::InputOutOfRange { .. })));
    let e = grad(&m, &f, &Wrt::no_params().with_inputs([1])).unwrap_err();
    assert!(matches!(e, AutodiffError::InputNotFloat { .. }), "{e}");
    assert!(matches!(grad(&m, &f, &Wrt::no_params().with_inputs([0, 0])), Err(AutodiffError::Duplicate { .. })));
}

#[test]
fn invalid_function_is_an_error() {
    let (m, mut f, _, _) = small();
    f.output_names.clear();
    assert!(matches!(grad(&m, &f, &Wrt::all_params()), Err(AutodiffError::Invalid(_))));
}

/// A loss that depends on no selected value gets all-zero gradients.
#[test]
fn constant_loss_has_zero_gradients() {
    let m = module(&[("w", f32t(&[2]))]);
    let mut b = Gb::new();
    let x = b.input("x", f32t(&[2]), Tensor::new(DType::F32, vec![2], vec![1.0, 2.0]));
    let w = b.param(&m, 0);
    let l = b.sum_all(w);
    let _ = x;
    let (f, inputs) = b.finish("f", l);
    let g = grad(&m, &f, &Wrt::no_params().with_inputs([0])).unwrap();
    let outs = interp::run(
        &m,
        &g.graph,
        &|_| None,
        &[Tensor::new(DType::F32, vec![2], vec![3.0, 4.0])],
        &inputs,
        Precision::F64,
    )
    .unwrap();
    assert_eq!(outs[0].data, vec![7.0]);
    assert_eq!(outs[1].data, vec![0.0, 0.0]);
}

/// `Wrt::default()` is every parameter and no argument.
#[test]
fn default_selection() {
    let w = Wrt::default();
    assert_eq!(w.params, ParamSet::All);
    assert!(w.inputs.is_empty());
    assert_eq!(Wrt::all_params(), w);
}

/// The gradient of a scan contains a second, backward scan whose result
/// is un-reversed by a gather, and the forward scan saves its carries.
#[test]
fn scan_gradient_structure() {
    let m = module(&[("w", f32t(&[2, 2]))]);
    let mut b = Gb::new();
    let t = var("T");
    let xs = b.input("xs", TensorType::new(DType::F32, vec![t.clone(), d(1), d(2)]), Tensor::scalar(DType::F32, 0.0));
    let zero = b.konst(0.0, DType::F32);
    let h0 = b.broadcast(zero, &[d(1), d(2)]);
    let mut body = Gb::new();
    let h = body.input("h", f32t(&[1, 2]), Tensor::scalar(DType::F32, 0.0));
    let x = body.input("x", f32t(&[1, 2]), Tensor::scalar(DType::F32, 0.0));
    let w = body.param(&m, 0);
    let hw = body.matmul(h, w);
    let s = body.add(hw, x);
    let hn = body.unary(UnaryOp::Tanh, s);
    body.g.outputs = vec![hn];
    let ty = Type::Tuple(vec![f32t(&[1, 2])]);
    let sc = b.g.push(Op::Scan { body: Box::new(body.g), n_carry: 1, n_seq: 1 }, vec![h0, xs], ty);
    let last = b.g.push(Op::Extract { index: 0 }, vec![sc], Type::Tensor(f32t(&[1, 2])));
    let l = b.sum_all(last);
    let (f, _) = b.finish("loss", l);
    let g = grad(&m, &f, &Wrt::all_params().with_inputs([0])).unwrap();
    let text = print::function(&m, &g);
    let scans: Vec<_> = g.graph.nodes.iter().filter(|n| matches!(n.op, Op::Scan { .. })).collect();
    assert_eq!(scans.len(), 2, "{text}");
    // The forward scan now also emits its incoming carry per step.
    assert_eq!(scans[0].ty, Type::Tuple(vec![f32t(&[1, 2]), TensorType::new(DType::F32, vec![t.clone(), d(1), d(2)])]));
    // The backward scan carries dh and the accumulated dw; it emits dx.
    let Op::Scan { n_carry, n_seq, .. } = &scans[1].op else { unreachable!() };
    assert_eq!((*n_carry, *n_seq), (2, 2), "{text}");
    assert!(g.graph.nodes.iter().any(|n| matches!(n.op, Op::Gather { axis: 0 })), "{text}");
    assert!(text.contains("fn loss_grad(xs: f32[T, 1, 2]) -> (loss, grad.w, grad.xs)"), "{text}");
}

/// A scan whose results do not reach the loss is copied unchanged: it does
/// not save its carries, and gets no backward scan.
#[test]
fn scan_off_the_loss_path_is_not_augmented() {
    let m = module(&[("w", f32t(&[2]))]);
    let mut b = Gb::new();
    let xs = b.input("xs", f32t(&[3, 2]), Tensor::scalar(DType::F32, 0.0));
    let w = b.param(&m, 0);
    let mut body = Gb::new();
    let h = body.input("h", f32t(&[2]), Tensor::scalar(DType::F32, 0.0));
    let x = body.input("x", f32t(&[2]), Tensor::scalar(DType::F32, 0.0));
    let s = body.mul(h, x);
    body.g.outputs = vec![s];
    let ty = Type::Tuple(vec![f32t(&[2])]);
    let sc = b.g.push(Op::Scan { body: Box::new(body.g), n_carry: 1, n_seq: 1 }, vec![w, xs], ty.clone());
    let _unused = b.g.push(Op::Extract { index: 0 }, vec![sc], Type::Tensor(f32t(&[2])));
    let sq = b.mul(w, w);
    let l = b.sum_all(sq);
    let (f, _) = b.finish("loss", l);
    let g = grad(&m, &f, &Wrt::all_params()).unwrap();
    let scans: Vec<_> = g.graph.nodes.iter().filter(|n| matches!(n.op, Op::Scan { .. })).collect();
    assert_eq!(scans.len(), 1);
    assert_eq!(scans[0].ty, ty);
}
