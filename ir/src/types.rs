//! Tensor types: a dtype and a shape of symbolic dimensions.

use crate::{DType, DimExpr};
use std::fmt;

/// The type of one tensor value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// One symbolic size per axis; empty for a scalar.
    pub shape: Vec<DimExpr>,
}

impl TensorType {
    /// A tensor type from its parts.
    pub fn new(dtype: DType, shape: Vec<DimExpr>) -> TensorType {
        TensorType { dtype, shape }
    }

    /// A rank-0 tensor.
    pub fn scalar(dtype: DType) -> TensorType {
        TensorType { dtype, shape: Vec::new() }
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The product of all sizes, symbolically.
    pub fn numel(&self) -> DimExpr {
        self.shape.iter().fold(DimExpr::constant(1), |acc, d| acc.mul(d))
    }

    /// [`TensorType::numel`], or `None` if a coefficient overflows `i64`.
    pub fn checked_numel(&self) -> Option<DimExpr> {
        self.shape.iter().try_fold(DimExpr::constant(1), |acc, d| acc.checked_mul(d))
    }

    /// The same shape with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType { dtype, shape: self.shape.clone() }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a node's result: one tensor, or a tuple of tensors (only
/// `scan` produces tuples; `extract` takes them apart).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// A single tensor.
    Tensor(TensorType),
    /// Several tensors.
    Tuple(Vec<TensorType>),
}

impl Type {
    /// The tensor type, or `None` for a tuple.
    pub fn tensor(&self) -> Option<&TensorType> {
        match self {
            Type::Tensor(t) => Some(t),
            Type::Tuple(_) => None,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Tensor(t) => write!(f, "{t}"),
            Type::Tuple(ts) => {
                f.write_str("(")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str(")")
            }
        }
    }
}
