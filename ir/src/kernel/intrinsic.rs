//! Graph nodes a backend may implement its own way: the scheduler lowers
//! each to generic kernels (correct everywhere) and also records what the
//! node computes, on which memory, so a backend with a hand-written kernel
//! for it (FlashAttention on tensor cores) can run that instead.
//!
//! Invariant (checked by [`super::verify::program`]): the kernels of an
//! intrinsic are consecutive ids, launched in id order by consecutive
//! `Launch` steps of one step list and by no other step. They read only
//! the intrinsic's `args` (and temporaries they write themselves) and write
//! its `results`. So a backend may skip all of those launches and, where
//! the first one would run, run its own implementation that reads `args`
//! and writes `results` (view offsets evaluated with the host loop counters
//! of that point).

use super::{BufId, HostOffset};
use crate::AttnMask;
use std::ops::Range;

/// One recorded node.
#[derive(Clone, Debug, PartialEq)]
pub struct Intrinsic {
    /// What the node computes.
    pub op: IntrinsicOp,
    /// The generic kernels that implement it (see the module invariant).
    pub kernels: Range<u32>,
    /// The node's arguments in its own order; `None` where an argument is
    /// no strided view of memory (its values are computed on the fly).
    pub args: Vec<Option<TensorView>>,
    /// The node's results, each dense in its shape.
    pub results: Vec<TensorView>,
}

/// The nodes that are recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum IntrinsicOp {
    /// `attention(q, k, v[, mask][, seed]) -> (o, lse)` (see [`crate::attention`]).
    Attention(AttentionCall),
    /// `attention_grad(q, k, v[, mask][, seed], o, lse, do) -> (dq, dk, dv)`.
    AttentionGrad(AttentionCall),
}

/// An attention node's attributes with concrete values. Sizes follow from
/// the argument views: `q` is `[..., Hq, Sq, D]`, `k` `[..., Hkv, Sk, D]`,
/// `v` `[..., Hkv, Sk, Dv]`; dtypes from their buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionCall {
    /// Multiplies `q · k` before masking.
    pub scale: f64,
    /// Key `j` is visible to query `i` iff `j <= i + c`.
    pub causal: Option<i64>,
    /// Query heads per key/value head.
    pub group: u32,
    /// The mask argument, if any.
    pub mask: AttnMask,
    /// Dropout on the probabilities (0: none; else a seed argument follows).
    pub dropout: f64,
}

/// A strided tensor in a buffer: element `idx` is at
/// `offset + Σ idx[a] · strides[a]` (in elements).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorView {
    /// The buffer.
    pub buf: BufId,
    /// Element `(0, ..., 0)`.
    pub offset: HostOffset,
    /// Extent of each axis.
    pub shape: Vec<u64>,
    /// Elements between neighbours along each axis.
    pub strides: Vec<u64>,
}

impl TensorView {
    /// A row-major tensor of `shape` at `offset`.
    pub fn dense(buf: BufId, offset: HostOffset, shape: Vec<u64>) -> TensorView {
        let mut strides = vec![0; shape.len()];
        let mut s = 1;
        for (st, &n) in strides.iter_mut().zip(&shape).rev() {
            *st = s;
            s *= n;
        }
        TensorView { buf, offset, shape, strides }
    }

    /// Whether the elements are row-major and contiguous (axes of extent 1
    /// may have any stride).
    pub fn is_dense(&self) -> bool {
        let want = TensorView::dense(self.buf, self.offset.clone(), self.shape.clone());
        self.shape.iter().zip(self.strides.iter().zip(&want.strides)).all(|(&n, (s, w))| n == 1 || s == w)
    }

    /// One past the largest element index relative to `offset` (0 when empty).
    pub fn extent(&self) -> u64 {
        if self.shape.contains(&0) {
            return 0;
        }
        1 + self.shape.iter().zip(&self.strides).map(|(n, s)| (n - 1) * s).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_views() {
        let v = TensorView::dense(BufId(0), HostOffset::default(), vec![2, 3, 4]);
        assert_eq!(v.strides, [12, 4, 1]);
        assert!(v.is_dense());
        assert_eq!(v.extent(), 24);
        // [B, S, H, D] read as [B, H, S, D]: strided, not dense.
        let t = TensorView { strides: vec![24, 4, 8, 1], shape: vec![2, 2, 3, 4], ..v.clone() };
        assert!(!t.is_dense());
        assert_eq!(t.extent(), 24 + 4 + 16 + 3 + 1);
        // a size-1 axis may have any stride
        let one = TensorView { shape: vec![1, 3, 4], strides: vec![99, 4, 1], ..v };
        assert!(one.is_dense());
    }
}
