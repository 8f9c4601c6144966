//! Deciding what lives in memory: the fusion plan of one graph.

use super::builder::Src;
use super::{Cx, ScheduleError};
use crate::{Graph, Op, ReduceOp, Type, ValueId};
use std::collections::HashMap;

/// One graph's scheduling state.
pub(crate) struct GraphState<'g> {
    pub g: &'g Graph,
    /// Concrete shape of each tensor node (empty for tuples).
    pub shapes: Vec<Vec<u64>>,
    /// Whether the node's value is stored (it gets a kernel, or is an input).
    pub materialize: Vec<bool>,
    /// For the root of an elementwise chain that consumes a row op (or a
    /// reduction over the row's axis at the end of such a chain): the row
    /// op its kernel computes.
    pub row_of: Vec<Option<ValueId>>,
    /// For the root of an elementwise chain that consumes a matmul: the
    /// matmul whose tiles it finishes (an epilogue).
    pub mm_of: Vec<Option<ValueId>>,
    /// Where each materialized value lives, once emitted.
    pub storage: Vec<Option<Src>>,
    /// Scan results.
    pub tuples: HashMap<usize, Vec<Src>>,
    pub inputs: Vec<Src>,
}

/// Elementwise in the strict sense: output element i reads element i of each argument.
fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast | Op::Dropout { .. })
}

/// Pure index maps: no arithmetic on values.
pub fn is_view(op: &Op) -> bool {
    matches!(op, Op::Broadcast | Op::Reshape | Op::Transpose { .. } | Op::Slice { .. })
}

fn is_row(op: &Op) -> bool {
    matches!(op, Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::LayerNorm { .. } | Op::RmsNorm { .. })
}

/// The axis a row op normalizes.
pub fn row_axis(op: &Op, rank: usize) -> usize {
    match op {
        Op::Softmax { axis } | Op::LogSoftmax { axis } => *axis as usize,
        _ => rank - 1,
    }
}

/// A reduction over exactly `axis` (keepdim or not): its kernel already
/// walks one row per tile, so it can compute a row op's statistics first.
fn reduces_row(op: &Op, axis: usize) -> bool {
    matches!(op, Op::Reduce { op: ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max | ReduceOp::Min, axes, .. } if axes[..] == [axis as u32])
}

/// The deepest expression a value is inlined into before it is stored: far
/// more than real fusions need, and shallow enough for the recursive walks
/// over kernel expressions (here, in the backends) on any thread's stack.
const MAX_INLINE_DEPTH: usize = 128;

pub(crate) fn plan<'g>(cx: &mut Cx, g: &'g Graph, inputs: Vec<Src>) -> Result<GraphState<'g>, ScheduleError> {
    let n = g.nodes.len();
    let mut shapes = Vec::with_capacity(n);
    for node in &g.nodes {
        shapes.push(match &node.ty {
            Type::Tensor(t) => cx.shape(&t.shape)?,
            Type::Tuple(_) => vec![],
        });
    }
    // A reduction without a result over an empty axis fails here, before
    // anything runs, as the reference interpreter fails at that node.
    for (i, node) in g.nodes.iter().enumerate() {
        if let Op::Reduce { op, axes, .. } = &node.op {
            let x = &shapes[node.args[0].index()];
            let count: u64 = axes.iter().map(|&a| x[a as usize]).product();
            let dtype = g.tensor_type(node.args[0]).dtype;
            if let Some(e) = crate::interp::empty_reduce_error(format!("%{i} = {}", node.op.name()), *op, dtype, count as usize) {
                return Err(ScheduleError::Refused(e));
            }
        }
    }
    // Liveness and uses, from the outputs back.
    let mut live = vec![false; n];
    for o in &g.outputs {
        live[o.index()] = true;
    }
    let mut uses = vec![0u32; n];
    let mut consumer: Vec<Option<ValueId>> = vec![None; n];
    for i in (0..n).rev() {
        if !live[i] {
            continue;
        }
        for a in &g.nodes[i].args {
            live[a.index()] = true;
            uses[a.index()] += 1;
            consumer[a.index()] = Some(ValueId(i as u32));
        }
    }
    let is_output: Vec<bool> = (0..n).map(|i| g.outputs.iter().any(|o| o.index() == i)).collect();
    let mut materialize = vec![false; n];
    // How deep the expression inlining each value is (0 when stored).
    let mut depth = vec![0usize; n];
    for i in 0..n {
        if !live[i] {
            continue;
        }
        let op = &g.nodes[i].op;
        // Sources are memory already; heavy ops and row ops get kernels
        // (a row op may be taken back below when its consumer absorbs it).
        let m = match op {
            Op::Input { .. } | Op::Param { .. } | Op::Extract { .. } => true,
            Op::Reduce { .. } | Op::MatMul | Op::Concat { .. } | Op::Scan { .. } => true,
            Op::Attention(_) | Op::AttentionGrad(_) => true,
            op if is_row(op) => true,
            _ => is_output[i] || !cx.opts.fuse || (uses[i] > 1 && !cheap(g, &materialize, i)),
        };
        // Every later pass walks a kernel's expression recursively, so a
        // chain of any length is cut into stored pieces of bounded depth.
        let d = 1 + g.nodes[i].args.iter().filter(|a| !materialize[a.index()]).map(|a| depth[a.index()]).max().unwrap_or(0);
        materialize[i] = m || d > MAX_INLINE_DEPTH;
        depth[i] = if materialize[i] { 0 } else { d };
        // Scan arguments and non-view matmul operands must be memory.
        match op {
            Op::Scan { .. } => {
                for a in &g.nodes[i].args {
                    materialize[a.index()] = true;
                }
            }
            Op::MatMul | Op::Attention(_) | Op::AttentionGrad(_) => {
                // Store the value under any chain of index maps, so the
                // matmul still reads it in place through the maps. An
                // attention mask stays a recipe: it is read at an index,
                // never stored at the scores' full size.
                let mask = match op {
                    Op::Attention(a) | Op::AttentionGrad(a) if a.mask != crate::AttnMask::None => Some(3),
                    _ => None,
                };
                for (k, a) in g.nodes[i].args.iter().enumerate() {
                    if Some(k) == mask {
                        continue;
                    }
                    let mut base = a.index();
                    while !materialize[base] && is_view(&g.nodes[base].op) {
                        base = g.nodes[base].args[0].index();
                    }
                    materialize[base] = true;
                }
            }
            _ => {}
        }
    }
    // A row op reads its input once per pass (statistics, then output): an
    // input that gathers rows of a table (embeddings) is stored first, so
    // the data-dependent loads and their index checks run once per element.
    if cx.opts.fuse {
        // Whether a value's inlined expression gathers (in graph order).
        let mut gathers = vec![false; n];
        for i in 0..n {
            let node = &g.nodes[i];
            gathers[i] = matches!(node.op, Op::Gather { .. }) || node.args.iter().any(|a| !materialize[a.index()] && gathers[a.index()]);
            if live[i] && is_row(&node.op) {
                let a = node.args[0].index();
                if !materialize[a] && gathers[a] {
                    materialize[a] = true;
                }
            }
        }
    }
    // Row ops and matmuls into their consumer chain: single use all the
    // way, elementwise, same shape, ending at a stored root that absorbs
    // nothing else. A row op's chain may also end in a reduction over the
    // row's axis (log_softmax, one-hot pick, sum: cross-entropy).
    let mut row_of = vec![None; n];
    let mut mm_of = vec![None; n];
    if cx.opts.fuse {
        for i in 0..n {
            let op = &g.nodes[i].op;
            let mm = matches!(op, Op::MatMul);
            if !live[i] || !(is_row(op) || mm) || is_output[i] || uses[i] != 1 {
                continue;
            }
            let mut cur = i;
            let root = loop {
                let Some(c) = consumer[cur] else { break None };
                let c = c.index();
                // A matmul's epilogue may also pass through reshapes (the
                // folded [rows, n] product back to [B, T, n]): same elements,
                // same order.
                let elementwise = is_elementwise(&g.nodes[c].op) && shapes[c] == shapes[cur];
                if !mm && reduces_row(&g.nodes[c].op, row_axis(op, shapes[i].len())) && shapes[cur] == shapes[i] {
                    break Some(c);
                }
                let reshape = mm && matches!(g.nodes[c].op, Op::Reshape);
                if !(elementwise || reshape) || (!mm && shapes[c] != shapes[i]) {
                    break None;
                }
                if materialize[c] {
                    break elementwise.then_some(c);
                }
                if uses[c] != 1 {
                    break None;
                }
                cur = c;
            };
            if let Some(r) = root {
                if row_of[r].is_none() && mm_of[r].is_none() {
                    if mm {
                        mm_of[r] = Some(ValueId(i as u32));
                    } else {
                        row_of[r] = Some(ValueId(i as u32));
                    }
                    materialize[i] = false;
                }
            }
        }
    }
    Ok(GraphState { g, shapes, materialize, row_of, mm_of, storage: vec![None; n], tuples: HashMap::new(), inputs })
}

/// Cheap to recompute per use: values of the index alone (constants, iota,
/// and elementwise ops and index maps of those, such as a causal mask),
/// and index maps or one-hots of memory or of other cheap values.
fn cheap(g: &Graph, materialize: &[bool], i: usize) -> bool {
    let n = &g.nodes[i];
    match &n.op {
        Op::OneHot => materialize[n.args[0].index()] || cheap(g, materialize, n.args[0].index()),
        op if is_view(op) => {
            let a = n.args[0].index();
            materialize[a] || cheap(g, materialize, a)
        }
        _ => of_index_only(g, materialize, i),
    }
}

/// Computed from the element's index alone, reading no memory.
fn of_index_only(g: &Graph, materialize: &[bool], i: usize) -> bool {
    let n = &g.nodes[i];
    match &n.op {
        Op::Const { .. } | Op::Iota { .. } => true,
        op if is_elementwise(op) || is_view(op) => {
            n.args.iter().all(|a| !materialize[a.index()] && of_index_only(g, materialize, a.index()))
        }
        _ => false,
    }
}
