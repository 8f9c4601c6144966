//! Warp-wide matrix instructions: `ldmatrix` and `mma.sync` (m16n8k16 / m16n8k8, f16 or bf16
//! inputs, f32 accumulators), with the fragment layouts of the PTX ISA.
//!
//! Lane `l` has `group = l / 4` and `tig = l % 4` (thread in group). Fragment element `i` lives in
//! register `i / 2`, low half first:
//! - A (16×K, row-major): row `group + 8·((i/2) % 2)`, column `2·tig + i%2 + 8·(i/4)`;
//! - B (K×8, column-major): row `2·tig + i%2 + 8·(i/2)`, column `group`;
//! - C and D (16×8, f32, one element per register): row `group + 8·(i/2)`, column `2·tig + i%2`.
//!
//! The products of two halves are exact in f64 and summed there, then added to C and rounded once
//! to f32; hardware accumulates with less care, so compare against it with a tolerance.

use super::cta::{Cta, Space};
use crate::error::{Error, Result};
use crate::float_format::{Format, Round, F32};
use crate::instr::{Instr, Mod, Operand};
use crate::types::{truncate, Type};

/// The registers of a `{...}` operand.
fn regs<'a>(ins: &Instr, op: &'a Operand, n: usize) -> Result<&'a [Operand]> {
    match op {
        Operand::Vector(v) if v.len() == n => Ok(v),
        _ => Err(Error::Parse {
            line: ins.line,
            msg: format!("`{}` expects a vector of {n} registers", ins.name),
        }),
    }
}

impl Cta<'_> {
    /// Checks that all 32 lanes of a full warp execute the instruction.
    pub(super) fn whole_warp(&self, ins: &Instr, exec: &[usize]) -> Result<usize> {
        self.converged(ins, exec, u32::MAX)?;
        match exec.first() {
            Some(&t) if exec.len() == 32 => Ok(t),
            _ => Err(Error::NotConverged {
                instr: ins.name.clone(),
                line: ins.line,
                msg: "needs all 32 lanes of a warp".into(),
            }),
        }
    }

    pub(super) fn ldmatrix(&mut self, ins: &Instr, exec: &[usize]) -> Result<()> {
        let base = self.whole_warp(ins, exec)?;
        let count = [(Mod::X1, 1), (Mod::X2, 2), (Mod::X4, 4)]
            .iter()
            .find(|(m, _)| ins.has(*m))
            .map(|&(_, n)| n);
        let (Some(count), true, true) =
            (count, ins.shape == Some([8, 8, 0]), ins.ty(0)? == Type::B16)
        else {
            return Err(ins.unsupported());
        };
        let space = if ins.has(Mod::Shared) {
            Space::Shared
        } else {
            Space::Generic
        };
        // matrix m's row r comes from the address in lane 8m + r
        let mut rows = Vec::with_capacity(8 * count);
        for lane in 0..8 * count {
            let addr = self.address(base + lane, ins.arg(1)?, ins)?;
            let bytes = self.load(space, addr, 16, ins)?;
            rows.push(
                bytes
                    .chunks_exact(2)
                    .map(|c| u64::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect::<Vec<_>>(),
            );
        }
        let trans = ins.has(Mod::Trans);
        for lane in 0..32 {
            let dsts = regs(ins, ins.arg(0)?, count)?;
            for (m, d) in dsts.iter().enumerate() {
                let (r, c) = (lane / 4, 2 * (lane % 4));
                let (lo, hi) = if trans {
                    (rows[8 * m + c][r], rows[8 * m + c + 1][r])
                } else {
                    (rows[8 * m + r][c], rows[8 * m + r][c + 1])
                };
                self.write(base + lane, d, lo | (hi << 16), ins)?;
            }
        }
        Ok(())
    }

    pub(super) fn mma(&mut self, ins: &Instr, exec: &[usize]) -> Result<()> {
        let base = self.whole_warp(ins, exec)?;
        let k = match ins.shape {
            Some([16, 8, k @ (8 | 16)]) => k as usize,
            _ => return Err(ins.unsupported()),
        };
        let half = match ins.types.as_slice() {
            [Type::F32, Type::Bf16, Type::Bf16, Type::F32] => Format::of(Type::Bf16),
            [Type::F32, Type::F16, Type::F16, Type::F32] => Format::of(Type::F16),
            _ => None,
        };
        let (Some((half, _)), true, true) = (half, ins.has(Mod::Row), ins.has(Mod::Col)) else {
            return Err(ins.unsupported());
        };
        let (a_regs, b_regs) = (
            regs(ins, ins.arg(1)?, k / 4)?,
            regs(ins, ins.arg(2)?, k / 8)?,
        );
        let (c_regs, d_regs) = (regs(ins, ins.arg(3)?, 4)?, regs(ins, ins.arg(0)?, 4)?);
        let mut a = vec![[0f64; 16]; 16];
        let mut b = vec![[0f64; 8]; 16];
        let mut c = [[0f64; 8]; 16];
        for lane in 0..32 {
            let t = base + lane;
            let (g, tig) = (lane / 4, lane % 4);
            for i in 0..k / 2 {
                let v = self.read(t, &a_regs[i / 2], Type::B32, ins)?;
                a[g + 8 * ((i / 2) % 2)][2 * tig + i % 2 + 8 * (i / 4)] =
                    half.decode(truncate(v >> (16 * (i % 2)), 16));
            }
            for i in 0..k / 4 {
                let v = self.read(t, &b_regs[i / 2], Type::B32, ins)?;
                b[2 * tig + i % 2 + 8 * (i / 2)][g] =
                    half.decode(truncate(v >> (16 * (i % 2)), 16));
            }
            for i in 0..4 {
                c[g + 8 * (i / 2)][2 * tig + i % 2] =
                    F32.decode(self.read(t, &c_regs[i], Type::F32, ins)?);
            }
        }
        let mut out = Vec::with_capacity(128);
        for lane in 0..32 {
            let (g, tig) = (lane / 4, lane % 4);
            for i in 0..4 {
                let (row, col) = (g + 8 * (i / 2), 2 * tig + i % 2);
                let dot: f64 = (0..k).map(|kk| a[row][kk] * b[kk][col]).sum();
                out.push((
                    base + lane,
                    i,
                    F32.encode(c[row][col] + dot, Round::NearestEven),
                ));
            }
        }
        for (t, i, v) in out {
            self.write(t, &d_regs[i], v, ins)?;
        }
        Ok(())
    }
}
