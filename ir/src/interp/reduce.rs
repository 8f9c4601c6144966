//! Reductions over a set of axes.

use super::error::OpError;
use super::tensor::{numel, ravel, unravel};
use super::Tensor;
use crate::{DType, ReduceOp};

/// Reduces `x` over `axes` (sorted). Elements are visited in row-major
/// order of the reduced axes, so sums accumulate in that order.
pub(crate) fn reduce(op: ReduceOp, x: &Tensor, axes: &[u32], keepdim: bool) -> Result<Tensor, OpError> {
    let reduced = |i: usize| axes.contains(&(i as u32));
    let kept: Vec<usize> = (0..x.shape.len()).filter(|&i| !reduced(i)).collect();
    let red: Vec<usize> = (0..x.shape.len()).filter(|&i| reduced(i)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&i| x.shape[i]).collect();
    let red_shape: Vec<usize> = red.iter().map(|&i| x.shape[i]).collect();
    let count = numel(&red_shape);
    if let Some(e) = empty_error(op, x.dtype, count) {
        return Err(e);
    }
    let mut data = Vec::with_capacity(numel(&kept_shape));
    let mut full = vec![0; x.shape.len()];
    for k in 0..numel(&kept_shape) {
        for (&axis, i) in kept.iter().zip(unravel(k, &kept_shape)) {
            full[axis] = i;
        }
        let mut lane = Vec::with_capacity(count);
        for r in 0..count {
            for (&axis, i) in red.iter().zip(unravel(r, &red_shape)) {
                full[axis] = i;
            }
            lane.push(x.data[ravel(&full, &x.shape)]);
        }
        data.push(reduce_lane(op, x.dtype, &lane)?);
    }
    let shape = if keepdim {
        (0..x.shape.len()).map(|i| if reduced(i) { 1 } else { x.shape[i] }).collect()
    } else {
        kept_shape
    };
    let dtype = if op == ReduceOp::ArgMax { DType::I64 } else { x.dtype };
    Ok(Tensor::new(dtype, shape, data))
}

/// Why a reduction of `count` values per lane has no result: argmax over
/// an empty axis has no index to give, an integer mean divides by zero.
/// Every other reduction has an identity (see [`reduce_lane`]), and the
/// scheduler refuses these cases with this same error before anything runs.
pub(crate) fn empty_error(op: ReduceOp, dtype: DType, count: usize) -> Option<OpError> {
    match op {
        _ if count > 0 => None,
        ReduceOp::ArgMax => Some(OpError::Other("argmax over an empty axis".into())),
        ReduceOp::Mean if dtype.is_int() => Some(OpError::DivisionByZero),
        _ => None,
    }
}

/// Reduces one lane of values. Over no values: sum 0, float mean NaN
/// (0 / 0), and max and min the dtype's identity, -∞ and +∞ for floats
/// and the extreme values for integers (as ONNX's ReduceMax/ReduceMin).
fn reduce_lane(op: ReduceOp, dtype: DType, lane: &[f64]) -> Result<f64, OpError> {
    let int = dtype.is_int();
    let sum = || if int { lane.iter().fold(0i64, |s, &v| s.wrapping_add(v as i64)) as f64 } else { lane.iter().sum() };
    let (lowest, highest) = dtype.extremes();
    Ok(match op {
        ReduceOp::Sum => sum(),
        // Integer mean truncates toward zero, like integer division.
        ReduceOp::Mean if int => ((sum() as i64) / lane.len() as i64) as f64,
        ReduceOp::Mean => sum() / lane.len() as f64,
        ReduceOp::Max if lane.is_empty() => lowest,
        ReduceOp::Min if lane.is_empty() => highest,
        ReduceOp::Max => extreme(lane, |v, m| v > m),
        ReduceOp::Min => extreme(lane, |v, m| v < m),
        ReduceOp::ArgMax => argmax(lane) as f64,
    })
}

/// The value no other beats; NaN wins, as in numpy's max/min.
fn extreme(lane: &[f64], beats: fn(f64, f64) -> bool) -> f64 {
    let mut m = lane[0];
    for &v in lane {
        if v.is_nan() {
            return v;
        }
        if beats(v, m) {
            m = v;
        }
    }
    m
}

/// Index of the first maximum; the first NaN counts as the maximum (numpy).
fn argmax(lane: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in lane.iter().enumerate() {
        if lane[best].is_nan() {
            break;
        }
        if v > lane[best] || v.is_nan() {
            best = i;
        }
    }
    best
}
