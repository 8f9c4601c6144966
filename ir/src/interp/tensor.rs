//! The interpreter's tensor value and row-major index arithmetic.

use crate::DType;
use std::fmt;

/// A dense row-major tensor. Every element is an `f64`: floats hold their
/// value (rounded to the dtype in f32 mode), integers and bools are stored
/// exactly (bools as 0 or 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Size of each axis; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements in row-major order; `data.len()` is the product of `shape`.
    pub data: Vec<f64>,
}

impl Tensor {
    /// A tensor from its parts. Panics when `data` does not fill `shape`.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        assert_eq!(data.len(), numel(&shape), "{} elements for shape {shape:?}", data.len());
        Tensor { dtype, shape, data }
    }

    /// A tensor of zeros.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        Tensor { dtype, shape, data: vec![0.0; n] }
    }

    /// A rank-0 tensor.
    pub fn scalar(dtype: DType, value: f64) -> Tensor {
        Tensor { dtype, shape: Vec::new(), data: vec![value] }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The element at a multi-index. Panics when the index is out of range.
    pub fn get(&self, idx: &[usize]) -> f64 {
        assert_eq!(idx.len(), self.shape.len(), "index {idx:?} for shape {:?}", self.shape);
        assert!(
            idx.iter().zip(&self.shape).all(|(i, s)| i < s),
            "index {idx:?} out of range for shape {:?}",
            self.shape
        );
        self.data[ravel(idx, &self.shape)]
    }

    /// The largest elementwise `|a - b|`; infinite when the dtypes or shapes
    /// differ or when only one side is NaN, and 0 where both are NaN or the
    /// same infinity.
    pub fn max_abs_diff(&self, other: &Tensor) -> f64 {
        if self.dtype != other.dtype || self.shape != other.shape || self.data.len() != other.data.len() {
            return f64::INFINITY;
        }
        let mut worst = 0.0f64;
        for (&a, &b) in self.data.iter().zip(&other.data) {
            let d = if a == b || (a.is_nan() && b.is_nan()) {
                0.0
            } else if a.is_nan() || b.is_nan() {
                f64::INFINITY
            } else {
                (a - b).abs()
            };
            worst = worst.max(d);
        }
        worst
    }

    /// The largest `|x|` over the elements (0 for an empty tensor).
    pub fn max_abs(&self) -> f64 {
        self.data.iter().fold(0.0, |m, x| m.max(x.abs()))
    }
}

impl fmt::Display for Tensor {
    /// `f32[2, 3]` followed by the elements in row-major order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{} {:?}", self.dtype, shape_str(&self.shape), self.data)
    }
}

/// `[2, 3]`.
pub(crate) fn shape_str(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Number of elements of a shape.
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Flat row-major offset of a multi-index.
pub(crate) fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &s)| acc * s + i)
}

/// The multi-index of a flat row-major offset.
pub(crate) fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &s) in shape.iter().enumerate().rev() {
        idx[i] = flat % s;
        flat /= s;
    }
    idx
}
