//! Binding dimension variables from inputs, overrides and defaults, and
//! checking inputs and constraints.

mod common;

use common::{function, le, sym, tensor};
use kiln_ir::{Constraint, DType, DimExpr, Function, Relation, TensorType};
use kiln_runtime::bind::{bind_dims, bind_dims_from, default_dim, GivenInput};
use kiln_runtime::RuntimeError;

/// `forward(tokens: i32[B, T] < V, mask: bool[T, T], x: f32[B, T, 4])`.
fn forward() -> Function {
    function(
        "forward",
        &[
            ("tokens", sym(DType::I32, &["B", "T"]), Some(DimExpr::constant(50))),
            ("mask", sym(DType::Bool, &["T", "T"]), None),
            ("x", sym(DType::F32, &["B", "T", "4"]), None),
        ],
        &["B", "T"],
    )
}

#[test]
fn dims_come_from_input_shapes() {
    let f = forward();
    let x = tensor(DType::F32, &[3, 5, 4], &[0.0; 60]);
    let b = bind_dims(&f, &[None, None, Some(&x)], &[]).unwrap();
    assert_eq!(b.get("B"), Some(3));
    assert_eq!(b.get("T"), Some(5));
    assert!(b.defaulted.is_empty());
    assert_eq!(b.defaults_note(), None);
}

#[test]
fn unbound_dims_get_reported_defaults() {
    let f = forward();
    let b = bind_dims(&f, &[], &[]).unwrap();
    assert_eq!(b.dims.into_iter().collect::<Vec<_>>(), vec![("B".to_string(), 2), ("T".to_string(), 16)]);
    assert_eq!(b.defaulted, ["B", "T"]);
    let b = bind_dims(&f, &[], &[]).unwrap();
    assert_eq!(b.defaults_note().unwrap(), "using default dims: B = 2, T = 16");
    assert_eq!(default_dim("D"), 8);

    // Only the dims nothing bound are defaulted.
    let mask = tensor(DType::Bool, &[4, 4], &[1.0; 16]);
    let b = bind_dims(&f, &[None, Some(&mask)], &[]).unwrap();
    assert_eq!((b.get("B"), b.get("T")), (Some(2), Some(4)));
    assert_eq!(b.defaults_note().unwrap(), "using default dims: B = 2");
}

#[test]
fn overrides_bind_and_are_checked() {
    let f = forward();
    let b = bind_dims(&f, &[], &[("T".into(), 7)]).unwrap();
    assert_eq!((b.get("B"), b.get("T")), (Some(2), Some(7)));
    assert_eq!(b.defaulted, ["B"]);

    let msg = bind_dims(&f, &[], &[("D".into(), 7)]).unwrap_err().to_string();
    assert_eq!(msg, "--dim D=7: `forward` has no dimension `D` (its dimensions are B, T)");
    let msg = bind_dims(&f, &[], &[("T".into(), -1)]).unwrap_err().to_string();
    assert_eq!(msg, "--dim T=-1: a dimension cannot be negative");
    assert_eq!(bind_dims(&f, &[], &[("T".into(), 0)]).unwrap().get("T"), Some(0));
    let msg = bind_dims(&f, &[], &[("T".into(), 3), ("T".into(), 4)]).unwrap_err().to_string();
    assert_eq!(msg, "dimension `T` is 3 from --dim T=3 but 4 from --dim T=4");

    let x = tensor(DType::F32, &[3, 5, 4], &[0.0; 60]);
    let msg = bind_dims(&f, &[None, None, Some(&x)], &[("B".into(), 2)]).unwrap_err().to_string();
    assert_eq!(msg, "dimension `B` is 2 from --dim B=2 but 3 from axis 0 of input `x`");
}

#[test]
fn conflicting_inputs_name_both_axes() {
    let f = forward();
    let mask = tensor(DType::Bool, &[4, 4], &[1.0; 16]);
    let x = tensor(DType::F32, &[2, 5, 4], &[0.0; 40]);
    let err = bind_dims(&f, &[None, Some(&mask), Some(&x)], &[]).unwrap_err();
    assert_eq!(err.to_string(), "dimension `T` is 4 from axis 0 of input `mask` but 5 from axis 1 of input `x`");
    // Within one input too.
    let mask = tensor(DType::Bool, &[4, 3], &[1.0; 12]);
    let msg = bind_dims(&f, &[None, Some(&mask)], &[]).unwrap_err().to_string();
    assert_eq!(msg, "dimension `T` is 4 from axis 0 of input `mask` but 3 from axis 1 of input `mask`");
}

#[test]
fn input_types_are_checked_with_dims_filled_in() {
    let f = forward();
    let tokens = tensor(DType::F32, &[2, 16], &[0.0; 32]);
    let given = [Some(GivenInput { tensor: &tokens, source: "x.npy" })];
    let err = bind_dims_from(&f, &given, &[]).unwrap_err();
    assert!(matches!(err, RuntimeError::InputType { .. }));
    assert_eq!(err.to_string(), "input `tokens`: expected i32[2, 16] (B = 2, T = 16), got f32[2, 16] from x.npy");

    // A constant axis that does not match.
    let x = tensor(DType::F32, &[2, 3, 5], &[0.0; 30]);
    let msg = bind_dims(&f, &[None, None, Some(&x)], &[]).unwrap_err().to_string();
    assert_eq!(msg, "input `x`: expected f32[2, 3, 4] (B = 2, T = 3), got f32[2, 3, 5]");

    // A wrong rank is reported with the declared (symbolic) type.
    let x = tensor(DType::F32, &[2, 3], &[0.0; 6]);
    let msg = bind_dims(&f, &[None, None, Some(&x)], &[]).unwrap_err().to_string();
    assert_eq!(msg, "input `x`: expected f32[B, T, 4], got f32[2, 3]");

    // A size-0 axis binds its dimension to 0 (a zero-size tensor).
    let x = tensor(DType::F32, &[0, 3, 4], &[]);
    assert_eq!(bind_dims(&f, &[None, None, Some(&x)], &[]).unwrap().get("B"), Some(0));
}

#[test]
fn derived_dims_are_checked_not_bound() {
    // `y: f32[2*T]` cannot bind T; T comes from elsewhere and y is checked.
    let two_t = TensorType::new(DType::F32, vec![DimExpr::var("T").scale(2)]);
    let f = function("f", &[("x", sym(DType::F32, &["T"]), None), ("y", two_t, None)], &["T"]);
    let x = tensor(DType::F32, &[3], &[0.0; 3]);
    let y = tensor(DType::F32, &[6], &[0.0; 6]);
    assert_eq!(bind_dims(&f, &[Some(&x), Some(&y)], &[]).unwrap().get("T"), Some(3));
    let y = tensor(DType::F32, &[5], &[0.0; 5]);
    let msg = bind_dims(&f, &[Some(&x), Some(&y)], &[]).unwrap_err().to_string();
    assert_eq!(msg, "input `y`: expected f32[6] (T = 3), got f32[5]");
}

#[test]
fn index_inputs_must_be_below_their_bound() {
    let f = forward();
    let mut data = vec![0.0; 32];
    data[5] = 50.0;
    let tokens = tensor(DType::I32, &[2, 16], &data);
    let msg = bind_dims(&f, &[Some(&tokens)], &[]).unwrap_err().to_string();
    assert_eq!(msg, "input `tokens`: element 5 is 50, outside the valid indices 0..50");
    data[5] = -1.0;
    let tokens = tensor(DType::I32, &[2, 16], &data);
    assert!(bind_dims(&f, &[Some(&tokens)], &[]).is_err());
    data[5] = 49.0;
    let tokens = tensor(DType::I32, &[2, 16], &data);
    assert!(bind_dims(&f, &[Some(&tokens)], &[]).is_ok());

    // A symbolic bound is evaluated and shown.
    let f = function("g", &[("ids", sym(DType::I64, &["T"]), Some(DimExpr::var("V")))], &["T", "V"]);
    let ids = tensor(DType::I64, &[2], &[3.0, 12.0]);
    let msg = bind_dims(&f, &[Some(&ids)], &[("V".into(), 10)]).unwrap_err().to_string();
    assert_eq!(msg, "input `ids`: element 1 is 12, outside the valid indices 0..10 (V = 10)");
}

#[test]
fn constraints_are_checked_with_their_text() {
    let mut f = forward();
    let mut c = le(DimExpr::var("T"), DimExpr::constant(8), "T <= block_size");
    c.consts.push(("block_size".into(), 8));
    f.constraints.push(c);
    let x = tensor(DType::F32, &[2, 8, 4], &[0.0; 64]);
    assert!(bind_dims(&f, &[None, None, Some(&x)], &[]).is_ok());
    let x = tensor(DType::F32, &[2, 9, 4], &[0.0; 72]);
    let err = bind_dims(&f, &[None, None, Some(&x)], &[]).unwrap_err();
    assert!(matches!(err, RuntimeError::Constraint { .. }));
    let msg = err.to_string();
    assert_eq!(msg, "`forward`: constraint `T <= block_size` does not hold: T = 9, block_size = 8");

    // When defaults are involved, the message says so.
    let msg = bind_dims(&f, &[], &[]).unwrap_err().to_string();
    assert!(msg.contains("T <= block_size") && msg.contains("using default dims: B = 2, T = 16"), "{msg}");

    let mut f = forward();
    f.constraints.push(Constraint {
        lhs: DimExpr::var("T"),
        rel: Relation::Divides,
        rhs: DimExpr::constant(4),
        text: "T % 4 == 0".into(),
        consts: Vec::new(),
    });
    assert!(bind_dims(&f, &[], &[("T".into(), 12)]).is_ok());
    assert!(bind_dims(&f, &[], &[("T".into(), 10)]).unwrap_err().to_string().contains("T % 4 == 0"));
}

#[test]
fn too_many_inputs_is_an_error() {
    let f = forward();
    let t = tensor(DType::F32, &[], &[0.0]);
    let msg = bind_dims(&f, &[None, None, None, Some(&t)], &[]).unwrap_err().to_string();
    assert_eq!(msg, "`forward` takes 3 inputs, 4 were given");
}

#[test]
fn inconsistent_tensor_is_an_error() {
    let f = forward();
    let x = tensor(DType::F32, &[2, 2, 4], &[0.0; 3]);
    assert!(bind_dims(&f, &[None, None, Some(&x)], &[]).unwrap_err().to_string().contains("input `x`"));
}
