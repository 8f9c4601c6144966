//! sm_90 transaction barriers in shared memory (`mbarrier.*`) and the bulk copies that complete
//! on them (`cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes`).
//!
//! The barrier's state lives in its 8 shared bytes: phase parity (bit 63), pending arrivals
//! (bits 0..20), expected arrivals (bits 21..41) and the transaction count (bits 42..62, two's
//! complement). A phase completes when no arrivals and no transaction bytes are pending; then the
//! parity flips and the arrival count resets. A bulk copy lands at once and completes its bytes at
//! once: correct programs cannot tell, and the copy is still checked against the barrier's
//! expected transaction bytes. Clusters have one CTA here, so `shared::cluster` is `shared::cta`.

use super::cta::{Cta, Space};
use crate::error::{Error, Result};
use crate::instr::{Instr, Mod, Operand};
use crate::types::{sign_extend, truncate, Type};

const FIELD: u32 = 21;

/// The decoded state of one mbarrier object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Barrier {
    phase: u64,
    pending: u64,
    expected: u64,
    tx: i64,
}

impl Barrier {
    fn decode(bits: u64) -> Barrier {
        Barrier {
            phase: bits >> 63,
            pending: truncate(bits, FIELD),
            expected: truncate(bits >> FIELD, FIELD),
            tx: sign_extend(bits >> (2 * FIELD), FIELD),
        }
    }

    fn encode(self) -> u64 {
        (self.phase << 63)
            | truncate(self.pending, FIELD)
            | (truncate(self.expected, FIELD) << FIELD)
            | (truncate(self.tx as u64, FIELD) << (2 * FIELD))
    }

    /// Completes the phase once nothing is pending.
    fn settle(mut self) -> Barrier {
        if self.pending == 0 && self.tx == 0 {
            self.phase ^= 1;
            self.pending = self.expected;
        }
        self
    }
}

fn space(ins: &Instr) -> Space {
    if ins.has(Mod::Shared) || ins.has(Mod::SharedCta) || ins.has(Mod::SharedCluster) {
        Space::Shared
    } else {
        Space::Generic
    }
}

impl Cta<'_> {
    fn barrier_at(&self, t: usize, op: &Operand, ins: &Instr) -> Result<(u64, Barrier)> {
        let addr = self.address(t, op, ins)?;
        let bytes = self.load(space(ins), addr, 8, ins)?;
        Ok((
            addr,
            Barrier::decode(u64::from_le_bytes(std::array::from_fn(|i| bytes[i]))),
        ))
    }

    fn set_barrier(&mut self, addr: u64, b: Barrier, ins: &Instr) -> Result<()> {
        self.store(space(ins), addr, &b.encode().to_le_bytes(), ins)
    }

    pub(super) fn mbarrier(&mut self, ins: &Instr, t: usize) -> Result<()> {
        if ins.ty(0)? != Type::B64 {
            return Err(ins.unsupported());
        }
        if ins.has(Mod::Init) {
            let count = self.read(t, ins.arg(1)?, Type::U32, ins)?;
            if count == 0 || count >= 1 << 20 {
                return Err(ins.unsupported());
            }
            let (addr, _) = self.barrier_at(t, ins.arg(0)?, ins)?;
            let b = Barrier {
                phase: 0,
                pending: count,
                expected: count,
                tx: 0,
            };
            return self.set_barrier(addr, b, ins);
        }
        if ins.has(Mod::Inval) {
            let (addr, _) = self.barrier_at(t, ins.arg(0)?, ins)?;
            return self.store(space(ins), addr, &[0; 8], ins);
        }
        if ins.has(Mod::TryWait) || ins.has(Mod::TestWait) {
            // `p, [bar], parity`: the phase of that parity is over once the barrier moved past it
            let (_, b) = self.barrier_at(t, ins.arg(1)?, ins)?;
            let token = self.read(t, ins.arg(2)?, Type::B64, ins)?;
            let waited = if ins.has(Mod::Parity) {
                token & 1
            } else {
                token >> 63
            };
            return self.write(t, ins.arg(0)?, u64::from(b.phase != waited), ins);
        }
        if ins.has(Mod::Arrive) {
            // `state, [bar]{, count}` or with .expect_tx `state, [bar], tx`
            let (addr, mut b) = self.barrier_at(t, ins.arg(1)?, ins)?;
            let token = b.phase << 63;
            let extra = match ins.args.get(2) {
                Some(op) => self.read(t, op, Type::U32, ins)?,
                None => 0,
            };
            let arrivals = if ins.has(Mod::ExpectTx) {
                b.tx += extra as i64;
                1
            } else {
                extra.max(1)
            };
            if arrivals > b.pending {
                return Err(Error::Undefined {
                    instr: ins.name.clone(),
                    line: ins.line,
                    msg: format!(
                        "{arrivals} arrivals at an mbarrier expecting {} more",
                        b.pending
                    ),
                });
            }
            b.pending -= arrivals;
            self.set_barrier(addr, b.settle(), ins)?;
            return self.write(t, ins.arg(0)?, token, ins);
        }
        if ins.has(Mod::ExpectTx) {
            let (addr, mut b) = self.barrier_at(t, ins.arg(0)?, ins)?;
            b.tx += self.read(t, ins.arg(1)?, Type::U32, ins)? as i64;
            return self.set_barrier(addr, b, ins);
        }
        Err(ins.unsupported())
    }

    /// `cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [src], size, [bar]`
    pub(super) fn cp_async_bulk(&mut self, ins: &Instr, t: usize) -> Result<()> {
        if !((ins.has(Mod::SharedCluster) || ins.has(Mod::SharedCta)) && ins.has(Mod::Global) && ins.has(Mod::CompleteTxBytes)) {
            return Err(ins.unsupported());
        }
        let dst = self.address(t, ins.arg(0)?, ins)?;
        let src = self.address(t, ins.arg(1)?, ins)?;
        let size = self.read(t, ins.arg(2)?, Type::U32, ins)?;
        if size == 0 || size % 16 != 0 || dst % 16 != 0 || src % 16 != 0 {
            return Err(Error::MemoryFault {
                instr: ins.name.clone(),
                line: ins.line,
                space: "global",
                addr: src,
                bytes: size,
                why: "bulk copies need 16-byte aligned addresses and sizes",
            });
        }
        let data = self.load(Space::Global, src, size, ins)?.to_vec();
        // each 16-byte piece is checked and written like an access of its own
        for (i, chunk) in data.chunks(16).enumerate() {
            self.store(Space::Shared, dst + 16 * i as u64, chunk, ins)?;
        }
        self.complete_tx(t, ins.arg(3)?, size, ins)
    }

    /// Completes `bytes` transaction bytes on the mbarrier at address operand `bar`.
    pub(super) fn complete_tx(&mut self, t: usize, bar: &Operand, bytes: u64, ins: &Instr) -> Result<()> {
        let (addr, mut b) = self.barrier_at(t, bar, ins)?;
        b.tx -= bytes as i64;
        self.set_barrier(addr, b.settle(), ins)
    }
}
