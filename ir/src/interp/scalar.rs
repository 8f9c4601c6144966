//! Scalar math: one element of each elementwise op, and `erf`.
//!
//! Floats are computed in f64; integers in wrapping i64 arithmetic (the
//! caller then wraps to the node's dtype with `DType::round`), which is
//! exact while values stay within 2^53, the range an f64 element holds exactly.

use super::error::OpError;
use crate::{BinaryOp, UnaryOp};
use std::f64::consts::{FRAC_2_SQRT_PI, PI, SQRT_2};

/// The error function, within a few ulp (checked against 40-digit values).
///
/// Below 2 it sums the everywhere-positive series
/// `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))`
/// (no cancellation); from 2 on it is `1 - erfc(x)`.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x < 0.0 {
        -erf(-x)
    } else if x < 2.0 {
        erf_series(x)
    } else {
        1.0 - erfc_fraction(x)
    }
}

/// The complementary error function `1 - erf(x)`, accurate in relative
/// terms (a few ulp) also for large `x`, where `1 - erf(x)` would cancel:
/// from 1 on it uses the continued fraction.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x < 0.0 {
        2.0 - erfc(-x)
    } else if x < 1.0 {
        1.0 - erf_series(x)
    } else {
        erfc_fraction(x)
    }
}

/// The series of [`erf`] for `0 <= x < 2`; terms grow until `n ~ x^2` and
/// then shrink geometrically, so 200 terms are far more than enough.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= 2.0 * x2 / (2 * n + 1) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    FRAC_2_SQRT_PI * (-x2).exp() * sum
}

/// `erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`
/// for `x >= 1`, evaluated with the modified Lentz method (all terms are
/// positive, so no zero guards are needed).
fn erfc_fraction(x: f64) -> f64 {
    let mut f = x;
    let (mut c, mut d) = (x, 0.0);
    for n in 1..5000 {
        let a = n as f64 / 2.0;
        d = 1.0 / (x + a * d);
        c = x + a / c;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    // exp(-x^2) with x^2 split so the rounding of x*x (relative error
    // eps, amplified x^2 times by exp) is avoided: xs*xs is exact.
    let xs = (x * 16.0).trunc() / 16.0;
    (-xs * xs).exp() * (-(x - xs) * (x + xs)).exp() / (PI.sqrt() * f)
}

/// The logistic function, in a form that never overflows `exp`.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// One element of a unary op on a float.
pub(crate) fn unary_float(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => sigmoid(x),
        // `x < 0` keeps NaN as NaN, as numpy's maximum(x, 0) does.
        UnaryOp::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        // 1 + erf(z) == erfc(-z), which stays accurate for very negative x.
        UnaryOp::Gelu => x * 0.5 * erfc(-x / SQRT_2),
        UnaryOp::GeluTanh => {
            let k = (2.0 / PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        }
        UnaryOp::Silu => x * sigmoid(x),
        UnaryOp::Erf => erf(x),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Not => (x == 0.0) as u8 as f64,
    }
}

/// One element of a unary op on an integer (only neg, abs and relu apply).
pub(crate) fn unary_int(op: UnaryOp, x: i64) -> i64 {
    match op {
        UnaryOp::Neg => x.wrapping_neg(),
        UnaryOp::Abs => x.wrapping_abs(),
        UnaryOp::Relu => x.max(0),
        _ => unreachable!("verifier admits only neg, abs and relu on integers"),
    }
}

/// NaN if either side is NaN (numpy's maximum/minimum), else `pick(a, b)`.
fn nan_or(a: f64, b: f64, pick: fn(f64, f64) -> f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        pick(a, b)
    }
}

/// One element of a binary op on floats (bools use max/min/and/or here too).
pub(crate) fn binary_float(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Max => nan_or(a, b, f64::max),
        BinaryOp::Min => nan_or(a, b, f64::min),
        BinaryOp::And => (a != 0.0 && b != 0.0) as u8 as f64,
        BinaryOp::Or => (a != 0.0 || b != 0.0) as u8 as f64,
    }
}

/// One element of a binary op on integers; division truncates toward zero.
pub(crate) fn binary_int(op: BinaryOp, a: i64, b: i64) -> Result<i64, OpError> {
    Ok(match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div if b == 0 => return Err(OpError::DivisionByZero),
        BinaryOp::Div => a.wrapping_div(b),
        BinaryOp::Pow => crate::int_pow(a, b).ok_or(OpError::DivisionByZero)?,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::And | BinaryOp::Or => unreachable!("verifier admits and/or only on bool"),
    })
}

