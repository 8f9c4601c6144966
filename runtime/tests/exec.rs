//! Running an entry point on the reference interpreter, end to end with
//! initialized weights, bound dims and random inputs.

mod common;

use common::{function, param, sym, tensor};
use kiln_ir::{BinaryOp, DType, Init, Module, Op};
use kiln_runtime::{bind_dims, init_params, random_input, run_reference, Precision, RuntimeError};
use std::collections::BTreeMap;

/// `forward(x: f32[B, 3]) -> x + b` with `b: f32[3]`.
fn model() -> Module {
    let mut f = function("forward", &[("x", sym(DType::F32, &["B", "3"]), None)], &["B"]);
    f.output_names = vec!["y".into()];
    let g = &mut f.graph;
    let x = g.push_tensor(Op::Input { index: 0 }, vec![], sym(DType::F32, &["B", "3"]));
    let b = g.push_tensor(Op::Param { index: 0 }, vec![], sym(DType::F32, &["3"]));
    let bb = g.push_tensor(Op::Broadcast, vec![b], sym(DType::F32, &["B", "3"]));
    let y = g.push_tensor(Op::Binary(BinaryOp::Add), vec![x, bb], sym(DType::F32, &["B", "3"]));
    g.outputs = vec![y];
    Module { params: vec![param("b", DType::F32, &[3], Init::Constant(0.5))], functions: vec![f] }
}

#[test]
fn runs_a_small_function() {
    let m = model();
    let f = &m.functions[0];
    let params = init_params(&m, 0).unwrap();
    let x = tensor(DType::F32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let dims = bind_dims(f, &[Some(&x)], &[]).unwrap();
    let out = run_reference(&m, f, &params, &[x], &dims.dims, Precision::F32).unwrap();
    assert_eq!(out, vec![tensor(DType::F32, &[2, 3], &[1.5, 2.5, 3.5, 4.5, 5.5, 6.5])]);
}

#[test]
fn runs_on_random_inputs_with_default_dims() {
    let m = model();
    let f = &m.functions[0];
    let dims = bind_dims(f, &[], &[]).unwrap();
    assert_eq!(dims.defaults_note().unwrap(), "using default dims: B = 2");
    let x = random_input(f, 0, &|n| dims.get(n), 3).unwrap();
    let out = run_reference(&m, f, &init_params(&m, 0).unwrap(), std::slice::from_ref(&x), &dims.dims, Precision::F64).unwrap();
    let want: Vec<f64> = x.data.iter().map(|v| v + 0.5).collect();
    assert_eq!(out[0].data, want);
}

#[test]
fn interpreter_errors_are_mapped() {
    let m = model();
    let f = &m.functions[0];
    let x = tensor(DType::F32, &[2, 3], &[0.0; 6]);
    let err = run_reference(&m, f, &[], &[x], &BTreeMap::new(), Precision::F32).unwrap_err();
    assert!(matches!(err, RuntimeError::Interp { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with("`forward` failed in the reference interpreter: "), "{msg}");
    assert!(!msg.contains('\n'));
}
