//! FlashAttention on tensor cores: hand-scheduled PTX generators for the
//! attention node (see `kiln_ir::attention` for the exact semantics).
//!
//! The generic renderer (`super::render`) turns kernel IR into correct but
//! slow PTX; attention needs tiles kept in registers and shared memory,
//! tensor-core instructions and an online softmax, so these kernels are
//! written directly. Each generator is specialized to one [`FlashConfig`]
//! (shapes, scale and causal offset become immediates).
//!
//! Supported: any `heads`, `group` dividing it, `sq, sk >= 1` (partial
//! blocks are masked), `d` in {32, 64, 96, 128}, `dv` a multiple of 16 up
//! to 128 (of 32 for the backward), bf16 or f16, any finite scale, causal
//! with any offset. Anything else is a [`FlashError`]. Kernels use dynamic
//! shared memory (`FlashKernel::shared_bytes`, up to 96 KiB).
//!
//! sm_80 gets FlashAttention-2 kernels (`mma.sync`, `ldmatrix`, `cp.async`;
//! they run on sm_90a too). The sm_90a forward is FlashAttention-3-style
//! (TMA, mbarriers, warp specialization, `wgmma`, ping-pong consumers) for
//! `d`, `dv` in {64, 128}; it takes Q, K and V as tensor maps
//! ([`FlashKernel::tensor_maps`], [`TensorMapParam`]). The sm_90a backward
//! is the sm_80 one.
//!
//! Files: `config.rs` (validation, tile sizes, shared-memory layout),
//! `asm.rs` (PTX text and fragment helpers), `mask.rs` (causal and length
//! masking), `softmax.rs` (the forwards' online softmax and epilogue),
//! `pipeline.rs` (the double-buffered K/V loop), `tma.rs` (tensor-map
//! parameters, TMA loads, mbarrier waits), `fwd_sm80.rs` (FA2 forward),
//! `fwd_sm90.rs` (FA3-style forward), `bwd_sm80.rs` (FA2 backward).

mod asm;
mod bwd_sm80;
mod config;
mod fwd_sm80;
mod fwd_sm90;
mod mask;
mod pipeline;
mod softmax;
mod tma;

pub use config::{FlashConfig, Half};
pub use tma::{TensorMapParam, TmaSwizzle};

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
    /// The parameters, in order: each the `.u64` global address of the
    /// tensor of that name (`q`, `o`, `lse`, ...), except those described
    /// in `tensor_maps`.
    pub params: Vec<&'static str>,
    /// The parameters that are 128-byte tensor maps passed by value (sm_90a
    /// forward: `tmap_q`, `tmap_k`, `tmap_v`), with what to build them from.
    pub tensor_maps: Vec<TensorMapParam>,
}

/// Why no flash kernel was generated (the caller falls back to the
/// generic kernels).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlashError {
    /// A shape or option these kernels do not handle.
    #[error("flash attention: {0} is not supported")]
    Unsupported(String),
}

/// The forward kernel: `q, k, v -> o, lse` (`o` in the input dtype, `lse`
/// f32 pairs `[m, log l]` per row, as `kiln_ir::attention` lays them out). For sm_80 the parameters are the pointers `q, k, v, o, lse`; for
/// sm_90a they are the tensor maps `tmap_q, tmap_k, tmap_v` (see
/// [`FlashKernel::tensor_maps`]) and the pointers `o, lse`. The sm_90a
/// kernel needs `d` and `dv` in {64, 128}; for other sizes sm_90a gets the
/// sm_80 kernel (mma.sync, ldmatrix and cp.async run there too).
pub fn forward(cfg: &FlashConfig, arch: Arch) -> Result<FlashKernel, FlashError> {
    cfg.validate()?;
    match arch {
        Arch::Sm90a if fwd_sm90::supports(cfg) => Ok(fwd_sm90::generate(cfg)),
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
