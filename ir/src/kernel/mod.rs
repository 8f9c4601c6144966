//! The loop-level kernel IR that every backend consumes.
//!
//! A [`Program`] is what one entry point becomes once its shapes are
//! concrete: flat buffers, kernels, and host [`Step`]s that launch kernels
//! (possibly inside counted loops, for `scan`). A [`Kernel`] is a 1-d grid
//! of tiles; its body runs once per tile with [`Expr::Tile`] bound to the
//! tile's index, so tiles are independent and may run on any thread (CPU)
//! or CTA (GPU). Inside, statements are loop nests over scalar expressions:
//! loads, stores, reductions, [`Gemm`] for matrix-product tiles, and
//! [`Stmt::If`] guards around work a tile can skip.
//!
//! Semantics are scalar; a loop or reduction marked `vector` promises the
//! backend that its iterations are independent (reductions: associative),
//! so it may run them in SIMD lanes in any grouping. Sizes are concrete:
//! backends never see a symbolic dimension.
//!
//! Invariants (checked by [`verify::kernel`]): every variable is defined
//! before use and once; loads and stores name a kernel argument or a
//! scratch array; index expressions are `i64`; `Gemm` operands are float.
//!
//! [`Program::intrinsics`] records graph nodes (attention) next to the
//! generic kernels that implement them, so a backend may substitute its own
//! kernels for those launches; the invariant that makes this safe is in
//! [`intrinsic`] (checked by [`verify::program`]). Backends that ignore the
//! list run the generic kernels and get the same results.

pub mod check;
pub mod cost;
pub mod eval;
pub mod intrinsic;
pub mod print;
pub mod verify;

pub use intrinsic::{AttentionCall, Intrinsic, IntrinsicOp, TensorView};

use crate::{BinaryOp, CmpOp, DType, UnaryOp};

/// A program-level buffer handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

/// A kernel handle, an index into [`Program::kernels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelId(pub u32);

/// A variable inside a kernel: a loop index, a `let` or a reduction result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// A host loop counter (the step index of a `scan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostVar(pub u32);

/// What a buffer holds and who owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufKind {
    /// The entry point's argument `i` (read only).
    Input(u32),
    /// Module parameter `i` (read only).
    Param(u32),
    /// The entry point's result `i`.
    Output(u32),
    /// An intermediate; its memory is planned by the runtime.
    Temp,
    /// The run's status words ([`check`]): zero before the run, read after.
    Status,
}

/// A flat, row-major array of one dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// Element type.
    pub dtype: DType,
    /// Number of elements.
    pub len: u64,
    /// Role.
    pub kind: BufKind,
    /// A readable name for dumps (`%12`, `logits`, `wte`).
    pub name: String,
}

/// An element offset on the host: `constant + Σ coeff·var`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HostOffset {
    /// Constant part, in elements.
    pub constant: u64,
    /// Per-loop-counter strides, in elements.
    pub terms: Vec<(HostVar, u64)>,
}

impl HostOffset {
    /// Evaluates with the current host loop counters (`counters[v]`).
    pub fn eval(&self, counters: &[u64]) -> u64 {
        self.constant + self.terms.iter().map(|(v, c)| counters[v.0 as usize] * c).sum::<u64>()
    }
}

/// A window into a buffer: where a kernel argument starts.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// The buffer.
    pub buf: BufId,
    /// The first element the kernel sees as its index 0.
    pub offset: HostOffset,
}

/// What the host does, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Runs every tile of a kernel; `args` are parallel to [`Kernel::args`].
    Launch {
        /// The kernel.
        kernel: KernelId,
        /// One view per kernel argument.
        args: Vec<View>,
    },
    /// Runs `body` `count` times with `var` = 0, 1, ...
    Repeat {
        /// The loop counter, usable in view offsets.
        var: HostVar,
        /// Trip count.
        count: u64,
        /// The steps of one iteration.
        body: Vec<Step>,
    },
    /// Copies `len` elements (same dtype) from `src` to `dst`.
    Copy {
        /// Destination.
        dst: View,
        /// Source.
        src: View,
        /// Elements.
        len: u64,
    },
}

/// A compiled entry point: buffers, kernels and the host schedule.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    /// Every buffer; inputs, params and outputs are marked by their kind.
    pub buffers: Vec<Buffer>,
    /// Every kernel.
    pub kernels: Vec<Kernel>,
    /// What runs, in order.
    pub steps: Vec<Step>,
    /// Nodes a backend may run with its own kernels instead of the generic
    /// ones (see [`intrinsic`]).
    pub intrinsics: Vec<Intrinsic>,
    /// The index check sites of [`Expr::Checked`], by site number.
    pub checks: Vec<check::Site>,
}

/// How a kernel uses an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only loads.
    Read,
    /// Only stores.
    Write,
    /// Both.
    ReadWrite,
}

/// A kernel argument: a pointer to `len` elements of `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// Element type.
    pub dtype: DType,
    /// Elements the kernel may touch, from index 0.
    pub len: u64,
    /// Loads, stores or both.
    pub access: Access,
}

/// Per-tile scratch memory (shared memory on a GPU, a stack array on a CPU).
#[derive(Clone, Debug, PartialEq)]
pub struct Scratch {
    /// Element type.
    pub dtype: DType,
    /// Elements.
    pub len: u64,
}

/// Memory that loads and stores address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mem {
    /// Kernel argument `i`.
    Arg(u32),
    /// Scratch array `i`.
    Scratch(u32),
}

/// One kernel: a grid of independent tiles running `body`.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// A readable name (`k3_layernorm_gelu_add`).
    pub name: String,
    /// Arguments, in call order.
    pub args: Vec<Arg>,
    /// Per-tile scratch arrays.
    pub scratch: Vec<Scratch>,
    /// Number of tiles.
    pub grid: u64,
    /// The statements each tile runs.
    pub body: Vec<Stmt>,
}

/// Reductions available to [`Stmt::Reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedOp {
    /// Σ, starting from 0.
    Sum,
    /// Maximum, starting from -∞ (NaN propagates).
    Max,
    /// Minimum, starting from +∞ (NaN propagates).
    Min,
    /// Index (i64) of the first maximum of the value.
    ArgMax,
}

/// A statement inside a kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in 0..extent { body }`.
    Loop {
        /// The index (i64).
        var: Var,
        /// Trip count.
        extent: u64,
        /// Iterations are independent: SIMD lanes are allowed.
        vector: bool,
        /// The loop body.
        body: Vec<Stmt>,
    },
    /// `var = value` (immutable).
    Let {
        /// The new variable.
        var: Var,
        /// Its value.
        value: Expr,
    },
    /// `var = op over index in 0..extent of value`.
    Reduce {
        /// The result; its dtype is `value`'s (i64 for `ArgMax`).
        var: Var,
        /// The reduction.
        op: RedOp,
        /// The index bound inside `value`.
        index: Var,
        /// Trip count.
        extent: u64,
        /// Any grouping of the terms is allowed (SIMD partial sums).
        vector: bool,
        /// The reduced expression.
        value: Expr,
    },
    /// `mem[index] = value` (converted to the memory's dtype).
    Store {
        /// Where.
        mem: Mem,
        /// Element index (i64).
        index: Expr,
        /// What.
        value: Expr,
    },
    /// A matrix-product tile.
    Gemm(Gemm),
    /// `if cond { body }`: runs `body` only when the bool `cond` holds
    /// (work a tile can prove useless, such as key blocks above a causal
    /// diagonal). Variables defined in `body` are local to it.
    If {
        /// The condition (bool).
        cond: Expr,
        /// What runs when it holds.
        body: Vec<Stmt>,
    },
}

/// A strided matrix inside some memory: element `(r, c)` is at
/// `offset + r * row_stride + c * col_stride`.
#[derive(Clone, Debug, PartialEq)]
pub struct Operand {
    /// The memory.
    pub mem: Mem,
    /// Element `(0, 0)` (an i64 expression, e.g. of the tile index).
    pub offset: Expr,
    /// Elements between rows.
    pub row_stride: u64,
    /// Elements between columns.
    pub col_stride: u64,
}

/// `c = a @ b` (or `c += a @ b`) for an `m × k` by `k × n` tile, computed
/// in f32 whatever the storage dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Rows of a and c.
    pub m: u64,
    /// Columns of b and c.
    pub n: u64,
    /// The contracted size.
    pub k: u64,
    /// Left operand.
    pub a: Operand,
    /// Right operand.
    pub b: Operand,
    /// Result.
    pub c: Operand,
    /// Add to c instead of overwriting it.
    pub accumulate: bool,
}

/// A scalar expression; its dtype follows from its parts (see
/// [`verify::expr_dtype`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant of a dtype.
    Const(f64, DType),
    /// A variable.
    Var(Var),
    /// The current tile's index (i64).
    Tile,
    /// `mem[index]`, converted from storage (bf16, f16) to its compute type.
    Load(Mem, Box<Expr>),
    /// Elementwise unary.
    Unary(UnaryOp, Box<Expr>),
    /// Elementwise binary (operands of one dtype).
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// Integer remainder (i64, truncating like `Div`): index arithmetic.
    Rem(Box<Expr>, Box<Expr>),
    /// Comparison; bool.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `cond ? a : b`.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Conversion.
    Cast(DType, Box<Expr>),
    /// `rng::uniform(seed, counter)`: a uniform f32 in `[0, 1)` from two
    /// i64 operands read as u64 (see [`crate::rng`]); bit-exact on every
    /// backend.
    Rand(Box<Expr>, Box<Expr>),
    /// An index read from data, clamped into its range; an index outside
    /// it fails the program (see [`check`]).
    Checked(Box<check::Checked>),
}

impl Expr {
    /// An i64 constant (indices).
    pub fn idx(v: u64) -> Expr {
        Expr::Const(v as f64, DType::I64)
    }

    /// `a + b`, folding constant zeros.
    pub fn add(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Const(x, _), _) if *x == 0.0 => b,
            (_, Expr::Const(y, _)) if *y == 0.0 => a,
            (Expr::Const(x, d), Expr::Const(y, _)) => Expr::Const(x + y, *d),
            _ => Expr::Binary(BinaryOp::Add, Box::new(a), Box::new(b)),
        }
    }

    /// `a * b`, folding constant ones and zeros.
    pub fn mul(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Const(x, _), _) if *x == 1.0 => b,
            (_, Expr::Const(y, _)) if *y == 1.0 => a,
            (Expr::Const(x, d), _) | (_, Expr::Const(x, d)) if *x == 0.0 => Expr::Const(0.0, *d),
            (Expr::Const(x, d), Expr::Const(y, _)) => Expr::Const(x * y, *d),
            _ => Expr::Binary(BinaryOp::Mul, Box::new(a), Box::new(b)),
        }
    }

    /// A loop or let variable.
    pub fn var(v: Var) -> Expr {
        Expr::Var(v)
    }
}
