//! Runs a kernel [`Program`] on any device that can hold memory and launch
//! rendered PTX kernels: the CUDA driver, or an emulator in tests.
//!
//! Inputs, parameters and outputs get an allocation each; temporaries
//! share one arena laid out by the CPU runtime's memory plan
//! ([`crate::cpu::plan`]), so both backends need the same memory.

use crate::cpu::plan::plan;
use crate::cpu::storage::{byte_len, decode, encode};
use crate::RuntimeError;
use kiln_codegen::ptx::{self, Arch, PtxKernel};
use kiln_ir::interp::Tensor;
use kiln_ir::kernel::{BufKind, Program, Step, View};

/// Device memory and kernel launches. Addresses are device addresses.
pub trait Device {
    /// Allocates `bytes` (at least 256-byte aligned, zeroed or not).
    fn alloc(&mut self, bytes: u64) -> Result<u64, RuntimeError>;
    /// Copies host bytes to `addr`.
    fn upload(&mut self, addr: u64, bytes: &[u8]) -> Result<(), RuntimeError>;
    /// Reads `len` bytes at `addr`.
    fn download(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, RuntimeError>;
    /// Copies `len` bytes between device addresses (ranges never overlap).
    fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), RuntimeError>;
    /// Loads the rendered kernels; launches name them by index.
    fn load(&mut self, kernels: &[PtxKernel]) -> Result<(), RuntimeError>;
    /// Launches kernel `k` (per its manifest) with one address per argument.
    fn launch(&mut self, k: usize, args: &[u64]) -> Result<(), RuntimeError>;
}

/// Renders `p`'s kernels for `arch`, runs the program on `dev`, and
/// returns the output buffers' elements by output index (as
/// [`kiln_ir::kernel::eval::run`] does).
pub fn run_program(dev: &mut dyn Device, p: &Program, arch: Arch, inputs: &[Tensor], params: &[Tensor]) -> Result<Vec<Vec<f64>>, RuntimeError> {
    let kernels = p.kernels.iter().map(|k| ptx::render(k, arch)).collect::<Result<Vec<_>, _>>().map_err(|e| RuntimeError::Internal { site: "the PTX backend".into(), message: e.to_string() })?;
    dev.load(&kernels)?;
    let memory = plan(p)?;
    let arena = dev.alloc(memory.peak_bytes.max(1))?;
    let mut addrs = Vec::with_capacity(p.buffers.len());
    for (b, slot) in p.buffers.iter().zip(&memory.slots) {
        let data = match b.kind {
            BufKind::Input(i) => inputs.get(i as usize),
            BufKind::Param(i) => params.get(i as usize),
            BufKind::Output(_) | BufKind::Temp => None,
        };
        let bytes = byte_len(b.dtype, b.len)?;
        let addr = match (b.kind, slot) {
            (BufKind::Temp, Some(s)) => arena + s.offset,
            _ => dev.alloc(bytes.max(1) as u64)?,
        };
        if let Some(t) = data {
            if t.data.len() as u64 != b.len {
                return Err(RuntimeError::Invalid(format!("buffer `{}` has {} elements, the program expects {}", b.name, t.data.len(), b.len)));
            }
            let mut host = vec![0u8; bytes];
            encode(b.dtype, &t.data, &mut host);
            dev.upload(addr, &host)?;
        }
        addrs.push(addr);
    }
    steps(dev, p, &p.steps, &addrs, &mut Vec::new())?;
    let mut outs: Vec<(u32, Vec<f64>)> = Vec::new();
    for (b, addr) in p.buffers.iter().zip(&addrs) {
        if let BufKind::Output(i) = b.kind {
            let bytes = dev.download(*addr, byte_len(b.dtype, b.len)? as u64)?;
            let mut data = Vec::with_capacity(b.len as usize);
            decode(b.dtype, &bytes, &mut data);
            outs.push((i, data));
        }
    }
    outs.sort_by_key(|(i, _)| *i);
    Ok(outs.into_iter().map(|(_, d)| d).collect())
}

fn steps(dev: &mut dyn Device, p: &Program, st: &[Step], addrs: &[u64], counters: &mut Vec<u64>) -> Result<(), RuntimeError> {
    let at = |v: &View, counters: &[u64]| {
        let b = &p.buffers[v.buf.0 as usize];
        addrs[v.buf.0 as usize] + v.offset.eval(counters) * b.dtype.size_bytes() as u64
    };
    for s in st {
        match s {
            Step::Launch { kernel, args } => {
                let a: Vec<u64> = args.iter().map(|v| at(v, counters)).collect();
                dev.launch(kernel.0 as usize, &a)?;
            }
            Step::Repeat { count, body, .. } => {
                for i in 0..*count {
                    counters.push(i);
                    steps(dev, p, body, addrs, counters)?;
                    counters.pop();
                }
            }
            Step::Copy { dst, src, len } => {
                let size = p.buffers[dst.buf.0 as usize].dtype.size_bytes() as u64;
                dev.copy(at(dst, counters), at(src, counters), len * size)?;
            }
        }
    }
    Ok(())
}
