//! Runs a kernel [`Program`] on any device that can hold memory and launch
//! PTX kernels: the CUDA driver, or an emulator in tests.
//!
//! Inputs, parameters and outputs get an allocation each; temporaries
//! share one arena laid out by the CPU runtime's memory plan
//! ([`crate::cpu::plan`]), so both backends need the same memory.
//! Attention nodes the FlashAttention generators accept run on those
//! kernels instead of their generic ones (see [`super::flash`]).

use super::flash::{substitute, FlashArg, Substitute};
use crate::cpu::plan::plan;
use crate::cpu::storage::{byte_len, decode, encode};
use crate::RuntimeError;
use kiln_codegen::ptx::flash::{FlashKernel, TensorMapParam};
use kiln_codegen::ptx::{self, Arch, PtxKernel};
use kiln_ir::interp::Tensor;
use kiln_ir::kernel::{check, BufKind, Program, Step, TensorView, View};

/// A kernel ready to load and launch.
#[derive(Clone, Debug)]
pub struct Launchable {
    /// The `.entry` name.
    pub name: String,
    /// The PTX module text (one `.entry`).
    pub ptx: String,
    /// CTAs in x, y, z.
    pub grid: [u32; 3],
    /// Threads per CTA in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory per CTA, in bytes (above 48 KiB a GPU needs
    /// the kernel's opt-in attribute raised first).
    pub dynamic_shared: u32,
}

impl From<PtxKernel> for Launchable {
    fn from(k: PtxKernel) -> Launchable {
        // grids are at most ptx::MAX_GRID (< 2^31) tiles
        Launchable { name: k.manifest.name, ptx: k.ptx, grid: [k.manifest.grid as u32, 1, 1], block: [k.manifest.block, 1, 1], dynamic_shared: 0 }
    }
}

impl From<FlashKernel> for Launchable {
    fn from(k: FlashKernel) -> Launchable {
        Launchable { name: k.name, ptx: k.ptx, grid: k.grid, block: k.block, dynamic_shared: k.shared_bytes }
    }
}

/// One kernel argument as a launch passes it.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelArg {
    /// A `.u64` device address.
    Ptr(u64),
    /// A 128-byte tensor map (TMA descriptor) of the tensor at the
    /// address, passed by value; the device encodes it in its own format
    /// (`cuTensorMapEncodeTiled` on a GPU).
    TensorMap(TensorMapParam, u64),
}

impl KernelArg {
    /// The arguments of flash kernel `k`, in parameter order, given the
    /// address of each tensor it names (`q`, `o`, `stats`, ...).
    pub fn for_flash(k: &FlashKernel, address: impl Fn(&str) -> Option<u64>) -> Result<Vec<KernelArg>, String> {
        let at = |name: &str| address(name).ok_or_else(|| format!("no tensor for the flash kernel parameter `{name}`"));
        k.params
            .iter()
            .map(|p| match k.tensor_maps.iter().find(|m| m.param == *p) {
                Some(m) => Ok(KernelArg::TensorMap(m.clone(), at(m.tensor)?)),
                None => Ok(KernelArg::Ptr(at(p)?)),
            })
            .collect()
    }
}

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
    /// Loads the kernels; launches name them by index.
    fn load(&mut self, kernels: &[Launchable]) -> Result<(), RuntimeError>;
    /// Launches kernel `k` with one argument per parameter.
    fn launch(&mut self, k: usize, args: &[KernelArg]) -> Result<(), RuntimeError>;
}

/// What a program kernel's launch does.
#[derive(Clone, Copy)]
enum Slot {
    /// Launches loaded kernel `i`.
    Generic(usize),
    /// Runs the substitute of intrinsic `i` (the first of its kernels).
    Flash(usize),
    /// Nothing: a later kernel of a substituted intrinsic.
    Skip,
}

/// A substituted intrinsic: its kernels' loaded indices and arguments,
/// and its workspace's address.
struct Loaded {
    launches: Vec<(usize, Vec<FlashArg>)>,
    workspace: u64,
}

/// Renders `p`'s kernels for `arch`, runs the program on `dev`, and
/// returns the output buffers' elements by output index (as
/// [`kiln_ir::kernel::eval::run`] does).
pub fn run_program(dev: &mut dyn Device, p: &Program, arch: Arch, inputs: &[Tensor], params: &[Tensor]) -> Result<Vec<Vec<f64>>, RuntimeError> {
    let subs: Vec<Option<Substitute>> = p.intrinsics.iter().map(|x| substitute(p, x, arch).ok()).collect();
    let mut slots = Vec::with_capacity(p.kernels.len());
    let mut kernels: Vec<Launchable> = Vec::new();
    for (i, k) in p.kernels.iter().enumerate() {
        let owner = p.intrinsics.iter().zip(&subs).position(|(x, s)| s.is_some() && x.kernels.contains(&(i as u32)));
        slots.push(match owner {
            Some(x) if p.intrinsics[x].kernels.start == i as u32 => Slot::Flash(x),
            Some(_) => Slot::Skip,
            None => {
                let r = ptx::render(k, arch).map_err(|e| RuntimeError::Internal { site: "the PTX backend".into(), message: e.to_string() })?;
                kernels.push(r.into());
                Slot::Generic(kernels.len() - 1)
            }
        });
    }
    let mut loaded = Vec::with_capacity(subs.len());
    for s in subs {
        loaded.push(match s {
            Some(s) => {
                let workspace = if s.workspace_bytes > 0 { dev.alloc(s.workspace_bytes)? } else { 0 };
                let mut launches = Vec::with_capacity(s.launches.len());
                for (k, args) in s.launches {
                    kernels.push(k.into());
                    launches.push((kernels.len() - 1, args));
                }
                Some(Loaded { launches, workspace })
            }
            None => None,
        });
    }
    dev.load(&kernels)?;
    let memory = plan(p)?;
    let arena = dev.alloc(memory.peak_bytes.max(1))?;
    let mut addrs = Vec::with_capacity(p.buffers.len());
    for (b, slot) in p.buffers.iter().zip(&memory.slots) {
        let data = match b.kind {
            BufKind::Input(i) => inputs.get(i as usize),
            BufKind::Param(i) => params.get(i as usize),
            BufKind::Output(_) | BufKind::Temp | BufKind::Status => None,
        };
        let bytes = byte_len(b.dtype, b.len)?;
        let addr = match (b.kind, slot) {
            (BufKind::Temp, Some(s)) => arena + s.offset,
            _ => dev.alloc(bytes.max(1) as u64)?,
        };
        if b.kind == BufKind::Status {
            dev.upload(addr, &vec![0; bytes])?;
        }
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
    let empty: Vec<bool> = kernels.iter().map(|k| k.grid.contains(&0)).collect();
    let walk = Walk { p, addrs: &addrs, slots: &slots, loaded: &loaded, empty: &empty };
    walk.steps(dev, &p.steps, &mut Vec::new())?;
    if let Some(b) = check::status_buffer(p) {
        let bytes = dev.download(addrs[b], byte_len(p.buffers[b].dtype, p.buffers[b].len)? as u64)?;
        if let Some(fault) = check::fault_in_bytes(p, &bytes) {
            return Err(RuntimeError::Failed { function: "program".into(), message: fault.to_string() });
        }
    }
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

/// The host side of a run: addresses and what each launch does.
struct Walk<'a> {
    p: &'a Program,
    addrs: &'a [u64],
    slots: &'a [Slot],
    loaded: &'a [Option<Loaded>],
    /// Per loaded kernel: its grid has no CTA (a zero-size tensor), so
    /// launching it does nothing (and a driver would refuse it).
    empty: &'a [bool],
}

impl Walk<'_> {
    /// The device address where view `v` starts.
    fn at(&self, v: &View, counters: &[u64]) -> u64 {
        let b = &self.p.buffers[v.buf.0 as usize];
        self.addrs[v.buf.0 as usize] + v.offset.eval(counters) * b.dtype.size_bytes() as u64
    }

    fn launch(&self, dev: &mut dyn Device, k: usize, args: &[KernelArg]) -> Result<(), RuntimeError> {
        if self.empty[k] {
            return Ok(());
        }
        dev.launch(k, args)
    }

    fn steps(&self, dev: &mut dyn Device, st: &[Step], counters: &mut Vec<u64>) -> Result<(), RuntimeError> {
        for s in st {
            match s {
                Step::Launch { kernel, args } => match self.slots[kernel.0 as usize] {
                    Slot::Generic(k) => {
                        let a: Vec<KernelArg> = args.iter().map(|v| KernelArg::Ptr(self.at(v, counters))).collect();
                        self.launch(dev, k, &a)?;
                    }
                    Slot::Flash(x) => {
                        let l = self.loaded[x].as_ref().expect("a substituted intrinsic is loaded");
                        let view = |TensorView { buf, offset, .. }: &TensorView| self.at(&View { buf: *buf, offset: offset.clone() }, counters);
                        for (k, args) in &l.launches {
                            let a: Vec<KernelArg> = args
                                .iter()
                                .map(|a| match a {
                                    FlashArg::View(v) => KernelArg::Ptr(view(v)),
                                    FlashArg::TensorMap(m, v) => KernelArg::TensorMap(m.clone(), view(v)),
                                    FlashArg::Workspace => KernelArg::Ptr(l.workspace),
                                })
                                .collect();
                            self.launch(dev, *k, &a)?;
                        }
                    }
                    Slot::Skip => {}
                },
                Step::Repeat { count, body, .. } => {
                    for i in 0..*count {
                        counters.push(i);
                        self.steps(dev, body, counters)?;
                        counters.pop();
                    }
                }
                Step::Copy { dst, src, len } => {
                    let size = self.p.buffers[dst.buf.0 as usize].dtype.size_bytes() as u64;
                    dev.copy(self.at(dst, counters), self.at(src, counters), len * size)?;
                }
            }
        }
        Ok(())
    }
}
