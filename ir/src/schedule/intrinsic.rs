//! Recording nodes as [`crate::kernel::Intrinsic`]s: the views of their
//! arguments and results in the scheduler's memory.

use super::builder::{KernelBuilder, Src};
use super::emit::operand;
use super::index::Ix;
use super::plan::GraphState;
use super::{Cx, ScheduleError};
use crate::kernel::{HostOffset, TensorView};
use crate::ValueId;

/// Where the kernels read node `n`: its dense copy when the scheduler made
/// one, else the strided view of memory it is (`None`: computed on the fly,
/// or strides the views cannot express).
pub(crate) fn arg_view(cx: &mut Cx, gs: &GraphState, dense: Option<&Src>, n: ValueId) -> Result<Option<TensorView>, ScheduleError> {
    let shape = gs.shapes[n.index()].clone();
    if let Some(s) = dense {
        return Ok(Some(TensorView::dense(s.buf, s.offset.clone(), shape)));
    }
    let mut kb = KernelBuilder::default();
    let vars: Vec<_> = shape.iter().map(|&e| kb.var(e)).collect();
    let idx: Vec<Ix> = vars.iter().map(|&v| Ix::var(v)).collect();
    let Some((src, aff)) = operand(cx, gs, &kb, n, &idx)? else { return Ok(None) };
    let strides: Vec<i64> = vars.iter().map(|&v| aff.coeff(v)).collect();
    let constant = src.offset.constant as i64 + aff.constant;
    if strides.iter().any(|&s| s < 0) || constant < 0 || aff.terms.iter().any(|(v, _)| !vars.contains(v)) {
        return Ok(None);
    }
    let offset = HostOffset { constant: constant as u64, terms: src.offset.terms.clone() };
    Ok(Some(TensorView { buf: src.buf, offset, shape, strides: strides.into_iter().map(|s| s as u64).collect() }))
}
