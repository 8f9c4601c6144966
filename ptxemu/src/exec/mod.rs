//! Execution: CTAs one after another, warps of 32 lanes in lockstep.
//!
//! Reconvergence uses per-thread PCs with the *minimum-PC* rule: each step, a warp issues the
//! instruction at the smallest PC among its running threads, for exactly the threads at that PC.
//! Compilers lay out structured control flow so that a branch's join point has a larger PC than
//! both arms, so diverged threads wait at the join until the laggards catch up and the warp runs
//! converged again — without the immediate-post-dominator analysis a SIMT stack would need, and
//! robust to unstructured branches. Warp-wide instructions (`shfl.sync`, `mma.sync`, `ldmatrix`)
//! check that every lane they need arrived together.
//!
//! Warps of a CTA are interleaved in slices of [`SLICE`] instructions, so spin loops waiting on
//! another warp make progress; barriers release once every expected thread has arrived.

mod async_copy;
mod compare;
mod control;
mod convert;
mod cta;
mod data;
mod float;
mod int;
mod mbarrier;
mod memory;
mod tensor;
mod tma;
mod warp;
mod wgmma;

use crate::error::{Error, Result};
use crate::instr::{Instr, Mod, Opcode};
use crate::memory::Memory;
use crate::module::{Kernel, Launch, Stats};
use crate::types::Kind;
use cta::{Cta, State};

/// Warp instructions a warp issues before the scheduler moves to the next warp.
const SLICE: usize = 64;

/// Runs every CTA of the grid in order.
pub(crate) fn run_grid(
    kernel: &Kernel,
    launch: &Launch,
    params: &[u8],
    mem: &mut Memory,
    step_limit: u64,
) -> Result<Stats> {
    let mut stats = Stats::default();
    let [gx, gy, gz] = launch.grid;
    for z in 0..gz {
        for y in 0..gy {
            for x in 0..gx {
                Cta::new(
                    kernel,
                    launch,
                    params,
                    mem,
                    &mut stats,
                    step_limit,
                    [x, y, z],
                )
                .run()?;
                stats.ctas += 1;
            }
        }
    }
    Ok(stats)
}

impl Cta<'_> {
    fn run(&mut self) -> Result<()> {
        let warps = self.threads.len().div_ceil(32);
        loop {
            let mut progressed = false;
            for w in 0..warps {
                for _ in 0..SLICE {
                    if !self.step_warp(w)? {
                        break;
                    }
                    progressed = true;
                }
            }
            if self.threads.iter().all(|t| t.state == State::Exited) {
                return Ok(());
            }
            if !self.release_barriers() && !progressed {
                return Err(self.deadlock());
            }
        }
    }

    /// Issues one instruction for warp `w`; false when none of its threads can run.
    fn step_warp(&mut self, w: usize) -> Result<bool> {
        let lanes = w * 32..(w * 32 + 32).min(self.threads.len());
        let Some(pc) = lanes
            .clone()
            .filter(|&t| self.threads[t].state == State::Running)
            .map(|t| self.threads[t].pc)
            .min()
        else {
            return Ok(false);
        };
        self.stats.instructions += 1;
        if self.stats.instructions > self.step_limit {
            return Err(Error::StepLimit(self.step_limit));
        }
        let kernel = self.kernel;
        let Some(ins) = kernel.instrs.get(pc) else {
            // running off the end of the body returns
            for t in lanes {
                if self.threads[t].state == State::Running && self.threads[t].pc == pc {
                    self.threads[t].state = State::Exited;
                }
            }
            return Ok(true);
        };
        // the lanes at `pc` whose guard holds, on the stack: this runs once per warp instruction
        let mut buf = [0usize; 32];
        let mut n = 0;
        for t in lanes {
            let th = &self.threads[t];
            if th.state != State::Running || th.pc != pc {
                continue;
            }
            let taken = match ins.guard {
                Some((p, negated)) => (self.reg(t, p) != 0) != negated,
                None => true,
            };
            if taken {
                buf[n] = t;
                n += 1;
            } else {
                self.threads[t].pc += 1;
            }
        }
        let exec = &buf[..n];
        self.stats.thread_instructions += exec.len() as u64;
        self.execute(ins, exec)?;
        Ok(true)
    }

    /// Runs `ins` for the threads in `exec` (all at its PC) and moves their PCs on.
    fn execute(&mut self, ins: &Instr, exec: &[usize]) -> Result<()> {
        match ins.op {
            Opcode::Bra => return self.branch(ins, exec),
            Opcode::Ret | Opcode::Exit => {
                for &t in exec {
                    self.threads[t].state = State::Exited;
                }
                return Ok(());
            }
            Opcode::Bar | Opcode::Barrier => return self.arrive(ins, exec),
            Opcode::Shfl => self.shfl(ins, exec)?,
            Opcode::Mma => self.mma(ins, exec)?,
            Opcode::Ldmatrix => self.ldmatrix(ins, exec)?,
            Opcode::Wgmma => self.wgmma(ins, exec)?,
            _ => {
                for &t in exec {
                    self.execute_thread(ins, t)?;
                }
            }
        }
        for &t in exec {
            self.threads[t].pc += 1;
        }
        Ok(())
    }

    fn execute_thread(&mut self, ins: &Instr, t: usize) -> Result<()> {
        match ins.op {
            Opcode::Add
            | Opcode::Sub
            | Opcode::Mul
            | Opcode::Mad
            | Opcode::Fma
            | Opcode::Div
            | Opcode::Rem
            | Opcode::Neg
            | Opcode::Abs
            | Opcode::Min
            | Opcode::Max => {
                if ins.ty(0)?.kind() == Kind::Float {
                    self.float_arith(ins, t)
                } else {
                    self.int_arith(ins, t)
                }
            }
            Opcode::And | Opcode::Or | Opcode::Xor | Opcode::Not | Opcode::Shl | Opcode::Shr => {
                self.bitwise(ins, t)
            }
            Opcode::Setp => self.setp(ins, t),
            Opcode::Selp => self.selp(ins, t),
            Opcode::Ex2
            | Opcode::Lg2
            | Opcode::Rcp
            | Opcode::Sqrt
            | Opcode::Rsqrt
            | Opcode::Sin
            | Opcode::Cos
            | Opcode::Tanh
            | Opcode::Copysign => self.float_unary(ins, t),
            Opcode::Cvt => self.cvt(ins, t),
            Opcode::Cvta => self.cvta(ins, t),
            Opcode::Mov => self.mov(ins, t),
            Opcode::Ld => self.ld(ins, t),
            Opcode::St => self.st(ins, t),
            Opcode::Atom | Opcode::Red => self.atom(ins, t),
            Opcode::Cp if ins.has(Mod::Tensor) => self.cp_async_bulk_tensor(ins, t),
            Opcode::Cp if ins.has(Mod::Bulk) => self.cp_async_bulk(ins, t),
            Opcode::Cp => self.cp_async(ins, t),
            Opcode::Mbarrier => self.mbarrier(ins, t),
            // one thread runs at a time, so every access is already ordered
            Opcode::Membar | Opcode::Fence => Ok(()),
            Opcode::Bra
            | Opcode::Ret
            | Opcode::Exit
            | Opcode::Bar
            | Opcode::Barrier
            | Opcode::Shfl
            | Opcode::Mma
            | Opcode::Ldmatrix
            | Opcode::Wgmma => Err(ins.unsupported()),
        }
    }
}
