//! VJP of the batched matrix product.

use super::build::B;
use crate::{Node, ValueId};

/// For `c = a @ b` (batch axes equal): `da = dc @ bᵀ`, `db = aᵀ @ dc`, the
/// transposes swapping the last two axes.
pub(super) fn vjp(bd: &mut B, node: &Node, dc: ValueId, need: &[bool]) -> Vec<Option<ValueId>> {
    let (a, b) = (node.args[0], node.args[1]);
    vec![
        need[0].then(|| {
            let bt = bd.swap_last2(b);
            bd.matmul(dc, bt)
        }),
        need[1].then(|| {
            let at = bd.swap_last2(a);
            bd.matmul(at, dc)
        }),
    ]
}
