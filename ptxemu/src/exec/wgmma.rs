//! sm_90a warpgroup MMA: `wgmma.mma_async` m64nNk16 with f16/bf16 operands and f32
//! accumulators; `wgmma.fence`, `commit_group` and `wait_group`.
//!
//! The product is computed when `mma_async` issues; what the asynchrony leaves undefined is still
//! caught: until a `wgmma.wait_group` retires its group, any other instruction that reads or
//! writes an accumulator or A register of an issued `mma_async` is an error (later `mma_async`s
//! may chain on the same accumulators, as the PTX ISA allows). Each warp of the warpgroup computes its own 16 rows (warp `w % 4` owns rows
//! `16 (w % 4) ..`), which needs nothing from the other three warps, so warps still run one at a
//! time. Accumulator element `i` of a lane (group `g = lane / 4`, `tig = lane % 4`) is row
//! `16 (w % 4) + g + 8 ((i / 2) % 2)`, column `8 (i / 4) + 2 tig + i % 2`.
//!
//! A comes from a descriptor or from four `.b32` registers per lane laid out as the A fragment
//! of `mma.m16n8k16` for the warp's 16 rows: register `j` holds row `g + 8 (j % 2)`, columns
//! `2 tig + 8 (j / 2)` (low half) and `+ 1` (high half).
//!
//! Descriptors: start address, leading byte offset (LBO) and stride byte offset (SBO) in 16-byte
//! units at bits 0, 16 and 32; swizzle mode at bits 62..63 (0 none, 1 128B, 2 64B, 3 32B). A zero
//! base offset is emulated. For a swizzle of `S` bytes (`E = S / 2` elements per row), element
//! (r, k) of a 16-bit operand (r a row of A or a column of B) sits, before swizzling, at
//! - K-major (`imm-trans` 0), no swizzle: `start + (r / 8) SBO + (k / 8) LBO + (r % 8) 16 + (k % 8) 2`;
//! - K-major, swizzled: `start + (r / 8) SBO + (r % 8) S + 2k`;
//! - MN-major (`imm-trans` 1), no swizzle: `start + (r / 8) SBO + (k / 8) LBO + (k % 8) 16 + (r % 8) 2`;
//! - MN-major, swizzled: `start + (r / E) LBO + (k / 8) SBO + (k % 8) S + 2 (r % E)`;
//!
//! then, when swizzled, address bits 4.. are XORed with bits 7.. (3, 2 or 1 bits for 128, 64 or
//! 32 bytes), as the hardware swizzles absolute addresses (and as TMA writes them, see
//! [`crate::tma`]). These are the canonical layouts of the PTX ISA's matrix-descriptor section
//! (the MN-major ones as CUTLASS's `make_gmma_desc` spells them); not checked on a Hopper GPU here.

use super::cta::{Cta, Space};
use crate::error::{Error, Result};
use crate::float_format::{Format, Round, F32};
use crate::instr::{Instr, Mod, Operand};
use crate::types::{truncate, Type};

/// A decoded shared-memory matrix descriptor.
struct Descriptor {
    start: u64,
    lbo: u64,
    sbo: u64,
    /// Swizzle width in bytes; 0 for none.
    swizzle: u64,
}

impl Descriptor {
    fn decode(d: u64, ins: &Instr) -> Result<Descriptor> {
        let field = |at: u32| ((d >> at) & 0x3fff) << 4;
        if (d >> 49) & 7 != 0 {
            return Err(ins.unsupported());
        }
        let swizzle = [0, 128, 64, 32][(d >> 62) as usize];
        Ok(Descriptor {
            start: field(0),
            lbo: field(16),
            sbo: field(32),
            swizzle,
        })
    }

    /// The shared address of element (r, k) of an operand of 2-byte elements.
    fn element(&self, r: u64, k: u64, mn_major: bool) -> u64 {
        let a = match (self.swizzle, mn_major) {
            (0, false) => (r / 8) * self.sbo + (k / 8) * self.lbo + (r % 8) * 16 + (k % 8) * 2,
            (0, true) => (r / 8) * self.sbo + (k / 8) * self.lbo + (k % 8) * 16 + (r % 8) * 2,
            (s, false) => (r / 8) * self.sbo + (r % 8) * s + 2 * k,
            (s, true) => (r / (s / 2)) * self.lbo + (k / 8) * self.sbo + (k % 8) * s + 2 * (r % (s / 2)),
        };
        crate::tma::Swizzle::from_bytes(self.swizzle).apply(self.start + a)
    }
}

impl Cta<'_> {
    pub(super) fn wgmma(&mut self, ins: &Instr, exec: &[usize]) -> Result<()> {
        if ins.has(Mod::Fence) {
            return Ok(());
        }
        if ins.has(Mod::CommitGroup) {
            for &t in exec {
                let open = std::mem::take(&mut self.threads[t].wgmma_open);
                self.threads[t].wgmma_groups.push_back(open);
            }
            return Ok(());
        }
        if ins.has(Mod::WaitGroup) {
            let Some(&first) = exec.first() else {
                return Ok(());
            };
            let pending = self.read(first, ins.arg(0)?, Type::U32, ins)? as usize;
            for &t in exec {
                while self.threads[t].wgmma_groups.len() > pending {
                    for r in self.threads[t].wgmma_groups.pop_front().unwrap_or_default() {
                        self.release(t, r);
                    }
                }
            }
            return Ok(());
        }
        if !ins.has(Mod::MmaAsync) {
            return Err(ins.unsupported());
        }
        let base = self.whole_warp(ins, exec)?;
        if !self.threads.len().is_multiple_of(128) {
            return Err(Error::NotConverged {
                instr: ins.name.clone(),
                line: ins.line,
                msg: "needs whole warpgroups of 128 threads".into(),
            });
        }
        let n = match ins.shape {
            Some([64, n, 16]) if n % 8 == 0 && (8..=256).contains(&n) => n as usize,
            _ => return Err(ins.unsupported()),
        };
        let half = match ins.types.as_slice() {
            [Type::F32, Type::Bf16, Type::Bf16] => Format::of(Type::Bf16),
            [Type::F32, Type::F16, Type::F16] => Format::of(Type::F16),
            _ => None,
        };
        let Some((half, _)) = half else {
            return Err(ins.unsupported());
        };
        // the accumulators and A registers, accessed directly: earlier wgmmas of the same
        // chain may still hold them, which only other instructions must not touch
        let regs = |op: &Operand, len: usize| -> Result<Vec<u32>> {
            match op {
                Operand::Vector(v) if v.len() == len => v
                    .iter()
                    .map(|e| match e {
                        Operand::Reg(r) => Ok(*r),
                        _ => Err(ins.unsupported()),
                    })
                    .collect(),
                _ => Err(ins.unsupported()),
            }
        };
        let d_regs = regs(ins.arg(0)?, n / 2)?;
        // A from registers: `d, {a0..a3}, b-desc, scale-d, scale-a, scale-b, trans-b`
        let a_regs = match ins.arg(1)? {
            op @ Operand::Vector(_) => Some(regs(op, 4)?),
            _ => None,
        };
        let trans = |i: usize| -> Result<bool> {
            match self.read(base, ins.arg(i)?, Type::U32, ins)? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(ins.unsupported()),
            }
        };
        let (trans_a, trans_b) = match a_regs {
            Some(_) => (false, trans(6)?),
            None => (trans(6)?, trans(7)?),
        };
        let b = Descriptor::decode(self.read(base, ins.arg(2)?, Type::B64, ins)?, ins)?;
        let accumulate = self.read(base, ins.arg(3)?, Type::Pred, ins)? != 0;
        let sign = |i: usize| -> Result<f64> {
            Ok(if self.read(base, ins.arg(i)?, Type::S32, ins)? == 1 {
                1.0
            } else {
                -1.0
            })
        };
        let (sa, sb) = (sign(4)?, sign(5)?);
        let element = |d: &Descriptor, r: usize, k: usize, mn_major: bool| -> Result<f64> {
            let bytes = self.load(Space::Shared, d.element(r as u64, k as u64, mn_major), 2, ins)?;
            Ok(half.decode(u64::from(u16::from_le_bytes([bytes[0], bytes[1]]))))
        };
        let rows = 16 * ((base / 32) % 4);
        let mut av = [[0f64; 16]; 16];
        match &a_regs {
            Some(regs) => {
                for lane in 0..32 {
                    let (g, tig) = (lane / 4, lane % 4);
                    for (j, &reg) in regs.iter().enumerate() {
                        let bits = self.reg(base + lane, reg);
                        for h in 0..2 {
                            let (r, k) = (g + 8 * (j % 2), 2 * tig + 8 * (j / 2) + h);
                            av[r][k] = sa * half.decode((bits >> (16 * h)) & 0xffff);
                        }
                    }
                }
            }
            None => {
                let a = Descriptor::decode(self.read(base, ins.arg(1)?, Type::B64, ins)?, ins)?;
                for (r, row) in av.iter_mut().enumerate() {
                    for (k, v) in row.iter_mut().enumerate() {
                        *v = sa * element(&a, rows + r, k, trans_a)?;
                    }
                }
            }
        }
        let mut bv = vec![[0f64; 16]; n];
        for (col, column) in bv.iter_mut().enumerate() {
            for (k, v) in column.iter_mut().enumerate() {
                *v = sb * element(&b, col, k, trans_b)?;
            }
        }
        for lane in 0..32 {
            let t = base + lane;
            let (g, tig) = (lane / 4, lane % 4);
            for (i, &reg) in d_regs.iter().enumerate() {
                let (r, c) = (g + 8 * ((i / 2) % 2), 8 * (i / 4) + 2 * tig + i % 2);
                let dot: f64 = (0..16).map(|k| av[r][k] * bv[c][k]).sum();
                let prior = if accumulate {
                    F32.decode(truncate(self.reg(t, reg), 32))
                } else {
                    0.0
                };
                self.set_reg(t, reg, F32.encode(prior + dot, Round::NearestEven));
            }
            for &reg in d_regs.iter().chain(a_regs.iter().flatten()) {
                self.hold(t, reg);
                self.threads[t].wgmma_open.push(reg);
            }
        }
        Ok(())
    }
}
