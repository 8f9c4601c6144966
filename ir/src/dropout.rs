//! Dropout's two modes. The front end lowers `dropout(x, p)` to
//! [`Op::Dropout`] nodes that read a hidden entry argument, the seed
//! ([`SEED_ARG`], a rank-0 i64 below [`crate::rng::SEED_LIMIT`]), which the
//! trainer draws afresh every step. That graph is the training graph;
//! [`inference`] derives the evaluation graph, where dropout is the
//! identity and the seed argument is gone.

use crate::{Function, Graph, Op, ValueId};

/// The name of the hidden seed argument of entry points that use dropout.
pub const SEED_ARG: &str = "dropout_seed";

/// The position of `f`'s dropout seed argument, if it has one.
pub fn seed_arg(f: &Function) -> Option<usize> {
    f.arg_names.iter().position(|n| n == SEED_ARG)
}

/// `f` in evaluation mode: every dropout node replaced by its input,
/// fused attention without its dropout, and the seed argument removed (its uses, such as captures into scan bodies
/// whose dropouts are gone too, read a constant instead). A function
/// without dropout comes back unchanged.
pub fn inference(f: &Function) -> Function {
    let seed = seed_arg(f);
    let mut out = f.clone();
    if let Some(s) = seed {
        out.arg_names.remove(s);
        out.arg_bounds.remove(s);
        out.arg_ignore.remove(s);
    }
    out.graph = strip(&f.graph, seed);
    out
}

/// `g` without dropout; `seed` is the graph input that held the seed.
fn strip(g: &Graph, seed: Option<usize>) -> Graph {
    let mut inputs = g.inputs.clone();
    if let Some(s) = seed {
        inputs.remove(s);
    }
    let mut out = Graph { nodes: Vec::with_capacity(g.nodes.len()), inputs, outputs: vec![] };
    let mut map: Vec<ValueId> = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let args: Vec<ValueId> = n.args.iter().map(|a| map[a.index()]).collect();
        let id = match &n.op {
            Op::Dropout { .. } => args[0],
            Op::Input { index } if Some(*index as usize) == seed => out.push(Op::Const { value: 0.0 }, vec![], n.ty.clone()),
            Op::Input { index } if seed.is_some_and(|s| *index as usize > s) => {
                out.push(Op::Input { index: index - 1 }, vec![], n.ty.clone())
            }
            Op::Attention(a) | Op::AttentionGrad(a) if a.dropout != 0.0 => {
                let seed = a.forward_arity() - 1;
                let plain = Box::new(crate::Attention { dropout: 0.0, ..(**a).clone() });
                let op = if matches!(n.op, Op::Attention(_)) { Op::Attention(plain) } else { Op::AttentionGrad(plain) };
                let args = args.iter().enumerate().filter(|(i, _)| *i != seed).map(|(_, &x)| x).collect();
                out.push(op, args, n.ty.clone())
            }
            Op::Scan { body, n_carry, n_seq } => {
                let op = Op::Scan { body: Box::new(strip(body, None)), n_carry: *n_carry, n_seq: *n_seq };
                out.push(op, args, n.ty.clone())
            }
            op => out.push(op.clone(), args, n.ty.clone()),
        };
        map.push(id);
    }
    out.outputs = g.outputs.iter().map(|o| map[o.index()]).collect();
    out
}
