//! Unrolling scans with a small constant trip count: layer stacks.
//!
//! `scan blk in blocks` over `n_layer` stacked layers is a loop only in the
//! model's text: its trip count is a config constant. Unrolled, the layers
//! become straight-line graph code, so reverse-mode autodiff keeps each
//! layer's activations instead of rematerializing the forward body inside
//! a reversed scan (which costs a whole extra forward pass per training
//! step), and later passes see across layers. Scans over a symbolic length
//! (an RNN over time) stay loops, and so do empty ones.
//!
//! Step `i` of an unrolled scan reads slice `i` of each sequence
//! (`slice` + `reshape`, which the scheduler reads in place) and the
//! stacked per-step outputs are rebuilt with one `concat`.

use crate::{DimExpr, Function, Graph, Op, TensorType, Type, ValueId};

/// `f` with every scan of at most `max_steps` (a constant) steps unrolled,
/// nested scans included. Arguments and results are unchanged.
pub fn unroll_scans(f: &Function, max_steps: u64) -> Function {
    let mut out = Graph { nodes: Vec::new(), inputs: f.graph.inputs.clone(), outputs: Vec::new() };
    out.outputs = copy(&f.graph, &mut out, None, max_steps);
    Function { graph: out, ..f.clone() }
}

/// Copies `src` into `out` and returns where its outputs went. With
/// `bind`, `src` is a scan body being inlined: its inputs are those values.
fn copy(src: &Graph, out: &mut Graph, bind: Option<&[ValueId]>, max_steps: u64) -> Vec<ValueId> {
    // Where each source node went; a tuple (an unrolled scan) maps to its
    // elements instead, read by `extract`.
    let mut map: Vec<ValueId> = Vec::with_capacity(src.nodes.len());
    let mut tuples: std::collections::HashMap<usize, Vec<ValueId>> = Default::default();
    for (i, n) in src.nodes.iter().enumerate() {
        let args: Vec<ValueId> = n.args.iter().map(|a| map[a.index()]).collect();
        let v = match (&n.op, bind) {
            (Op::Input { index }, Some(vals)) => vals[*index as usize],
            (Op::Extract { index }, _) if tuples.contains_key(&n.args[0].index()) => {
                tuples[&n.args[0].index()][*index as usize]
            }
            (Op::Scan { body, n_carry, n_seq }, _) => {
                let (nc, ns) = (*n_carry as usize, *n_seq as usize);
                let steps = (ns > 0).then(|| src.tensor_type(n.args[nc]).shape[0].as_const()).flatten();
                match steps {
                    Some(len) if len > 0 && len as u64 <= max_steps => {
                        let Type::Tuple(tys) = &n.ty else { unreachable!("verified: scan yields a tuple") };
                        tuples.insert(i, unrolled(src, out, n.args.as_slice(), &args, body, nc, ns, len, tys, max_steps));
                        // Never read: extracts of this scan map to the tuple's elements.
                        ValueId(u32::MAX)
                    }
                    _ => {
                        let mut body2 = Graph { nodes: Vec::new(), inputs: body.inputs.clone(), outputs: Vec::new() };
                        body2.outputs = copy(body, &mut body2, None, max_steps);
                        let op = Op::Scan { body: Box::new(body2), n_carry: *n_carry, n_seq: *n_seq };
                        out.push(op, args, n.ty.clone())
                    }
                }
            }
            _ => out.push(n.op.clone(), args, n.ty.clone()),
        };
        map.push(v);
    }
    src.outputs.iter().map(|o| map[o.index()]).collect()
}

/// The results of a scan of `len` steps, computed step by step in `out`:
/// the final carries, then each per-step output stacked on a new axis 0.
#[allow(clippy::too_many_arguments)]
fn unrolled(
    src: &Graph,
    out: &mut Graph,
    src_args: &[ValueId],
    args: &[ValueId],
    body: &Graph,
    nc: usize,
    ns: usize,
    len: i64,
    tys: &[TensorType],
    max_steps: u64,
) -> Vec<ValueId> {
    let mut carries = args[..nc].to_vec();
    let mut emitted: Vec<Vec<ValueId>> = vec![Vec::new(); body.outputs.len() - nc];
    for step in 0..len {
        let mut bind = carries.clone();
        for s in 0..ns {
            let t = src.tensor_type(src_args[nc + s]);
            let mut one = t.shape.clone();
            one[0] = DimExpr::constant(1);
            let op = Op::Slice { axis: 0, start: DimExpr::constant(step), end: DimExpr::constant(step + 1), step: 1 };
            let slice = out.push_tensor(op, vec![args[nc + s]], TensorType::new(t.dtype, one));
            bind.push(out.push_tensor(Op::Reshape, vec![slice], TensorType::new(t.dtype, t.shape[1..].to_vec())));
        }
        bind.extend_from_slice(&args[nc + ns..]);
        let outs = copy(body, out, Some(&bind), max_steps);
        carries = outs[..nc].to_vec();
        for (e, &v) in outs[nc..].iter().enumerate() {
            emitted[e].push(v);
        }
    }
    let mut results = carries;
    for (e, steps) in emitted.into_iter().enumerate() {
        let stacked = &tys[nc + e];
        let mut one = stacked.shape.clone();
        one[0] = DimExpr::constant(1);
        let rows: Vec<ValueId> = steps
            .into_iter()
            .map(|v| out.push_tensor(Op::Reshape, vec![v], TensorType::new(stacked.dtype, one.clone())))
            .collect();
        results.push(out.push_tensor(Op::Concat { axis: 0 }, rows, stacked.clone()));
    }
    results
}
