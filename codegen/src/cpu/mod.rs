//! The Cranelift CPU backend.
//!
//! [`compile`] turns a program's kernels into native functions of type
//! [`KernelFn`]: `f(args, tile_begin, tile_end)` runs tiles
//! `tile_begin..tile_end` of the kernel, where `args[i]` points at element 0
//! of argument `i`. Tiles are independent, so the runtime may call one
//! kernel from many threads on disjoint tile ranges.

use kiln_ir::kernel::{Kernel, KernelId};

/// A compiled kernel: runs tiles `begin..end` with `args[i]` pointing at
/// element 0 of kernel argument `i`.
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, begin: u64, end: u64);

/// Why code generation failed (always a bug in Kiln, never user error).
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// Cranelift rejected the generated function.
    #[error("cranelift: {0}")]
    Cranelift(String),
    /// The kernel uses something this backend does not implement.
    #[error("kernel `{kernel}`: {what} is not supported by the CPU backend")]
    Unsupported {
        /// The kernel's name.
        kernel: String,
        /// What.
        what: String,
    },
}

/// Compiled kernels; they live as long as this value.
pub struct Compiled {
    fns: Vec<KernelFn>,
    // Owns the executable memory the function pointers point into.
    _module: Box<dyn std::any::Any + Send + Sync>,
}

impl Compiled {
    /// The function of a kernel, by its index in the slice given to [`compile`].
    pub fn get(&self, k: KernelId) -> KernelFn {
        self.fns[k.0 as usize]
    }
}

/// Compiles kernels for the host CPU.
pub fn compile(kernels: &[Kernel]) -> Result<Compiled, CodegenError> {
    let _ = kernels;
    Err(CodegenError::Cranelift("not yet implemented".into()))
}
