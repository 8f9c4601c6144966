//! The operations of the graph IR.
//!
//! Ops are few and explicit: broadcasting is a separate `broadcast` node, so
//! elementwise ops always see operands of one shape, and surface sugar
//! (einsum, rearrange, masks, losses) is lowered to these by the front end.

use crate::{Attention, DType, DimExpr, Graph};

/// Elementwise functions of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum UnaryOp {
    Neg, Abs, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Relu,
    /// `x * Φ(x)` with the exact normal CDF (erf form).
    Gelu,
    /// GPT-2's tanh approximation of GELU.
    GeluTanh,
    /// `x * sigmoid(x)`.
    Silu,
    Erf, Sin, Cos,
    /// Logical not on bool.
    Not,
}

/// Elementwise functions of two arguments of one shape and dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add, Sub, Mul,
    /// Division; on integers it truncates toward zero.
    Div,
    Pow, Max, Min,
    /// Logical and/or on bool.
    And, Or,
}

/// Elementwise comparisons; the result is bool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum CmpOp { Eq, Ne, Lt, Le, Gt, Ge }

impl CmpOp {
    /// Whether `a op b` holds; comparisons with NaN are false except `ne`,
    /// as in IEEE arithmetic.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// Integer `a^b`: wrapping for `b >= 0`; for `b < 0` it is `1 / a^-b`
/// truncated toward zero, so only `a = ±1` survive, and `a = 0` is a
/// division by zero (`None`).
pub fn int_pow(a: i64, b: i64) -> Option<i64> {
    if b < 0 {
        return match a {
            0 => None,
            1 => Some(1),
            -1 => Some(if b % 2 == 0 { 1 } else { -1 }),
            _ => Some(0),
        };
    }
    let (mut base, mut e, mut acc) = (a, b as u64, 1i64);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    Some(acc)
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ReduceOp {
    Sum, Mean, Max, Min,
    /// Index of the first maximum (exactly one axis; result i64).
    ArgMax,
}

/// How a parameter's initial value is drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// Normal distribution.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Uniform distribution on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Every element the same value (`zeros`, `ones`, `constant(c)`).
    Constant(f64),
}

/// One graph operation. The node's [`crate::Type`] carries the result type;
/// ops that need an output shape (broadcast, reshape, iota, one_hot) read it
/// from there.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The entry point's `index`-th argument.
    Input {
        /// Argument position.
        index: u32,
    },
    /// A model parameter, by index into [`crate::Module::params`].
    Param {
        /// Parameter index.
        index: u32,
    },
    /// A scalar constant (rank 0) of the node's dtype.
    Const {
        /// The value.
        value: f64,
    },
    /// `0, 1, 2, ...` along `axis`, repeated over the other axes of the node's shape.
    Iota {
        /// Axis that counts.
        axis: u32,
    },
    /// Elementwise unary.
    Unary(UnaryOp),
    /// Elementwise binary.
    Binary(BinaryOp),
    /// Elementwise comparison.
    Compare(CmpOp),
    /// `select(cond, a, b)`: `a` where cond is true, else `b`.
    Select,
    /// Converts to the node's dtype.
    Cast,
    /// Numpy broadcast of the single argument to the node's shape: axes are
    /// aligned on the right; each input axis is 1 or equal to the output's.
    Broadcast,
    /// Same elements in row-major order, new shape (the node's).
    Reshape,
    /// Permutes axes: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<u32>,
    },
    /// Reduction over `axes`.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// Reduced axes, sorted.
        axes: Vec<u32>,
        /// Keep reduced axes with size 1.
        keepdim: bool,
    },
    /// Batched matrix product `a[..., m, k] @ b[..., k, n]`; batch axes equal.
    MatMul,
    /// `exp(x - max) / sum(exp(x - max))` along `axis`.
    Softmax {
        /// The normalized axis.
        axis: u32,
    },
    /// `x - max - log(sum(exp(x - max)))` along `axis`.
    LogSoftmax {
        /// The normalized axis.
        axis: u32,
    },
    /// `(x - mean) / sqrt(var + eps) * gamma + beta` along the last axis;
    /// arguments `x, gamma, beta` with gamma and beta 1-d.
    LayerNorm {
        /// Added to the variance.
        eps: f64,
    },
    /// `x / sqrt(mean(x^2) + eps) * gamma` along the last axis; arguments `x, gamma`.
    RmsNorm {
        /// Added to the mean square.
        eps: f64,
    },
    /// Joins the arguments along `axis`.
    Concat {
        /// The joined axis.
        axis: u32,
    },
    /// Elements `start, start+step, ...` below `end` along `axis`.
    Slice {
        /// The sliced axis.
        axis: u32,
        /// First index.
        start: DimExpr,
        /// One past the last index considered.
        end: DimExpr,
        /// Stride, at least 1.
        step: u32,
    },
    /// Embedding lookup: `table[..., idx, ...]` along `axis`; the result's
    /// shape is `table[..axis] ++ idx.shape ++ table[axis+1..]`.
    Gather {
        /// The table axis that indices select along.
        axis: u32,
    },
    /// `idx` (integer) to a one-hot tensor with a new last axis of the node's
    /// last size, in the node's dtype.
    OneHot,
    /// A loop over the leading axis of its sequence arguments.
    ///
    /// Arguments: `n_carry` initial carries, then `n_seq` sequences (all with
    /// the same leading length), then captured values. The body graph's
    /// inputs are, in order, the carries, one slice of each sequence (leading
    /// axis removed) and the captures; its outputs are the new carries, then
    /// the per-step outputs. The result is a tuple: final carries, then each
    /// per-step output stacked along a new leading axis.
    Scan {
        /// The loop body.
        body: Box<Graph>,
        /// Number of carried values.
        n_carry: u32,
        /// Number of sequences iterated over.
        n_seq: u32,
    },
    /// Inverted dropout: element `i` (row-major) of `x` is multiplied by
    /// `1 / (1 - p)` when `rng::keep(seed, i, p)` and by `0` otherwise (so
    /// NaN and ±∞ propagate, as in PyTorch).
    /// Arguments `x` (float) and `seed` (rank-0 i64, see [`crate::rng`]);
    /// the same seed draws the same mask, so the gradient is a dropout of
    /// the cotangent with the same seed. Evaluation graphs have none:
    /// [`crate::dropout::inference`] removes them.
    Dropout {
        /// The probability of zeroing an element, in `[0, 1)`.
        p: f64,
    },
    /// Fused attention (see [`crate::attention`]); built by the optimizer,
    /// never by the front end. Arguments `q, k, v` and the mask, if any;
    /// the result is the tuple `(o, lse)`.
    Attention(Box<Attention>),
    /// The fused attention's backward pass: arguments as the forward's,
    /// then `o`, `lse` and the cotangent of `o`; the result is the tuple
    /// `(dq, dk, dv)`. Probabilities are recomputed from `lse`.
    AttentionGrad(Box<Attention>),
    /// Element `index` of a tuple (the result of a scan or attention).
    Extract {
        /// Tuple position.
        index: u32,
    },
}

impl Op {
    /// The op's name in IR text.
    pub fn name(&self) -> String {
        let lower = |s: String| s.to_lowercase();
        match self {
            Op::Input { .. } => "input".into(),
            Op::Param { .. } => "param".into(),
            Op::Const { .. } => "const".into(),
            Op::Iota { .. } => "iota".into(),
            Op::Unary(u) => lower(format!("{u:?}")),
            Op::Binary(b) => lower(format!("{b:?}")),
            Op::Compare(c) => lower(format!("{c:?}")),
            Op::Select => "select".into(),
            Op::Cast => "cast".into(),
            Op::Broadcast => "broadcast".into(),
            Op::Reshape => "reshape".into(),
            Op::Transpose { .. } => "transpose".into(),
            Op::Reduce { op, .. } => format!("reduce_{}", lower(format!("{op:?}"))),
            Op::MatMul => "matmul".into(),
            Op::Softmax { .. } => "softmax".into(),
            Op::LogSoftmax { .. } => "log_softmax".into(),
            Op::LayerNorm { .. } => "layernorm".into(),
            Op::RmsNorm { .. } => "rmsnorm".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Slice { .. } => "slice".into(),
            Op::Gather { .. } => "gather".into(),
            Op::OneHot => "one_hot".into(),
            Op::Dropout { .. } => "dropout".into(),
            Op::Scan { .. } => "scan".into(),
            Op::Attention(_) => "attention".into(),
            Op::AttentionGrad(_) => "attention_grad".into(),
            Op::Extract { .. } => "extract".into(),
        }
    }

    /// True for ops whose result dtype must be bool.
    pub fn yields_bool(&self) -> bool {
        matches!(self, Op::Compare(_))
    }

    /// The dtype an op forces on its result, if any.
    pub fn fixed_dtype(&self) -> Option<DType> {
        match self {
            Op::Compare(_) => Some(DType::Bool),
            Op::Reduce { op: ReduceOp::ArgMax, .. } => Some(DType::I64),
            _ => None,
        }
    }
}
