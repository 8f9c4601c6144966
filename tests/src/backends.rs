//! Every way Kiln can execute an entry point, behind one trait, so the
//! differential suite runs each case on each backend. A new backend is
//! tested by adding one line to [`all`].

use kiln_ir::interp::Tensor;
use kiln_ir::kernel::Program;
use kiln_ir::{Function, Module};
use std::collections::BTreeMap;

/// An executor of entry points.
pub trait Backend {
    /// A short name for failure messages.
    fn name(&self) -> &'static str;
    /// Runs `f` with the given parameters, inputs and dims.
    fn run(&self, m: &Module, f: &Function, params: &[Tensor], inputs: &[Tensor], dims: &BTreeMap<String, i64>) -> Result<Vec<Tensor>, String>;
}

/// Schedules `f` (fused) with `dims`, runs the program with `exec`, and
/// shapes the output buffers as the entry's outputs.
fn run_scheduled(
    m: &Module,
    f: &Function,
    dims: &BTreeMap<String, i64>,
    exec: impl FnOnce(&Program) -> Result<Vec<Vec<f64>>, String>,
) -> Result<Vec<Tensor>, String> {
    let env = |n: &str| dims.get(n).copied();
    let p = kiln_ir::schedule::schedule(m, f, &env, &kiln_ir::schedule::ScheduleOptions { fuse: true, threads: 2, ..Default::default() }).map_err(|e| e.to_string())?;
    let outs = exec(&p)?;
    Ok(outs
        .into_iter()
        .zip(&f.graph.outputs)
        .map(|(data, o)| {
            let t = f.graph.tensor_type(*o);
            let shape = t.shape.iter().map(|d| d.eval(&env).expect("bound") as usize).collect();
            Tensor { dtype: t.dtype, shape, data }
        })
        .collect())
}

/// The scheduler's kernels, run by the kernel IR's reference evaluator.
pub struct KernelEval;

impl Backend for KernelEval {
    fn name(&self) -> &'static str {
        "kernel-eval"
    }

    fn run(&self, m: &Module, f: &Function, params: &[Tensor], inputs: &[Tensor], dims: &BTreeMap<String, i64>) -> Result<Vec<Tensor>, String> {
        run_scheduled(m, f, dims, |p| kiln_ir::kernel::eval::run(p, inputs, params))
    }
}

/// The PTX backend's kernels for one architecture in the PTX emulator.
pub struct PtxEmu(pub kiln_codegen::ptx::Arch);

impl PtxEmu {
    /// Like [`Backend::run`], also returning the names of the kernels
    /// launched, in order (which show whether flash kernels ran).
    pub fn run_traced(&self, m: &Module, f: &Function, params: &[Tensor], inputs: &[Tensor], dims: &BTreeMap<String, i64>) -> Result<(Vec<Tensor>, Vec<String>), String> {
        let mut dev = crate::ptx_emu::EmuDevice::default();
        let outs = run_scheduled(m, f, dims, |p| kiln_runtime::cuda::run_program(&mut dev, p, self.0, inputs, params).map_err(|e| e.to_string()))?;
        Ok((outs, dev.launched))
    }
}

impl Backend for PtxEmu {
    fn name(&self) -> &'static str {
        match self.0 {
            kiln_codegen::ptx::Arch::Sm80 => "ptx-emu-sm80",
            kiln_codegen::ptx::Arch::Sm90a => "ptx-emu-sm90a",
        }
    }

    fn run(&self, m: &Module, f: &Function, params: &[Tensor], inputs: &[Tensor], dims: &BTreeMap<String, i64>) -> Result<Vec<Tensor>, String> {
        self.run_traced(m, f, params, inputs, dims).map(|(outs, _)| outs)
    }
}

/// The Cranelift CPU backend on all cores: its f32 GEMMs on the host's
/// widest vectors ([`Cpu::NATIVE`]), or everything in the portable f32x4
/// code that CPUs without AVX2 run ([`Cpu::PORTABLE`]).
pub struct Cpu(pub kiln_codegen::cpu::Options);

impl Cpu {
    /// The default options.
    pub const NATIVE: Cpu = Cpu(kiln_codegen::cpu::Options { fma: true, vectorize: true, native_gemm: true });
    /// The generated f32x4 GEMM everywhere.
    pub const PORTABLE: Cpu = Cpu(kiln_codegen::cpu::Options { fma: true, vectorize: true, native_gemm: false });
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        if self.0.native_gemm {
            "cpu"
        } else {
            "cpu-portable"
        }
    }

    fn run(&self, m: &Module, f: &Function, params: &[Tensor], inputs: &[Tensor], dims: &BTreeMap<String, i64>) -> Result<Vec<Tensor>, String> {
        let cache = kiln_runtime::cpu::Cache::new().with_codegen(self.0.clone());
        kiln_runtime::cpu::run_cpu(m, f, params, inputs, dims, &cache).map(|r| r.0).map_err(|e| e.to_string())
    }
}

/// Every backend the differential suite covers.
pub fn all() -> Vec<Box<dyn Backend>> {
    use kiln_codegen::ptx::Arch;
    vec![Box::new(KernelEval), Box::new(Cpu::NATIVE), Box::new(Cpu::PORTABLE), Box::new(PtxEmu(Arch::Sm80)), Box::new(PtxEmu(Arch::Sm90a))]
}
