//! VJP of fused attention: one `attention_grad` node, which recomputes the
//! probabilities from the saved logsumexp (never the naive gradient graph,
//! which would store the score matrix).

use super::build::B;
use super::{unsupported, AutodiffError};
use crate::{AttnMask, Node, Op, Type, ValueId};

/// For `(o, lse) = attention(q, k, v[, mask])` with `do` the adjoint of
/// `o`: `(dq, dk, dv) = attention_grad(q, k, v[, mask], o, lse, do)`. The
/// mask gets no gradient: a keep-mask is bool, and an additive bias that
/// needs one is an error.
pub(super) fn vjp(b: &mut B, node: &Node, y: ValueId, dout: ValueId, need: &[bool]) -> Result<Vec<Option<ValueId>>, AutodiffError> {
    let Op::Attention(a) = &node.op else { unreachable!("attention vjp of {}", node.op.name()) };
    if a.mask == AttnMask::Bias && need[3] {
        return Err(unsupported(&node.op, "its additive mask (bias) has no gradient rule"));
    }
    let o = b.extract(y, 0);
    let lse = b.extract(y, 1);
    let mut args = node.args.clone();
    args.extend([o, lse, dout]);
    let tys = (0..3).map(|k| b.ty(node.args[k])).collect();
    let grads = b.g.push(Op::AttentionGrad(a.clone()), args, Type::Tuple(tys));
    let mut out: Vec<Option<ValueId>> = (0..3).map(|k| need[k].then(|| b.extract(grads, k as u32))).collect();
    out.resize(node.args.len(), None);
    Ok(out)
}
