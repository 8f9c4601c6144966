//! The CPU execution engine: kernel programs JIT-compiled with
//! [`kiln_codegen::cpu`] and run on all cores.
//!
//! - [`storage`]: typed, aligned host storage and conversion from and to
//!   [`Tensor`]s.
//! - [`plan`]: the memory plan that lets temps with disjoint lifetimes
//!   share one arena.
//! - [`pool`]: running a kernel's tiles in parallel with rayon.
//! - [`exec`]: [`CpuExecutable`], a checked and compiled program, and its
//!   host-step interpreter.
//! - [`cache`]: compiled executables keyed by entry point and dims.
//! - [`profile`]: time per kernel, beside its work and traffic.
//! - [`ceilings`]: the machine's FMA and copy ceilings profiles compare with.
//!
//! [`run_cpu`] ties them together: schedule an entry point with concrete
//! dims (once per [`Cache`]), then run it.

pub mod cache;
pub mod ceilings;
pub mod exec;
pub mod plan;
pub mod pool;
pub mod profile;
pub mod storage;

pub use cache::Cache;
pub use ceilings::Ceilings;
pub use exec::{CpuExecutable, PreparedParams, Stats};
pub use plan::MemoryPlan;
pub use pool::Pool;
pub use profile::{KernelTime, Profile};

use crate::{RuntimeError, Tensor};
use kiln_ir::kernel::Program;
use kiln_ir::schedule::{ScheduleError, ScheduleOptions};
use kiln_ir::{Function, Module};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Runs `f` of `m` on the CPU with the given parameter values (parallel
/// to `m.params`), inputs (parallel to `f.arg_names`) and dimension sizes;
/// the outputs are parallel to `f.output_names`. The executable is taken
/// from `cache` when `f` was compiled for these dims before.
pub fn run_cpu(
    m: &Module,
    f: &Function,
    params: &[Tensor],
    inputs: &[Tensor],
    dims: &BTreeMap<String, i64>,
    cache: &Cache,
) -> Result<(Vec<Tensor>, Stats), RuntimeError> {
    let (exe, cached) = executable(m, f, dims, cache)?;
    let (outs, mut stats) = exe.run_with_stats(params, inputs).map_err(|e| e.in_function(&f.name))?;
    stats.cached = cached;
    Ok((outs, stats))
}

/// The compiled `f` for `dims` from `cache`, built on a miss (the flag is
/// true on a hit).
pub fn executable(m: &Module, f: &Function, dims: &BTreeMap<String, i64>, cache: &Cache) -> Result<(Arc<CpuExecutable>, bool), RuntimeError> {
    cache.get_or_build(&f.name, dims, || compile_cpu_with(m, f, dims, cache.pool().clone(), cache.options(), cache.codegen()))
}

/// Schedules `f` of `m` with concrete dims: the kernel program and the
/// shapes of its outputs. Scheduler failures are [`RuntimeError::Internal`].
pub fn schedule_entry(m: &Module, f: &Function, dims: &BTreeMap<String, i64>, options: &ScheduleOptions) -> Result<(Program, Vec<Vec<usize>>), RuntimeError> {
    let env = |name: &str| dims.get(name).copied();
    let internal = |message: String| RuntimeError::Internal { site: format!("the scheduler for `{}`", f.name), message };
    let program = kiln_ir::schedule::schedule(m, f, &env, options).map_err(|e| match e {
        ScheduleError::Refused(e) => RuntimeError::Failed { function: f.name.clone(), message: e.to_string() },
        e => internal(e.to_string()),
    })?;
    let mut shapes = Vec::with_capacity(f.graph.outputs.len());
    for &o in &f.graph.outputs {
        let ty = f.graph.node(o).ty.tensor().ok_or_else(|| internal(format!("result {o} is not a tensor")))?;
        let mut shape = Vec::with_capacity(ty.shape.len());
        for d in &ty.shape {
            let v = d.eval(&env).map_err(|e| internal(e.to_string()))?;
            shape.push(usize::try_from(v).map_err(|_| internal(format!("a result dimension evaluates to {v}")))?);
        }
        shapes.push(shape);
    }
    Ok((program, shapes))
}

/// Schedules `f` of `m` with concrete dims and compiles it for the CPU,
/// to run on `pool`. Scheduler failures are [`RuntimeError::Internal`].
pub fn compile_cpu(
    m: &Module,
    f: &Function,
    dims: &BTreeMap<String, i64>,
    pool: Arc<Pool>,
    options: &ScheduleOptions,
) -> Result<CpuExecutable, RuntimeError> {
    compile_cpu_with(m, f, dims, pool, options, &kiln_codegen::cpu::Options::default())
}

/// [`compile_cpu`] with explicit code generation options.
pub fn compile_cpu_with(
    m: &Module,
    f: &Function,
    dims: &BTreeMap<String, i64>,
    pool: Arc<Pool>,
    options: &ScheduleOptions,
    codegen: &kiln_codegen::cpu::Options,
) -> Result<CpuExecutable, RuntimeError> {
    let start = Instant::now();
    let (program, shapes) = schedule_entry(m, f, dims, options)?;
    let schedule_time = start.elapsed();
    let mut exe = CpuExecutable::new_with(program, shapes, codegen)?.with_pool(pool);
    exe.add_schedule_time(schedule_time);
    Ok(exe)
}
