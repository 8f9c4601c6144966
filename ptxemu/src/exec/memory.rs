//! Loads, stores and atomics (`ld`, `st`, `atom`, `red`) in the global, shared, param and generic spaces.
//!
//! Accesses must be naturally aligned (a vector to its whole size) and inside an allocation, the
//! CTA's shared memory or the parameter block; anything else is a memory fault naming the
//! instruction. Cache operators and `.nc` change nothing here. Threads run one at a time, so
//! atomics are plain read-modify-writes.

use super::cta::{Cta, Space};
use crate::error::Result;
use crate::float_format::{Format, Round};
use crate::instr::{Instr, Mod, Opcode, Operand};
use crate::types::{extend, Type};

fn space(ins: &Instr) -> Space {
    if ins.has(Mod::Global) {
        Space::Global
    } else if ins.has(Mod::Shared) {
        Space::Shared
    } else if ins.has(Mod::Param) {
        Space::Param
    } else {
        Space::Generic
    }
}

fn to_bytes(v: u64, n: u64) -> Vec<u8> {
    v.to_le_bytes()[..n as usize].to_vec()
}

fn from_bytes(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// The registers of a data operand: the elements of `{...}` or the operand itself.
fn elements(op: &Operand) -> &[Operand] {
    match op {
        Operand::Vector(v) => v,
        one => std::slice::from_ref(one),
    }
}

impl Cta<'_> {
    pub(super) fn ld(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        let addr = self.address(t, ins.arg(1)?, ins)?;
        let dsts = elements(ins.arg(0)?);
        if dsts.len() != ins.vec {
            return Err(ins.unsupported());
        }
        let n = ty.bytes();
        let total = (n * ins.vec as u64) as usize;
        let mut bytes = [0u8; 32]; // the widest access is .v4 of 64-bit values
        bytes[..total].copy_from_slice(self.load(space(ins), addr, total as u64, ins)?);
        for (i, d) in dsts.iter().enumerate() {
            let v = from_bytes(&bytes[i * n as usize..(i + 1) * n as usize]);
            self.write(t, d, extend(v, ty), ins)?;
        }
        Ok(())
    }

    pub(super) fn st(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        let addr = self.address(t, ins.arg(0)?, ins)?;
        let srcs = elements(ins.arg(1)?);
        if srcs.len() != ins.vec {
            return Err(ins.unsupported());
        }
        let mut bytes = Vec::new();
        for s in srcs {
            bytes.extend(to_bytes(self.read(t, s, ty, ins)?, ty.bytes()));
        }
        self.store(space(ins), addr, &bytes, ins)
    }

    /// `atom.op.type d, [a], b` returns the old value; `red.op.type [a], b` does not.
    pub(super) fn atom(&mut self, ins: &Instr, t: usize) -> Result<()> {
        let ty = ins.ty(0)?;
        let first = usize::from(ins.op == Opcode::Atom);
        let addr = self.address(t, ins.arg(first)?, ins)?;
        let b = self.read(t, ins.arg(first + 1)?, ty, ins)?;
        let n = ty.bytes();
        let old = from_bytes(self.load(space(ins), addr, n, ins)?);
        let new = match Format::of(ty) {
            Some((fmt, 1)) => {
                let (x, y) = (fmt.decode(old), fmt.decode(b));
                let r = if ins.has(Mod::Add) {
                    x + y
                } else if ins.has(Mod::Min) {
                    x.min(y)
                } else if ins.has(Mod::Max) {
                    x.max(y)
                } else {
                    return Err(ins.unsupported());
                };
                fmt.encode(r, Round::NearestEven)
            }
            Some(_) => return Err(ins.unsupported()),
            None => {
                let (x, y) = (super::int::widen(old, ty), super::int::widen(b, ty));
                let r = if ins.has(Mod::Add) {
                    x.wrapping_add(y)
                } else if ins.has(Mod::Min) && ty != Type::B32 && ty != Type::B64 {
                    x.min(y)
                } else if ins.has(Mod::Max) && ty != Type::B32 && ty != Type::B64 {
                    x.max(y)
                } else {
                    return Err(ins.unsupported());
                };
                r as u64
            }
        };
        self.store(space(ins), addr, &to_bytes(new, n), ins)?;
        if ins.op == Opcode::Atom {
            self.write(t, ins.arg(0)?, extend(old, ty), ins)?;
        }
        Ok(())
    }
}
