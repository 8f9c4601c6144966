//! Elementwise ops: unary, binary, compare and select. Operands already
//! have one shape (broadcasting is its own node).

use super::error::OpError;
use super::scalar::{binary_float, binary_int, unary_float, unary_int};
use super::Tensor;
use crate::{BinaryOp, CmpOp, DType, UnaryOp};

/// A unary op; on integers in i64, otherwise in f64.
pub(crate) fn unary(op: UnaryOp, x: &Tensor) -> Tensor {
    let data = if x.dtype.is_int() {
        x.data.iter().map(|&v| unary_int(op, v as i64) as f64).collect()
    } else {
        x.data.iter().map(|&v| unary_float(op, v)).collect()
    };
    Tensor::new(x.dtype, x.shape.clone(), data)
}

/// A binary op on two tensors of one shape and dtype.
pub(crate) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let mut data = Vec::with_capacity(a.numel());
    for (&x, &y) in a.data.iter().zip(&b.data) {
        data.push(if a.dtype.is_int() { binary_int(op, x as i64, y as i64)? as f64 } else { binary_float(op, x, y) });
    }
    Ok(Tensor::new(a.dtype, a.shape.clone(), data))
}

/// A comparison; the result is bool (0 or 1). Comparisons with NaN are
/// false except `ne`, as in IEEE arithmetic.
pub(crate) fn compare(op: CmpOp, a: &Tensor, b: &Tensor) -> Tensor {
    let data = a.data.iter().zip(&b.data).map(|(&x, &y)| op.holds(x, y) as u8 as f64).collect();
    Tensor::new(DType::Bool, a.shape.clone(), data)
}

/// Inverted dropout with the mask `rng::keep(seed, flat index, p)`: `x`
/// times `1 / (1 - p)` or 0, so NaN and ±∞ propagate (as in PyTorch).
pub(crate) fn dropout(x: &Tensor, seed: &Tensor, p: f64) -> Tensor {
    let (seed, scale) = (seed.data[0] as i64 as u64, 1.0 / (1.0 - p));
    let data = x.data.iter().enumerate().map(|(i, &v)| v * if crate::rng::keep(seed, i as u64, p) { scale } else { 0.0 }).collect();
    Tensor::new(x.dtype, x.shape.clone(), data)
}

/// `a` where `cond` is true (nonzero), else `b`.
pub(crate) fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    let data =
        cond.data.iter().zip(a.data.iter().zip(&b.data)).map(|(&c, (&x, &y))| if c != 0.0 { x } else { y }).collect();
    Tensor::new(a.dtype, a.shape.clone(), data)
}
