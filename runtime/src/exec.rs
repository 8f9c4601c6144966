//! Running an entry point on the reference interpreter.

use crate::{Precision, RuntimeError, Tensor};
use kiln_ir::{Function, Module, Type};
use std::collections::BTreeMap;

/// Runs `f` of `m` on the reference interpreter with the given parameter
/// values (parallel to `m.params`), inputs (parallel to `f.arg_names`) and
/// dimension sizes; the outputs are parallel to `f.output_names`.
pub fn run_reference(
    m: &Module,
    f: &Function,
    params: &[Tensor],
    inputs: &[Tensor],
    dims: &BTreeMap<String, i64>,
    precision: Precision,
) -> Result<Vec<Tensor>, RuntimeError> {
    let env = |name: &str| dims.get(name).copied();
    crate::memory::ensure(&format!("`{}` on the reference interpreter", f.name), &[("its values", reference_bytes(f, &env))])?;
    kiln_ir::interp::run(m, &f.graph, &env, params, inputs, precision)
        .map_err(|e| RuntimeError::Interp { function: f.name.clone(), message: e.to_string() })
}

/// Bytes the reference interpreter holds while running `f`: it keeps every
/// value of the graph, as f64.
pub fn reference_bytes(f: &Function, env: &dyn Fn(&str) -> Option<i64>) -> u64 {
    let values = f.graph.nodes.iter().flat_map(|n| match &n.ty {
        Type::Tensor(t) => std::slice::from_ref(t),
        Type::Tuple(ts) => ts.as_slice(),
    });
    crate::memory::tensors_bytes(values, env, 8)
}
