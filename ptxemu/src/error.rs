//! The one error type of the emulator: every failure is a value, never a panic.

use thiserror::Error;

/// Everything that can go wrong while parsing or running PTX.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Error {
    /// The text is not PTX the parser understands.
    #[error("parse error at line {line}: {msg}")]
    Parse {
        /// 1-based source line.
        line: u32,
        /// What was wrong.
        msg: String,
    },
    /// Valid PTX outside the emulated subset (an instruction, a modifier or a type).
    #[error("unsupported instruction `{what}` at line {line}")]
    Unsupported {
        /// The instruction (opcode with modifiers) or directive.
        what: String,
        /// 1-based source line.
        line: u32,
    },
    /// No `.entry` of that name.
    #[error("no kernel named `{0}`")]
    UnknownKernel(String),
    /// Grid, block, shared memory or arguments do not fit the kernel.
    #[error("bad launch of `{kernel}`: {msg}")]
    BadLaunch {
        /// The kernel launched.
        kernel: String,
        /// What did not fit.
        msg: String,
    },
    /// A load, store or copy touched memory it may not.
    #[error("memory fault: `{instr}` at line {line} accessed {space} address {addr:#x} ({bytes} bytes): {why}")]
    MemoryFault {
        /// The instruction that faulted.
        instr: String,
        /// 1-based source line.
        line: u32,
        /// State space: global, shared, param or generic.
        space: &'static str,
        /// The faulting address.
        addr: u64,
        /// Access size.
        bytes: u64,
        /// Out of bounds, misaligned, ...
        why: &'static str,
    },
    /// A host-side read outside every allocation.
    #[error("host access to {len} bytes at {addr:#x} is outside every allocation")]
    HostFault {
        /// Start address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Threads wait at a barrier that the rest of the CTA can never reach.
    #[error("barrier deadlock in CTA {cta:?}: {msg}")]
    Deadlock {
        /// The CTA's `%ctaid`.
        cta: [u32; 3],
        /// Which barrier, and who is missing.
        msg: String,
    },
    /// A warp-wide instruction (`shfl.sync`, `mma.sync`, `ldmatrix`) ran with lanes missing.
    #[error("`{instr}` at line {line}: {msg}")]
    NotConverged {
        /// The instruction.
        instr: String,
        /// 1-based source line.
        line: u32,
        /// Which lanes were missing.
        msg: String,
    },
    /// An operation whose result PTX leaves undefined (e.g. arriving at an mbarrier with no
    /// pending arrivals).
    #[error("`{instr}` at line {line}: {msg}")]
    Undefined {
        /// The instruction.
        instr: String,
        /// 1-based source line.
        line: u32,
        /// What was undefined.
        msg: String,
    },
    /// The launch executed more warp instructions than the step limit allows.
    #[error("step limit of {0} warp instructions exceeded (infinite loop?)")]
    StepLimit(u64),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
