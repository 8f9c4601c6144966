//! FlashAttention on tensor cores: hand-scheduled PTX generators for the
//! attention node (see `kiln_ir::attention` for the exact semantics).
//!
//! The generic renderer (`super::render`) turns kernel IR into correct but
//! slow PTX; attention needs tiles kept in registers and shared memory,
//! `mma.sync` and an online softmax, so these kernels are written directly.
//! Each generator is specialized to one [`FlashConfig`] (shapes, scale and
//! causal offset become immediates).
//!
//! Supported: any `heads`, `group` dividing it, `sq, sk >= 1` (partial
//! blocks are masked), `d` in {32, 64, 96, 128}, `dv` a multiple of 16 up
//! to 128 (of 32 for the backward), bf16 or f16, any finite scale, causal
//! with any offset. Anything else is a [`FlashError`]. Kernels use dynamic
//! shared memory (`FlashKernel::shared_bytes`, up to 85 KiB at d = dv =
//! 128). The sm_90a target gets the same mma.sync kernels for now: a
//! wgmma/TMA-style kernel (FA3) is not written yet.
//!
//! Files: `config.rs` (validation, tile sizes, shared-memory layout),
//! `asm.rs` (PTX text and fragment helpers), `mask.rs` (causal and length
//! masking), `pipeline.rs` (the double-buffered K/V loop), `fwd_sm80.rs` (FA2 forward), `bwd_sm80.rs` (FA2 backward).

mod asm;
mod bwd_sm80;
mod config;
mod fwd_sm80;
mod mask;
mod pipeline;
mod softmax;

pub use config::{FlashConfig, Half};

use super::Arch;

/// A generated kernel and how to launch it.
#[derive(Clone, Debug)]
pub struct FlashKernel {
    /// The `.entry` name.
    pub name: String,
    /// The PTX module text (one `.entry`).
    pub ptx: String,
    /// CTAs in x, y, z.
    pub grid: [u32; 3],
    /// Threads per CTA in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory to launch with, in bytes (above 48 KiB the
    /// launcher must raise `MAX_DYNAMIC_SHARED_SIZE_BYTES` first).
    pub shared_bytes: u32,
    /// The pointer parameters, in order (each a `.u64` global address).
    pub params: Vec<&'static str>,
}

/// Why no flash kernel was generated (the caller falls back to the
/// generic kernels).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlashError {
    /// A shape or option these kernels do not handle.
    #[error("flash attention: {0} is not supported")]
    Unsupported(String),
}

/// The forward kernel: `q, k, v -> o, lse` (parameters in that order; `o`
/// in the input dtype, `lse` f32).
pub fn forward(cfg: &FlashConfig, arch: Arch) -> Result<FlashKernel, FlashError> {
    cfg.validate()?;
    match arch {
        // mma.sync, ldmatrix and cp.async run on sm_90a too
        Arch::Sm80 | Arch::Sm90a => Ok(fwd_sm80::generate(cfg, arch)),
    }
}

/// The backward kernels, in launch order: `prep` (`o, do, lse -> stats`),
/// `dq` (`q, k, v, do, stats -> dq`) and `dkv` (`q, k, v, do, stats -> dk,
/// dv`); `stats` is an f32 workspace of `heads · sq · 2` elements the
/// launcher allocates. Gradients are in the input dtype. Needs `dv` to be a
/// multiple of 32 (dP's k dimension is loaded 32 columns at a time).
pub fn backward(cfg: &FlashConfig, arch: Arch) -> Result<Vec<FlashKernel>, FlashError> {
    cfg.validate()?;
    if !cfg.dv.is_multiple_of(32) {
        return Err(FlashError::Unsupported(format!("value head size dv = {} in the backward pass (supported: 32, 64, 96, 128)", cfg.dv)));
    }
    Ok(bwd_sm80::generate(cfg, arch))
}

/// The part of a kernel name that identifies its configuration.
fn config_tag(cfg: &FlashConfig, arch: Arch) -> String {
    let causal = match cfg.causal_i32() {
        Some(c) if c < 0 => format!("_causal_m{}", -i64::from(c)),
        Some(c) => format!("_causal_{c}"),
        None => String::new(),
    };
    format!(
        "{}_{}_h{}g{}_q{}_k{}_d{}_{}{causal}",
        arch.name(),
        cfg.dtype.ptx(),
        cfg.heads,
        cfg.group,
        cfg.sq,
        cfg.sk,
        cfg.d,
        cfg.dv
    )
}
