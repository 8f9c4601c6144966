//! A parsed PTX module, its kernels, and the launch interface.

use crate::error::{Error, Result};
use crate::exec;
use crate::instr::Instr;
use crate::memory::Memory;
use crate::types::Type;

/// The default bound on warp instructions per launch: large enough for any test kernel,
/// small enough that an infinite loop fails in seconds.
pub const DEFAULT_STEP_LIMIT: u64 = 200_000_000;

/// Shared memory one CTA may use (the sm_90 limit of 227 KiB).
pub const MAX_SHARED_BYTES: u64 = 227 * 1024;

/// A kernel parameter as declared.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: String,
    pub ty: Type,
    /// Size in bytes (an array parameter holds several elements of `ty`).
    pub bytes: u64,
    /// Offset in the parameter block.
    pub offset: u64,
}

/// One `.entry`.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub param_bytes: u64,
    /// Width in bits of each register, by register number.
    pub reg_bits: Vec<u32>,
    pub instrs: Vec<Instr>,
    /// Bytes of static `.shared` variables; dynamic shared memory starts here.
    pub static_shared: u64,
    pub reqntid: Option<[u32; 3]>,
    pub maxntid: Option<[u32; 3]>,
}

/// A parsed PTX module: kernels ready to launch.
#[derive(Debug, Clone)]
pub struct Module {
    pub(crate) kernels: Vec<Kernel>,
    pub(crate) step_limit: u64,
}

/// Grid and block shape of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// CTAs in x, y, z.
    pub grid: [u32; 3],
    /// Threads per CTA in x, y, z.
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory (`.extern .shared`).
    pub dynamic_shared: u32,
}

/// A kernel argument; its size must match the declared `.param`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A `.u64` (or `.b64`) value.
    U64(u64),
    /// A `.s64` value.
    S64(i64),
    /// A `.u32` (or `.b32`) value.
    U32(u32),
    /// A `.s32` value.
    S32(i32),
    /// A `.u16` value.
    U16(u16),
    /// A `.f32` value.
    F32(f32),
    /// A `.f64` value.
    F64(f64),
    /// The 128 bytes of a `.param .align 64 .b8 name[128]` array parameter: a tensor map
    /// encoded by [`crate::tma::TensorMap::encode`].
    TensorMap([u8; 128]),
}

impl Arg {
    fn bytes(self) -> Vec<u8> {
        match self {
            Arg::U64(v) => v.to_le_bytes().to_vec(),
            Arg::S64(v) => v.to_le_bytes().to_vec(),
            Arg::U32(v) => v.to_le_bytes().to_vec(),
            Arg::S32(v) => v.to_le_bytes().to_vec(),
            Arg::U16(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
            Arg::F64(v) => v.to_le_bytes().to_vec(),
            Arg::TensorMap(b) => b.to_vec(),
        }
    }
}

/// What a launch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Warp instructions issued (a warp executing one instruction counts once).
    pub instructions: u64,
    /// Thread instructions executed (each lane whose guard predicate held counts once).
    pub thread_instructions: u64,
    /// Barriers released.
    pub barriers: u64,
    /// CTAs run.
    pub ctas: u64,
}

impl Module {
    /// Parses PTX text.
    pub fn parse(text: &str) -> Result<Module> {
        let kernels = crate::parser::parse(text)?;
        Ok(Module {
            kernels,
            step_limit: DEFAULT_STEP_LIMIT,
        })
    }

    /// Names of the `.entry` kernels, in source order.
    pub fn kernels(&self) -> impl Iterator<Item = &str> {
        self.kernels.iter().map(|k| k.name.as_str())
    }

    /// Bounds the warp instructions one launch may execute (see [`DEFAULT_STEP_LIMIT`]).
    pub fn set_step_limit(&mut self, limit: u64) {
        self.step_limit = limit;
    }

    /// Runs a kernel to completion, CTA after CTA.
    pub fn launch(
        &self,
        name: &str,
        launch: Launch,
        args: &[Arg],
        mem: &mut Memory,
    ) -> Result<Stats> {
        let kernel = self
            .kernels
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| Error::UnknownKernel(name.to_string()))?;
        let bad = |msg: String| Error::BadLaunch {
            kernel: name.to_string(),
            msg,
        };
        if args.len() != kernel.params.len() {
            return Err(bad(format!(
                "{} arguments for {} parameters",
                args.len(),
                kernel.params.len()
            )));
        }
        let mut params = vec![0u8; kernel.param_bytes as usize];
        for (arg, p) in args.iter().zip(&kernel.params) {
            let bytes = arg.bytes();
            if bytes.len() as u64 != p.bytes {
                return Err(bad(format!(
                    "argument {arg:?} does not fit parameter `{}` of type {:?}",
                    p.name, p.ty
                )));
            }
            params[p.offset as usize..p.offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        check_shape(kernel, &launch).map_err(bad)?;
        let shared = kernel.static_shared + u64::from(launch.dynamic_shared);
        if shared > MAX_SHARED_BYTES {
            return Err(bad(format!(
                "{shared} bytes of shared memory exceed {MAX_SHARED_BYTES}"
            )));
        }
        exec::run_grid(kernel, &launch, &params, mem, self.step_limit)
    }
}

fn check_shape(kernel: &Kernel, launch: &Launch) -> std::result::Result<(), String> {
    if launch.grid.contains(&0) || launch.block.contains(&0) {
        return Err(format!(
            "empty grid {:?} or block {:?}",
            launch.grid, launch.block
        ));
    }
    let threads: u64 = launch.block.iter().map(|&b| u64::from(b)).product();
    if threads > 1024 {
        return Err(format!("{threads} threads per block exceed 1024"));
    }
    if let Some(req) = kernel.reqntid {
        if req != launch.block {
            return Err(format!(
                "block {:?} differs from .reqntid {req:?}",
                launch.block
            ));
        }
    }
    if let Some(max) = kernel.maxntid {
        let limit: u64 = max.iter().map(|&m| u64::from(m)).product();
        if threads > limit {
            return Err(format!("{threads} threads exceed .maxntid {max:?}"));
        }
    }
    Ok(())
}
