//! Ops driven by integer indices: gather, one_hot and iota.

use super::error::OpError;
use super::tensor::{numel, unravel};
use super::Tensor;
use crate::DType;

/// Checks that an index element lies in `0..bound` and converts it.
fn checked(value: f64, bound: usize) -> Result<usize, OpError> {
    if value >= 0.0 && value < bound as f64 {
        Ok(value as usize)
    } else {
        Err(OpError::IndexOutOfRange { value, bound })
    }
}

/// `table[..., idx, ...]` along `axis`; the result's shape is
/// `table[..axis] ++ idx.shape ++ table[axis+1..]`.
pub(crate) fn gather(table: &Tensor, idx: &Tensor, axis: usize) -> Result<Tensor, OpError> {
    let outer = numel(&table.shape[..axis]);
    let size = table.shape[axis];
    let inner = numel(&table.shape[axis + 1..]);
    let mut shape = table.shape[..axis].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&table.shape[axis + 1..]);
    let mut data = Vec::with_capacity(numel(&shape));
    for o in 0..outer {
        for &v in &idx.data {
            let row = checked(v, size)?;
            let at = (o * size + row) * inner;
            data.extend_from_slice(&table.data[at..at + inner]);
        }
    }
    Ok(Tensor::new(table.dtype, shape, data))
}

/// One-hot encoding along a new last axis of size `shape.last()`.
pub(crate) fn one_hot(idx: &Tensor, shape: &[usize], dtype: DType) -> Result<Tensor, OpError> {
    let n = *shape.last().expect("verified: one_hot result has rank >= 1");
    let mut data = Vec::with_capacity(numel(shape));
    for &v in &idx.data {
        let hot = checked(v, n)?;
        data.extend((0..n).map(|j| (j == hot) as u8 as f64));
    }
    Ok(Tensor::new(dtype, shape.to_vec(), data))
}

/// `0, 1, 2, ...` along `axis`, repeated over the other axes.
pub(crate) fn iota(axis: usize, shape: &[usize], dtype: DType) -> Tensor {
    let data = (0..numel(shape)).map(|flat| unravel(flat, shape)[axis] as f64).collect();
    Tensor::new(dtype, shape.to_vec(), data)
}
