//! Graph ↔ e-graph: each graph node becomes one e-node (attributes as
//! leaves, see [`super::lang`]); extraction rebuilds a graph from the
//! cheapest node of each needed class, sharing every class once.

use super::analysis::{attr_count, leaf, ScanInfo, EG};
use super::lang::{intern_name, Attr, ENode};
use crate::{BinaryOp, CmpOp, Graph, Op, ReduceOp, UnaryOp, ValueId};
use egg::Id;
use std::collections::HashMap;

const UNARY: [UnaryOp; 16] = {
    use UnaryOp::*;
    [Neg, Abs, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Relu, Gelu, GeluTanh, Silu, Erf, Sin, Cos, Not]
};
const BINARY: [BinaryOp; 9] = {
    use BinaryOp::*;
    [Add, Sub, Mul, Div, Pow, Max, Min, And, Or]
};
const COMPARE: [CmpOp; 6] = {
    use CmpOp::*;
    [Eq, Ne, Lt, Le, Gt, Ge]
};
const REDUCE: [ReduceOp; 5] = {
    use ReduceOp::*;
    [Sum, Mean, Max, Min, ArgMax]
};

/// Adds a graph's nodes to the e-graph; returns each node's class.
/// `scans` are the scan nodes' already optimized bodies, by node index.
pub fn add_graph(eg: &mut EG, g: &Graph, mut scans: HashMap<usize, Graph>) -> Vec<Id> {
    let mut ids: Vec<Id> = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        let t = &mut eg.analysis.tables;
        let int = |v: u32| Attr::Int(v as i64);
        let mut attrs: Vec<Attr> = match &n.op {
            Op::Input { index } | Op::Param { index } => vec![int(*index), t.ty(n.ty.clone())],
            Op::Const { value } => vec![Attr::Num(value.to_bits()), t.ty(n.ty.clone())],
            Op::Iota { axis } => vec![int(*axis), t.ty(n.ty.clone())],
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::MatMul => vec![],
            Op::Cast | Op::Broadcast | Op::Reshape | Op::OneHot => vec![t.ty(n.ty.clone())],
            Op::Transpose { perm } => vec![t.ints(perm.clone())],
            Op::Reduce { axes, keepdim, .. } => {
                vec![t.ints(axes.clone()), Attr::Int(*keepdim as i64), t.ty(n.ty.clone())]
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => vec![int(*axis)],
            Op::LayerNorm { eps } | Op::RmsNorm { eps } => vec![Attr::Num(eps.to_bits())],
            Op::Dropout { p } => vec![Attr::Num(p.to_bits())],
            Op::Concat { axis } | Op::Gather { axis } => vec![int(*axis), t.ty(n.ty.clone())],
            Op::Slice { axis, start, end, step } => {
                vec![int(*axis), t.dim(start.clone()), t.dim(end.clone()), int(*step), t.ty(n.ty.clone())]
            }
            Op::Scan { body, n_carry, n_seq } => {
                let body = scans.remove(&i).unwrap_or_else(|| (**body).clone());
                vec![t.scan(ScanInfo { body, n_carry: *n_carry, n_seq: *n_seq, ty: n.ty.clone() })]
            }
            Op::Attention(a) | Op::AttentionGrad(a) => vec![t.attn((**a).clone())],
            Op::Extract { index } => vec![int(*index)],
        };
        debug_assert_eq!(attrs.len(), attr_count(&n.op.name()));
        let mut children: Vec<Id> = attrs.drain(..).map(|a| eg.add(ENode::Leaf(a))).collect();
        children.extend(n.args.iter().map(|a| ids[a.index()]));
        let name = intern_name(&n.op.name()).expect("every graph op has an e-graph name");
        ids.push(eg.add(ENode::Op(name, children)));
    }
    ids
}

/// The graph op an e-node stands for, or `None` for pseudo-ops.
fn to_op(eg: &EG, name: &str, attrs: &[Attr]) -> Option<Op> {
    let t = &eg.analysis.tables;
    let int = |i: usize| match attrs.get(i) {
        Some(Attr::Int(v)) => Some(*v),
        _ => None,
    };
    let u = |i: usize| int(i).map(|v| v as u32);
    let num = |i: usize| match attrs.get(i) {
        Some(Attr::Num(b)) => Some(f64::from_bits(*b)),
        _ => None,
    };
    let dim = |i: usize| match attrs.get(i) {
        Some(Attr::Dim(d)) => Some(t.dims[*d as usize].clone()),
        _ => None,
    };
    let ints = |i: usize| match attrs.get(i) {
        Some(Attr::Ints(d)) => Some(t.ints[*d as usize].clone()),
        _ => None,
    };
    let attn = || match attrs.first() {
        Some(Attr::Attn(d)) => Some(Box::new(t.attns[*d as usize].clone())),
        _ => None,
    };
    let named = |op: Op| (op.name() == name).then_some(op);
    let op = match name {
        "input" => Op::Input { index: u(0)? },
        "param" => Op::Param { index: u(0)? },
        "const" => Op::Const { value: num(0)? },
        "iota" => Op::Iota { axis: u(0)? },
        "select" => Op::Select,
        "cast" => Op::Cast,
        "broadcast" => Op::Broadcast,
        "reshape" => Op::Reshape,
        "one_hot" => Op::OneHot,
        "matmul" => Op::MatMul,
        "transpose" => Op::Transpose { perm: ints(0)? },
        "softmax" => Op::Softmax { axis: u(0)? },
        "log_softmax" => Op::LogSoftmax { axis: u(0)? },
        "layernorm" => Op::LayerNorm { eps: num(0)? },
        "rmsnorm" => Op::RmsNorm { eps: num(0)? },
        "dropout" => Op::Dropout { p: num(0)? },
        "concat" => Op::Concat { axis: u(0)? },
        "gather" => Op::Gather { axis: u(0)? },
        "slice" => Op::Slice { axis: u(0)?, start: dim(1)?, end: dim(2)?, step: u(3)? },
        "extract" => Op::Extract { index: u(0)? },
        "attention" => Op::Attention(attn()?),
        "attention_grad" => Op::AttentionGrad(attn()?),
        "scan" => match attrs.first() {
            Some(Attr::Scan(s)) => {
                let s = &t.scans[*s as usize];
                Op::Scan { body: Box::new(s.body.clone()), n_carry: s.n_carry, n_seq: s.n_seq }
            }
            _ => return None,
        },
        _ if name.starts_with("reduce_") => {
            let (axes, keepdim) = (ints(0)?, int(1)? != 0);
            REDUCE.iter().find_map(|&op| named(Op::Reduce { op, axes: axes.clone(), keepdim }))?
        }
        _ => UNARY
            .iter()
            .map(|&o| Op::Unary(o))
            .chain(BINARY.iter().map(|&o| Op::Binary(o)))
            .chain(COMPARE.iter().map(|&o| Op::Compare(o)))
            .find_map(named)?,
    };
    Some(op)
}

/// Rebuilds a graph computing `outputs` from the chosen node of each class.
/// `best` picks a class's node; it must be acyclic (the cost model gives
/// every op a positive cost) and never a pseudo-op (infinite cost).
pub fn extract_graph(eg: &EG, inputs: &[crate::TensorType], outputs: &[Id], best: &dyn Fn(Id) -> ENode) -> Option<Graph> {
    let mut g = Graph { nodes: vec![], inputs: inputs.to_vec(), outputs: vec![] };
    let mut memo: HashMap<Id, ValueId> = HashMap::new();
    for &o in outputs {
        let v = emit(eg, &mut g, &mut memo, best, o)?;
        g.outputs.push(v);
    }
    Some(g)
}

fn emit(eg: &EG, g: &mut Graph, memo: &mut HashMap<Id, ValueId>, best: &dyn Fn(Id) -> ENode, id: Id) -> Option<ValueId> {
    let id = eg.find(id);
    if let Some(v) = memo.get(&id) {
        return Some(*v);
    }
    let ENode::Op(name, ch) = best(id) else { return None };
    let na = attr_count(name);
    let attrs: Vec<Attr> = ch[..na].iter().map(|&c| leaf(eg, c)).collect::<Option<_>>()?;
    let op = to_op(eg, name, &attrs)?;
    let mut args = Vec::with_capacity(ch.len() - na);
    for &c in &ch[na..] {
        args.push(emit(eg, g, memo, best, c)?);
    }
    let v = g.push(op, args, eg[id].data.ty.clone()?);
    memo.insert(id, v);
    Some(v)
}
