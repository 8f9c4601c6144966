//! One CTA's state: per-thread registers and PCs, shared memory, and operand access.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::float_format::{Format, Round};
use crate::instr::{Base, Imm, Instr, Operand, Special, Symbol};
use crate::memory::{Memory, PARAM_WINDOW, SHARED_WINDOW};
use crate::module::{Kernel, Launch, Stats};
use crate::types::{truncate, Type};

/// Where a thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    /// Waiting at `bar.sync id` (the instruction's index, for messages) for `count` threads (None: all).
    AtBarrier {
        id: u64,
        count: Option<u64>,
        pc: usize,
    },
    Exited,
}

/// A `cp.async` copy in flight: bytes read at issue, written to shared memory when waited for.
#[derive(Debug, Clone)]
pub(crate) struct PendingCopy {
    pub dst: usize,
    pub data: Vec<u8>,
}

/// A thread's control state.
#[derive(Debug, Clone)]
pub(crate) struct Thread {
    pub pc: usize,
    pub state: State,
    pub tid: [u32; 3],
    /// `cp.async` copies not yet committed to a group.
    pub open_copies: Vec<PendingCopy>,
    /// Committed groups, oldest first.
    pub copy_groups: VecDeque<Vec<PendingCopy>>,
    /// Registers (accumulators and A fragments) of `wgmma.mma_async`s not yet committed.
    pub wgmma_open: Vec<u32>,
    /// Those of committed `wgmma` groups not yet waited for, oldest first.
    pub wgmma_groups: VecDeque<Vec<u32>>,
}

/// A running CTA.
pub(crate) struct Cta<'a> {
    pub kernel: &'a Kernel,
    pub launch: &'a Launch,
    pub params: &'a [u8],
    pub mem: &'a mut Memory,
    pub stats: &'a mut Stats,
    pub step_limit: u64,
    pub ctaid: [u32; 3],
    pub shared: Vec<u8>,
    pub threads: Vec<Thread>,
    /// Threads that passed `bar.arrive id` since barrier `id` last completed.
    pub arrivals: [u64; 16],
    regs: Vec<u64>,
    /// Per thread and register: how many in-flight `wgmma`s use it (see [`Cta::hold`]).
    busy: Vec<u8>,
    nregs: usize,
}

/// A resolved memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    Global,
    Shared,
    Param,
    Generic,
}

impl Space {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Param => "param",
            Space::Generic => "generic",
        }
    }
}

impl<'a> Cta<'a> {
    pub(crate) fn new(
        kernel: &'a Kernel,
        launch: &'a Launch,
        params: &'a [u8],
        mem: &'a mut Memory,
        stats: &'a mut Stats,
        step_limit: u64,
        ctaid: [u32; 3],
    ) -> Cta<'a> {
        let [bx, by, bz] = launch.block;
        let mut threads = Vec::new();
        for z in 0..bz {
            for y in 0..by {
                for x in 0..bx {
                    threads.push(Thread {
                        pc: 0,
                        state: State::Running,
                        tid: [x, y, z],
                        open_copies: Vec::new(),
                        copy_groups: VecDeque::new(),
                        wgmma_open: Vec::new(),
                        wgmma_groups: VecDeque::new(),
                    });
                }
            }
        }
        let nregs = kernel.reg_bits.len();
        let shared = vec![0u8; (kernel.static_shared + u64::from(launch.dynamic_shared)) as usize];
        Cta {
            kernel,
            launch,
            params,
            mem,
            stats,
            step_limit,
            ctaid,
            shared,
            regs: vec![0; threads.len() * nregs],
            busy: vec![0; threads.len() * nregs],
            threads,
            arrivals: [0; 16],
            nregs,
        }
    }

    pub(crate) fn reg(&self, t: usize, r: u32) -> u64 {
        self.regs[t * self.nregs + r as usize]
    }

    pub(crate) fn set_reg(&mut self, t: usize, r: u32, v: u64) {
        self.regs[t * self.nregs + r as usize] = truncate(v, self.kernel.reg_bits[r as usize]);
    }

    /// Marks register `r` of thread `t` as used by an in-flight `wgmma.mma_async`: until
    /// [`Cta::release`], other instructions touching it are an error (the PTX ISA leaves such
    /// accesses undefined before the covering `wgmma.wait_group`).
    pub(crate) fn hold(&mut self, t: usize, r: u32) {
        self.busy[t * self.nregs + r as usize] += 1;
    }

    /// Ends one [`Cta::hold`].
    pub(crate) fn release(&mut self, t: usize, r: u32) {
        self.busy[t * self.nregs + r as usize] -= 1;
    }

    fn check_idle(&self, t: usize, r: u32, ins: &Instr) -> Result<()> {
        if self.busy[t * self.nregs + r as usize] == 0 {
            return Ok(());
        }
        Err(Error::Undefined {
            instr: ins.name.clone(),
            line: ins.line,
            msg: format!("register {r} is in use by a wgmma.mma_async not yet waited for (wgmma.wait_group)"),
        })
    }

    fn special(&self, t: usize, s: Special) -> u64 {
        let lane = t % 32;
        u64::from(match s {
            Special::Tid(d) => self.threads[t].tid[d],
            Special::Ntid(d) => self.launch.block[d],
            Special::Ctaid(d) => self.ctaid[d],
            Special::Nctaid(d) => self.launch.grid[d],
            Special::LaneId => lane as u32,
            Special::WarpId => (t / 32) as u32,
            Special::NWarpId => self.threads.len().div_ceil(32) as u32,
        })
    }

    /// The bits of a source operand at type `ty`.
    pub(crate) fn read(&self, t: usize, op: &Operand, ty: Type, ins: &Instr) -> Result<u64> {
        let v = match op {
            Operand::Reg(r) => {
                self.check_idle(t, *r, ins)?;
                self.reg(t, *r)
            }
            Operand::NotPred(r) => u64::from(self.reg(t, *r) == 0),
            Operand::Imm(imm) => imm_bits(*imm, ty),
            Operand::Special(s) => self.special(t, *s),
            Operand::Symbol(Symbol::Shared(offset) | Symbol::Param(offset)) => *offset,
            _ => return Err(ins.unsupported()),
        };
        Ok(truncate(v, ty.bits()))
    }

    /// Writes a destination operand (`_` discards).
    pub(crate) fn write(&mut self, t: usize, op: &Operand, v: u64, ins: &Instr) -> Result<()> {
        match op {
            Operand::Reg(r) => {
                self.check_idle(t, *r, ins)?;
                self.set_reg(t, *r, v)
            }
            Operand::Sink => {}
            _ => return Err(ins.unsupported()),
        }
        Ok(())
    }

    /// The address an `[...]` operand names, in the space the symbol or register implies.
    pub(crate) fn address(&self, t: usize, op: &Operand, ins: &Instr) -> Result<u64> {
        let Operand::Addr(base, offset) = op else {
            return Err(Error::Parse {
                line: ins.line,
                msg: format!("`{}` expects an address operand", ins.name),
            });
        };
        let base = match base {
            Base::Reg(r) => self.reg(t, *r),
            Base::Symbol(Symbol::Shared(o) | Symbol::Param(o)) => *o,
            Base::Absolute => 0,
            Base::Unresolved(_) => return Err(ins.unsupported()),
        };
        Ok(base.wrapping_add(*offset as u64))
    }

    /// Checks alignment, and bounds of shared and param accesses; resolves generic addresses.
    /// Global bounds are checked by the access itself.
    fn locate(&self, space: Space, addr: u64, len: u64, ins: &Instr) -> Result<(Space, u64)> {
        if !addr.is_multiple_of(len) {
            return Err(fault(ins, space, addr, len, "misaligned"));
        }
        let window = SHARED_WINDOW..SHARED_WINDOW + (1 << 32);
        let params = PARAM_WINDOW..PARAM_WINDOW + (1 << 32);
        let (resolved, a) = match space {
            Space::Generic if window.contains(&addr) => (Space::Shared, addr - SHARED_WINDOW),
            Space::Generic if params.contains(&addr) => (Space::Param, addr - PARAM_WINDOW),
            Space::Generic => (Space::Global, addr),
            s => (s, addr),
        };
        let size = match resolved {
            Space::Shared => self.shared.len() as u64,
            Space::Param => self.params.len() as u64,
            _ => return Ok((resolved, a)),
        };
        if a.checked_add(len).is_none_or(|end| end > size) {
            return Err(fault(ins, space, addr, len, "out of bounds"));
        }
        Ok((resolved, a))
    }

    /// The `len` bytes of memory at `addr`.
    pub(crate) fn load(&self, space: Space, addr: u64, len: u64, ins: &Instr) -> Result<&[u8]> {
        let (resolved, a) = self.locate(space, addr, len, ins)?;
        let range = a as usize..(a + len) as usize;
        match resolved {
            Space::Shared => Ok(&self.shared[range]),
            Space::Param => Ok(&self.params[range]),
            _ => self
                .mem
                .slice(a, len)
                .ok_or_else(|| fault(ins, space, addr, len, UNMAPPED)),
        }
    }

    /// Writes bytes to memory.
    pub(crate) fn store(
        &mut self,
        space: Space,
        addr: u64,
        bytes: &[u8],
        ins: &Instr,
    ) -> Result<()> {
        let len = bytes.len() as u64;
        let (resolved, a) = self.locate(space, addr, len, ins)?;
        let dst = match resolved {
            Space::Shared => &mut self.shared[a as usize..(a + len) as usize],
            Space::Param => return Err(ins.unsupported()),
            _ => self
                .mem
                .slice_mut(a, len)
                .ok_or_else(|| fault(ins, space, addr, len, UNMAPPED))?,
        };
        dst.copy_from_slice(bytes);
        Ok(())
    }
}

const UNMAPPED: &str = "outside every allocation";

fn fault(ins: &Instr, space: Space, addr: u64, bytes: u64, why: &'static str) -> Error {
    Error::MemoryFault {
        instr: ins.name.clone(),
        line: ins.line,
        space: space.name(),
        addr,
        bytes,
        why,
    }
}

/// The bits an immediate denotes at a type: float literals convert to float types,
/// `0f`/`0d` literals at integer types are raw bits.
pub(crate) fn imm_bits(imm: Imm, ty: Type) -> u64 {
    let Some((fmt, lanes)) = Format::of(ty) else {
        return match imm {
            Imm::Int(v) => v as u64,
            Imm::F32Bits(b) => u64::from(b),
            Imm::F64Bits(b) => b,
            Imm::Decimal(d) => d as i64 as u64,
        };
    };
    let value = match imm {
        Imm::Int(v) => v as f64,
        Imm::F32Bits(b) => f64::from(f32::from_bits(b)),
        Imm::F64Bits(b) => f64::from_bits(b),
        Imm::Decimal(d) => d,
    };
    let one = fmt.encode(value, Round::NearestEven);
    (0..lanes).fold(0, |acc, i| acc | (one << (i * fmt.bits())))
}
