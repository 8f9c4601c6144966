//! Floating-point arithmetic on f16/bf16 (scalar and x2), f32 and f64.
//!
//! Each lane is decoded exactly to f64, computed, and rounded once to the destination format
//! with round-to-nearest-even. For add/sub/mul/div/sqrt f64 holds more than twice the precision of
//! f32 and the halves, so the double rounding is exact (IEEE correctly rounded). `fma` on f32 and
//! f64 uses `mul_add`; on halves it is computed in f64 (a product of halves is exact there, so at
//! most the final addition can double-round).
//!
//! `.approx` instructions (`ex2`, `lg2`, `sin`, `cos`, `tanh`, `rcp.approx`, `rsqrt`, `div.approx`)
//! return the value computed in f64 and rounded: never worse than the maximum error PTX states for
//! them (e.g. 2 ulp for `ex2.approx.f32`, 2^-20.5 absolute for `sin.approx.f32`), while real GPUs
//! may be off by up to that bound — tests should compare with tolerances no tighter than PTX's.
//! `.ftz` flushes f32 subnormal inputs and results to signed zero; `.sat` clamps to [0, 1] (NaN → 0).

use super::cta::Cta;
use crate::error::Result;
use crate::float_format::{Format, Round, F32};
use crate::instr::{Instr, Mod, Opcode};
use crate::types::truncate;

impl Cta<'_> {
    pub(super) fn float_arith(&mut self, ins: &Instr, t: usize) -> Result<()> {
        if [Mod::Rz, Mod::Rm, Mod::Rp, Mod::Lo, Mod::Hi, Mod::Wide]
            .iter()
            .any(|&m| ins.has(m))
        {
            return Err(ins.unsupported());
        }
        let arity = match ins.op {
            Opcode::Neg | Opcode::Abs => 1,
            Opcode::Fma | Opcode::Mad => 3,
            Opcode::Add | Opcode::Sub | Opcode::Mul | Opcode::Div | Opcode::Min | Opcode::Max => 2,
            _ => return Err(ins.unsupported()),
        };
        let f32_fma = ins.ty(0)? == crate::types::Type::F32;
        // `.NaN` (sm_80): min/max return NaN when either operand is NaN.
        let nan = ins.has(Mod::NaN);
        self.lanewise(ins, t, arity, |x| match ins.op {
            Opcode::Min | Opcode::Max if nan && (x[0].is_nan() || x[1].is_nan()) => f64::NAN,
            Opcode::Add => x[0] + x[1],
            Opcode::Sub => x[0] - x[1],
            Opcode::Mul => x[0] * x[1],
            Opcode::Div => x[0] / x[1],
            Opcode::Min => min(x[0], x[1]),
            Opcode::Max => max(x[0], x[1]),
            Opcode::Neg => -x[0],
            Opcode::Abs => x[0].abs(),
            _ if f32_fma => f64::from((x[0] as f32).mul_add(x[1] as f32, x[2] as f32)),
            _ => x[0].mul_add(x[1], x[2]),
        })
    }

    pub(super) fn float_unary(&mut self, ins: &Instr, t: usize) -> Result<()> {
        if ins.op == Opcode::Copysign {
            // copysign d, a, b: b's magnitude with a's sign
            return self.lanewise(ins, t, 2, |x| x[1].abs().copysign(x[0]));
        }
        self.lanewise(ins, t, 1, |x| {
            let a = x[0];
            match ins.op {
                Opcode::Ex2 => a.exp2(),
                Opcode::Lg2 => a.log2(),
                Opcode::Rcp => 1.0 / a,
                Opcode::Sqrt => a.sqrt(),
                Opcode::Rsqrt => 1.0 / a.sqrt(),
                Opcode::Sin => a.sin(),
                Opcode::Cos => a.cos(),
                _ => a.tanh(),
            }
        })
    }

    /// Applies `f` to each lane of operands 1..=arity at the instruction's type and writes operand 0.
    fn lanewise(
        &mut self,
        ins: &Instr,
        t: usize,
        arity: usize,
        f: impl Fn(&[f64]) -> f64,
    ) -> Result<()> {
        let ty = ins.ty(0)?;
        let (fmt, lanes) = Format::of(ty).ok_or_else(|| ins.unsupported())?;
        let ftz = ins.has(Mod::Ftz) && fmt == F32;
        let mut raw = [0u64; 3];
        for (i, r) in raw.iter_mut().enumerate().take(arity) {
            *r = self.read(t, ins.arg(i + 1)?, ty, ins)?;
        }
        let w = fmt.bits();
        let mut out = 0;
        for lane in 0..lanes {
            let mut x = [0f64; 3];
            for i in 0..arity {
                x[i] = flush(fmt.decode(truncate(raw[i] >> (lane * w), w)), ftz);
            }
            let mut y = flush(f(&x[..arity]), ftz);
            if ins.has(Mod::Sat) {
                y = if y.is_nan() { 0.0 } else { y.clamp(0.0, 1.0) };
            }
            out |= fmt.encode(y, Round::NearestEven) << (lane * w);
        }
        self.write(t, ins.arg(0)?, out, ins)
    }
}

/// PTX `max`: a NaN operand yields the other operand, and +0 is above -0.
fn max(a: f64, b: f64) -> f64 {
    if a == 0.0 && b == 0.0 {
        if a.is_sign_positive() {
            a
        } else {
            b
        }
    } else {
        a.max(b)
    }
}

/// PTX `min`: a NaN operand yields the other operand, and -0 is below +0.
fn min(a: f64, b: f64) -> f64 {
    if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() {
            a
        } else {
            b
        }
    } else {
        a.min(b)
    }
}

/// Flushes an f32 subnormal to signed zero when `.ftz` applies.
pub(super) fn flush(x: f64, ftz: bool) -> f64 {
    if ftz && x != 0.0 && x.abs() < f64::from(f32::MIN_POSITIVE) {
        0.0f64.copysign(x)
    } else {
        x
    }
}
