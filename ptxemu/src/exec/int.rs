//! Integer arithmetic and bit operations (`add`..`max` on integer types, `and`..`shr`).
//!
//! Operands are widened to `i128` (signed or unsigned by type), computed exactly, and truncated:
//! that gives two's complement wrapping, `.hi`/`.wide` halves and `.sat` clamping in one place.
//! Division by zero yields all ones (the quotient NVIDIA hardware returns); remainder by zero
//! yields the dividend.

use super::cta::Cta;
use crate::error::Result;
use crate::instr::{Instr, Mod, Opcode};
use crate::types::{sign_extend, truncate, Kind, Type};

/// The value of `bits` read at type `ty`, exactly.
pub(super) fn widen(bits: u64, ty: Type) -> i128 {
    if ty.kind() == Kind::Signed {
        i128::from(sign_extend(bits, ty.bits()))
    } else {
        i128::from(truncate(bits, ty.bits()))
    }
}

/// The integer type twice as wide (for `.wide` results and `mad.wide` addends).
fn double(ty: Type) -> Type {
    match (ty.kind(), ty.bits()) {
        (Kind::Signed, 16) => Type::S32,
        (Kind::Signed, _) => Type::S64,
        (_, 16) => Type::U32,
        _ => Type::U64,
    }
}

impl Cta<'_> {
    pub(super) fn int_arith(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        let bits = ty.bits();
        let src = |i: usize, ty: Type| -> Result<i128> {
            Ok(widen(self.read(t, ins.arg(i)?, ty, ins)?, ty))
        };
        let a = src(1, ty)?;
        let binary = || src(2, ty);
        let wide = ins.has(Mod::Wide);
        let result = match ins.op {
            Opcode::Add | Opcode::Sub => {
                let b = binary()?;
                let r = if ins.op == Opcode::Add { a + b } else { a - b };
                if ins.has(Mod::Sat) {
                    if ty != Type::S32 {
                        return Err(ins.unsupported());
                    }
                    r.clamp(i128::from(i32::MIN), i128::from(i32::MAX))
                } else {
                    r
                }
            }
            Opcode::Mul | Opcode::Mad => {
                let product = a.wrapping_mul(binary()?);
                let product = if ins.has(Mod::Hi) {
                    if ty.kind() == Kind::Signed {
                        product >> bits
                    } else {
                        ((product as u128) >> bits) as i128
                    }
                } else {
                    product
                };
                if ins.op == Opcode::Mad {
                    let addend_ty = if wide { double(ty) } else { ty };
                    product.wrapping_add(src(3, addend_ty)?)
                } else {
                    product
                }
            }
            Opcode::Div => match binary()? {
                0 => -1,
                b => a / b,
            },
            Opcode::Rem => match binary()? {
                0 => a,
                b => a % b,
            },
            Opcode::Neg => -a,
            Opcode::Abs => a.abs(),
            Opcode::Min => a.min(binary()?),
            Opcode::Max => a.max(binary()?),
            _ => return Err(ins.unsupported()),
        };
        let out_bits = if wide { bits * 2 } else { bits };
        self.write(t, ins.arg(0)?, truncate(result as u64, out_bits), ins)
    }

    pub(super) fn bitwise(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        let bits = ty.bits();
        let a = self.read(t, ins.arg(1)?, ty, ins)?;
        let result = match ins.op {
            Opcode::Not => !a,
            Opcode::Shl | Opcode::Shr => {
                let amount = self.read(t, ins.arg(2)?, Type::U32, ins)?;
                match (ins.op, ty.kind()) {
                    (Opcode::Shl, _) if amount >= u64::from(bits) => 0,
                    (Opcode::Shl, _) => a << amount,
                    (_, Kind::Signed) => {
                        (sign_extend(a, bits) >> amount.min(u64::from(bits) - 1)) as u64
                    }
                    _ if amount >= u64::from(bits) => 0,
                    _ => a >> amount,
                }
            }
            op => {
                let b = self.read(t, ins.arg(2)?, ty, ins)?;
                match op {
                    Opcode::And => a & b,
                    Opcode::Or => a | b,
                    _ => a ^ b,
                }
            }
        };
        self.write(t, ins.arg(0)?, truncate(result, bits), ins)
    }
}
