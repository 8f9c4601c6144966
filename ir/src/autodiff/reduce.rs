//! VJPs of reductions.

use super::build::{reduced_shape, B};
use crate::{CmpOp, Node, Op, ReduceOp, ValueId};

/// Adjoints of `node`'s argument; see [`super::vjp`].
///
/// Sum broadcasts the adjoint back over the reduced axes; mean also divides
/// by the element count. Max and min route it to the elements equal to the
/// result, divided evenly among ties (JAX's convention). Argmax is integer
/// valued and never active.
pub(super) fn vjp(b: &mut B, node: &Node, y: ValueId, dy: ValueId, _need: &[bool]) -> Vec<Option<ValueId>> {
    let Op::Reduce { op, axes, .. } = &node.op else { unreachable!("dispatched by op") };
    let x = node.args[0];
    let shape = b.shape(x);
    let keep = reduced_shape(&shape, axes, true);
    // The adjoint with the reduced axes present (size 1), then spread.
    let dy_keep = b.reshape(dy, &keep);
    let spread = b.broadcast(dy_keep, &shape);
    let dx = match op {
        ReduceOp::Sum => spread,
        ReduceOp::Mean => {
            let dims: Vec<_> = axes.iter().map(|&a| shape[a as usize].clone()).collect();
            let dt = b.dtype(x);
            let n = b.count(&dims, dt);
            let n = b.broadcast(n, &shape);
            b.div(spread, n)
        }
        ReduceOp::Max | ReduceOp::Min => {
            let y_keep = b.reshape(y, &keep);
            let yb = b.broadcast(y_keep, &shape);
            let hit = b.compare(CmpOp::Eq, x, yb);
            let dt = b.dtype(x);
            let hit = b.cast(hit, dt);
            let ties = b.sum_keep(hit, axes);
            let ties = b.broadcast(ties, &shape);
            let w = b.div(hit, ties);
            b.mul(spread, w)
        }
        ReduceOp::ArgMax => return vec![None],
    };
    vec![Some(dx)]
}
