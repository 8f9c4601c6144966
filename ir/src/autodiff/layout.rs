//! VJPs of ops that move elements: broadcast, reshape, transpose, concat
//! and slice.

use super::build::B;
use crate::{DimExpr, Node, Op, TensorType, ValueId};

/// Adjoints of `node`'s arguments; see [`super::vjp`].
pub(super) fn vjp(b: &mut B, node: &Node, dy: ValueId, need: &[bool]) -> Vec<Option<ValueId>> {
    let x = &node.args;
    match &node.op {
        Op::Broadcast => {
            let shape = b.shape(x[0]);
            vec![Some(b.sum_to(dy, &shape))]
        }
        Op::Reshape => {
            let shape = b.shape(x[0]);
            vec![Some(b.reshape(dy, &shape))]
        }
        Op::Transpose { perm } => {
            let mut inv = vec![0u32; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p as usize] = i as u32;
            }
            vec![Some(b.transpose(dy, &inv))]
        }
        // Each piece's adjoint is its span of the joined axis.
        Op::Concat { axis } => {
            let ax = *axis as usize;
            let mut start = DimExpr::constant(0);
            let mut out = Vec::with_capacity(x.len());
            for (&a, &n) in x.iter().zip(need) {
                let end = start.add(&b.shape(a)[ax]);
                out.push(n.then(|| b.slice(dy, *axis, start.clone(), end.clone())));
                start = end;
            }
            out
        }
        Op::Slice { axis, start, end: _, step } => {
            let ty = b.ty(x[0]);
            vec![Some(unslice(b, &ty, *axis, start, *step, dy))]
        }
        _ => unreachable!("dispatched by op"),
    }
}

/// Scatters a slice's adjoint `dy` back into zeros of the operand type
/// `ty`. There is no pad or scatter op, so this concatenates zero blocks.
///
/// With step 1 it is `[zeros(start), dy, zeros(size - end)]`. With a step
/// `s > 1`, `dy` (k rows) is first padded to `q = ceil((size - start) / s)`
/// rows, then interleaved with `s - 1` zero rows per row by a concat on a
/// new axis and a reshape (`[q, 1] ++ [q, s-1] -> [q, s] -> [q*s]`), cut to
/// `size - start` rows and preceded by `start` zero rows. Every block size
/// is non-negative whatever the dims are, so this also holds for symbolic
/// bounds and empty slices.
fn unslice(b: &mut B, ty: &TensorType, axis: u32, start: &DimExpr, step: u32, dy: ValueId) -> ValueId {
    let ax = axis as usize;
    let size = &ty.shape[ax];
    let dshape = b.shape(dy);
    let k = dshape[ax].clone();
    if k.as_const() == Some(0) {
        return b.zeros(ty);
    }
    let zeros_rows = |b: &mut B, base: &[DimExpr], rows: DimExpr| {
        let mut shape = base.to_vec();
        shape[ax] = rows;
        b.zeros(&TensorType::new(ty.dtype, shape))
    };
    let mut pieces = Vec::new();
    if start.as_const() != Some(0) {
        pieces.push(zeros_rows(b, &dshape, start.clone()));
    }
    if step == 1 {
        pieces.push(dy);
        let tail = size.sub(start).sub(&k);
        if tail.as_const() != Some(0) {
            pieces.push(zeros_rows(b, &dshape, tail));
        }
    } else {
        let s = step as i64;
        let rest = size.sub(start);
        let q = rest.add(&DimExpr::constant(s - 1)).floor_div(s);
        let extra = q.sub(&k);
        let padded = if extra.as_const() == Some(0) {
            dy
        } else {
            let z = zeros_rows(b, &dshape, extra);
            b.concat(&[dy, z], axis)
        };
        let mut rows = b.shape(padded);
        rows.insert(ax + 1, DimExpr::constant(1));
        let col = b.reshape(padded, &rows);
        rows[ax + 1] = DimExpr::constant(s - 1);
        let gaps = b.zeros(&TensorType::new(ty.dtype, rows.clone()));
        let wide = b.concat(&[col, gaps], axis + 1);
        let mut flat = dshape.clone();
        flat[ax] = q.scale(s);
        let spread = b.reshape(wide, &flat);
        pieces.push(b.slice(spread, axis, DimExpr::constant(0), rest));
    }
    b.concat(&pieces, axis)
}
