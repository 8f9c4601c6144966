//! The PTX backend: renders each kernel of the kernel IR as a PTX module
//! (`.version 8.0`, `sm_80` or `sm_90a`, 64-bit addresses).
//!
//! Mapping (details in each file):
//! - one tile = one CTA of [`BLOCK_THREADS`] threads, `%ctaid.x` = tile
//!   index (grids up to 2³¹ − 1);
//! - uniform code runs redundantly in every thread, and thread 0 alone
//!   stores (`stmt.rs`); `vector` loops are spread over the threads;
//!   `vector` reductions are per-thread partials, warp shuffles and a
//!   shared array across warps (`reduce.rs`); `bar.sync` around every
//!   uniform statement that writes memory;
//! - contiguous global accesses in `vector` loops move 16 bytes at a time
//!   (`vector.rs`);
//! - scratch arrays are `.shared` arrays (at most [`MAX_SHARED_BYTES`]);
//! - `Gemm` tiles: bf16/f16 tiles on tensor cores, staged through shared
//!   memory (`mma.sync` on sm_80, `wgmma` on sm_90a; `tensor_core.rs`,
//!   `tile.rs`), else threads own output elements with f32 FMA
//!   (`gemm.rs`);
//! - f32/bf16/f16 storage, f32 arithmetic; transcendentals with their
//!   error bounds in `math.rs`;
//! - integer division or remainder by zero gives 0; float→int casts
//!   truncate, NaN gives 0, out-of-range values saturate to i64 (as on
//!   the CPU backend); both sides of a `select` are evaluated.
//!
//! Each kernel comes with a [`Manifest`]: what a launcher needs.

mod emit;
mod expr;
pub mod flash;
mod gemm;
mod math;
mod mem;
pub mod ptxas;
mod reduce;
mod regs;
mod stmt;
mod tensor_core;
mod tile;
mod vector;

use kiln_ir::kernel::{Access, Kernel};
use kiln_ir::DType;
use std::fmt::Write;

/// Threads per CTA, for every kernel.
pub const BLOCK_THREADS: u32 = 128;

/// The most static shared memory a CTA may declare.
pub const MAX_SHARED_BYTES: u64 = 48 * 1024;

/// The largest grid (`%nctaid.x`).
pub const MAX_GRID: u64 = (1 << 31) - 1;

/// A GPU architecture to render for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Ampere (A100): `sm_80`.
    Sm80,
    /// Hopper (H100/H200) with its architecture-specific features: `sm_90a`.
    Sm90a,
}

impl Arch {
    /// The name PTX and ptxas use (`sm_80`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90a => "sm_90a",
        }
    }

    /// Parses `sm_80` or `sm_90a`.
    pub fn parse(s: &str) -> Option<Arch> {
        [Arch::Sm80, Arch::Sm90a].into_iter().find(|a| a.name() == s)
    }
}

/// Why a kernel could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PtxError {
    /// A limit of the GPU or of this backend.
    #[error("kernel `{kernel}`: {what} is not supported by the PTX backend")]
    Unsupported {
        /// The kernel's name.
        kernel: String,
        /// What.
        what: String,
    },
    /// The kernel breaks the kernel IR's invariants.
    #[error("invalid kernel: {0}")]
    Invalid(String),
}

/// One kernel parameter: a pointer to `len` elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Element type in memory.
    pub dtype: DType,
    /// Elements the kernel may touch.
    pub len: u64,
    /// Loads, stores or both.
    pub access: Access,
}

/// What a launcher needs to know about a rendered kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The `.entry` name.
    pub name: String,
    /// CTAs in x.
    pub grid: u64,
    /// Threads per CTA in x.
    pub block: u32,
    /// Static shared memory, in bytes.
    pub shared_bytes: u64,
    /// Parameters, in order: each a `.u64` global address.
    pub params: Vec<Param>,
}

/// A rendered kernel.
#[derive(Clone, Debug)]
pub struct PtxKernel {
    /// The PTX module text (one `.entry`).
    pub ptx: String,
    /// Its launch parameters.
    pub manifest: Manifest,
}

/// A PTX identifier for a kernel name (it already is one for scheduler
/// names; anything else becomes `_`).
fn ident(name: &str) -> String {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

/// Bytes of a scratch array in `.shared`.
fn scratch_bytes(s: &kiln_ir::kernel::Scratch) -> u64 {
    (s.len * s.dtype.size_bytes() as u64).max(1)
}

/// Bytes of the cross-warp reduction array.
const RED_BYTES: u64 = (reduce::WARPS * reduce::RED_SLOT) as u64;

/// Alignment of the staged GEMMs' shared buffers.
const GEMM_ALIGN: u64 = 128;

/// Shared memory left for a kernel's staged GEMM buffers: the limit less
/// its scratch arrays and (whether used or not) the reduction array.
fn gemm_budget(k: &Kernel) -> u64 {
    let used = k.scratch.iter().fold(0u64, |at, s| at.next_multiple_of(16) + scratch_bytes(s));
    MAX_SHARED_BYTES.saturating_sub(used.next_multiple_of(16) + RED_BYTES + GEMM_ALIGN)
}

/// Renders one kernel.
pub fn render(k: &Kernel, arch: Arch) -> Result<PtxKernel, PtxError> {
    kiln_ir::kernel::verify::kernel(k).map_err(|e| PtxError::Invalid(e.to_string()))?;
    let unsupported = |what: String| PtxError::Unsupported { kernel: k.name.clone(), what };
    if k.grid > MAX_GRID {
        return Err(unsupported(format!("a grid of {} tiles (the most is {MAX_GRID})", k.grid)));
    }
    let mut e = emit::Emitter::new(k, arch);
    e.block(&k.body, false)?;
    let name = ident(&k.name);
    let mut shared = String::new();
    let mut shared_bytes = 0u64;
    for (i, s) in k.scratch.iter().enumerate() {
        let bytes = scratch_bytes(s);
        shared_bytes = shared_bytes.next_multiple_of(16) + bytes;
        let _ = writeln!(shared, "    .shared .align 16 .b8 sc{i}[{bytes}];");
    }
    if e.uses_red {
        shared_bytes = shared_bytes.next_multiple_of(16) + RED_BYTES;
        let _ = writeln!(shared, "    .shared .align 16 .b8 red[{RED_BYTES}];");
    }
    if e.gemm_shared > 0 {
        shared_bytes = shared_bytes.next_multiple_of(GEMM_ALIGN) + e.gemm_shared;
        let _ = writeln!(shared, "    .shared .align {GEMM_ALIGN} .b8 gst[{}];", e.gemm_shared);
    }
    if shared_bytes > MAX_SHARED_BYTES {
        return Err(unsupported(format!("{shared_bytes} bytes of scratch (the most is {MAX_SHARED_BYTES})")));
    }
    let params: Vec<String> = (0..k.args.len()).map(|i| format!("    .param .u64 a{i}")).collect();
    let mut ptx = String::new();
    let _ = write!(
        ptx,
        "// Kernel `{}`, rendered by Kiln.\n.version 8.0\n.target {}\n.address_size 64\n\n.visible .entry {name}(\n{}\n)\n.maxntid {BLOCK_THREADS}, 1, 1\n{{\n{}{}{}    ret;\n}}\n",
        k.name,
        arch.name(),
        params.join(",\n"),
        e.regs.declarations(),
        shared,
        e.out
    );
    let manifest = Manifest {
        name,
        grid: k.grid,
        block: BLOCK_THREADS,
        shared_bytes,
        params: k.args.iter().map(|a| Param { dtype: a.dtype, len: a.len, access: a.access }).collect(),
    };
    Ok(PtxKernel { ptx, manifest })
}
