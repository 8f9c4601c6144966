//! Moving bits between registers: `mov` (including `{a,b}` packing and unpacking) and `cvta`.

use super::cta::Cta;
use crate::error::Result;
use crate::instr::{Instr, Mod, Operand};
use crate::memory::{PARAM_WINDOW, SHARED_WINDOW};
use crate::types::{truncate, Type};

impl Cta<'_> {
    pub(super) fn mov(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        match (ins.arg(0)?, ins.arg(1)?) {
            // unpack: the first element receives the lowest bits
            (Operand::Vector(dsts), src) => {
                let v = self.read(t, src, ty, ins)?;
                let w = ty.bits() / dsts.len() as u32;
                for (i, d) in dsts.iter().enumerate() {
                    self.write(t, d, truncate(v >> (w * i as u32), w), ins)?;
                }
                Ok(())
            }
            (d, Operand::Vector(srcs)) => {
                let w = ty.bits() / srcs.len() as u32;
                let piece = piece_type(w).ok_or_else(|| ins.unsupported())?;
                let mut v = 0;
                for (i, s) in srcs.iter().enumerate() {
                    v |= self.read(t, s, piece, ins)? << (w * i as u32);
                }
                self.write(t, d, v, ins)
            }
            (d, s) => {
                let v = self.read(t, s, ty, ins)?;
                self.write(t, d, v, ins)
            }
        }
    }

    /// Generic addresses of shared memory live at [`SHARED_WINDOW`], of parameters at
    /// [`PARAM_WINDOW`] (`cvta.param` only converts to generic); global addresses are the same in both.
    pub(super) fn cvta(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        let a = self.read(t, ins.arg(1)?, ty, ins)?;
        let v = match (ins.has(Mod::Shared), ins.has(Mod::To)) {
            (true, true) => a.wrapping_sub(SHARED_WINDOW),
            (true, false) => a.wrapping_add(SHARED_WINDOW),
            (false, _) if ins.has(Mod::Global) => a,
            (false, false) if ins.has(Mod::Param) => a.wrapping_add(PARAM_WINDOW),
            _ => return Err(ins.unsupported()),
        };
        self.write(t, ins.arg(0)?, truncate(v, ty.bits()), ins)
    }
}

/// The untyped type of one element of a packed register.
fn piece_type(bits: u32) -> Option<Type> {
    Some(match bits {
        8 => Type::B8,
        16 => Type::B16,
        32 => Type::B32,
        64 => Type::B64,
        _ => return None,
    })
}
