//! Comparisons and selection: `setp` (with `.and/.or/.xor` and `p|q` destinations) and `selp`.

use super::cta::Cta;
use super::float::flush;
use super::int::widen;
use crate::error::Result;
use crate::float_format::{Format, F32};
use crate::instr::{Instr, Mod, Operand};
use crate::types::Type;

impl Cta<'_> {
    pub(super) fn setp(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        let a = self.read(t, ins.arg(1)?, ty, ins)?;
        let b = self.read(t, ins.arg(2)?, ty, ins)?;
        let cmp = match Format::of(ty) {
            Some((fmt, 1)) => {
                // `.ftz` compares f32 subnormals as zeros
                let ftz = ins.has(Mod::Ftz) && fmt == F32;
                compare_float(ins, flush(fmt.decode(a), ftz), flush(fmt.decode(b), ftz))?
            }
            Some(_) => return Err(ins.unsupported()),
            None => compare_int(ins, widen(a, ty), widen(b, ty))?,
        };
        let combine = |x: bool, c: Option<bool>| match c {
            None => x,
            Some(c) if ins.has(Mod::And) => x && c,
            Some(c) if ins.has(Mod::Or) => x || c,
            Some(c) => x != c,
        };
        let c = if ins.has(Mod::And) || ins.has(Mod::Or) || ins.has(Mod::Xor) {
            Some(self.read(t, ins.arg(3)?, Type::Pred, ins)? != 0)
        } else {
            None
        };
        match ins.arg(0)? {
            Operand::PredPair(p, q) => {
                let (p, q) = (*p, *q);
                self.set_reg(t, p, u64::from(combine(cmp, c)));
                self.set_reg(t, q, u64::from(combine(!cmp, c)));
                Ok(())
            }
            d => self.write(t, d, u64::from(combine(cmp, c)), ins),
        }
    }

    pub(super) fn selp(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        let pick = if self.read(t, ins.arg(3)?, Type::Pred, ins)? != 0 {
            1
        } else {
            2
        };
        let v = self.read(t, ins.arg(pick)?, ty, ins)?;
        self.write(t, ins.arg(0)?, v, ins)
    }
}

fn compare_int(ins: &Instr, a: i128, b: i128) -> Result<bool> {
    Ok(if ins.has(Mod::Eq) {
        a == b
    } else if ins.has(Mod::Ne) {
        a != b
    } else if ins.has(Mod::Lt) || ins.has(Mod::Lo) {
        a < b
    } else if ins.has(Mod::Le) || ins.has(Mod::Ls) {
        a <= b
    } else if ins.has(Mod::Gt) || ins.has(Mod::Hi) {
        a > b
    } else if ins.has(Mod::Ge) || ins.has(Mod::Hs) {
        a >= b
    } else {
        return Err(ins.unsupported());
    })
}

/// Ordered comparisons are false when either side is NaN; the `u` forms are true then.
fn compare_float(ins: &Instr, a: f64, b: f64) -> Result<bool> {
    let nan = a.is_nan() || b.is_nan();
    let ordered = [
        (Mod::Eq, Mod::Equ),
        (Mod::Ne, Mod::Neu),
        (Mod::Lt, Mod::Ltu),
        (Mod::Le, Mod::Leu),
        (Mod::Gt, Mod::Gtu),
        (Mod::Ge, Mod::Geu),
    ];
    for (i, (o, u)) in ordered.into_iter().enumerate() {
        if ins.has(o) || ins.has(u) {
            let holds = match i {
                0 => a == b,
                1 => a != b,
                2 => a < b,
                3 => a <= b,
                4 => a > b,
                _ => a >= b,
            };
            return Ok(if nan { ins.has(u) } else { holds });
        }
    }
    if ins.has(Mod::Num) {
        Ok(!nan)
    } else if ins.has(Mod::Nan) {
        Ok(nan)
    } else {
        Err(ins.unsupported())
    }
}
