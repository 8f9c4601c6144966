//! `ptxemu`: an emulator for the subset of NVIDIA PTX that Kiln's GPU backend emits, so its
//! kernels can be tested bit-for-bit on machines without a GPU.
//!
//! ```
//! let ptx = r#"
//! .version 8.0
//! .target sm_80
//! .address_size 64
//! .visible .entry fill(.param .u64 out, .param .f32 value)
//! {
//!     .reg .b64 %rd<3>;
//!     .reg .b32 %r<2>;
//!     .reg .f32 %f<2>;
//!     ld.param.u64 %rd1, [out];
//!     ld.param.f32 %f1, [value];
//!     mov.u32 %r1, %tid.x;
//!     mul.wide.u32 %rd2, %r1, 4;
//!     add.s64 %rd1, %rd1, %rd2;
//!     st.global.f32 [%rd1], %f1;
//!     ret;
//! }
//! "#;
//! let module = ptxemu::Module::parse(ptx)?;
//! let mut mem = ptxemu::Memory::new();
//! let out = mem.alloc(4 * 64);
//! let launch = ptxemu::Launch { grid: [1, 1, 1], block: [64, 1, 1], dynamic_shared: 0 };
//! module.launch("fill", launch, &[ptxemu::Arg::U64(out), ptxemu::Arg::F32(2.5)], &mut mem)?;
//! assert_eq!(mem.read_f32s(out, 64)?, vec![2.5; 64]);
//! # Ok::<(), ptxemu::Error>(())
//! ```
//!
//! Pipeline: `lexer` → `parser` (declarations, labels, decoded instructions; an opcode or
//! modifier outside the subset is [`Error::Unsupported`] at parse time, a type combination outside
//! it when executed) → `exec` (CTAs in order, warps in lockstep with minimum-PC reconvergence; one
//! file per instruction family).
//!
//! The subset: integer, bit, float (f16/bf16 scalar and x2, f32, f64) and conversion arithmetic;
//! `ld`/`st`/`atom`/`red` in the global, shared, param and generic spaces with `.v2`/`.v4`;
//! branches, predicates, `bar.sync` with named barriers and counts; `shfl.sync`; `ldmatrix` and
//! `mma.sync` m16n8k16/m16n8k8; `cp.async` with groups; and for sm_90a `mbarrier`,
//! `cp.async.bulk` into shared memory, `cp.async.bulk.tensor` (TMA, tile mode, with the
//! emulator's own tensor-map bytes from [`tma::TensorMap::encode`]) and `wgmma.mma_async` with
//! A from registers or a descriptor and K- or MN-major shared-memory descriptors.
//!
//! What tests can rely on, and where the emulator is stricter or kinder than a GPU:
//! - Memory starts zeroed (global allocations and each CTA's shared memory). Every access is
//!   bounds- and alignment-checked; a fault names the instruction, its line and the address.
//! - Barriers expect every thread of the CTA (or the given count); a thread that exited never
//!   arrives, so early returns before a barrier are reported as a deadlock.
//! - Warp-wide instructions require their lanes to arrive together (by the member mask, or the
//!   whole warp for `ldmatrix`, `mma` and `wgmma`), and `shfl` may only read lanes that run it.
//! - Minimum-PC scheduling cannot run a lane ahead of a lane of the same warp that spins at a
//!   smaller PC waiting for it; such intra-warp spin waits end at the step limit.
//! - Float results are correctly rounded; `.approx` instructions are therefore more accurate than
//!   hardware but within the error bounds PTX states for them (listed in `src/exec/float.rs`).
//! - `cp.async` data lands at the covering `wait_group`/`wait_all`; bulk and tensor (TMA) copies
//!   land at once. A `wgmma.mma_async` computes at issue, but touching its accumulator or A
//!   registers with another instruction before the `wgmma.wait_group` that retires it is an error.
//! - Speed: about 30 million thread instructions per second in an optimized build, 5 in a debug
//!   build, so test crates that run many kernels want the emulator compiled with optimizations.

#![warn(missing_docs)]

mod error;
mod exec;
mod float_format;
mod instr;
mod lexer;
mod memory;
mod module;
mod parser;
pub mod tma;
mod types;

pub use error::{Error, Result};
pub use memory::{Memory, PARAM_WINDOW, SHARED_WINDOW};
pub use module::{Arg, Launch, Module, Stats, DEFAULT_STEP_LIMIT, MAX_SHARED_BYTES};
