//! `cp.async` global→shared copies with commit groups and `wait_group`/`wait_all`.
//!
//! The source is read when the copy is issued; the destination is written only when a wait
//! covers its group. A kernel that reads shared memory before waiting therefore sees the old
//! bytes, exposing a missing wait the way a real GPU does (only reliably).

use super::cta::{Cta, PendingCopy, Space};
use crate::error::{Error, Result};
use crate::instr::{Instr, Mod};
use crate::types::Type;

impl Cta<'_> {
    pub(super) fn cp_async(&mut self, ins: &Instr, t: usize) -> Result<()> {
        if !ins.has(Mod::Async) {
            return Err(ins.unsupported());
        }
        if ins.has(Mod::CommitGroup) {
            let th = &mut self.threads[t];
            let group = std::mem::take(&mut th.open_copies);
            th.copy_groups.push_back(group);
            return Ok(());
        }
        if ins.has(Mod::WaitGroup) || ins.has(Mod::WaitAll) {
            let keep = if ins.has(Mod::WaitAll) {
                0
            } else {
                self.read(t, ins.arg(0)?, Type::U32, ins)? as usize
            };
            let th = &mut self.threads[t];
            let mut done = Vec::new();
            while th.copy_groups.len() > keep {
                done.extend(th.copy_groups.pop_front().unwrap_or_default());
            }
            if ins.has(Mod::WaitAll) {
                done.append(&mut th.open_copies);
            }
            for c in done {
                self.shared[c.dst..c.dst + c.data.len()].copy_from_slice(&c.data);
            }
            return Ok(());
        }
        if !(ins.has(Mod::Shared) && ins.has(Mod::Global)) {
            return Err(ins.unsupported());
        }
        let dst = self.address(t, ins.arg(0)?, ins)?;
        let src = self.address(t, ins.arg(1)?, ins)?;
        let size = self.read(t, ins.arg(2)?, Type::U32, ins)?;
        if !matches!(size, 4 | 8 | 16) || (ins.has(Mod::Cg) && size != 16) {
            return Err(ins.unsupported());
        }
        let src_size = match ins.args.get(3) {
            Some(op) => self.read(t, op, Type::U32, ins)?.min(size),
            None => size,
        };
        // bounds checks happen now, with this instruction's line
        self.load(Space::Shared, dst, size, ins)?;
        let mut data = vec![0u8; size as usize];
        if src_size > 0 {
            let bytes = self
                .load(Space::Global, src, size, ins)
                .or_else(|e| match e {
                    // a zero-filled tail may lie past the allocation's end
                    Error::MemoryFault { .. } if src_size < size => {
                        self.load(Space::Global, src, src_size, ins)
                    }
                    e => Err(e),
                })?;
            data[..src_size as usize].copy_from_slice(&bytes[..src_size as usize]);
        }
        self.threads[t].open_copies.push(PendingCopy {
            dst: dst as usize,
            data,
        });
        Ok(())
    }
}
