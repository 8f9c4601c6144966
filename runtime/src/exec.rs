//! Running an entry point on the reference interpreter.

use crate::{Precision, RuntimeError, Tensor};
use kiln_ir::{Function, Module};
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
    kiln_ir::interp::run(m, &f.graph, &env, params, inputs, precision)
        .map_err(|e| RuntimeError::Interp { function: f.name.clone(), message: e.to_string() })
}
