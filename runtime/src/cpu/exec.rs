//! A compiled kernel program and its interpreter of host steps.
//!
//! [`CpuExecutable::new`] verifies a [`Program`], checks statically that
//! every view stays inside its buffer for every value of the loop counters
//! and that nothing writes an input or a parameter, plans the temps' arena
//! and JIT-compiles the kernels. [`CpuExecutable::run`] then converts the
//! inputs and parameters to typed storage, runs the steps in order (kernel
//! tiles in parallel on the executable's [`Pool`]) and converts the outputs
//! back to tensors.
//!
//! Temps live in one arena (see [`plan`]); arenas are kept
//! between runs and are not cleared, so a kernel must write a temp before
//! reading it, as scheduled programs do. Outputs start zeroed. The inputs'
//! and outputs' storage is kept between runs too: a fresh allocation of a
//! large buffer is fresh pages, each faulted in on first touch inside the
//! kernel that writes it, a cost that does not shrink with more threads
//! (it made a 4096 x 768 `x + gelu(layernorm(x))` as slow on 2 threads as
//! on 1).

use super::plan::{self, MemoryPlan};
use super::pool::Pool;
use super::profile::Profile;
use super::storage::{byte_len, encode, Storage};
use crate::tensor::type_string;
use crate::{RuntimeError, Tensor};
use kiln_codegen::cpu::{Compiled, KernelFn};
use kiln_ir::kernel::cost::{self, Cost};
use kiln_ir::kernel::{check, Access, BufId, BufKind, HostOffset, Program, Step, View};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Measurements of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// How long the executable took to build: scheduling (when built
    /// through a [`Cache`](super::Cache)), verification, planning and code
    /// generation, whether or not this call built it.
    pub compile_time: Duration,
    /// True when the executable came from a cache instead of being built
    /// by this call.
    pub cached: bool,
    /// How long the run took, from converting the inputs to converting the
    /// outputs.
    pub run_time: Duration,
    /// Of `run_time`, the host steps alone: kernels and copies, without
    /// converting inputs and outputs (what benchmarks compare).
    pub exec_time: Duration,
    /// Bytes of the temps' arena.
    pub peak_bytes: u64,
    /// Bytes the temps would take without sharing memory.
    pub naive_bytes: u64,
    /// Kernel launches executed (each loop iteration counts).
    pub launches: u64,
    /// Time and launches per kernel.
    pub profile: Profile,
}

/// Parameter values converted to the executable's storage layout, for
/// running many times without converting them again.
#[derive(Debug)]
pub struct PreparedParams {
    /// Parallel to the program's buffers: the storage of each parameter buffer.
    storage: Vec<Option<Storage>>,
}

/// A kernel program ready to run on the CPU.
pub struct CpuExecutable {
    program: Program,
    compiled: Compiled,
    plan: MemoryPlan,
    output_shapes: Vec<Vec<usize>>,
    /// Output `i`'s buffer.
    outputs: Vec<BufId>,
    /// Input `i`'s buffer (`None`: the program does not read it).
    inputs: Vec<Option<BufId>>,
    /// The largest parameter index used, plus one.
    params_needed: usize,
    pool: Arc<Pool>,
    compile_time: Duration,
    /// Of `compile_time`, scheduling the graph into kernels.
    schedule_time: Duration,
    /// What one launch of each kernel computes and moves, for profiles.
    costs: Vec<Cost>,
    /// Buffers of finished runs, reused by the next ones.
    buffers: Mutex<Vec<RunBuffers>>,
}

/// The storage one run allocates besides parameters.
struct RunBuffers {
    /// The temporaries' arena.
    arena: Storage,
    /// Each input's storage, in the order of the program's inputs.
    inputs: Vec<Storage>,
    /// Each output's storage.
    outputs: Vec<Storage>,
}

/// `old` when it holds exactly `len` bytes, else a new zeroed storage.
fn reuse(old: Option<Storage>, len: usize) -> Result<Storage, RuntimeError> {
    match old {
        Some(s) if s.len() == len => Ok(s),
        _ => Storage::zeroed(len),
    }
}

impl std::fmt::Debug for CpuExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuExecutable")
            .field("kernels", &self.program.kernels.len())
            .field("buffers", &self.program.buffers.len())
            .field("peak_bytes", &self.plan.peak_bytes)
            .finish_non_exhaustive()
    }
}

/// An internal error about the program as a whole.
fn bad_program(message: String) -> RuntimeError {
    RuntimeError::Internal { site: "the kernel program".into(), message }
}

/// Where a buffer's element 0 is during a run, and how many elements it has.
#[derive(Clone, Copy)]
struct Base {
    ptr: *mut u8,
    len: u64,
    elem: usize,
}

/// The argument pointers of one launch, shared by the threads running its
/// tiles.
struct ArgPtrs(Vec<*mut u8>);

// SAFETY: the pointers are only handed to a kernel function. Its tiles are
// independent (they write disjoint elements), the buffers outlive the
// launch, and no Rust reference to them exists while it runs.
unsafe impl Sync for ArgPtrs {}

impl ArgPtrs {
    /// The `args` array a kernel function takes.
    fn array(&self) -> *const *mut u8 {
        self.0.as_ptr()
    }
}

impl CpuExecutable {
    /// Checks, plans and compiles a program. `output_shapes[i]` is the
    /// shape of output `i` (its buffer must hold exactly that many
    /// elements). Problems with the program are [`RuntimeError::Internal`].
    /// Kernels run on rayon's global pool unless [`with_pool`](Self::with_pool)
    /// says otherwise.
    pub fn new(program: Program, output_shapes: Vec<Vec<usize>>) -> Result<CpuExecutable, RuntimeError> {
        CpuExecutable::new_with(program, output_shapes, &kiln_codegen::cpu::Options::default())
    }

    /// [`new`](Self::new) with explicit code generation options.
    pub fn new_with(program: Program, output_shapes: Vec<Vec<usize>>, codegen: &kiln_codegen::cpu::Options) -> Result<CpuExecutable, RuntimeError> {
        let start = Instant::now();
        kiln_ir::kernel::verify::program(&program).map_err(|e| RuntimeError::Internal {
            site: if e.kernel == "program" { "the kernel program".into() } else { format!("kernel `{}`", e.kernel) },
            message: e.msg,
        })?;
        let roles = Roles::of(&program, &output_shapes)?;
        check_steps(&program, &program.steps, &mut Vec::new())?;
        let plan = plan::plan(&program)?;
        let compiled = compile(&program, codegen)?;
        let costs = program.kernels.iter().map(cost::kernel).collect();
        Ok(CpuExecutable {
            program,
            compiled,
            plan,
            output_shapes,
            outputs: roles.outputs,
            inputs: roles.inputs,
            params_needed: roles.params_needed,
            pool: Arc::new(Pool::global()),
            compile_time: start.elapsed(),
            schedule_time: Duration::ZERO,
            costs,
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// Runs kernels on `pool` instead of rayon's global pool.
    pub fn with_pool(mut self, pool: Arc<Pool>) -> CpuExecutable {
        self.pool = pool;
        self
    }

    /// Adds time spent scheduling before [`new`](Self::new) to the
    /// reported compile time.
    pub(crate) fn add_schedule_time(&mut self, d: Duration) {
        self.compile_time += d;
        self.schedule_time += d;
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The temps' memory plan.
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// Bytes one run allocates: the temporaries' arena, and each input,
    /// parameter and output in its storage dtype.
    pub fn memory_bytes(&self) -> u64 {
        let buffers = self.program.buffers.iter().filter(|b| !matches!(b.kind, BufKind::Temp));
        buffers.fold(self.plan.peak_bytes, |s, b| s.saturating_add(b.len.saturating_mul(b.dtype.size_bytes() as u64)))
    }

    /// The pool kernels run on.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// How long building took (see [`Stats::compile_time`]).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Of [`compile_time`](Self::compile_time), scheduling (zero when the
    /// program came scheduled); the rest is checks, planning and code
    /// generation.
    pub fn schedule_time(&self) -> Duration {
        self.schedule_time
    }

    /// The shapes of the outputs.
    pub fn output_shapes(&self) -> &[Vec<usize>] {
        &self.output_shapes
    }

    /// Runs the program. `params` are parallel to the module's parameters
    /// (those the program does not use are not looked at), `inputs` to the
    /// entry point's arguments; the outputs are parallel to its results.
    pub fn run(&self, params: &[Tensor], inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        Ok(self.run_with_stats(params, inputs)?.0)
    }

    /// [`run`](Self::run), also measuring it.
    pub fn run_with_stats(&self, params: &[Tensor], inputs: &[Tensor]) -> Result<(Vec<Tensor>, Stats), RuntimeError> {
        let start = Instant::now();
        let params = self.prepare_params(params)?;
        let (outs, mut stats) = self.run_prepared(&params, inputs)?;
        stats.run_time = start.elapsed();
        Ok((outs, stats))
    }

    /// Converts parameter values (parallel to the module's parameters) for
    /// [`run_prepared`](Self::run_prepared).
    pub fn prepare_params(&self, params: &[Tensor]) -> Result<PreparedParams, RuntimeError> {
        if params.len() < self.params_needed {
            return Err(RuntimeError::BadParam {
                name: format!("#{}", params.len()),
                reason: format!("the program needs {} parameter values, got {}", self.params_needed, params.len()),
            });
        }
        let mut storage: Vec<Option<Storage>> = self.program.buffers.iter().map(|_| None).collect();
        for (slot, b) in storage.iter_mut().zip(&self.program.buffers) {
            if let BufKind::Param(i) = b.kind {
                let t = &params[i as usize];
                check_value(t, b.dtype, b.len).map_err(|reason| RuntimeError::BadParam { name: b.name.clone(), reason })?;
                *slot = Some(Storage::from_tensor(t)?);
            }
        }
        Ok(PreparedParams { storage })
    }

    /// Runs the program with converted parameters (from this executable's
    /// [`prepare_params`](Self::prepare_params)).
    pub fn run_prepared(&self, params: &PreparedParams, inputs: &[Tensor]) -> Result<(Vec<Tensor>, Stats), RuntimeError> {
        let start = Instant::now();
        let bufs = &self.program.buffers;
        if inputs.len() != self.inputs.len() {
            return Err(RuntimeError::BadInput {
                name: format!("#{}", inputs.len().min(self.inputs.len())),
                reason: format!("the program takes {} inputs, got {}", self.inputs.len(), inputs.len()),
            });
        }
        let kept = self.buffers.lock().ok().and_then(|mut b| b.pop());
        let (arena, mut old_inputs, mut old_outputs) = match kept {
            Some(k) => (Some(k.arena), k.inputs.into_iter(), k.outputs.into_iter()),
            None => (None, Vec::new().into_iter(), Vec::new().into_iter()),
        };
        let mut input_storage = Vec::new();
        for (t, b) in inputs.iter().zip(&self.inputs) {
            if let Some(b) = b {
                let buf = &bufs[b.0 as usize];
                check_value(t, buf.dtype, buf.len).map_err(|reason| RuntimeError::BadInput { name: buf.name.clone(), reason })?;
                let mut s = reuse(old_inputs.next(), t.data.len() * t.dtype.size_bytes())?;
                encode(t.dtype, &t.data, s.bytes_mut());
                input_storage.push((*b, s));
            }
        }
        let foreign = params.storage.len() != bufs.len()
            || bufs.iter().zip(&params.storage).any(|(b, s)| matches!(b.kind, BufKind::Param(_)) != s.is_some());
        if foreign {
            return Err(RuntimeError::Invalid("parameters prepared for another executable".into()));
        }
        let mut outputs = Vec::with_capacity(self.outputs.len());
        for b in &self.outputs {
            let buf = &bufs[b.0 as usize];
            let mut s = reuse(old_outputs.next(), byte_len(buf.dtype, buf.len)?)?;
            s.bytes_mut().fill(0);
            outputs.push(s);
        }
        // Zeroed status words (see `kiln_ir::kernel::check`), read after the run.
        let mut status = match check::status_buffer(&self.program) {
            Some(b) => Some((b, Storage::for_elements(bufs[b].dtype, bufs[b].len)?)),
            None => None,
        };
        let mut arena = match arena {
            Some(a) => a,
            None => Storage::zeroed(0)?,
        };
        if (arena.len() as u64) < self.plan.peak_bytes {
            arena = Storage::zeroed(self.plan.peak_bytes as usize)?;
        }

        // Every buffer's base pointer. Inputs and parameters are only read
        // (`new` refused programs that write them).
        let arena_ptr = arena.as_mut_ptr();
        let mut bases: Vec<Base> = bufs
            .iter()
            .zip(&self.plan.slots)
            .map(|(b, s)| Base {
                ptr: arena_ptr.wrapping_add(s.map_or(0, |s| s.offset as usize)),
                len: if s.is_some() { b.len } else { 0 },
                elem: b.dtype.size_bytes(),
            })
            .collect();
        for (b, s) in &input_storage {
            let base = &mut bases[b.0 as usize];
            (base.ptr, base.len) = (s.as_ptr().cast_mut(), s.len() as u64 / base.elem as u64);
        }
        for (base, s) in bases.iter_mut().zip(&params.storage) {
            if let Some(s) = s {
                (base.ptr, base.len) = (s.as_ptr().cast_mut(), s.len() as u64 / base.elem as u64);
            }
        }
        for (b, s) in self.outputs.iter().zip(&mut outputs) {
            let base = &mut bases[b.0 as usize];
            (base.ptr, base.len) = (s.as_mut_ptr(), s.len() as u64 / base.elem as u64);
        }
        if let Some((b, s)) = &mut status {
            let base = &mut bases[*b];
            (base.ptr, base.len) = (s.as_mut_ptr(), s.len() as u64 / base.elem as u64);
        }

        let mut profile = Profile::new(self.program.kernels.iter().map(|k| k.name.as_str()));
        let exec_start = Instant::now();
        let result = self.steps(&self.program.steps, &mut Vec::new(), &bases, &mut profile);
        let exec_time = exec_start.elapsed();
        result?;
        if let Some((_, s)) = &status {
            if let Some(fault) = check::fault_in_bytes(&self.program, s.bytes()) {
                return Err(RuntimeError::Failed { function: "program".into(), message: fault.to_string() });
            }
        }

        let mut outs = Vec::with_capacity(outputs.len());
        for ((s, b), shape) in outputs.iter().zip(&self.outputs).zip(&self.output_shapes) {
            outs.push(s.to_tensor(bufs[b.0 as usize].dtype, shape.clone())?);
        }
        let inputs = input_storage.into_iter().map(|(_, s)| s).collect();
        if let Ok(mut b) = self.buffers.lock() {
            b.push(RunBuffers { arena, inputs, outputs });
        }
        let stats = Stats {
            compile_time: self.compile_time,
            cached: false,
            run_time: start.elapsed(),
            exec_time,
            peak_bytes: self.plan.peak_bytes,
            naive_bytes: self.plan.naive_bytes,
            launches: profile.launches(),
            profile,
        };
        Ok((outs, stats))
    }

    /// Runs steps with the given loop counters.
    fn steps(&self, steps: &[Step], counters: &mut Vec<u64>, bases: &[Base], profile: &mut Profile) -> Result<(), RuntimeError> {
        for s in steps {
            match s {
                Step::Launch { kernel, args } => {
                    let k = &self.program.kernels[kernel.0 as usize];
                    let mut ptrs = Vec::with_capacity(args.len());
                    for (a, v) in k.args.iter().zip(args) {
                        ptrs.push(pointer(bases, v, a.len, counters, &|| format!("kernel `{}`", k.name))?);
                    }
                    let ptrs = ArgPtrs(ptrs);
                    let f: KernelFn = self.compiled.get(*kernel);
                    let start = Instant::now();
                    self.pool.for_each_chunk(k.grid, &|tiles| {
                        // SAFETY: `ptrs` holds one pointer per kernel argument
                        // (the verifier checked the count and dtypes), each
                        // to at least the argument's `len` elements of live
                        // storage (checked by `pointer`); tiles in
                        // `0..grid` are independent, and each chunk gets
                        // a disjoint range of them. Arguments the kernel
                        // writes are never input or parameter storage
                        // (refused by `new`).
                        unsafe { f(ptrs.array(), tiles.start, tiles.end) }
                    });
                    profile.kernels[kernel.0 as usize].launched(self.costs[kernel.0 as usize], start.elapsed());
                }
                Step::Repeat { var, count, body } => {
                    debug_assert_eq!(var.0 as usize, counters.len());
                    counters.push(0);
                    for i in 0..*count {
                        counters[var.0 as usize] = i;
                        self.steps(body, counters, bases, profile)?;
                    }
                    counters.pop();
                }
                Step::Copy { dst, src, len } => {
                    let site = || "a copy step".to_string();
                    let d = pointer(bases, dst, *len, counters, &site)?;
                    let s = pointer(bases, src, *len, counters, &site)?;
                    let bytes = *len as usize * bases[dst.buf.0 as usize].elem;
                    // SAFETY: both ranges lie inside live storage (checked by
                    // `pointer`), the dtypes match (verifier), and
                    // `ptr::copy` allows the ranges to overlap.
                    unsafe { std::ptr::copy(s.cast_const(), d, bytes) }
                }
            }
        }
        Ok(())
    }
}

/// The address of a view's element 0, after checking that `len` elements
/// from it lie inside the buffer.
fn pointer(bases: &[Base], v: &View, len: u64, counters: &[u64], site: &dyn Fn() -> String) -> Result<*mut u8, RuntimeError> {
    let base = bases[v.buf.0 as usize];
    let offset = eval(&v.offset, counters);
    match offset.and_then(|o| Some((o, o.checked_add(len)?))) {
        Some((o, end)) if end <= base.len => Ok(base.ptr.wrapping_add(o as usize * base.elem)),
        _ => Err(RuntimeError::Internal {
            site: site(),
            message: match offset {
                Some(o) => format!("a view of {len} elements at {o} is outside a buffer of {}", base.len),
                None => "a view offset overflows".into(),
            },
        }),
    }
}

/// A host offset's value, `None` on overflow.
fn eval(o: &HostOffset, counters: &[u64]) -> Option<u64> {
    o.terms.iter().try_fold(o.constant, |acc, (v, c)| acc.checked_add(counters.get(v.0 as usize)?.checked_mul(*c)?))
}

/// `Err` with a reason when a tensor does not fit a buffer.
fn check_value(t: &Tensor, dtype: kiln_ir::DType, len: u64) -> Result<(), String> {
    let numel: usize = t.shape.iter().product();
    if t.data.len() != numel {
        return Err(format!("{} holds {} values", type_string(t.dtype, &t.shape), t.data.len()));
    }
    if t.dtype != dtype || numel as u64 != len {
        return Err(format!("expected {dtype} with {len} elements, got {}", type_string(t.dtype, &t.shape)));
    }
    Ok(())
}

/// Which buffers are the inputs, parameters and outputs.
struct Roles {
    outputs: Vec<BufId>,
    inputs: Vec<Option<BufId>>,
    params_needed: usize,
}

impl Roles {
    fn of(p: &Program, output_shapes: &[Vec<usize>]) -> Result<Roles, RuntimeError> {
        let mut outputs = vec![None; output_shapes.len()];
        let mut inputs: Vec<Option<BufId>> = Vec::new();
        let mut params = std::collections::HashSet::new();
        let mut params_needed = 0;
        for (i, b) in p.buffers.iter().enumerate() {
            let id = BufId(i as u32);
            byte_len(b.dtype, b.len)?;
            match b.kind {
                BufKind::Output(k) => {
                    let slot = outputs
                        .get_mut(k as usize)
                        .ok_or_else(|| bad_program(format!("output {k} (`{}`) but {} output shapes", b.name, output_shapes.len())))?;
                    if slot.replace(id).is_some() {
                        return Err(bad_program(format!("two buffers are output {k}")));
                    }
                    let numel: usize = output_shapes[k as usize].iter().product();
                    if numel as u64 != b.len {
                        return Err(bad_program(format!(
                            "output `{}` has {} elements, its shape {:?} holds {numel}",
                            b.name, b.len, output_shapes[k as usize]
                        )));
                    }
                }
                BufKind::Input(k) => {
                    let k = k as usize;
                    if inputs.len() <= k {
                        inputs.resize(k + 1, None);
                    }
                    if inputs[k].replace(id).is_some() {
                        return Err(bad_program(format!("two buffers are input {k}")));
                    }
                }
                BufKind::Param(k) => {
                    if !params.insert(k) {
                        return Err(bad_program(format!("two buffers are parameter {k}")));
                    }
                    params_needed = params_needed.max(k as usize + 1);
                }
                BufKind::Temp | BufKind::Status => {}
            }
        }
        let outputs = outputs
            .into_iter()
            .enumerate()
            .map(|(k, b)| b.ok_or_else(|| bad_program(format!("no buffer is output {k}"))))
            .collect::<Result<_, _>>()?;
        Ok(Roles { outputs, inputs, params_needed })
    }
}

/// Checks, for every value the loop counters take, that views stay inside
/// their buffers and that inputs and parameters are only read. `counts`
/// are the trip counts of the enclosing loops.
fn check_steps(p: &Program, steps: &[Step], counts: &mut Vec<u64>) -> Result<(), RuntimeError> {
    for s in steps {
        match s {
            Step::Launch { kernel, args } => {
                let k = &p.kernels[kernel.0 as usize];
                for (a, v) in k.args.iter().zip(args) {
                    check_view(p, counts, v, a.len, a.access != Access::Read, &|| format!("kernel `{}`", k.name))?;
                }
            }
            Step::Repeat { count, body, .. } => {
                if *count > 0 {
                    counts.push(*count);
                    check_steps(p, body, counts)?;
                    counts.pop();
                }
            }
            Step::Copy { dst, src, len } => {
                check_view(p, counts, dst, *len, true, &|| "a copy step".into())?;
                check_view(p, counts, src, *len, false, &|| "a copy step".into())?;
            }
        }
    }
    Ok(())
}

/// Checks one view of `len` elements for every value of the loop counters
/// (the offset is largest at their last values: coefficients are unsigned).
fn check_view(p: &Program, counts: &[u64], v: &View, len: u64, write: bool, site: &dyn Fn() -> String) -> Result<(), RuntimeError> {
    let b = &p.buffers[v.buf.0 as usize];
    if write && matches!(b.kind, BufKind::Input(_) | BufKind::Param(_)) {
        return Err(RuntimeError::Internal { site: site(), message: format!("writes the read-only buffer `{}`", b.name) });
    }
    let last: Vec<u64> = counts.iter().map(|c| c - 1).collect();
    match eval(&v.offset, &last).and_then(|o| o.checked_add(len)) {
        Some(end) if end <= b.len => Ok(()),
        _ => Err(RuntimeError::Internal {
            site: site(),
            message: format!("a view of {len} elements reaches past the end of `{}` ({} elements)", b.name, b.len),
        }),
    }
}

/// Compiles every kernel; on failure, names the kernel at fault.
fn compile(p: &Program, opts: &kiln_codegen::cpu::Options) -> Result<Compiled, RuntimeError> {
    use kiln_codegen::cpu::CodegenError;
    let err = |e: CodegenError, fallback: &str| match e {
        CodegenError::Unsupported { kernel, what } => {
            RuntimeError::Internal { site: format!("kernel `{kernel}`"), message: format!("{what} is not supported by the CPU backend") }
        }
        e => RuntimeError::Internal { site: fallback.to_string(), message: e.to_string() },
    };
    kiln_codegen::cpu::compile_with(&p.kernels, opts).map_err(|e| {
        // Find the kernel at fault by compiling them one at a time.
        let culprit = p.kernels.iter().find(|k| kiln_codegen::cpu::compile_with(std::slice::from_ref(k), opts).is_err());
        match culprit {
            Some(k) => err(e, &format!("kernel `{}`", k.name)),
            None => err(e, "the CPU backend"),
        }
    })
}

/// Executables are shared between threads (see [`Cache`](super::Cache)).
const _: () = {
    const fn is<T: Send + Sync>() {}
    is::<CpuExecutable>();
    is::<PreparedParams>();
};
