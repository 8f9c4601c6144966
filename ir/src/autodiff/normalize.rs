//! VJPs of softmax, log_softmax, layernorm and rmsnorm.

use super::build::B;
use crate::{Node, Op, ReduceOp, UnaryOp, ValueId};

/// Adjoints of `node`'s arguments; see [`super::vjp`].
pub(super) fn vjp(b: &mut B, node: &Node, y: ValueId, dy: ValueId, need: &[bool]) -> Vec<Option<ValueId>> {
    let x = node.args[0];
    match &node.op {
        // dx = y ⊙ (dy − Σ(dy ⊙ y)).
        Op::Softmax { axis } => {
            let shape = b.shape(x);
            let p = b.mul(dy, y);
            let s = b.sum_keep(p, &[*axis]);
            let s = b.broadcast(s, &shape);
            let diff = b.sub(dy, s);
            vec![Some(b.mul(y, diff))]
        }
        // dx = dy − softmax(x) · Σ dy, with softmax(x) = exp(y); exp(-inf)
        // is 0, so masked entries stay finite.
        Op::LogSoftmax { axis } => {
            let shape = b.shape(x);
            let s = b.sum_keep(dy, &[*axis]);
            let s = b.broadcast(s, &shape);
            let sm = b.unary(UnaryOp::Exp, y);
            let t = b.mul(sm, s);
            vec![Some(b.sub(dy, t))]
        }
        Op::LayerNorm { eps } => layer_norm(b, node, *eps, dy, need),
        Op::RmsNorm { eps } => rms_norm(b, node, *eps, dy, need),
        _ => unreachable!("dispatched by op"),
    }
}

/// Sums `v` over every axis but the last (the gamma/beta gradient).
fn sum_leading(b: &mut B, v: ValueId) -> ValueId {
    let r = b.shape(v).len() as u32;
    let axes: Vec<u32> = (0..r - 1).collect();
    b.reduce(ReduceOp::Sum, v, &axes, false)
}

/// `rsqrt(m + eps)` for a kept-axis statistic `m`.
fn inv_std(b: &mut B, m: ValueId, eps: f64) -> ValueId {
    let me = b.offset(m, eps);
    b.unary(UnaryOp::Rsqrt, me)
}

/// Layernorm over the last axis: with `x̂ = (x − μ) r`, `r = 1/√(σ² + ε)`
/// and `g = dy ⊙ γ`: `dx = r (g − mean(g) − x̂ mean(g ⊙ x̂))`,
/// `dγ = Σ dy ⊙ x̂`, `dβ = Σ dy` (sums over all leading axes). The
/// statistics are recomputed from `x`.
fn layer_norm(b: &mut B, node: &Node, eps: f64, dy: ValueId, need: &[bool]) -> Vec<Option<ValueId>> {
    let (x, gamma) = (node.args[0], node.args[1]);
    let shape = b.shape(x);
    let mu = b.mean_last_bcast(x);
    let xc = b.sub(x, mu);
    let sq = b.mul(xc, xc);
    let var = b.mean_last_bcast(sq);
    let r = inv_std(b, var, eps);
    let xhat = b.mul(xc, r);
    let dx = need[0].then(|| {
        let gb = b.broadcast(gamma, &shape);
        let g = b.mul(dy, gb);
        let mg = b.mean_last_bcast(g);
        let gx = b.mul(g, xhat);
        let mgx = b.mean_last_bcast(gx);
        let t = b.mul(xhat, mgx);
        let c = b.sub(g, mg);
        let c = b.sub(c, t);
        b.mul(r, c)
    });
    let dgamma = need[1].then(|| {
        let p = b.mul(dy, xhat);
        sum_leading(b, p)
    });
    let dbeta = need[2].then(|| sum_leading(b, dy));
    vec![dx, dgamma, dbeta]
}

/// Rmsnorm over the last axis: with `x̂ = x r`, `r = 1/√(mean(x²) + ε)` and
/// `g = dy ⊙ γ`: `dx = r (g − x̂ mean(g ⊙ x̂))`, `dγ = Σ dy ⊙ x̂`.
fn rms_norm(b: &mut B, node: &Node, eps: f64, dy: ValueId, need: &[bool]) -> Vec<Option<ValueId>> {
    let (x, gamma) = (node.args[0], node.args[1]);
    let shape = b.shape(x);
    let sq = b.mul(x, x);
    let ms = b.mean_last_bcast(sq);
    let r = inv_std(b, ms, eps);
    let xhat = b.mul(x, r);
    let dx = need[0].then(|| {
        let gb = b.broadcast(gamma, &shape);
        let g = b.mul(dy, gb);
        let gx = b.mul(g, xhat);
        let mgx = b.mean_last_bcast(gx);
        let t = b.mul(xhat, mgx);
        let c = b.sub(g, t);
        b.mul(r, c)
    });
    let dgamma = need[1].then(|| {
        let p = b.mul(dy, xhat);
        sum_leading(b, p)
    });
    vec![dx, dgamma]
}
