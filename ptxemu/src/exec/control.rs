//! Branches and CTA barriers (`bra`, `bar.sync`/`barrier.sync`, `bar.arrive`), and deadlock
//! detection. `bar.arrive id, n` counts towards barrier `id` without waiting (the producer side
//! of a named-barrier handshake); the barrier completes when waiting plus arrived threads reach
//! its count.
//!
//! A barrier without a thread count expects every thread of the CTA. Threads that exited never
//! arrive, so a CTA where some threads return early and the rest wait is reported as a deadlock
//! (CUDA leaves it undefined; an emulator for tests should say so loudly).

use super::cta::{Cta, State};
use crate::error::{Error, Result};
use crate::instr::{Instr, Mod, Operand};
use crate::types::Type;

impl Cta<'_> {
    pub(super) fn branch(&mut self, ins: &Instr, exec: &[usize]) -> Result<()> {
        let Operand::Label(target) = ins.arg(0)? else {
            return Err(Error::Parse {
                line: ins.line,
                msg: "bra needs a label".into(),
            });
        };
        for &t in exec {
            self.threads[t].pc = *target;
        }
        Ok(())
    }

    /// `bar.sync a{, b}`: the threads wait for barrier `a` until `b` (default: all) threads arrived.
    pub(super) fn arrive(&mut self, ins: &Instr, exec: &[usize]) -> Result<()> {
        let Some(&first) = exec.first() else {
            return Ok(());
        };
        if ins.has(Mod::Warp) {
            // `bar.warp.sync mask`: warps already run in lockstep; only check the lanes are together
            let mask = self.read(first, ins.arg(0)?, Type::B32, ins)? as u32;
            self.converged(ins, exec, mask)?;
            for &t in exec {
                self.threads[t].pc += 1;
            }
            return Ok(());
        }
        let id = self.read(first, ins.arg(0)?, Type::U32, ins)?;
        let count = match ins.args.get(1) {
            Some(op) => Some(self.read(first, op, Type::U32, ins)?),
            None => None,
        };
        if id > 15 || count.is_some_and(|c| c % 32 != 0 || c == 0) {
            return Err(ins.unsupported());
        }
        if ins.has(Mod::Arrive) {
            // `bar.arrive` needs its count: with every thread expected, nobody could be waiting
            if count.is_none() {
                return Err(ins.unsupported());
            }
            let waiting = self.threads.iter().filter(|t| matches!(t.state, State::AtBarrier { id: i, .. } if i == id)).count();
            let arrived = &mut self.arrivals[id as usize];
            *arrived += exec.len() as u64;
            // arrivals alone complete a phase when nobody waits on it
            if let Some(c) = count.filter(|&c| waiting == 0 && *arrived >= c) {
                *arrived -= c;
            }
            for &t in exec {
                self.threads[t].pc += 1;
            }
            return Ok(());
        }
        for &t in exec {
            let th = &mut self.threads[t];
            th.state = State::AtBarrier {
                id,
                count,
                pc: th.pc,
            };
            th.pc += 1;
        }
        Ok(())
    }

    /// Releases every barrier whose expected threads have all arrived; true if any was.
    pub(super) fn release_barriers(&mut self) -> bool {
        let all = self.threads.len() as u64;
        let mut released = false;
        for id in 0..16 {
            let waiting: Vec<usize> = (0..self.threads.len())
                .filter(
                    |&t| matches!(self.threads[t].state, State::AtBarrier { id: i, .. } if i == id),
                )
                .collect();
            let Some(&first) = waiting.first() else {
                continue;
            };
            let State::AtBarrier { count, .. } = self.threads[first].state else {
                continue;
            };
            let needed = count.unwrap_or(all).min(all);
            let arrived = &mut self.arrivals[id as usize];
            if waiting.len() as u64 + *arrived >= needed {
                *arrived = (*arrived + waiting.len() as u64).saturating_sub(needed);
                for t in waiting {
                    self.threads[t].state = State::Running;
                }
                self.stats.barriers += 1;
                released = true;
            }
        }
        released
    }

    /// The error for a CTA where nothing can run and no barrier can be released.
    pub(super) fn deadlock(&self) -> Error {
        let total = self.threads.len();
        let exited = self
            .threads
            .iter()
            .filter(|t| t.state == State::Exited)
            .count();
        let msg = match self.threads.iter().find_map(|t| match t.state {
            State::AtBarrier { id, count, pc } => Some((id, count, pc)),
            _ => None,
        }) {
            Some((id, count, pc)) => {
                let arrived = self
                    .threads
                    .iter()
                    .filter(|t| matches!(t.state, State::AtBarrier { id: i, .. } if i == id))
                    .count();
                let line = self.kernel.instrs.get(pc).map_or(0, |i| i.line);
                format!(
                    "barrier {id} at line {line} waits for {} threads but only {arrived} of {total} arrived ({exited} exited)",
                    count.map_or(total as u64, |c| c)
                )
            }
            None => format!("no thread can run ({exited} of {total} exited)"),
        };
        Error::Deadlock {
            cta: self.ctaid,
            msg,
        }
    }
}
