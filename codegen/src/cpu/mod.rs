//! The Cranelift CPU backend.
//!
//! [`compile`] turns a program's kernels into native functions of type
//! [`KernelFn`]: `f(args, tile_begin, tile_end)` runs tiles
//! `tile_begin..tile_end` of the kernel, where `args[i]` points at element 0
//! of argument `i`. Tiles are independent, so the runtime may call one
//! kernel from many threads on disjoint tile ranges.
//!
//! What the generated code does, beyond the kernel IR's own semantics:
//!
//! - Loops and reductions marked `vector` run four f32 lanes at a time
//!   (`vector.rs` says when a loop qualifies), with a scalar tail;
//!   everything else is scalar.
//! - Transcendentals are inline polynomials accurate to a few ulp
//!   (`math.rs`); float `pow` calls out to a f64 `powf`.
//! - Both sides of a `select` are evaluated: both must be valid to load.
//! - Integer division or remainder by zero gives 0 (the interpreter reports
//!   an error; a kernel cannot), and `MIN / -1` wraps.
//! - float→int casts truncate toward zero; NaN becomes 0 and out-of-range
//!   values saturate to the i64 range before wrapping to i32.
//! - Scratch arrays live in the kernel function's stack frame (tiles reuse
//!   them): at most [`MAX_SCRATCH_BYTES`] per kernel; large frames are
//!   stack-probed.
//! - `max`/`min` (binary and reductions) propagate NaN; which zero
//!   `max(-0, +0)` returns is unspecified.
//!
//! Setting `KILN_CLIF=1` prints each kernel's Cranelift IR to stderr at
//! compile time, `KILN_CLIF=asm` its machine code.

mod check;
mod consts;
pub mod gemm;
mod half;
mod jit;
mod lower;
mod math;
pub mod native;
pub mod peak;
mod vector;

use kiln_ir::kernel::{Kernel, KernelId};

/// A compiled kernel: runs tiles `begin..end` with `args[i]` pointing at
/// element 0 of kernel argument `i`.
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, begin: u64, end: u64);

/// The most scratch memory (all arrays together) one kernel may use; it is
/// allocated on the calling thread's stack.
pub const MAX_SCRATCH_BYTES: u64 = 256 * 1024;

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
    /// The kernel breaks the kernel IR's invariants (the verifier's message).
    #[error("invalid kernel: {0}")]
    Invalid(String),
}

/// Knobs for [`compile_with`]; [`Options::default`] is what [`compile`] uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Use fused multiply-add where the CPU has it. Off, the code is what a
    /// CPU without FMA gets (separate multiply and add).
    pub fma: bool,
    /// Honor `vector: true` on loops and reductions. Off, everything is
    /// scalar (for comparisons and debugging).
    pub vectorize: bool,
    /// Run all-f32 GEMM statements on the precompiled full-width
    /// micro-kernels of [`native`] where the CPU has them. Off, every GEMM
    /// is the generated f32x4 code ([`gemm`]), as on a CPU without AVX2.
    pub native_gemm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { fma: true, vectorize: true, native_gemm: true }
    }
}

/// A JIT module for the host CPU, configured as the backend configures its
/// own (the GEMM's tests and benchmark build their functions in it).
pub fn host_module(opts: &Options) -> Result<cranelift_jit::JITModule, CodegenError> {
    jit::new_module(opts).map(|(m, _)| m)
}

/// Compiled kernels; they live as long as this value.
pub struct Compiled {
    fns: Vec<KernelFn>,
    // Owns the executable memory the function pointers point into.
    _module: Box<dyn std::any::Any + Send + Sync>,
}

impl Compiled {
    /// The function of a kernel, by its index in the slice given to [`compile`].
    ///
    /// # Panics
    ///
    /// If `k` is not an index into that slice.
    pub fn get(&self, k: KernelId) -> KernelFn {
        self.fns[k.0 as usize]
    }

    /// Number of compiled kernels.
    pub fn len(&self) -> usize {
        self.fns.len()
    }

    /// True when no kernels were compiled.
    pub fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }
}

/// Owns the JIT module and frees its code when dropped.
struct ModuleOwner(Option<cranelift_jit::JITModule>);

// SAFETY: after `finalize_definitions` the module is never used again,
// only dropped; the code it owns is immutable and may run on any thread.
unsafe impl Send for ModuleOwner {}
// SAFETY: as above; no `&self` method exists to race on.
unsafe impl Sync for ModuleOwner {}

impl Drop for ModuleOwner {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            // SAFETY: the function pointers handed out by `Compiled::get`
            // are documented to live only as long as the `Compiled`.
            unsafe { m.free_memory() };
        }
    }
}

/// Compiles kernels for the host CPU.
pub fn compile(kernels: &[Kernel]) -> Result<Compiled, CodegenError> {
    compile_with(kernels, &Options::default())
}

/// Compiles kernels for the host CPU with explicit [`Options`].
pub fn compile_with(kernels: &[Kernel], opts: &Options) -> Result<Compiled, CodegenError> {
    let (mut module, features) = jit::new_module(opts)?;
    let mut ids = Vec::with_capacity(kernels.len());
    for (i, k) in kernels.iter().enumerate() {
        ids.push(lower::define_kernel(&mut module, features, opts, k, i)?);
    }
    module.finalize_definitions().map_err(|e| CodegenError::Cranelift(e.to_string()))?;
    let fns = ids
        .into_iter()
        .map(|id| {
            let p = module.get_finalized_function(id);
            // SAFETY: every kernel is defined with the signature
            // (i64 args, i64 begin, i64 end) -> (), the C ABI of `KernelFn`.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    Ok(Compiled { fns, _module: Box::new(ModuleOwner(Some(module))) })
}
