//! Fused attention: the node the optimizer builds when it recognizes
//! `softmax(q @ transpose(k) * scale + mask) @ v` written as plain math.
//!
//! No `.kl` text names it; it exists so the scheduler can emit an IO-aware
//! tiled kernel (FlashAttention) instead of materializing the score matrix.
//!
//! Layout: `q` is `[..., Hq, Sq, D]`, `k` is `[..., Hkv, Sk, D]` and `v` is
//! `[..., Hkv, Sk, Dv]`, with `Hq = group * Hkv` (grouped-query attention:
//! query head `h` reads key/value head `h / group`; with `group == 1` the
//! head axis is an ordinary batch axis and rank 2 is allowed). Transposed
//! layouts reach the node as `transpose` arguments, which the scheduler
//! reads in place.
//!
//! Semantics, for each batch index, query head `h` and query `i`:
//! `s[j] = scale * (q[i] · k[j])`, plus `mask[i, j]` for an additive bias,
//! or `-inf` where a keep-mask is false or, when causal with offset `c`,
//! where `j > i + c`; then `m[i] = max_j s[j]`, `ls[i] = log Σ_j
//! exp(s[j] - m[i])` and `o[i] = Σ_j P[i, j] v[j]` with
//! `P[i, j] = exp((s[j] - m[i]) - ls[i])`. The second result, `lse`, holds
//! the logsumexp `m + ls` as the pair `lse[i] = [m[i], ls[i]]`: one f32 sum
//! would round `ls` away next to a large `|m|` (a row whose every key is
//! masked by a large finite bias, −1e9 or `f32::MIN`, where `ls = log Sk`
//! is all that makes the row a mean), and the backward recomputes `P` from
//! it. A row with every key masked by `-inf` gives NaN (`ls` is NaN),
//! exactly as the naive softmax does, so fusing never changes results
//! beyond rounding.
//!
//! With dropout `p > 0` (the naive `dropout(softmax(s), p) @ v`), a last
//! argument holds the seed and the probabilities are dropped before they
//! meet `v`: `o[i] = Σ_j z[i, j] / (1 - p) · P[i, j] v[j]`,
//! where `z[i, j] = rng::keep(seed, (row(i) · Sk + j), p)` and `row(i)` is
//! the flat index of query `i` in `[..., Hq, Sq]`, so `row(i) · Sk + j` is
//! the score element's flat index, the counter the naive dropout draws
//! with. `lse` is the undropped logsumexp. The backward pass, with
//! `Δ[i] = Σ_e do[i, e] o[i, e]` and `dp[i, j] = do[i] · v[j]`, gives
//! `dv[j] = Σ_i z/(1-p) · P[i, j] do[i]` and
//! `ds[i, j] = P[i, j] (z/(1-p) · dp[i, j] - Δ[i])`.

use crate::{DType, DimExpr, TensorType};
use std::fmt;

/// The extra mask argument of an attention node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttnMask {
    /// No mask argument.
    None,
    /// An additive bias of the scores' shape `[..., Hq, Sq, Sk]` and the
    /// scores' dtype (ALiBi, relative positions, `-inf` padding).
    Bias,
    /// A bool mask of the scores' shape: keys where it is false are
    /// excluded (key padding, arbitrary sparsity patterns).
    Keep,
}

/// Which tiled algorithm the scheduler emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttnVariant {
    /// FlashAttention-1: outer loop over K/V blocks, inner over Q blocks,
    /// with the output and row statistics kept in memory between blocks.
    Fa1,
    /// FlashAttention-2: each worker owns a Q block and streams K/V,
    /// normalizing once at the end and skipping fully masked blocks.
    Fa2,
}

/// The attributes of an attention node (shared by its forward and
/// backward ops).
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    /// Multiplies `q · k` before masking.
    pub scale: f64,
    /// Causal masking: key `j` is visible to query `i` iff `j <= i + c`
    /// (`c = 0` when queries and keys are the same positions; `Sk - Sq`
    /// for queries that continue a KV cache).
    pub causal: Option<DimExpr>,
    /// The extra mask argument, if any.
    pub mask: AttnMask,
    /// Query heads per key/value head (1 without GQA).
    pub group: u32,
    /// Dropout on the probabilities (0 for none); when positive, the
    /// last forward argument is the rank-0 i64 seed.
    pub dropout: f64,
    /// The kernel to emit.
    pub variant: AttnVariant,
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scale={}", self.scale)?;
        if let Some(c) = &self.causal {
            write!(f, ", causal={c}")?;
        }
        match self.mask {
            AttnMask::None => {}
            AttnMask::Bias => f.write_str(", mask=bias")?,
            AttnMask::Keep => f.write_str(", mask=keep")?,
        }
        if self.group != 1 {
            write!(f, ", group={}", self.group)?;
        }
        if self.dropout != 0.0 {
            write!(f, ", dropout={}", self.dropout)?;
        }
        f.write_str(match self.variant {
            AttnVariant::Fa1 => ", fa1",
            AttnVariant::Fa2 => ", fa2",
        })
    }
}

impl Attention {
    /// Number of arguments of the forward op: `q, k, v`, the mask and
    /// the dropout seed, each when present.
    pub fn forward_arity(&self) -> usize {
        3 + usize::from(self.mask != AttnMask::None) + usize::from(self.dropout != 0.0)
    }

    /// The position of the dropout seed among the arguments, if any.
    pub fn seed_arg(&self) -> Option<usize> {
        (self.dropout != 0.0).then(|| self.forward_arity() - 1)
    }

    /// Number of arguments of the backward op: the forward's, then `o`,
    /// `lse` and `do` (the output's cotangent).
    pub fn backward_arity(&self) -> usize {
        self.forward_arity() + 3
    }

    /// The forward op's result types, `(o, lse)`, from its argument types;
    /// `lse` is always f32, shaped like `o` with a last axis of 2: `[m, ls]`
    /// (see the module docs).
    pub fn forward_types(&self, a: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        if a.len() != self.forward_arity() {
            return Err(format!("takes {} arguments, got {}", self.forward_arity(), a.len()));
        }
        let (q, k, v) = (a[0], a[1], a[2]);
        if !q.dtype.is_float() || k.dtype != q.dtype || v.dtype != q.dtype {
            return Err(format!("q, k, v must share one float dtype, got {}, {}, {}", q.dtype, k.dtype, v.dtype));
        }
        let r = q.rank();
        let min_rank = if self.group == 1 { 2 } else { 3 };
        if r < min_rank || k.rank() != r || v.rank() != r {
            return Err(format!("q, k, v need one rank of at least {min_rank}, got {q}, {k}, {v}"));
        }
        if self.group == 0 {
            return Err("the group size must be at least 1".into());
        }
        let lead = if self.group == 1 { r - 2 } else { r - 3 };
        if q.shape[..lead] != k.shape[..lead] || k.shape[..r - 1] != v.shape[..r - 1] {
            return Err(format!("batch axes or key lengths disagree: q {q}, k {k}, v {v}"));
        }
        if self.group != 1 && q.shape[r - 3] != k.shape[r - 3].mul(&DimExpr::constant(self.group as i64)) {
            return Err(format!("{} query heads are not {} x {} key heads", q.shape[r - 3], self.group, k.shape[r - 3]));
        }
        if q.shape[r - 1] != k.shape[r - 1] {
            return Err(format!("q and k head sizes differ: {q} vs {k}"));
        }
        if self.mask != AttnMask::None {
            let mut want = q.shape[..r - 1].to_vec();
            want.push(k.shape[r - 2].clone());
            let dtype = if self.mask == AttnMask::Bias { q.dtype } else { DType::Bool };
            let want = TensorType::new(dtype, want);
            if *a[3] != want {
                return Err(format!("the mask should be {want}, got {}", a[3]));
            }
        }
        if let Some(s) = self.seed_arg() {
            if !(0.0..1.0).contains(&self.dropout) {
                return Err(format!("the dropout probability {} is outside [0, 1)", self.dropout));
            }
            if a[s].dtype != DType::I64 || a[s].rank() != 0 {
                return Err(format!("the dropout seed should be i64[], got {}", a[s]));
            }
        }
        let mut o = q.shape[..r - 1].to_vec();
        o.push(v.shape[r - 1].clone());
        let mut lse = q.shape[..r - 1].to_vec();
        lse.push(DimExpr::constant(2));
        Ok(vec![TensorType::new(q.dtype, o), TensorType::new(DType::F32, lse)])
    }

    /// The backward op's result types, `(dq, dk, dv)`, after checking that
    /// `o`, `lse` and `do` match the forward's results.
    pub fn backward_types(&self, a: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        if a.len() != self.backward_arity() {
            return Err(format!("takes {} arguments, got {}", self.backward_arity(), a.len()));
        }
        let n = self.forward_arity();
        let fwd = self.forward_types(&a[..n])?;
        let (o, lse, dout) = (a[n], a[n + 1], a[n + 2]);
        if *o != fwd[0] || *lse != fwd[1] || *dout != fwd[0] {
            return Err(format!(
                "o, lse, do should be {}, {}, {}; got {o}, {lse}, {dout}",
                fwd[0], fwd[1], fwd[0]
            ));
        }
        Ok(vec![a[0].clone(), a[1].clone(), a[2].clone()])
    }
}
