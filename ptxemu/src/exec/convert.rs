//! `cvt`: between integer widths, integers and floats, and float formats, in every rounding mode.
//!
//! Float-to-integer conversions saturate to the destination range and map NaN to 0, as PTX
//! specifies. Integer-to-float and narrowing float conversions round exactly once
//! ([`Format::encode`]); `cvt.rn.{bf16x2,f16x2}.f32 d, a, b` puts `a` in the upper half.

use super::cta::Cta;
use super::float::flush;
use super::int::widen;
use crate::error::Result;
use crate::float_format::{Format, Round, F32};
use crate::instr::{Instr, Mod};
use crate::types::{extend, truncate, Kind, Type};

/// The rounding direction a `cvt` names (`.rn` when none does).
fn rounding(ins: &Instr) -> Round {
    if ins.has(Mod::Rz) || ins.has(Mod::Rzi) {
        Round::Zero
    } else if ins.has(Mod::Rm) || ins.has(Mod::Rmi) {
        Round::Down
    } else if ins.has(Mod::Rp) || ins.has(Mod::Rpi) {
        Round::Up
    } else {
        Round::NearestEven
    }
}

fn to_integral(x: f64, mode: Round) -> f64 {
    match mode {
        Round::NearestEven => x.round_ties_even(),
        Round::Zero => x.trunc(),
        Round::Down => x.floor(),
        Round::Up => x.ceil(),
    }
}

/// The range of an integer type.
fn int_range(ty: Type) -> (i128, i128) {
    let bits = ty.bits();
    if ty.kind() == Kind::Signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

impl Cta<'_> {
    pub(super) fn cvt(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let (dty, sty) = (ins.ty(0)?, ins.ty(1)?);
        let mode = rounding(ins);
        let integral = [Mod::Rni, Mod::Rzi, Mod::Rmi, Mod::Rpi]
            .iter()
            .any(|&m| ins.has(m));
        let ftz = ins.has(Mod::Ftz);
        let sat = ins.has(Mod::Sat);
        let a = self.read(t, ins.arg(1)?, sty, ins)?;
        let bits = match (Format::of(dty), Format::of(sty)) {
            (None, None) => {
                let v = widen(a, sty);
                let (lo, hi) = int_range(dty);
                let v = if sat { v.clamp(lo, hi) } else { v };
                extend(truncate(v as u64, dty.bits()), dty)
            }
            (None, Some((sfmt, 1))) => {
                let x = to_integral(flush(sfmt.decode(a), ftz && sfmt == F32), mode);
                let (lo, hi) = int_range(dty);
                let v = if x.is_nan() {
                    0
                } else {
                    (x.clamp(lo as f64, hi as f64)) as i128
                };
                extend(truncate(v as u64, dty.bits()), dty)
            }
            (Some((dfmt, 1)), None) => {
                let v = widen(a, sty);
                dfmt.encode_int(v < 0, v.unsigned_abs() as u64, mode)
            }
            (Some((dfmt, 1)), Some((sfmt, 1))) => {
                let x = flush(sfmt.decode(a), ftz && sfmt == F32);
                let x = if integral { to_integral(x, mode) } else { x };
                let x = if sat && !x.is_nan() {
                    x.clamp(0.0, 1.0)
                } else if sat {
                    0.0
                } else {
                    x
                };
                let out = dfmt.encode(x, if integral { Round::NearestEven } else { mode });
                let ftz_out = ftz && dfmt == F32;
                if ftz_out {
                    F32.encode(flush(F32.decode(out), true), Round::Zero)
                } else {
                    out
                }
            }
            (Some((dfmt, 2)), Some((sfmt, 1))) => {
                let b = self.read(t, ins.arg(2)?, sty, ins)?;
                let half = |v: u64| dfmt.encode(sfmt.decode(v), mode);
                (half(a) << 16) | half(b)
            }
            _ => return Err(ins.unsupported()),
        };
        self.write(t, ins.arg(0)?, bits, ins)
    }
}
