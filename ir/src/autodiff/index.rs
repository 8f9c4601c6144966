//! VJP of gather. `one_hot` and `iota` have integer operands (or none) and
//! never carry a gradient.

use super::build::B;
use super::product;
use crate::{Node, Op, ValueId};

/// The table's adjoint for `gather[axis] table, idx`: a scatter-add of the
/// adjoint rows into the table, written with existing ops until the IR has
/// a scatter. Over the `P` flattened index positions,
/// `dTable = one_hot(idx, rows)ᵀ @ dOut`, batched over the table's axes
/// before `axis` (`A`) with the axes after it (`R`) flattened:
/// `[A, rows, P] @ [A, P, R] -> [A, rows, R]`. The indices get no gradient.
pub(super) fn vjp(b: &mut B, node: &Node, dy: ValueId, _need: &[bool]) -> Vec<Option<ValueId>> {
    let Op::Gather { axis } = &node.op else { unreachable!("dispatched by op") };
    let (table, idx) = (node.args[0], node.args[1]);
    let tt = b.ty(table);
    let ax = *axis as usize;
    let rows = tt.shape[ax].clone();
    let outer = product(&tt.shape[..ax]);
    let inner = product(&tt.shape[ax + 1..]);
    let p = product(&b.shape(idx));
    let flat_idx = b.reshape(idx, std::slice::from_ref(&p));
    let oh = b.one_hot(flat_idx, rows.clone(), tt.dtype);
    let oht = b.swap_last2(oh);
    let dt = if ax == 0 {
        let d = b.reshape(dy, &[p, inner.clone()]);
        b.matmul(oht, d)
    } else {
        let d = b.reshape(dy, &[outer.clone(), p.clone(), inner.clone()]);
        let ohb = b.broadcast(oht, &[outer, rows, p]);
        b.matmul(ohb, d)
    };
    vec![Some(b.reshape(dt, &tt.shape)), None]
}
