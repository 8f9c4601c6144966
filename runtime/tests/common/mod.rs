//! Builders shared by the runtime's integration tests.
#![allow(dead_code)]

use kiln_ir::{Constraint, DType, DimExpr, Function, Graph, Init, Module, Param, Relation, TensorType};
use kiln_runtime::Tensor;
use std::path::PathBuf;

/// A fixture file under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A concrete tensor type.
pub fn ty(dtype: DType, shape: &[i64]) -> TensorType {
    TensorType::new(dtype, shape.iter().map(|&d| DimExpr::constant(d)).collect())
}

/// A tensor type whose dims are variables (`"B"`) or constants (`"3"`).
pub fn sym(dtype: DType, shape: &[&str]) -> TensorType {
    let dims = shape
        .iter()
        .map(|d| match d.parse::<i64>() {
            Ok(c) => DimExpr::constant(c),
            Err(_) => DimExpr::var(d),
        })
        .collect();
    TensorType::new(dtype, dims)
}

/// A plain parameter.
pub fn param(name: &str, dtype: DType, shape: &[i64], init: Init) -> Param {
    Param { name: name.into(), ty: ty(dtype, shape), init, stack: None }
}

/// A stacked parameter; `shape[0]` is the number of layers.
pub fn stacked(name: &str, stack: &str, dtype: DType, shape: &[i64], init: Init) -> Param {
    Param { name: name.into(), ty: ty(dtype, shape), init, stack: Some(stack.into()) }
}

/// A module with only parameters.
pub fn module(params: Vec<Param>) -> Module {
    Module { params, functions: Vec::new() }
}

/// A normal initializer.
pub fn normal(mean: f64, std: f64) -> Init {
    Init::Normal { mean, std }
}

/// A function with the given inputs and no body (enough for binding and
/// random inputs).
pub fn function(name: &str, args: &[(&str, TensorType, Option<DimExpr>)], dim_vars: &[&str]) -> Function {
    Function {
        name: name.into(),
        arg_names: args.iter().map(|a| a.0.to_string()).collect(),
        arg_bounds: args.iter().map(|a| a.2.clone()).collect(),
        arg_ignore: vec![None; args.len()],
        output_names: Vec::new(),
        dim_vars: dim_vars.iter().map(|s| s.to_string()).collect(),
        constraints: Vec::new(),
        graph: Graph { nodes: Vec::new(), inputs: args.iter().map(|a| a.1.clone()).collect(), outputs: Vec::new() },
    }
}

/// `lhs <= rhs` with its source text.
pub fn le(lhs: DimExpr, rhs: DimExpr, text: &str) -> Constraint {
    Constraint { lhs, rel: Relation::Le, rhs, text: text.into(), consts: Vec::new() }
}

/// A tensor from its parts.
pub fn tensor(dtype: DType, shape: &[usize], data: &[f64]) -> Tensor {
    Tensor { dtype, shape: shape.to_vec(), data: data.to_vec() }
}
