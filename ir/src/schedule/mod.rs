//! The scheduler: a graph with concrete shapes becomes a kernel
//! [`Program`](crate::kernel::Program).
//!
//! It decides which values live in memory and fuses the rest into the
//! kernels that read them:
//! - elementwise ops and pure index maps (broadcast, reshape, transpose,
//!   slice, gather, one_hot, iota) are inlined into their consumer, so a
//!   chain of them is one pass over memory, and so is a reduction together
//!   with the elementwise ops that feed it;
//! - a row op (softmax, log_softmax, layernorm, rmsnorm) is computed inside
//!   the kernel of the elementwise chain that consumes it, when that chain
//!   keeps its shape (`x + gelu(layernorm(x))` is one kernel), or inside
//!   the reduction over its own axis that ends such a chain (cross-entropy:
//!   log-softmax, the target's pick and the row sum are one kernel);
//! - sums that keep the contiguous last axis (bias gradients) are column
//!   reductions: a tile adds whole rows into a block of outputs;
//! - matmul operands that are strided views of memory are read in place
//!   (transposes and head splits cost nothing); the product is a tiled
//!   [`Gemm`](crate::kernel::Gemm);
//! - `scan` becomes a host loop over its body's kernels;
//! - fused attention becomes FlashAttention kernels ([`attention`]'s docs
//!   give the algorithms and the block-size cost model).
//!
//! Stages: [`plan`] (what to materialize) then [`emit`] (kernels), with the
//! kernel verifier run on the result.

mod attention;
mod builder;
mod emit;
pub mod gemm_tiles;
mod index;
mod intrinsic;
mod plan;
mod recipe;

use crate::kernel::{self, BufKind, Buffer, HostOffset, Program, Step, View};
use crate::{Function, Graph, Module};
use builder::Src;
pub use attention::AttnBackward;

/// Knobs of the scheduler.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    /// Fuse elementwise chains and row ops into their consumers (off: every
    /// op gets its own kernel, the baseline fusion is measured against).
    pub fuse: bool,
    /// Threads the program will run on, for choosing tile counts.
    pub threads: usize,
    /// The per-core caches that block sizes are chosen for.
    pub cache: CacheSizes,
    /// Attention block sizes `(Bq, Bk)`, overriding the cost model (tests
    /// force tiny blocks to exercise partial ones).
    pub attention_blocks: Option<(u64, u64)>,
    /// The attention backward's schedule, overriding the rule in
    /// [`AttnBackward`]'s documentation (tests force each).
    pub attention_backward: Option<AttnBackward>,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        ScheduleOptions {
            fuse: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cache: CacheSizes::detect(),
            attention_blocks: None,
            attention_backward: None,
        }
    }
}

/// Data cache sizes of one core, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    /// Level-1 data cache.
    pub l1: u64,
    /// Level-2 cache.
    pub l2: u64,
}

impl Default for CacheSizes {
    /// A common desktop core: 32 KiB L1d, 512 KiB L2.
    fn default() -> Self {
        CacheSizes { l1: 32 << 10, l2: 512 << 10 }
    }
}

impl CacheSizes {
    /// The sizes Linux reports for CPU 0 (`/sys/devices/system/cpu/cpu0/cache`),
    /// each level falling back to [`CacheSizes::default`] when absent.
    pub fn detect() -> CacheSizes {
        let mut c = CacheSizes::default();
        let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
        for i in 0..8 {
            let read = |f: &str| std::fs::read_to_string(dir.join(format!("index{i}/{f}"))).ok();
            let (Some(level), Some(ty), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
            let Some(bytes) = parse_size(size.trim()) else { continue };
            match (level.trim(), ty.trim()) {
                ("1", "Data" | "Unified") => c.l1 = bytes,
                ("2", "Data" | "Unified") => c.l2 = bytes,
                _ => {}
            }
        }
        c
    }
}

/// `48K`, `1024K`, `2M` or plain bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (num, unit) = match s.char_indices().find(|(_, ch)| !ch.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => Some(n << 10),
        "M" => Some(n << 20),
        _ => None,
    }
}

/// Why scheduling failed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A dimension has no value, or one too large for 64 bits.
    #[error(transparent)]
    Dim(#[from] crate::DimError),
    /// A dimension evaluated to a negative size.
    #[error("a dimension evaluates to {0}")]
    NegativeDim(i64),
    /// The graph is malformed (a bug upstream).
    #[error("invalid graph: {0}")]
    Invalid(#[from] crate::verify::VerifyError),
    /// The produced program is malformed (a bug in the scheduler).
    #[error("invalid kernel program: {0}")]
    Kernel(#[from] kernel::verify::KernelError),
    /// The entry fails at these dims whatever its inputs, as the reference
    /// interpreter does (argmax over an empty axis).
    #[error("{0}")]
    Refused(crate::interp::InterpError),
    /// Something this scheduler does not handle yet.
    #[error("not supported by the kernel scheduler: {0}")]
    Unsupported(String),
}

/// Lowers one entry point with concrete dims to a kernel program.
pub fn schedule(m: &Module, f: &Function, dims: &dyn Fn(&str) -> Option<i64>, opts: &ScheduleOptions) -> Result<Program, ScheduleError> {
    crate::verify::function(m, f)?;
    let mut cx = Cx { m, dims, opts, prog: Program::default(), params: Default::default(), depth: 0 };
    let mut inputs = Vec::new();
    for (i, t) in f.graph.inputs.iter().enumerate() {
        let len = cx.numel(&t.shape)?;
        inputs.push(cx.buffer(t.dtype, len, BufKind::Input(i as u32), f.arg_names[i].clone()));
    }
    let outs = cx.graph(&f.graph, inputs, Some(&f.output_names))?;
    for (i, src) in outs.into_iter().enumerate() {
        let b = &cx.prog.buffers[src.buf.0 as usize];
        if b.kind != BufKind::Output(i as u32) {
            let dst = cx.buffer(src.dtype, src.len, BufKind::Output(i as u32), f.output_names[i].clone());
            cx.prog.steps.push(Step::Copy { dst: view(&dst), src: view(&src), len: src.len });
        }
    }
    kernel::verify::program(&cx.prog)?;
    Ok(cx.prog)
}

fn view(s: &Src) -> View {
    View { buf: s.buf, offset: s.offset.clone() }
}

/// Program-wide scheduling state.
pub(crate) struct Cx<'a> {
    m: &'a Module,
    dims: &'a dyn Fn(&str) -> Option<i64>,
    opts: &'a ScheduleOptions,
    prog: Program,
    /// Parameter index → its buffer.
    params: std::collections::HashMap<u32, Src>,
    /// Host loop nesting (scan bodies).
    depth: u32,
}

impl Cx<'_> {
    fn dim(&self, d: &crate::DimExpr) -> Result<u64, ScheduleError> {
        let v = d.eval(self.dims)?;
        u64::try_from(v).map_err(|_| ScheduleError::NegativeDim(v))
    }

    fn shape(&self, s: &[crate::DimExpr]) -> Result<Vec<u64>, ScheduleError> {
        s.iter().map(|d| self.dim(d)).collect()
    }

    fn numel(&self, s: &[crate::DimExpr]) -> Result<u64, ScheduleError> {
        Ok(self.shape(s)?.iter().product())
    }

    fn buffer(&mut self, dtype: crate::DType, len: u64, kind: BufKind, name: String) -> Src {
        let buf = kernel::BufId(self.prog.buffers.len() as u32);
        self.prog.buffers.push(Buffer { dtype, len, kind, name });
        Src { buf, offset: HostOffset::default(), len, dtype }
    }

    /// The site number of an index check, shared by equal sites.
    fn check_site(&mut self, site: kernel::check::Site) -> u32 {
        let sites = &mut self.prog.checks;
        let at = sites.iter().position(|s| *s == site).unwrap_or_else(|| {
            sites.push(site);
            sites.len() - 1
        });
        at as u32
    }

    /// The program's status buffer (see [`kernel::check`]), made on first use.
    fn status(&mut self) -> Src {
        match kernel::check::status_buffer(&self.prog) {
            Some(b) => Src { buf: kernel::BufId(b as u32), offset: HostOffset::default(), len: kernel::check::STATUS_LEN, dtype: crate::DType::I64 },
            None => self.buffer(crate::DType::I64, kernel::check::STATUS_LEN, BufKind::Status, "status".into()),
        }
    }

    fn param(&mut self, index: u32) -> Result<Src, ScheduleError> {
        if let Some(s) = self.params.get(&index) {
            return Ok(s.clone());
        }
        let p = &self.m.params[index as usize];
        let len = self.numel(&p.ty.shape)?;
        let s = self.buffer(p.ty.dtype, len, BufKind::Param(index), p.name.clone());
        self.params.insert(index, s.clone());
        Ok(s)
    }

    /// Schedules a graph whose inputs live in `inputs`; returns where each
    /// output lives. `outputs` names the results of the entry graph (their
    /// buffers are allocated as outputs directly).
    fn graph(&mut self, g: &Graph, inputs: Vec<Src>, outputs: Option<&[String]>) -> Result<Vec<Src>, ScheduleError> {
        let mut gs = plan::plan(self, g, inputs)?;
        emit::graph(self, &mut gs, outputs)?;
        Ok(g.outputs.iter().map(|o| gs.storage[o.index()].clone().expect("outputs are materialized")).collect())
    }
}


#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn cache_sizes_as_linux_writes_them() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("3G"), None);
        assert_eq!(parse_size("K"), None);
    }
}
