//! The host ISA, its flags, and the JIT module that owns the code.
//!
//! Code is compiled for the machine it runs on (`cranelift_native`) at
//! `opt_level=speed`. Features Cranelift can use are detected; the ones
//! the lowering itself chooses between (FMA) are reported in [`Features`].

use super::{CodegenError, Options};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;

/// What the lowering may emit on this host.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Features {
    /// Fused multiply-add instructions (x86 FMA3, always on aarch64).
    pub fma: bool,
}

/// `powf` for kernels: computed in f64, so the result is the correctly
/// rounded f32 in all but double-rounding cases (as the reference
/// interpreter computes it).
pub(crate) const POWF: &str = "kiln_powf";
/// Integer power with the reference interpreter's semantics.
pub(crate) const POWI: &str = "kiln_powi";

extern "C" fn kiln_powf(a: f32, b: f32) -> f32 {
    (a as f64).powf(b as f64) as f32
}

/// `a^b` wrapping for `b >= 0`; for `b < 0` it is `1 / a^-b` truncated, so
/// only `±1` survive. `0^negative` (a division by zero in the interpreter)
/// gives 0: a kernel cannot report errors.
extern "C" fn kiln_powi(a: i64, b: i64) -> i64 {
    kiln_ir::int_pow(a, b).unwrap_or(0)
}

// Cranelift lowers a scalar `fma` to this libcall when the CPU has no FMA
// unit; the lowering avoids `fma` then, but the symbol is registered so a
// stray one still links instead of failing at finalization.
extern "C" fn kiln_fmaf(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

extern "C" fn kiln_fma(a: f64, b: f64, c: f64) -> f64 {
    a.mul_add(b, c)
}

/// A JIT module for the host CPU and the features the lowering may use.
pub(crate) fn new_module(opts: &Options) -> Result<(JITModule, Features), CodegenError> {
    let err = |e: &dyn std::fmt::Display| CodegenError::Cranelift(e.to_string());
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| err(&e));
    set(&mut flags, "opt_level", "speed")?;
    // Required by cranelift-jit: calls to imports use absolute addresses.
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    // Scratch arrays live on the stack: probe large frames so a kernel on a
    // small thread stack faults on the guard page instead of jumping it.
    set(&mut flags, "enable_probestack", "true")?;
    set(&mut flags, "probestack_strategy", "inline")?;
    let mut isa_builder = cranelift_native::builder().map_err(|e| err(&e))?;
    if cfg!(target_arch = "x86_64") && !opts.fma {
        isa_builder.set("has_fma", "false").map_err(|e| err(&e))?;
    }
    let isa = isa_builder.finish(settings::Flags::new(flags)).map_err(|e| err(&e))?;
    let fma = opts.fma
        && match isa.name() {
            "x64" => isa.isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool() == Some(true)),
            "aarch64" | "riscv64" | "s390x" => true,
            _ => false,
        };
    let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
    jb.symbol(POWF, kiln_powf as *const u8);
    jb.symbol(POWI, kiln_powi as *const u8);
    jb.symbol("fmaf", kiln_fmaf as *const u8);
    jb.symbol("fma", kiln_fma as *const u8);
    jb.symbol(super::native::SGEMM, super::native::kiln_native_sgemm as *const u8);
    Ok((JITModule::new(jb), Features { fma }))
}
