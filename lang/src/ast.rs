//! The syntax tree of a `.kl` file, as the parser produces it.
//!
//! Every node carries a [`Span`]. Names are plain strings; the checker
//! resolves them. The grammar is documented in `docs/language.md`.

use std::fmt;

/// Which loaded source file a span points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// The file.
    pub file: FileId,
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span from its parts.
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span { file, start: start as u32, end: end as u32 }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// A name with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where.
    pub span: Span,
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A whole source file.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// Top-level items in source order.
    pub items: Vec<Item>,
}

/// A top-level declaration.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `import "other.kl"`
    Import {
        /// The path as written, relative to the importing file.
        path: String,
        /// Where.
        span: Span,
    },
    /// `config { name = expr ... }`
    Config(Vec<ConfigEntry>),
    /// `dim S = T`: a new axis name with the size of an existing one.
    DimAlias {
        /// The new name.
        name: Ident,
        /// The size it shares.
        target: DimExpr,
    },
    /// `layer Name { param ... }`
    Layer(LayerDef),
    /// A top-level `param`.
    Param(ParamDecl),
    /// `fn` or `pub fn`.
    Fn(FnDef),
}

/// `name = expr` inside `config { }`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigEntry {
    /// The constant's name.
    pub name: Ident,
    /// Its value: integer arithmetic over earlier entries, or a float.
    pub value: Expr,
}

/// A group of parameters that functions receive as one argument.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    /// The layer's name, used as a type in `param` and `fn` signatures.
    pub name: Ident,
    /// Its parameters and sub-layers.
    pub params: Vec<ParamDecl>,
    /// Where.
    pub span: Span,
}

/// `param name: f32[dims] = init` or `param name: Layer` or `param name: Layer[n]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// The parameter's name.
    pub name: Ident,
    /// What it is.
    pub kind: ParamKind,
    /// Where the whole declaration is.
    pub span: Span,
}

/// The two kinds of `param`.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// A tensor with an initializer (`normal(std: 0.02)`, `zeros`, `ones`,
    /// `uniform(low: -0.1, high: 0.1)`, `constant(0.5)`).
    Tensor {
        /// Its type.
        ty: TypeExpr,
        /// The initializer expression.
        init: Expr,
    },
    /// An instance of a layer, optionally stacked `count` times.
    Layer {
        /// The layer's name.
        layer: Ident,
        /// `Some(n)` for `Layer[n]`: n identical blocks with their own weights.
        count: Option<DimExpr>,
    },
}

/// A function definition.
#[derive(Clone, Debug, PartialEq)]
pub struct FnDef {
    /// True for `pub fn`: an entry point that `kiln run` can call.
    pub public: bool,
    /// The function's name.
    pub name: Ident,
    /// Arguments.
    pub args: Vec<Arg>,
    /// Results: one per tuple element; `name` is `None` when unnamed.
    pub results: Vec<(Option<Ident>, TypeExpr)>,
    /// `where` clauses over dims.
    pub wheres: Vec<WhereClause>,
    /// The body.
    pub body: Vec<Stmt>,
    /// Where the signature is (from `fn` to the closing parenthesis of the results).
    pub span: Span,
}

/// One function argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// Its name.
    pub name: Ident,
    /// Its type.
    pub ty: ArgType,
}

/// An argument is a tensor or a layer's parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgType {
    /// `x: f32[B, T, d]`
    Tensor(TypeExpr),
    /// `p: Block`
    Layer(Ident),
}

/// `f32[B, T, n_embd]`; a scalar is `f32[]` or just `f32`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    /// The dtype name as written (`f32`, `bf16`, ...).
    pub dtype: Ident,
    /// The axes.
    pub dims: Vec<DimExpr>,
    /// Where.
    pub span: Span,
}

/// A dimension expression in a type, a `where` clause or a slice bound.
#[derive(Clone, Debug, PartialEq)]
pub enum DimExpr {
    /// An integer literal.
    Int(i64, Span),
    /// A config constant, a dimension variable or an alias.
    Name(Ident),
    /// `a + b`, `a - b`, `a * b`, `a / b`, `a % b`.
    Bin(Box<DimExpr>, DimOp, Box<DimExpr>, Span),
}

impl DimExpr {
    /// Where the expression is.
    pub fn span(&self) -> Span {
        match self {
            DimExpr::Int(_, s) | DimExpr::Bin(_, _, _, s) => *s,
            DimExpr::Name(i) => i.span,
        }
    }

    /// The names it mentions, in the order written.
    pub fn names(&self) -> Vec<&str> {
        match self {
            DimExpr::Int(..) => Vec::new(),
            DimExpr::Name(i) => vec![i.name.as_str()],
            DimExpr::Bin(a, _, b, _) => [a.names(), b.names()].concat(),
        }
    }
}

impl fmt::Display for DimExpr {
    /// The expression as written, fully parenthesized where it nests.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DimExpr::Int(v, _) => write!(f, "{v}"),
            DimExpr::Name(i) => f.write_str(&i.name),
            DimExpr::Bin(a, op, b, _) => {
                let sym = match op {
                    DimOp::Add => "+",
                    DimOp::Sub => "-",
                    DimOp::Mul => "*",
                    DimOp::Div => "/",
                    DimOp::Mod => "%",
                };
                let side = |e: &DimExpr| match e {
                    DimExpr::Bin(..) => format!("({e})"),
                    _ => e.to_string(),
                };
                write!(f, "{} {sym} {}", side(a), side(b))
            }
        }
    }
}

/// Arithmetic on dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum DimOp {
    Add,
    Sub,
    Mul,
    /// Exact division: the checker must prove divisibility.
    Div,
    Mod,
}

/// `where lhs <= rhs`, `where lhs == rhs`, `where lhs % k == 0` (as `Eq` with a `Mod` lhs).
#[derive(Clone, Debug, PartialEq)]
pub struct WhereClause {
    /// Left side.
    pub lhs: DimExpr,
    /// The relation.
    pub op: CmpOp,
    /// Right side.
    pub rhs: DimExpr,
    /// Where.
    pub span: Span,
}

/// A statement in a function body.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `let x = e`, `let x: f32[B, T, S] = e`, `let (a, b) = e` or `let a, b = e`.
    Let {
        /// The bound names (more than one destructures a tuple).
        names: Vec<Ident>,
        /// Optional type ascription (only with a single name): checks the
        /// shape and renames axes, e.g. to a dim alias.
        ty: Option<TypeExpr>,
        /// The value.
        value: Expr,
        /// Where the statement is.
        span: Span,
    },
    /// `return e` or `return (a, b)`: must be the last statement.
    Return(Expr, Span),
}

/// Binary operators in value expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `@`: batched matrix product.
    MatMul,
    /// `**`
    Pow,
    And,
    Or,
}

/// Comparison operators (value expressions and `where` clauses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum UnOp {
    Neg,
    Not,
}

/// A value expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where.
    pub span: Span,
}

/// The forms of value expressions.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// Integer literal.
    Int(i64),
    /// Float literal.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A local, an argument, a parameter, a config constant or a dim.
    Name(String),
    /// A dtype used as a value, as in `cast(x, bf16)`.
    DType(String),
    /// `base.field`: a parameter of a layer argument.
    Field(Box<Expr>, Ident),
    /// `a op b`.
    Binary(Box<Expr>, BinOp, Box<Expr>),
    /// `a == b` etc.
    Compare(Box<Expr>, CmpOp, Box<Expr>),
    /// `-a`, `not a`.
    Unary(UnOp, Box<Expr>),
    /// `f(args, key: value)`: a builtin or a user function.
    Call {
        /// The callee's name.
        func: Ident,
        /// Positional arguments.
        args: Vec<Expr>,
        /// Keyword arguments, in source order.
        kwargs: Vec<(Ident, Expr)>,
    },
    /// `x[i, a:b, :, ...]`: indexing, slicing, and gather by an integer tensor.
    Index(Box<Expr>, Vec<IndexItem>),
    /// `[a, b, c]`: a list, e.g. a shape for `reshape` or axes for `over:`.
    List(Vec<Expr>),
    /// `(a, b)`: a tuple, e.g. in `return (a, b)`.
    Tuple(Vec<Expr>),
    /// `einsum(q: b h t d, k: b h s d -> b h t s)`
    Einsum {
        /// Each operand with its index letters.
        operands: Vec<(Expr, Vec<Ident>)>,
        /// Output index letters.
        output: Vec<Ident>,
    },
    /// `rearrange(x, b t (h d) -> b h t d, h: n_head)`
    Rearrange {
        /// The tensor.
        input: Box<Expr>,
        /// Left-hand pattern.
        from: Vec<PatternAxis>,
        /// Right-hand pattern.
        to: Vec<PatternAxis>,
        /// Sizes given for axes that appear only inside groups.
        sizes: Vec<(Ident, DimExpr)>,
    },
    /// A recurrence over a time axis or a layer stack.
    Scan(Box<Scan>),
}

/// An axis in a rearrange pattern.
#[derive(Clone, Debug, PartialEq)]
pub enum PatternAxis {
    /// A named axis.
    Name(Ident),
    /// `(h d)`: several axes merged into one.
    Group(Vec<Ident>, Span),
    /// `1`: an axis of size one.
    Unit(Span),
}

/// One item inside `x[...]`.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexItem {
    /// A single position (an integer) or an integer tensor (gather).
    At(Expr),
    /// `start:end:step`, each part optional. The bounds are parsed as value
    /// expressions (the grammar cannot tell them apart from an index) and the
    /// checker reads them as dimension expressions.
    Range {
        /// First index (default 0); may be negative.
        start: Option<Expr>,
        /// End (default: the axis length); may be negative.
        end: Option<Expr>,
        /// Stride (default 1).
        step: Option<Expr>,
        /// Where.
        span: Span,
    },
    /// `...`: as many full axes as needed.
    Ellipsis(Span),
}

/// `scan x_t in xs over T, m_t in ms with h = h0, c = c0 { stmts; next h = e, c = e; emit y }`
///
/// The value is a tuple: the final carries, then each emitted value stacked
/// along a new leading axis (a single value when there is only one).
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    /// `name in sequence [over AXIS]`; a layer stack iterates its layers.
    pub seqs: Vec<(Ident, Expr, Option<DimExpr>)>,
    /// `name = initial value`.
    pub carries: Vec<(Ident, Expr)>,
    /// Statements of the body.
    pub body: Vec<Stmt>,
    /// `next name = expr`, one per carry, in any order.
    pub next: Vec<(Ident, Expr)>,
    /// `emit a, b`: the per-step outputs.
    pub emit: Vec<Expr>,
}
