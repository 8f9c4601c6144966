//! VJPs of elementwise ops: unary math, binary arithmetic, select and cast.
//! Compare, `not`, `and` and `or` yield bool and never carry a gradient.

use super::build::B;
use super::{unsupported, AutodiffError};
use crate::{BinaryOp, CmpOp, Node, Op, UnaryOp, ValueId};
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, PI};

/// Adjoints of `node`'s arguments; see [`super::vjp`].
pub(super) fn vjp(
    b: &mut B,
    node: &Node,
    y: ValueId,
    dy: ValueId,
    need: &[bool],
) -> Result<Vec<Option<ValueId>>, AutodiffError> {
    let x = &node.args;
    Ok(match &node.op {
        Op::Unary(u) => vec![Some(unary(b, *u, x[0], y, dy).ok_or_else(|| unsupported(&node.op, "bool op"))?)],
        Op::Binary(op) => binary(b, *op, x[0], x[1], y, dy, need)?,
        // The condition is bool: no gradient. Each branch gets the adjoint
        // where it was chosen and zero elsewhere.
        Op::Select => vec![
            None,
            need[1].then(|| {
                let z = b.full_like(0.0, dy);
                b.select(x[0], dy, z)
            }),
            need[2].then(|| {
                let z = b.full_like(0.0, dy);
                b.select(x[0], z, dy)
            }),
        ],
        // Only float -> float casts are active (integers never are), so the
        // adjoint is cast back to the operand's float type.
        Op::Cast => {
            let dt = b.dtype(x[0]);
            vec![Some(b.cast(dy, dt))]
        }
        op => return Err(unsupported(op, "not an elementwise op")),
    })
}

/// `dy * f'(x)` for a unary `f` with result `y`; `None` for `not`.
fn unary(b: &mut B, op: UnaryOp, x: ValueId, y: ValueId, dy: ValueId) -> Option<ValueId> {
    let d = match op {
        UnaryOp::Neg => return Some(b.neg(dy)),
        UnaryOp::Relu => {
            // relu'(0) = 0, as in JAX.
            let pos = b.compare_const(CmpOp::Gt, x, 0.0);
            let z = b.full_like(0.0, dy);
            return Some(b.select(pos, dy, z));
        }
        UnaryOp::Abs => {
            // sign(x), with sign(0) = 0.
            let pos = b.compare_const(CmpOp::Gt, x, 0.0);
            let neg = b.compare_const(CmpOp::Lt, x, 0.0);
            let dt = b.dtype(x);
            let (p, n) = (b.cast(pos, dt), b.cast(neg, dt));
            b.sub(p, n)
        }
        UnaryOp::Exp => y,
        UnaryOp::Log => return Some(b.div(dy, x)),
        // 1 / (2 sqrt(x)).
        UnaryOp::Sqrt => {
            let two_y = b.scale(y, 2.0);
            return Some(b.div(dy, two_y));
        }
        // -x^(-3/2) / 2 = -y^3 / 2.
        UnaryOp::Rsqrt => {
            let y2 = b.mul(y, y);
            let y3 = b.mul(y2, y);
            b.scale(y3, -0.5)
        }
        UnaryOp::Tanh => {
            let y2 = b.mul(y, y);
            b.rsub(1.0, y2)
        }
        UnaryOp::Sigmoid => {
            let one_minus = b.rsub(1.0, y);
            b.mul(y, one_minus)
        }
        // Φ(x) + x φ(x) with Φ(x) = (1 + erf(x / √2)) / 2 and φ the normal density.
        UnaryOp::Gelu => {
            let xs = b.scale(x, FRAC_1_SQRT_2);
            let e = b.unary(UnaryOp::Erf, xs);
            let e1 = b.offset(e, 1.0);
            let cdf = b.scale(e1, 0.5);
            let x2 = b.mul(x, x);
            let h = b.scale(x2, -0.5);
            let ex = b.unary(UnaryOp::Exp, h);
            let pdf = b.scale(ex, 1.0 / (2.0 * PI).sqrt());
            let xpdf = b.mul(x, pdf);
            b.add(cdf, xpdf)
        }
        // y = x (1 + t) / 2 with t = tanh(k (x + c x^3)):
        // y' = (1 + t) / 2 + x (1 - t^2) k (1 + 3 c x^2) / 2.
        UnaryOp::GeluTanh => {
            let (k, c) = ((2.0 / PI).sqrt(), 0.044715);
            let x2 = b.mul(x, x);
            let x3 = b.mul(x2, x);
            let cx3 = b.scale(x3, c);
            let inner = b.add(x, cx3);
            let u = b.scale(inner, k);
            let t = b.unary(UnaryOp::Tanh, u);
            let t1 = b.offset(t, 1.0);
            let first = b.scale(t1, 0.5);
            let t2 = b.mul(t, t);
            let sech2 = b.rsub(1.0, t2);
            let q = b.scale(x2, 3.0 * c);
            let q1 = b.offset(q, 1.0);
            let du = b.scale(q1, 0.5 * k);
            let xs = b.mul(x, sech2);
            let second = b.mul(xs, du);
            b.add(first, second)
        }
        // s (1 + x (1 - s)) with s = sigmoid(x).
        UnaryOp::Silu => {
            let s = b.unary(UnaryOp::Sigmoid, x);
            let one_minus = b.rsub(1.0, s);
            let xs = b.mul(x, one_minus);
            let inner = b.offset(xs, 1.0);
            b.mul(s, inner)
        }
        // 2/√π exp(-x^2).
        UnaryOp::Erf => {
            let x2 = b.mul(x, x);
            let nx2 = b.neg(x2);
            let e = b.unary(UnaryOp::Exp, nx2);
            b.scale(e, FRAC_2_SQRT_PI)
        }
        UnaryOp::Sin => b.unary(UnaryOp::Cos, x),
        UnaryOp::Cos => {
            let s = b.unary(UnaryOp::Sin, x);
            b.neg(s)
        }
        UnaryOp::Not => return None,
    };
    Some(b.mul(dy, d))
}

/// Adjoints of a binary op's operands `a`, `c` with result `y`.
fn binary(
    b: &mut B,
    op: BinaryOp,
    a: ValueId,
    c: ValueId,
    y: ValueId,
    dy: ValueId,
    need: &[bool],
) -> Result<Vec<Option<ValueId>>, AutodiffError> {
    let (na, nc) = (need[0], need[1]);
    Ok(match op {
        BinaryOp::Add => vec![na.then_some(dy), nc.then_some(dy)],
        BinaryOp::Sub => vec![na.then_some(dy), nc.then(|| b.neg(dy))],
        BinaryOp::Mul => vec![na.then(|| b.mul(dy, c)), nc.then(|| b.mul(dy, a))],
        BinaryOp::Div => vec![
            na.then(|| b.div(dy, c)),
            // -dy * a / c^2 = -(dy * y) / c.
            nc.then(|| {
                let t = b.mul(dy, y);
                let q = b.div(t, c);
                b.neg(q)
            }),
        ],
        BinaryOp::Pow => vec![
            // c * a^(c-1), taken as 0 where c == 0 (so 0^0 has no NaN).
            na.then(|| {
                let cm1 = b.offset(c, -1.0);
                let p = b.binary(BinaryOp::Pow, a, cm1);
                let d = b.mul(c, p);
                let zero_exp = b.compare_const(CmpOp::Eq, c, 0.0);
                let z = b.full_like(0.0, d);
                let d = b.select(zero_exp, z, d);
                b.mul(dy, d)
            }),
            // y * log(a), with log(0) taken as 0 (JAX's convention).
            nc.then(|| {
                let zero_base = b.compare_const(CmpOp::Eq, a, 0.0);
                let one = b.full_like(1.0, a);
                let safe = b.select(zero_base, one, a);
                let l = b.unary(UnaryOp::Log, safe);
                let d = b.mul(y, l);
                b.mul(dy, d)
            }),
        ],
        BinaryOp::Max | BinaryOp::Min => {
            // The winner takes the gradient; ties split it evenly (JAX).
            let wins = if op == BinaryOp::Max { CmpOp::Gt } else { CmpOp::Lt };
            let share = |b: &mut B, p: ValueId, q: ValueId| {
                let dt = b.dtype(p);
                let w = b.compare(wins, p, q);
                let t = b.compare(CmpOp::Eq, p, q);
                let w = b.cast(w, dt);
                let t = b.cast(t, dt);
                let half = b.scale(t, 0.5);
                let s = b.add(w, half);
                b.mul(dy, s)
            };
            vec![na.then(|| share(b, a, c)), nc.then(|| share(b, c, a))]
        }
        BinaryOp::And | BinaryOp::Or => return Err(super::unsupported(&Op::Binary(op), "bool op")),
    })
}
