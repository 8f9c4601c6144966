//! `kiln`: the command-line driver.

mod bench;
mod gpu_bench;
mod grad;
mod profile;
mod ptx;
mod train;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_ir::opt::{optimize, OptOptions, Report};
use kiln_lang::{compile_file, compile_source, Compiled};
use kiln_runtime as rt;
use rt::{Precision, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Kiln: a compiler for language models written as math.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a model: names, dtypes and shapes. Prints each entry point's signature.
    Check {
        /// The `.kl` file.
        file: PathBuf,
    },
    /// Print the graph IR of an entry point (or of all entry points).
    Ir {
        /// The `.kl` file.
        file: PathBuf,
        /// Entry point to print; every entry point when omitted.
        #[arg(long)]
        entry: Option<String>,
        /// Which stage: the lowered graph, or the kernels it is scheduled into.
        #[arg(long, value_enum, default_value_t = Stage::Graph)]
        stage: Stage,
        /// A dimension's size as NAME=N, for `--stage kernels` (others default as in `kiln run`, and Kiln says so).
        #[arg(long = "dim", value_name = "NAME=N")]
        dims: Vec<String>,
        /// Print the gradient of the (scalar) entry with respect to every float parameter instead, as `kiln train` compiles it (layer stacks unrolled), for `--stage optimized` and `kernels`.
        #[arg(long)]
        grad: bool,
        #[command(flatten)]
        fuse: FuseArgs,
    },
    /// Run an entry point and write each output as DIR/NAME.npy.
    Run(RunArgs),
    /// Gradients of an entry point with respect to its float inputs and parameters, as DIR/d_NAME.npy.
    Grad(grad::Args),
    /// The guided tour on the built-in GPT: check, lower, run, compute a loss.
    Demo,
    /// Train a model's `loss(tokens, targets)` on a text corpus (CPU backend).
    Train(train::Args),
    /// Render an entry point's kernels as PTX (one .ptx per kernel, plus manifest.json).
    Ptx(ptx::Args),
    /// Benchmarks: the CPU backend beside the machine's ceilings, or (with
    /// `--backend cuda`) the GPU's FlashAttention kernels forward and backward.
    Bench {
        /// Print JSON (for bench/compare_torch.py, scripts/gpu-check.sh) instead of a table.
        #[arg(long)]
        json: bool,
        /// Fewer sizes and shorter timings.
        #[arg(long)]
        quick: bool,
        /// Where to run: cpu or cuda.
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// GPU kernels' architecture with `--backend cuda`: sm_80 (default) or sm_90a.
        #[arg(long)]
        arch: Option<String>,
        /// Only this CPU workload (beside the FMA ceiling).
        #[arg(long, value_enum)]
        only: Option<bench::Workload>,
    },
}

/// What `kiln bench` measures.
#[derive(Debug, PartialEq)]
enum BenchTarget {
    Cpu,
    Cuda(kiln_codegen::ptx::Arch),
}

/// The target of `kiln bench --backend B [--arch A]`.
fn bench_target(backend: Backend, arch: Option<&str>) -> Result<BenchTarget, Failed> {
    match (backend, arch) {
        (Backend::Cpu, None) => Ok(BenchTarget::Cpu),
        (Backend::Cpu, Some(_)) => Err(Failed("error: --arch applies to `kiln bench --backend cuda` only\n".into())),
        (Backend::Reference, _) => Err(Failed("error: `kiln bench` runs on --backend cpu or cuda\n".into())),
        (Backend::Cuda, a) => {
            let a = a.unwrap_or("sm_80");
            kiln_codegen::ptx::Arch::parse(a).map(BenchTarget::Cuda).ok_or_else(|| Failed(format!("error: unknown --arch `{a}`; expected sm_80 or sm_90a\n")))
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// The `.kl` file.
    file: PathBuf,
    /// Entry point to run.
    #[arg(long, default_value = "forward")]
    entry: String,
    /// Run in training mode: `dropout` is active, its seed the input
    /// `dropout_seed` (drawn from --seed when not given). Without it,
    /// dropout is the identity.
    #[arg(long)]
    train_mode: bool,
    /// Print where the time went: compile stages, weights and the first
    /// run apart, then per kernel time, GFLOP/s and GB/s beside the
    /// machine's FMA and copy ceilings (--backend cpu).
    #[arg(long)]
    profile: bool,
    /// Run the entry N times on the same inputs (outputs from the last run);
    /// the profile reports the mean of runs 2..N, the steady state.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: u32,
    #[command(flatten)]
    exec: ExecArgs,
}

/// Where `run` and `grad` get their values, where they execute, and where
/// their results go.
#[derive(clap::Args)]
pub struct ExecArgs {
    /// Parameter values (safetensors); without it parameters come from their initializers.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Seed for initializers and for inputs not given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// An input as NAME=PATH.npy (repeatable); inputs not given are drawn at random.
    #[arg(long = "input", value_name = "NAME=PATH")]
    inputs: Vec<String>,
    /// A dimension's size as NAME=N (repeatable), for dims no input fixes.
    #[arg(long = "dim", value_name = "NAME=N")]
    dims: Vec<String>,
    /// Output directory.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Where to execute.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Arithmetic of `--backend reference`: f32 (default) rounds every result to its dtype, f64 is exact math.
    #[arg(long, value_enum)]
    precision: Option<Prec>,
    #[command(flatten)]
    fuse: FuseArgs,
}

/// The e-graph optimizer's flags, shared by `ir`, `run` and `train`.
#[derive(clap::Args, Clone, Copy)]
pub struct FuseArgs {
    /// Turn the e-graph optimizer (attention fusion) off.
    #[arg(long)]
    pub no_fuse: bool,
    /// Force the fused attention's kernel variant (default fa2).
    #[arg(long, value_enum, conflicts_with = "no_fuse")]
    pub attention: Option<Variant>,
}

/// A fused attention variant.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum Variant {
    /// FlashAttention-1.
    Fa1,
    /// FlashAttention-2.
    Fa2,
}

impl FuseArgs {
    /// The attention variant to force, if any.
    pub fn variant(&self) -> Option<kiln_ir::AttnVariant> {
        self.attention.map(|v| match v {
            Variant::Fa1 => kiln_ir::AttnVariant::Fa1,
            Variant::Fa2 => kiln_ir::AttnVariant::Fa2,
        })
    }

    /// Runs the optimizer on `f` unless `--no-fuse`; the report is `None` when off.
    fn apply(&self, m: &kiln_ir::Module, f: &kiln_ir::Function) -> Result<(kiln_ir::Function, Option<Report>), Failed> {
        if self.no_fuse {
            return Ok((f.clone(), None));
        }
        let opts = OptOptions { variant: self.variant(), ..OptOptions::default() };
        let (g, r) = optimize(m, f, &opts)?;
        Ok((g, Some(r)))
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Stage {
    /// The typed tensor graph the front end produces.
    Graph,
    /// The graph after the e-graph optimizer (attention fusion), with its report.
    Optimized,
    /// Fused kernels of the loop-level kernel IR (shapes made concrete), after the optimizer.
    Kernels,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// Fused kernels JIT-compiled with Cranelift, on all cores.
    Cpu,
    /// The reference interpreter: naive and exact, the oracle for every other backend.
    Reference,
    /// Kernels rendered as PTX, on the first NVIDIA GPU (needs a CUDA driver).
    Cuda,
}

#[derive(Clone, Copy, ValueEnum)]
enum Prec {
    F32,
    F64,
}

/// A failure already explained to the user.
struct Failed(String);

impl<E: std::fmt::Display> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed(format!("error: {e}\n"))
    }
}

/// Writing to a closed pipe (`kiln ir ... | head -1`) ends the process
/// silently, as it does for Unix tools: Rust ignores SIGPIPE, so without
/// this `println!` would panic on the broken pipe.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: called first thing in `main`, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

fn main() -> ExitCode {
    default_sigpipe();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("internal error: {info}\nthis is a bug in Kiln; please report it with the command and files that caused it");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let r = match cli.cmd {
        Cmd::Check { file } => check(&file),
        Cmd::Ir { file, entry, stage, dims, grad, fuse } => ir(&file, entry.as_deref(), stage, &dims, grad, fuse),
        Cmd::Run(args) => run(&args),
        Cmd::Grad(args) => grad::run(&args),
        Cmd::Demo => demo(),
        Cmd::Bench { json, quick, backend, arch, only } => match bench_target(backend, arch.as_deref()) {
            Ok(BenchTarget::Cpu) => bench::run(json, quick, only).map_err(|e| Failed(format!("error: {e}\n"))),
            Ok(BenchTarget::Cuda(_)) if only.is_some() => Err(Failed("error: --only applies to the CPU benchmarks\n".into())),
            Ok(BenchTarget::Cuda(arch)) => gpu_bench::run(arch, quick, json).map_err(|e| Failed(format!("error: {e}\n"))),
            Err(e) => Err(e),
        },
        Cmd::Train(args) => match train::run(&args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Cmd::Ptx(args) => ptx::run(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(msg)) => {
            eprint!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn compile(file: &Path) -> Result<Compiled, Failed> {
    compile_file(file).map_err(|e| Failed(e.render()))
}

fn check(file: &Path) -> Result<(), Failed> {
    let c = compile(file)?;
    for s in &c.signatures {
        println!("{s}");
    }
    // Valid (a file of helpers to import), but nothing in it can be run.
    if c.signatures.is_empty() {
        eprintln!("warning: `{}` has no entry points (no `pub fn`); `kiln run` has nothing to call", file.display());
    }
    Ok(())
}

fn ir(file: &Path, entry: Option<&str>, stage: Stage, dims: &[String], grad: bool, fuse: FuseArgs) -> Result<(), Failed> {
    let c = compile(file)?;
    if grad && stage == Stage::Graph {
        return Err(Failed("error: --grad needs --stage optimized or --stage kernels (the gradient is built from the optimized entry)\n".into()));
    }
    // The entry after the optimizer; with --grad, its gradient as training compiles it.
    let prepare = |name: &str| -> Result<(kiln_ir::Function, Option<kiln_ir::opt::Report>), Failed> {
        let (f, report) = fuse.apply(&c.module, function(&c, name)?)?;
        if !grad {
            return Ok((f, report));
        }
        let unrolled = kiln_ir::unroll_scans(&f, rt::train::trainer::MAX_UNROLLED_STEPS);
        let all = (0..c.module.params.len() as u32).filter(|&i| c.module.params[i as usize].ty.dtype.is_float());
        let g = kiln_ir::autodiff::grad(&c.module, &unrolled, &kiln_ir::autodiff::Wrt::params(all)).map_err(|e| Failed(format!("error: {name}: {e}\n")))?;
        Ok((g, report))
    };
    let names: Vec<&str> = match entry {
        Some(e) => vec![e],
        None => c.module.functions.iter().map(|f| f.name.as_str()).collect(),
    };
    match stage {
        Stage::Graph if entry.is_none() => print!("{}", kiln_ir::print::module(&c.module)),
        Stage::Graph => print!("{}", kiln_ir::print::function(&c.module, function(&c, names[0])?)),
        Stage::Optimized => {
            for name in names {
                let (f, report) = prepare(name)?;
                print!("{}", kiln_ir::print::function(&c.module, &f));
                match report {
                    Some(r) => r.to_string().lines().for_each(|l| println!("# {l}")),
                    None => println!("# optimizer off (--no-fuse)"),
                }
            }
        }
        Stage::Kernels => {
            let dims = parse_dims(dims)?;
            for name in names {
                let (f, _) = prepare(name)?;
                let bound = rt::bind_dims(&f, &vec![None; f.arg_names.len()], &dims)?;
                if let Some(note) = bound.defaults_note() {
                    eprintln!("note: {name}: {note} (set them with --dim NAME=N)");
                }
                let env = |n: &str| bound.get(n);
                let p = kiln_ir::schedule::schedule(&c.module, &f, &env, &Default::default())?;
                println!("# {name}: {} kernels, {} buffers", p.kernels.len(), p.buffers.len());
                print!("{}", kiln_ir::kernel::print::program(&p));
            }
        }
    }
    Ok(())
}

fn function<'c>(c: &'c Compiled, name: &str) -> Result<&'c kiln_ir::Function, Failed> {
    c.module.function(name).ok_or_else(|| {
        let names: Vec<&str> = c.module.functions.iter().map(|f| f.name.as_str()).collect();
        if names.is_empty() {
            return Failed(format!("error: no entry point `{name}`; this model has none (mark a function `pub fn` to make it one)\n"));
        }
        Failed(format!("error: no entry point `{name}`; this model has: {}\n", names.join(", ")))
    })
}

/// Splits `NAME=VALUE`.
fn key_value<'s>(s: &'s str, flag: &str) -> Result<(&'s str, &'s str), Failed> {
    s.split_once('=').filter(|(k, v)| !k.is_empty() && !v.is_empty()).ok_or_else(|| Failed(format!("error: `--{flag} {s}`: expected NAME=VALUE\n")))
}

/// `--dim NAME=N` flags; a dim given twice is refused, not overridden.
fn parse_dims(flags: &[String]) -> Result<Vec<(String, i64)>, Failed> {
    let mut dims: Vec<(String, i64)> = Vec::new();
    for d in flags {
        let (k, v) = key_value(d, "dim")?;
        let n: i64 = v.parse().map_err(|_| Failed(format!("error: `--dim {d}`: `{v}` is not an integer\n")))?;
        if let Some((_, first)) = dims.iter().find(|(name, _)| name == k) {
            return Err(Failed(format!("error: dim `{k}` given twice (`--dim {k}={first}` and `--dim {d}`)\n")));
        }
        dims.push((k.to_string(), n));
    }
    Ok(dims)
}

fn run(a: &RunArgs) -> Result<(), Failed> {
    if a.repeat == 0 {
        return Err(Failed("error: --repeat 0: the entry must run at least once\n".into()));
    }
    if a.profile && !matches!(a.exec.backend, Backend::Cpu) {
        return Err(Failed("error: --profile applies to `--backend cpu` only\n".into()));
    }
    let mut t = profile::Timings::new(a.repeat);
    let start = Instant::now();
    let c = compile(&a.file)?;
    t.front = start.elapsed();
    let f = function(&c, &a.entry)?;
    let f = if a.train_mode { f.clone() } else { kiln_ir::dropout::inference(f) };
    let start = Instant::now();
    let (f, _) = a.exec.fuse.apply(&c.module, &f)?;
    t.optimize = start.elapsed();
    let given = given_inputs(&f, &a.exec.inputs)?;
    let outputs = execute(&c.module, &f, given, &a.exec, &mut t)?;
    write_outputs(&a.exec.out, &f.output_names, &outputs)?;
    if a.profile {
        let ceilings = rt::cpu::Ceilings::measured(rt::cpu::Pool::global().threads())?;
        print!("{}", t.report(&f.name, &ceilings));
    }
    Ok(())
}

/// An input given on the command line, with the path it came from.
type Given = Option<(Tensor, String)>;

/// The `--input NAME=PATH` flags of `f`, by argument position.
fn given_inputs(f: &kiln_ir::Function, flags: &[String]) -> Result<Vec<Given>, Failed> {
    let mut given: Vec<Given> = vec![None; f.arg_names.len()];
    for i in flags {
        let (k, v) = key_value(i, "input")?;
        let Some(pos) = f.arg_names.iter().position(|n| n == k) else {
            return Err(Failed(format!("error: `{}` has no input `{k}`; its inputs are: {}\n", f.name, f.arg_names.join(", "))));
        };
        if let Some((_, first)) = &given[pos] {
            return Err(Failed(format!("error: input `{k}` given twice (`--input {k}={first}` and `--input {i}`)\n")));
        }
        given[pos] = Some((rt::read_npy(Path::new(v))?, v.to_string()));
    }
    Ok(given)
}

/// Runs `f` `t.runs` times on `a`'s backend with the `given` inputs (the
/// others drawn from `--seed`) and returns the last run's outputs, timing
/// the stages into `t`. The output directory is created before the run,
/// so an unusable one is refused before a long run.
fn execute(m: &kiln_ir::Module, f: &kiln_ir::Function, given: Vec<Given>, a: &ExecArgs, t: &mut profile::Timings) -> Result<Vec<Tensor>, Failed> {
    // Flags are checked before weights, inputs or compiling cost anything.
    let precision = match (a.backend, a.precision) {
        (Backend::Reference, Some(Prec::F64)) => Precision::F64,
        (Backend::Reference, _) => Precision::F32,
        (_, None) => Precision::F32,
        (_, Some(_)) => return Err(Failed("error: --precision applies to `--backend reference` only; the cpu and cuda backends compute in each value's dtype\n".into())),
    };
    let start = Instant::now();
    let params = match &a.weights {
        Some(w) => rt::load_params(m, w)?,
        None => rt::init_params(m, a.seed)?,
    };
    t.weights = start.elapsed();
    let dims = parse_dims(&a.dims)?;
    let refs: Vec<Option<rt::GivenInput>> = given.iter().map(|g| g.as_ref().map(|(t, s)| rt::GivenInput { tensor: t, source: s })).collect();
    let bound = rt::bind_dims_from(f, &refs, &dims)?;
    if let Some(note) = bound.defaults_note() {
        eprintln!("note: {note} (set them with --dim NAME=N)");
    }
    let env = |n: &str| bound.get(n);
    let cache = rt::cpu::Cache::new();
    check_memory(m, f, &given, a.backend, &env, &bound.dims, &cache)?;
    let mut inputs = Vec::new();
    for (i, g) in given.into_iter().enumerate() {
        inputs.push(match g {
            Some((t, _)) => t,
            None => rt::random_input(f, i, &env, a.seed.wrapping_add(1 + i as u64))?,
        });
    }
    rt::create_output_dir(&a.out)?;
    let mut outs = Vec::new();
    match a.backend {
        Backend::Reference => {
            for _ in 0..t.runs {
                outs = rt::run_reference(m, f, &params, &inputs, &bound.dims, precision)?;
            }
        }
        Backend::Cuda => {
            for _ in 0..t.runs {
                let st;
                (outs, st) = rt::cuda::run_cuda(m, f, &params, &inputs, &bound.dims)?;
                eprintln!("cuda: {}: ran {} kernel launches, {:.3} ms in kernels; {} attention nodes on FlashAttention kernels", st.device, st.launches, st.kernel_time.as_secs_f64() * 1e3, st.flash_nodes);
            }
        }
        Backend::Cpu => {
            let (exe, _) = rt::cpu::executable(m, f, &bound.dims, &cache)?;
            (t.schedule, t.codegen) = (exe.schedule_time(), exe.compile_time().saturating_sub(exe.schedule_time()));
            let start = Instant::now();
            let prepared = exe.prepare_params(&params)?;
            t.weights += start.elapsed();
            for i in 0..t.runs {
                let st;
                (outs, st) = exe.run_prepared(&prepared, &inputs).map_err(|e| e.in_function(&f.name))?;
                t.record(i, &st);
                if i == 0 {
                    eprintln!(
                        "cpu: compiled in {:.1} ms, ran {} kernel launches in {:.2} ms ({:.2} ms in kernels); temporaries take {} (without reuse: {})",
                        st.compile_time.as_secs_f64() * 1e3,
                        st.launches,
                        st.run_time.as_secs_f64() * 1e3,
                        st.exec_time.as_secs_f64() * 1e3,
                        rt::memory::bytes(st.peak_bytes),
                        rt::memory::bytes(st.naive_bytes)
                    );
                }
            }
        }
    }
    Ok(outs)
}

/// Writes each output as `out/NAME.npy` and prints a line about it.
fn write_outputs(out: &Path, names: &[String], outputs: &[Tensor]) -> Result<(), Failed> {
    for (name, t) in names.iter().zip(outputs) {
        let path = out.join(format!("{name}.npy"));
        rt::write_npy(&path, t)?;
        println!("{name}: {} -> {}  {}", rt::type_string(t.dtype, &t.shape), path.display(), summary(t));
    }
    Ok(())
}

/// Refuses a run that needs more memory than the machine has, before
/// anything large is allocated: the inputs still to be drawn, the outputs,
/// and what the backend holds (the CPU backend's buffers and temporaries,
/// compiled here into `cache`; every value, for the reference interpreter).
fn check_memory(
    m: &kiln_ir::Module,
    f: &kiln_ir::Function,
    given: &[Given],
    backend: Backend,
    env: &dyn Fn(&str) -> Option<i64>,
    dims: &std::collections::BTreeMap<String, i64>,
    cache: &rt::cpu::Cache,
) -> Result<(), Failed> {
    let inputs = f.graph.inputs.iter().zip(given).filter(|(_, g)| g.is_none()).map(|(t, _)| t);
    let outputs = f.graph.outputs.iter().filter_map(|&o| f.graph.node(o).ty.tensor());
    // Host tensors hold f64 elements whatever their dtype.
    let mut parts = vec![("inputs", rt::memory::tensors_bytes(inputs, env, 8)), ("outputs", rt::memory::tensors_bytes(outputs, env, 8))];
    match backend {
        Backend::Cpu => parts.push(("kernel buffers and temporaries", rt::cpu::executable(m, f, dims, cache)?.0.memory_bytes())),
        Backend::Reference => parts.push(("the interpreter's values", rt::exec::reference_bytes(f, env))),
        Backend::Cuda => {}
    }
    rt::memory::ensure(&format!("`{}`", f.name), &parts)?;
    Ok(())
}

/// `min -1.2 max 3.4 mean 0.01` for a quick look at an output.
fn summary(t: &Tensor) -> String {
    if t.data.is_empty() {
        return "(empty)".into();
    }
    // `f64::min` skips NaN, so count them apart rather than print `min inf max -inf`.
    let nan = t.data.iter().filter(|x| x.is_nan()).count();
    if nan == t.data.len() {
        return "all NaN".into();
    }
    let min = t.data.iter().copied().fold(f64::INFINITY, f64::min);
    let max = t.data.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = t.data.iter().sum::<f64>() / t.data.len() as f64;
    let nan = if nan == 0 { String::new() } else { format!(" ({nan} NaN)") };
    format!("min {min:.4} max {max:.4} mean {mean:.4}{nan}")
}

/// The built-in model of the demo.
const GPT: &str = include_str!("../models/gpt.kl");

fn demo() -> Result<(), Failed> {
    println!("== Kiln demo: models/gpt.kl (built in) ==\n");
    let t0 = std::time::Instant::now();
    let c = compile_source(Path::new("models/gpt.kl"), GPT.to_string()).map_err(|e| Failed(e.render()))?;
    println!("1. Checked names, dtypes and symbolic shapes in {:.1} ms. Entry points:", t0.elapsed().as_secs_f64() * 1e3);
    for s in &c.signatures {
        println!("     {s}");
    }
    let n_params: usize = c.module.params.iter().map(|p| p.ty.shape.iter().map(|d| d.as_const().unwrap_or(0) as usize).product::<usize>()).sum();
    println!("   {} parameter tensors, {n_params} weights.", c.module.params.len());
    let f = function(&c, "forward")?;
    println!("2. Lowered `forward` to {} graph nodes (`kiln ir models/gpt.kl`).", count_nodes(&f.graph));

    let (b, t) = (2, 32);
    let dims = [("B".to_string(), b), ("T".to_string(), t)];
    let plain = function(&c, "loss")?;
    let (optimized, report) = optimize(&c.module, plain, &OptOptions::default())?;
    let lf = &optimized;
    println!("3. The e-graph optimizer rewrote `loss` ({}):", report.runs.iter().map(|r| format!("{}: {}", r.scope, r.stop)).collect::<Vec<_>>().join("; "));
    for (scope, a) in report.fused() {
        println!("     softmax(q @ transpose(k) / sqrt(d) masked by tril) @ v in {scope} -> attention[{a}] (FlashAttention)");
    }
    let bound = rt::bind_dims(lf, &[None, None], &dims)?;
    let env = |n: &str| bound.get(n);
    let fused = kiln_ir::schedule::schedule(&c.module, lf, &env, &Default::default())?;
    let naive = kiln_ir::schedule::schedule(&c.module, plain, &env, &kiln_ir::schedule::ScheduleOptions { fuse: false, ..Default::default() })?;
    println!(
        "4. Scheduled `loss` (B = {b}, T = {t}) into {} fused kernels, {} without any fusion. One transformer block:",
        fused.kernels.len(),
        naive.kernels.len()
    );
    let text = kiln_ir::kernel::print::program(&fused);
    for line in text.lines().skip_while(|l| !l.starts_with("repeat")).skip(1).take_while(|l| l.starts_with("  ")) {
        if let Some(call) = line.trim().strip_prefix("launch ") {
            println!("     {}", call.split('(').next().unwrap_or(call));
        }
    }

    let params = rt::init_params(&c.module, 0)?;
    let inputs: Vec<Tensor> = (0..2).map(|i| rt::random_input(lf, i, &env, 1 + i as u64)).collect::<Result<_, _>>()?;
    let t1 = std::time::Instant::now();
    let (out, st) = rt::cpu::run_cpu(&c.module, lf, &params, &inputs, &bound.dims, &rt::cpu::Cache::new())?;
    let (naive_out, _) = rt::cpu::run_cpu(&c.module, plain, &params, &inputs, &bound.dims, &rt::cpu::Cache::new())?;
    let cpu_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = std::time::Instant::now();
    let reference = rt::run_reference(&c.module, plain, &params, &inputs, &bound.dims, Precision::F64)?;
    let ref_ms = t2.elapsed().as_secs_f64() * 1e3;
    let (loss, exact) = (out[0].data[0], reference[0].data[0]);
    let vocab = lf.arg_bounds[0].as_ref().and_then(|v| v.as_const()).unwrap_or(1) as f64;
    println!(
        "5. Ran the fused kernels (Cranelift, all cores): loss {loss:.6} in {cpu_ms:.0} ms (compile {:.0} ms, temporaries {}).",
        st.compile_time.as_secs_f64() * 1e3,
        rt::memory::bytes(st.peak_bytes)
    );
    println!("   Unfused graph on the same backend: {:.6}; the naive f64 reference interpreter: {exact:.6} in {ref_ms:.0} ms.", naive_out[0].data[0]);
    println!("   |fused - reference| = {:.1e}. Untrained, the loss sits at a uniform guess: ln {vocab} = {:.4}.", (loss - exact).abs(), vocab.ln());
    demo_ptx(&fused)?;
    let steps = 40;
    let tb = train::brief(&c.module, steps, 8, 32)?;
    println!(
        "7. Trained {steps} AdamW steps (batch 8 x {} tokens of the built-in corpus, fused attention forward and backward): validation loss {:.3} -> {:.3}, {:.0} tokens/s.",
        tb.block, tb.val_before, tb.val_after, tb.tokens_per_s
    );
    println!("\nNext: `kiln ir --stage optimized`, `kiln ir --stage kernels`, `kiln run`, `kiln train` and `kiln bench` on any file in models/.");
    Ok(())
}

/// The demo's PTX stage: the fused program's kernels rendered for both
/// GPU targets, and the tensor-core FlashAttention kernel for the same
/// attention in bf16.
fn demo_ptx(p: &kiln_ir::kernel::Program) -> Result<(), Failed> {
    use kiln_codegen::ptx::{self, flash, Arch};
    let fail = |e: &dyn std::fmt::Display| Failed(format!("error: {e}\n"));
    for (arch, lead) in [(Arch::Sm80, "6. Emitted PTX for"), (Arch::Sm90a, "   and for")] {
        let ks: Vec<ptx::PtxKernel> = p.kernels.iter().map(|k| ptx::render(k, arch)).collect::<Result<_, _>>().map_err(|e| fail(&e))?;
        let lines: usize = ks.iter().map(|k| k.ptx.lines().count()).sum();
        let attn = ks.iter().find(|k| k.manifest.name.contains("attention")).map_or(String::new(), |k| {
            format!("; {} runs {} CTAs of {} threads with {} B of shared memory", k.manifest.name, k.manifest.grid, k.manifest.block, k.manifest.shared_bytes)
        });
        println!("{lead} {}: {} kernels, {lines} lines (`kiln ptx`){attn}.", arch.name(), ks.len());
    }
    let cfg = flash::FlashConfig { heads: 8, group: 1, sq: 32, sk: 32, d: 64, dv: 64, causal: Some(0), scale: 0.125, dtype: flash::Half::Bf16 };
    let k = flash::forward(&cfg, Arch::Sm80).map_err(|e| fail(&e))?;
    println!(
        "   In bf16 the attention also has a tensor-core FlashAttention-2 kernel (mma.sync, ldmatrix, cp.async): {}, {} lines, {} B of shared memory,",
        k.name,
        k.ptx.lines().count(),
        k.shared_bytes
    );
    let k = flash::forward(&cfg, Arch::Sm90a).map_err(|e| fail(&e))?;
    println!(
        "   and for sm_90a a FlashAttention-3-style one (a TMA producer warpgroup, two wgmma consumer warpgroups in ping-pong): {}, {} threads, {} lines, {} B of shared memory.",
        k.name,
        k.block[0],
        k.ptx.lines().count(),
        k.shared_bytes
    );
    Ok(())
}

fn count_nodes(g: &kiln_ir::Graph) -> usize {
    g.nodes
        .iter()
        .map(|n| match &n.op {
            kiln_ir::Op::Scan { body, .. } => 1 + count_nodes(body),
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_codegen::ptx::Arch;

    /// `kiln bench` arguments: where it runs and for which architecture.
    fn target(args: &[&str]) -> Result<BenchTarget, String> {
        let cli = Cli::try_parse_from(std::iter::once("kiln").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        let Cmd::Bench { backend, arch, .. } = cli.cmd else { panic!("not bench") };
        bench_target(backend, arch.as_deref()).map_err(|Failed(m)| m)
    }

    #[test]
    fn bench_arguments() {
        assert_eq!(target(&["bench"]), Ok(BenchTarget::Cpu));
        assert_eq!(target(&["bench", "--quick", "--json", "--backend", "cpu"]), Ok(BenchTarget::Cpu));
        assert_eq!(target(&["bench", "--backend", "cuda"]), Ok(BenchTarget::Cuda(Arch::Sm80)));
        assert_eq!(target(&["bench", "--backend", "cuda", "--arch", "sm_90a"]), Ok(BenchTarget::Cuda(Arch::Sm90a)));
        assert_eq!(target(&["bench", "--backend", "cuda", "--arch", "sm_70"]), Err("error: unknown --arch `sm_70`; expected sm_80 or sm_90a\n".into()));
        assert_eq!(target(&["bench", "--arch", "sm_80"]), Err("error: --arch applies to `kiln bench --backend cuda` only\n".into()));
        assert_eq!(target(&["bench", "--backend", "reference"]), Err("error: `kiln bench` runs on --backend cpu or cuda\n".into()));
        assert!(target(&["bench", "--backend", "tpu"]).is_err());
    }
}
