//! Random inputs for running an entry point without data files.
//!
//! Floats are standard normal, rounded to the input's dtype; integers are
//! uniform in `[0, bound)` where the bound is the argument's index bound
//! (`Function::arg_bounds`, e.g. the vocabulary size for token ids) or 100
//! when it has none; bools are a fair coin. Each input draws from the
//! stream of its argument name (see [`crate::init`]), so `tokens` gets the
//! same values whatever other inputs the function takes.

use crate::init::{draw_element, stream};
use crate::tensor::numel;
use crate::{RuntimeError, Tensor};
use kiln_ir::{DType, Function};

/// Bound for integer inputs that declare none.
pub const DEFAULT_INT_BOUND: i64 = 100;

/// Draws input `index` of `f`, with its shape evaluated under `dims`.
pub fn random_input(
    f: &Function,
    index: usize,
    dims: &dyn Fn(&str) -> Option<i64>,
    seed: u64,
) -> Result<Tensor, RuntimeError> {
    let Some(ty) = f.graph.inputs.get(index) else {
        return Err(RuntimeError::BadInput {
            name: format!("#{index}"),
            reason: format!("`{}` takes {} inputs", f.name, f.graph.inputs.len()),
        });
    };
    let name = f.arg_names.get(index).cloned().unwrap_or_else(|| format!("#{index}"));
    let bad = |reason: String| RuntimeError::BadInput { name: name.clone(), reason };
    let shape = ty
        .shape
        .iter()
        .map(|d| {
            let v = d.eval(dims).map_err(|e| bad(e.to_string()))?;
            usize::try_from(v).map_err(|_| bad(format!("dimension {d} evaluates to {v}")))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let n = numel(&shape).ok_or_else(|| bad(format!("shape {shape:?} has too many elements")))?;
    let bound = match f.arg_bounds.get(index).and_then(|b| b.as_ref()) {
        Some(b) if ty.dtype.is_int() => {
            b.eval(dims).map_err(|e| bad(format!("the index bound {b}: {e}")))?
        }
        _ => DEFAULT_INT_BOUND,
    };
    if ty.dtype.is_int() {
        let max = if ty.dtype == DType::I32 { i32::MAX as i64 + 1 } else { i64::MAX };
        if bound < 1 && n > 0 {
            return Err(bad(format!("the index bound is {bound}, which leaves no valid values")));
        }
        if bound > max {
            return Err(bad(format!("the index bound {bound} does not fit in {}", ty.dtype)));
        }
    }
    let mut rng = stream(seed, &format!("input:{name}"));
    let data = (0..n).map(|_| draw_element(&mut rng, ty.dtype, bound)).collect();
    Ok(Tensor { dtype: ty.dtype, shape, data })
}
