//! What the e-graph knows about each class: its type (inferred from the
//! arguments with the verifier's rules, or read from the op's type leaf),
//! constant facts the guards test (a constant fill, an iota index, a
//! triangular mask), and whether any representation reads a parameter.
//!
//! Facts describe the class's value, so any two facts of one class are both
//! true: merging keeps the more informative one, and the parameter flag is
//! the OR of both sides (the extractor may pick either representation).

use super::lang::{Attr, ENode};
use crate::{AttnVariant, Attention, DType, DimExpr, Graph, TensorType, Type};
use egg::{Analysis, DidMerge, EGraph, Id};

/// The e-graph of the optimizer.
pub type EG = EGraph<ENode, Facts>;

/// A scan as the e-graph keeps it: the (already optimized) body and counts.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanInfo {
    /// The loop body.
    pub body: Graph,
    /// Number of carries.
    pub n_carry: u32,
    /// Number of sequences.
    pub n_seq: u32,
    /// The scan's tuple type.
    pub ty: Type,
}

/// Interned attribute values referenced by [`Attr`] leaves.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// Result types.
    pub types: Vec<Type>,
    /// Dimension expressions.
    pub dims: Vec<DimExpr>,
    /// Axis lists.
    pub ints: Vec<Vec<u32>>,
    /// Scans.
    pub scans: Vec<ScanInfo>,
    /// Attention attributes.
    pub attns: Vec<Attention>,
}

fn intern<T: PartialEq>(v: &mut Vec<T>, x: T) -> u32 {
    match v.iter().position(|y| *y == x) {
        Some(i) => i as u32,
        None => {
            v.push(x);
            (v.len() - 1) as u32
        }
    }
}

impl Tables {
    /// Interns a type.
    pub fn ty(&mut self, t: Type) -> Attr {
        Attr::Ty(intern(&mut self.types, t))
    }
    /// Interns a dimension expression.
    pub fn dim(&mut self, d: DimExpr) -> Attr {
        Attr::Dim(intern(&mut self.dims, d))
    }
    /// Interns an axis list.
    pub fn ints(&mut self, v: Vec<u32>) -> Attr {
        Attr::Ints(intern(&mut self.ints, v))
    }
    /// Interns a scan.
    pub fn scan(&mut self, s: ScanInfo) -> Attr {
        Attr::Scan(intern(&mut self.scans, s))
    }
    /// Interns attention attributes.
    pub fn attn(&mut self, a: Attention) -> Attr {
        Attr::Attn(intern(&mut self.attns, a))
    }
}

/// A constant fact about a class's value, right-aligned: facts about the
/// last axes survive broadcasting.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// Nothing known.
    None,
    /// Every element equals this value.
    Const(f64),
    /// Element value is the index along the axis `from_end` axes from the
    /// last, plus `offset` (an iota, possibly shifted).
    Index {
        /// 0 for the last axis (key position `j`), 1 for the one before (`i`).
        from_end: u32,
        /// Added to the index.
        offset: i64,
    },
    /// A bool triangle over the last two axes: true iff `j <= i + c`
    /// (`lower`) or `j >= i + c` (upper).
    Tri {
        /// Lower (tril) or upper (triu).
        lower: bool,
        /// The diagonal offset.
        c: i64,
    },
    /// `select(tri, inside, outside)` with constant fills.
    TriFill {
        /// The triangle's kind.
        lower: bool,
        /// Its diagonal offset.
        c: i64,
        /// Value where the triangle holds.
        inside: f64,
        /// Value elsewhere.
        outside: f64,
    },
}

/// Per-class data.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    /// The class's type; `None` for attribute leaves (and ill-typed nodes).
    pub ty: Option<Type>,
    /// A constant fact.
    pub fact: Fact,
    /// Whether some representation reads a parameter.
    pub uses_param: bool,
}

/// The analysis: interned tables plus what guards need from the options.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Interned attributes.
    pub tables: Tables,
    /// The attention variant to build (`None`: FlashAttention-2).
    pub variant: Option<AttnVariant>,
    /// Per graph input, whether it may depend on a parameter (a scan
    /// body's inputs include parameter slices); missing entries count as true.
    pub param_inputs: Vec<bool>,
}

/// The attribute leaf of a class, if it is one.
pub fn leaf(eg: &EG, id: Id) -> Option<Attr> {
    eg[id].nodes.iter().find_map(|n| match n {
        ENode::Leaf(a) => Some(*a),
        _ => None,
    })
}

/// The tensor type of a class.
pub fn tensor(eg: &EG, id: Id) -> Option<&TensorType> {
    eg[id].data.ty.as_ref()?.tensor()
}

/// How many attribute leaves an op's children start with.
pub fn attr_count(name: &str) -> usize {
    match name {
        "reduce_sum" | "reduce_mean" | "reduce_max" | "reduce_min" | "reduce_argmax" => 3,
        "slice" => 5,
        "input" | "param" | "const" | "iota" | "concat" | "gather" => 2,
        "cast" | "broadcast" | "reshape" | "one_hot" | "transpose" | "softmax" | "log_softmax" | "layernorm"
        | "rmsnorm" | "dropout" | "scan" | "attention" | "attention_grad" | "extract" | "sdp" | "sdp_masked" => 1,
        _ => 0,
    }
}

/// The type an op yields from its children, or `None` if ill-typed.
pub fn infer(eg: &EG, name: &str, ch: &[Id]) -> Option<Type> {
    let na = attr_count(name);
    let attrs: Vec<Attr> = ch[..na.min(ch.len())].iter().map(|&c| leaf(eg, c)).collect::<Option<_>>()?;
    let args = &ch[na.min(ch.len())..];
    let t = |i: usize| args.get(i).and_then(|&a| tensor(eg, a));
    let tables = &eg.analysis.tables;
    // Ops that carry their result type as their last attribute.
    if let Some(Attr::Ty(i)) = attrs.last() {
        return Some(tables.types[*i as usize].clone());
    }
    let one = |t: TensorType| Some(Type::Tensor(t));
    match name {
        "scan" => match attrs[0] {
            Attr::Scan(i) => Some(tables.scans[i as usize].ty.clone()),
            _ => None,
        },
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => one(t(0)?.with_dtype(DType::Bool)),
        "select" => one(t(1)?.clone()),
        "transpose" => {
            let Attr::Ints(p) = attrs[0] else { return None };
            let x = t(0)?;
            let perm = &tables.ints[p as usize];
            if perm.len() != x.rank() {
                return None;
            }
            one(TensorType::new(x.dtype, perm.iter().map(|&a| x.shape[a as usize].clone()).collect()))
        }
        "matmul" => {
            let (a, b) = (t(0)?, t(1)?);
            let r = a.rank();
            if r < 2 || b.rank() != r || a.shape[..r - 2] != b.shape[..r - 2] || a.shape[r - 1] != b.shape[r - 2] {
                return None;
            }
            let mut s = a.shape[..r - 1].to_vec();
            s.push(b.shape[r - 1].clone());
            one(TensorType::new(a.dtype, s))
        }
        "attention" | "attention_grad" => {
            let Attr::Attn(i) = attrs[0] else { return None };
            let a = &tables.attns[i as usize];
            let tys: Vec<&TensorType> = args.iter().map(|&x| tensor(eg, x)).collect::<Option<_>>()?;
            let r = if name == "attention" { a.forward_types(&tys) } else { a.backward_types(&tys) };
            r.ok().map(Type::Tuple)
        }
        "extract" => match (attrs[0], eg[*args.first()?].data.ty.as_ref()?) {
            (Attr::Int(i), Type::Tuple(ts)) => ts.get(i as usize).cloned().map(Type::Tensor),
            _ => None,
        },
        "sdp" | "sdp_masked" => {
            let (q, k) = (t(0)?, t(1)?);
            let r = q.rank();
            if r < 2 || k.rank() != r || q.shape[r - 1] != k.shape[r - 1] {
                return None;
            }
            let mut s = q.shape[..r - 1].to_vec();
            s.push(k.shape[r - 2].clone());
            one(TensorType::new(q.dtype, s))
        }
        "softmax" | "log_softmax" | "layernorm" | "rmsnorm" | "dropout" => one(t(0)?.clone()),
        // Elementwise ops keep their operands' (common) type.
        _ => {
            let x = t(0)?.clone();
            let same = args.iter().all(|&a| tensor(eg, a).is_some_and(|y| y.shape == x.shape));
            same.then_some(Type::Tensor(x))
        }
    }
}

fn num(a: Attr) -> Option<f64> {
    match a {
        Attr::Num(b) => Some(f64::from_bits(b)),
        _ => None,
    }
}

/// A triangle `j cmp i + c` as (lower, c) with `<=`/`>=` only.
fn tri(cmp: &str, c: i64) -> Option<(bool, i64)> {
    match cmp {
        "le" => Some((true, c)),
        "lt" => Some((true, c - 1)),
        "ge" => Some((false, c)),
        "gt" => Some((false, c + 1)),
        _ => None,
    }
}

fn flip(cmp: &str) -> &str {
    match cmp {
        "le" => "ge",
        "lt" => "gt",
        "ge" => "le",
        "gt" => "lt",
        other => other,
    }
}

/// Where axis `from_end` of `x` lands (counted from the end) in `t`, when
/// the reshape only inserts or removes axes of size 1 (`unsqueeze`,
/// `squeeze`) and that axis is not one of them.
fn unit_axes_moved(x: &TensorType, t: &TensorType, from_end: u32) -> Option<u32> {
    let one = DimExpr::constant(1);
    let kept = |s: &[DimExpr]| -> Vec<usize> { (0..s.len()).filter(|&i| s[i] != one).collect() };
    let (kx, kt) = (kept(&x.shape), kept(&t.shape));
    if kx.len() != kt.len() || kx.iter().zip(&kt).any(|(&a, &b)| x.shape[a] != t.shape[b]) {
        return None;
    }
    let axis = x.rank().checked_sub(1 + from_end as usize)?;
    let k = kx.iter().position(|&a| a == axis)?;
    Some((t.rank() - 1 - kt[k]) as u32)
}

fn fact_of(eg: &EG, name: &str, ch: &[Id], ty: Option<&Type>) -> Fact {
    let na = attr_count(name);
    let f = |i: usize| ch.get(na + i).map(|&a| eg[a].data.fact.clone()).unwrap_or(Fact::None);
    let dtype = ty.and_then(|t| t.tensor()).map(|t| t.dtype);
    let is_float = dtype.is_some_and(|d| d.is_float());
    match name {
        "const" => leaf(eg, ch[0]).and_then(num).map_or(Fact::None, Fact::Const),
        "iota" => match (leaf(eg, ch[0]), ty.and_then(|t| t.tensor())) {
            (Some(Attr::Int(a)), Some(t)) => Fact::Index { from_end: (t.rank() as i64 - 1 - a) as u32, offset: 0 },
            _ => Fact::None,
        },
        // Right-aligned facts survive broadcasting.
        "broadcast" => f(0),
        "reshape" => match (f(0), ch.get(na).and_then(|&x| tensor(eg, x)), ty.and_then(|t| t.tensor())) {
            (Fact::Index { from_end, offset }, Some(x), Some(t)) => unit_axes_moved(x, t, from_end)
                .map_or(Fact::None, |from_end| Fact::Index { from_end, offset }),
            (Fact::Const(v), _, _) => Fact::Const(v),
            _ => Fact::None,
        },
        "cast" => match f(0) {
            Fact::Const(v) if is_float || dtype.is_some_and(|d| d.is_int()) && v.fract() == 0.0 => Fact::Const(v),
            _ => Fact::None,
        },
        "neg" | "sqrt" | "rsqrt" if is_float => match f(0) {
            Fact::Const(v) => Fact::Const(match name {
                "neg" => -v,
                "sqrt" => v.sqrt(),
                _ => 1.0 / v.sqrt(),
            }),
            _ => Fact::None,
        },
        "add" | "sub" | "mul" | "div" => match (f(0), f(1)) {
            (Fact::Const(a), Fact::Const(b)) if is_float || name != "div" => Fact::Const(match name {
                "add" => a + b,
                "sub" => a - b,
                "mul" => a * b,
                _ => a / b,
            }),
            (Fact::Index { from_end, offset }, Fact::Const(k)) | (Fact::Const(k), Fact::Index { from_end, offset })
                if name == "add" && k.fract() == 0.0 =>
            {
                Fact::Index { from_end, offset: offset + k as i64 }
            }
            (Fact::Index { from_end, offset }, Fact::Const(k)) if name == "sub" && k.fract() == 0.0 => {
                Fact::Index { from_end, offset: offset - k as i64 }
            }
            _ => Fact::None,
        },
        "le" | "lt" | "ge" | "gt" => match (f(0), f(1)) {
            // j + a cmp i + b  <=>  j cmp i + (b - a)
            (Fact::Index { from_end: 0, offset: a }, Fact::Index { from_end: 1, offset: b }) => {
                tri(name, b - a).map_or(Fact::None, |(lower, c)| Fact::Tri { lower, c })
            }
            (Fact::Index { from_end: 1, offset: a }, Fact::Index { from_end: 0, offset: b }) => {
                tri(flip(name), a - b).map_or(Fact::None, |(lower, c)| Fact::Tri { lower, c })
            }
            _ => Fact::None,
        },
        // not(j <= i + c) is j >= i + c + 1, and the other way round.
        "not" => match f(0) {
            Fact::Tri { lower: true, c } => Fact::Tri { lower: false, c: c + 1 },
            Fact::Tri { lower: false, c } => Fact::Tri { lower: true, c: c - 1 },
            _ => Fact::None,
        },
        "select" => match (f(0), f(1), f(2)) {
            (Fact::Tri { lower, c }, Fact::Const(inside), Fact::Const(outside)) => {
                Fact::TriFill { lower, c, inside, outside }
            }
            _ => Fact::None,
        },
        _ => Fact::None,
    }
}

impl Analysis<ENode> for Facts {
    type Data = Data;

    fn make(eg: &mut EG, n: &ENode, _id: Id) -> Data {
        match n {
            ENode::Leaf(_) => Data { ty: None, fact: Fact::None, uses_param: false },
            ENode::Op(name, ch) => {
                let ty = infer(eg, name, ch);
                let fact = fact_of(eg, name, ch, ty.as_ref());
                let uses_param = match *name {
                    "param" => true,
                    "input" => match leaf(eg, ch[0]) {
                        Some(Attr::Int(i)) => eg.analysis.param_inputs.get(i as usize).copied().unwrap_or(true),
                        _ => true,
                    },
                    _ => ch.iter().any(|&c| eg[c].data.uses_param),
                };
                Data { ty, fact, uses_param }
            }
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let mut changed = (false, false);
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed.0 = true;
        } else if b.ty.is_none() && a.ty.is_some() {
            changed.1 = true;
        }
        if a.fact == Fact::None && b.fact != Fact::None {
            a.fact = b.fact.clone();
            changed.0 = true;
        } else if a.fact != b.fact {
            changed.1 = true;
        }
        if b.uses_param && !a.uses_param {
            a.uses_param = true;
            changed.0 = true;
        } else if a.uses_param && !b.uses_param {
            changed.1 = true;
        }
        DidMerge(changed.0, changed.1)
    }
}
