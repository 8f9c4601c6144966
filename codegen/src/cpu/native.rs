//! f32 GEMMs at the host's full vector width.
//!
//! Cranelift's x86-64 backend emits 128-bit vectors only, so the generated
//! GEMM ([`super::gemm`]) tops out at the f32x4 FMA ceiling, a half (AVX2,
//! Zen 4's double-pumped AVX-512) or a third to a quarter (cores with
//! full-width AVX-512 units) of what the machine does. An all-f32
//! [`Gemm`](kiln_ir::kernel::Gemm) statement therefore calls precompiled
//! micro-kernels instead: the `gemm` crate's, which pick AVX-512F, AVX2+FMA
//! or NEON at run time by CPU feature detection. Measured against the
//! alternatives (bench/RESULTS.md, "GEMM micro-kernels"): `matrixmultiply`'s
//! (also `std::arch`, AVX-512 since 0.3.11) came within 5 % on large square
//! products but 10–25 % behind on the small and skinny ones whole models
//! are made of.
//!
//! The call has the generated GEMM's signature and semantics (see
//! [`super::gemm`]), so the lowering swaps one callee for the other; the
//! generated GEMM stays the portable path for CPUs without wide vectors, for
//! bf16/f16 operands, and for [`Options::native_gemm`](super::Options)
//! `= false`, which the tests use to keep it correct on every machine.
//! The crate's own threading is off: the runtime already spreads a
//! kernel's tiles over its threads, each tile one call.

use super::CodegenError;
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};

/// The symbol the generated code calls.
pub(crate) const SGEMM: &str = "kiln_native_sgemm";

/// Declares [`kiln_native_sgemm`] as an import of `module` (the JIT
/// builder registers the symbol).
pub(crate) fn declare(module: &mut JITModule) -> Result<FuncId, CodegenError> {
    let sig = super::gemm::signature(module);
    module.declare_function(SGEMM, Linkage::Import, &sig).map_err(|e| CodegenError::Cranelift(e.to_string()))
}

/// The widest vector instruction set the native GEMM uses on this CPU, or
/// `None` where it would not beat the generated f32x4 code (no AVX2+FMA).
pub fn isa() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            Some("avx512f")
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            Some("avx2+fma")
        } else {
            None
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        Some("neon")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

/// `C = A·B`, or `C += A·B` when `accumulate != 0`, over f32 matrices with
/// element strides (the generated GEMM's contract).
///
/// # Safety
///
/// The pointers and strides describe valid, non-overlapping `m × k`, `k × n`
/// and `m × n` matrices (the kernel IR's verifier and the memory plan
/// guarantee it for the calls the lowering emits).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe extern "C" fn kiln_native_sgemm(
    a: *const f32,
    a_rs: i64,
    a_cs: i64,
    b: *const f32,
    b_rs: i64,
    b_cs: i64,
    c: *mut f32,
    c_rs: i64,
    c_cs: i64,
    m: i64,
    n: i64,
    k: i64,
    accumulate: i64,
) {
    if m <= 0 || n <= 0 {
        return;
    }
    let acc = accumulate != 0;
    if k <= 0 {
        if !acc {
            for i in 0..m as isize {
                for j in 0..n as isize {
                    // SAFETY: (i, j) is inside C (the caller's contract).
                    unsafe { *c.offset(i * c_rs as isize + j * c_cs as isize) = 0.0 };
                }
            }
        }
        return;
    }
    // SAFETY: the caller's contract; with `read_dst` false the crate never
    // reads C, with it true C is `1·C + 1·A·B`.
    unsafe {
        gemm::gemm(
            m as usize,
            n as usize,
            k as usize,
            c,
            c_cs as isize,
            c_rs as isize,
            acc,
            a,
            a_cs as isize,
            a_rs as isize,
            b,
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
