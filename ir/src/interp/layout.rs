//! Ops that move elements without computing new values: broadcast,
//! reshape, transpose, concat and slice.

use super::error::OpError;
use super::tensor::{numel, ravel, shape_str, unravel};
use super::Tensor;

/// Numpy broadcast to `shape`: axes aligned on the right, size-1 axes repeated.
pub(crate) fn broadcast(x: &Tensor, shape: &[usize]) -> Result<Tensor, OpError> {
    let lead = shape.len() - x.shape.len();
    for (i, &d) in x.shape.iter().enumerate() {
        if d != 1 && d != shape[lead + i] {
            return Err(format!("cannot broadcast {} to {}", shape_str(&x.shape), shape_str(shape)).into());
        }
    }
    let mut data = Vec::with_capacity(numel(shape));
    for flat in 0..numel(shape) {
        let out = unravel(flat, shape);
        let src: Vec<usize> =
            x.shape.iter().enumerate().map(|(i, &d)| if d == 1 { 0 } else { out[lead + i] }).collect();
        data.push(x.data[ravel(&src, &x.shape)]);
    }
    Ok(Tensor::new(x.dtype, shape.to_vec(), data))
}

/// The same row-major elements under a new shape.
pub(crate) fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor, OpError> {
    if numel(shape) != x.numel() {
        return Err(format!("cannot reshape {} to {}", shape_str(&x.shape), shape_str(shape)).into());
    }
    Ok(Tensor::new(x.dtype, shape.to_vec(), x.data.clone()))
}

/// Output axis `i` is input axis `perm[i]`.
pub(crate) fn transpose(x: &Tensor, perm: &[u32]) -> Tensor {
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p as usize]).collect();
    let mut data = Vec::with_capacity(x.numel());
    for flat in 0..x.numel() {
        let out = unravel(flat, &shape);
        let mut src = vec![0; shape.len()];
        for (i, &p) in perm.iter().enumerate() {
            src[p as usize] = out[i];
        }
        data.push(x.data[ravel(&src, &x.shape)]);
    }
    Tensor::new(x.dtype, shape, data)
}

/// Joins `xs` along `axis`: for each index of the leading axes, the
/// arguments' blocks one after the other.
pub(crate) fn concat(xs: &[&Tensor], axis: usize) -> Tensor {
    let first = xs[0];
    let outer = numel(&first.shape[..axis]);
    let inner = numel(&first.shape[axis + 1..]);
    let mut shape = first.shape.clone();
    shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
    let mut data = Vec::with_capacity(numel(&shape));
    for o in 0..outer {
        for x in xs {
            let block = x.shape[axis] * inner;
            data.extend_from_slice(&x.data[o * block..(o + 1) * block]);
        }
    }
    Tensor::new(first.dtype, shape, data)
}

/// Elements `start, start + step, ...` below `end` along `axis`; requires
/// `0 <= start <= end <= size`.
pub(crate) fn slice(x: &Tensor, axis: usize, start: i64, end: i64, step: usize) -> Result<Tensor, OpError> {
    let size = x.shape[axis];
    if start < 0 || start > end || end > size as i64 {
        return Err(format!("slice {start}..{end} is not within 0..{size}").into());
    }
    let (start, end) = (start as usize, end as usize);
    let mut shape = x.shape.clone();
    shape[axis] = (end - start).div_ceil(step);
    let mut data = Vec::with_capacity(numel(&shape));
    for flat in 0..numel(&shape) {
        let mut src = unravel(flat, &shape);
        src[axis] = start + src[axis] * step;
        data.push(x.data[ravel(&src, &x.shape)]);
    }
    Ok(Tensor::new(x.dtype, shape, data))
}
