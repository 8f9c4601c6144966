//! `shfl.sync`: exchanging registers between the lanes of a warp.

use super::cta::Cta;
use crate::error::{Error, Result};
use crate::instr::{Instr, Mod, Operand};
use crate::types::Type;

impl Cta<'_> {
    /// Checks that every lane in `mask` that exists arrived at this instruction together.
    pub(super) fn converged(&self, ins: &Instr, exec: &[usize], mask: u32) -> Result<()> {
        let Some(&first) = exec.first() else {
            return Ok(());
        };
        let base = first / 32 * 32;
        let present: u32 = exec.iter().fold(0, |m, &t| m | 1 << (t - base));
        let exists: u32 = if self.threads.len() - base >= 32 {
            u32::MAX
        } else {
            (1u32 << (self.threads.len() - base)) - 1
        };
        let missing = mask & exists & !present;
        if missing != 0 {
            return Err(Error::NotConverged {
                instr: ins.name.clone(),
                line: ins.line,
                msg: format!("lanes {missing:#010x} of the member mask did not arrive together (present {present:#010x})"),
            });
        }
        Ok(())
    }

    /// PTX's definition: `c` packs the segment mask (bits 8..12) and the clamp lane (bits 0..4).
    pub(super) fn shfl(&mut self, ins: &Instr, exec: &[usize]) -> Result<()> {
        let Some(&first) = exec.first() else {
            return Ok(());
        };
        if ins.ty(0)? != Type::B32 {
            return Err(ins.unsupported());
        }
        let mask = self.read(first, ins.arg(4)?, Type::B32, ins)? as u32;
        self.converged(ins, exec, mask)?;
        let base = first / 32 * 32;
        let mut results = Vec::with_capacity(exec.len());
        for &t in exec {
            let lane = (t - base) as u32;
            let b = self.read(t, ins.arg(2)?, Type::U32, ins)? as u32 & 31;
            let c = self.read(t, ins.arg(3)?, Type::U32, ins)? as u32;
            let seg = (c >> 8) & 31;
            let max_lane = (lane & seg) | (c & 31 & !seg);
            let min_lane = lane & seg;
            let (j, valid) = if ins.has(Mod::Up) {
                let j = lane as i32 - b as i32;
                (j, j >= max_lane as i32)
            } else if ins.has(Mod::Down) {
                let j = (lane + b) as i32;
                (j, j <= max_lane as i32)
            } else if ins.has(Mod::Bfly) {
                let j = (lane ^ b) as i32;
                (j, j <= max_lane as i32)
            } else if ins.has(Mod::Idx) {
                let j = (min_lane | (b & !seg)) as i32;
                (j, j <= max_lane as i32)
            } else {
                return Err(ins.unsupported());
            };
            let src = if valid { base + j as usize } else { t };
            if !exec.contains(&src) {
                return Err(Error::NotConverged {
                    instr: ins.name.clone(),
                    line: ins.line,
                    msg: format!("lane {lane} reads lane {j}, which is not executing this shfl"),
                });
            }
            results.push((t, self.read(src, ins.arg(1)?, Type::B32, ins)?, valid));
        }
        for (t, v, valid) in results {
            match ins.arg(0)? {
                Operand::PredPair(d, p) => {
                    let (d, p) = (*d, *p);
                    self.set_reg(t, d, v);
                    self.set_reg(t, p, u64::from(valid));
                }
                d => self.write(t, d, v, ins)?,
            }
        }
        Ok(())
    }
}
