//! The e-graph language: one e-node per graph op, its attributes as leaf
//! children (so rule patterns can bind and test them), then its arguments.
//!
//! Attributes that are not small integers (types, dims, permutations, scan
//! bodies, attention attributes) are interned in [`super::analysis::Tables`]
//! and referenced by index, which keeps e-nodes cheap to hash and compare.

use egg::{FromOp, Id, Language};
use std::fmt;

/// An attribute leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attr {
    /// A small integer: an axis, an index, a step, a flag.
    Int(i64),
    /// A float (its bits): a constant's value, an epsilon.
    Num(u64),
    /// An interned result type.
    Ty(u32),
    /// An interned dimension expression.
    Dim(u32),
    /// An interned list of axes (a permutation, reduced axes).
    Ints(u32),
    /// An interned scan (body, counts, result type).
    Scan(u32),
    /// Interned attention attributes.
    Attn(u32),
}

/// One e-node: an attribute leaf, or an op by name with its children
/// (attribute leaves first, then arguments).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ENode {
    /// An attribute.
    Leaf(Attr),
    /// An op (a graph op's IR name, or a pseudo-op of the rules).
    Op(&'static str, Vec<Id>),
}

/// What `Language::matches` compares: the leaf, or the name and arity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Disc {
    /// A leaf matches only itself.
    Leaf(Attr),
    /// An op matches ops of one name and arity.
    Op(&'static str, usize),
}

/// Pseudo-ops only rules create: the scores `scale * q @ k^T` with the mask
/// so far (`sdp`), and the same with a mask argument (`sdp_masked`). They
/// are never extracted.
pub const PSEUDO: [&str; 2] = ["sdp", "sdp_masked"];

/// Every op name the language knows, graph ops first.
pub fn names() -> &'static [&'static str] {
    &[
        "input", "param", "const", "iota", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu",
        "gelu", "gelutanh", "silu", "erf", "sin", "cos", "not", "add", "sub", "mul", "div", "pow", "max", "min",
        "and", "or", "eq", "ne", "lt", "le", "gt", "ge", "select", "cast", "broadcast", "reshape", "transpose",
        "reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_argmax", "matmul", "softmax",
        "log_softmax", "layernorm", "rmsnorm", "concat", "slice", "gather", "one_hot", "scan", "attention",
        "attention_grad", "extract", "dropout", "sdp", "sdp_masked",
    ]
}

/// The interned name for `name`, if the language has it.
pub fn intern_name(name: &str) -> Option<&'static str> {
    names().iter().copied().find(|n| *n == name)
}

impl Language for ENode {
    type Discriminant = Disc;

    fn discriminant(&self) -> Disc {
        match self {
            ENode::Leaf(a) => Disc::Leaf(*a),
            ENode::Op(n, c) => Disc::Op(n, c.len()),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant()
    }

    fn children(&self) -> &[Id] {
        match self {
            ENode::Leaf(_) => &[],
            ENode::Op(_, c) => c,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            ENode::Leaf(_) => &mut [],
            ENode::Op(_, c) => c,
        }
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ENode::Leaf(Attr::Int(i)) => write!(f, "{i}"),
            ENode::Leaf(a) => write!(f, "{a:?}"),
            ENode::Op(n, _) => f.write_str(n),
        }
    }
}

impl FromOp for ENode {
    type Error = String;

    /// Rule patterns name ops by their IR names and write integer
    /// attributes literally (`(extract 0 ?t)`).
    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, String> {
        if let Some(n) = intern_name(op) {
            return Ok(ENode::Op(n, children));
        }
        match op.parse::<i64>() {
            Ok(i) if children.is_empty() => Ok(ENode::Leaf(Attr::Int(i))),
            _ => Err(format!("unknown op `{op}`")),
        }
    }
}
