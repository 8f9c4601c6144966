//! Kiln's backends: renderers from the loop-level kernel IR
//! ([`kiln_ir::kernel`]) to machine code.
//!
//! [`cpu`] JIT-compiles kernels with Cranelift (f32x4 SIMD, FMA, a packed,
//! register-blocked GEMM); [`ptx`] renders them as PTX text for NVIDIA
//! GPUs. A backend knows nothing of the runtime: it turns kernels into
//! callable functions or text, and the runtime decides what runs when.
#![warn(missing_docs)]

pub mod cpu;
pub mod ptx;
