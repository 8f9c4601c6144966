//! Small helpers over [`Tensor`]: element counts, type strings, concrete
//! shapes, and the consistency check every writer runs first.

use crate::{RuntimeError, Tensor};
use kiln_ir::{DType, TensorType};

/// `f32[2, 16]`: a dtype and a concrete shape, as messages print them.
pub fn type_string(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(", "))
}

/// `[256, 768]`: a concrete shape as messages print it.
pub(crate) fn shape_string(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// Number of elements of a shape, or `None` when it overflows `usize`.
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Checks that a tensor holds exactly as many values as its shape says.
pub(crate) fn check_consistent(t: &Tensor, what: &str) -> Result<(), RuntimeError> {
    match numel(&t.shape) {
        Some(n) if n == t.data.len() => Ok(()),
        _ => Err(RuntimeError::Invalid(format!(
            "{what}: a {} tensor must hold {} values, this one holds {}",
            type_string(t.dtype, &t.shape),
            numel(&t.shape).map_or("too many".to_string(), |n| n.to_string()),
            t.data.len()
        ))),
    }
}

/// The concrete shape of a declared type; `Err` explains a symbolic or
/// negative dimension.
pub(crate) fn concrete_shape(ty: &TensorType) -> Result<Vec<usize>, String> {
    ty.shape
        .iter()
        .map(|d| match d.as_const() {
            Some(c) => usize::try_from(c).map_err(|_| format!("dimension {c} in {ty} is negative")),
            None => Err(format!("shape {ty} is symbolic; parameters need concrete shapes")),
        })
        .collect()
}
