//! A [`Device`] backed by the PTX emulator, so the PTX backend's kernels
//! run (and are checked) without a GPU.

use kiln_codegen::ptx::flash::{TensorMapParam, TmaSwizzle};
use kiln_runtime::cuda::{Device, KernelArg, Launchable};
use kiln_runtime::RuntimeError;

/// Emulated device memory plus the parsed kernels.
#[derive(Default)]
pub struct EmuDevice {
    mem: ptxemu::Memory,
    kernels: Vec<(ptxemu::Module, Launchable)>,
    /// Warp instructions executed so far, over every launch.
    pub instructions: u64,
    /// The name of every kernel launched, in order.
    pub launched: Vec<String>,
}

fn emu(e: ptxemu::Error) -> RuntimeError {
    RuntimeError::Invalid(format!("ptx emulator: {e}"))
}

impl Device for EmuDevice {
    fn alloc(&mut self, bytes: u64) -> Result<u64, RuntimeError> {
        Ok(self.mem.alloc(bytes as usize))
    }

    fn upload(&mut self, addr: u64, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.mem.write(addr, bytes);
        Ok(())
    }

    fn download(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, RuntimeError> {
        self.mem.read(addr, len as usize).map_err(emu)
    }

    fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), RuntimeError> {
        let bytes = self.mem.read(src, len as usize).map_err(emu)?;
        self.mem.write(dst, &bytes);
        Ok(())
    }

    fn load(&mut self, kernels: &[Launchable]) -> Result<(), RuntimeError> {
        self.kernels = kernels.iter().map(|k| Ok((ptxemu::Module::parse(&k.ptx).map_err(emu)?, k.clone()))).collect::<Result<_, RuntimeError>>()?;
        Ok(())
    }

    fn launch(&mut self, k: usize, args: &[KernelArg]) -> Result<(), RuntimeError> {
        let (module, l) = &self.kernels[k];
        let launch = ptxemu::Launch { grid: l.grid, block: l.block, dynamic_shared: l.dynamic_shared };
        let args: Vec<ptxemu::Arg> = args
            .iter()
            .map(|a| match a {
                KernelArg::Ptr(v) => ptxemu::Arg::U64(*v),
                KernelArg::TensorMap(m, addr) => ptxemu::Arg::TensorMap(tensor_map(m, *addr).encode()),
            })
            .collect();
        let stats = module.launch(&l.name, launch, &args, &mut self.mem).map_err(emu)?;
        self.instructions += stats.instructions;
        self.launched.push(l.name.clone());
        Ok(())
    }
}

/// The emulator's tensor map for `m` over the tensor at `addr` (what
/// `cuTensorMapEncodeTiled` builds on a GPU).
pub fn tensor_map(m: &TensorMapParam, addr: u64) -> ptxemu::tma::TensorMap {
    let swizzle = match m.swizzle {
        TmaSwizzle::B128 => ptxemu::tma::Swizzle::B128,
    };
    ptxemu::tma::TensorMap { address: addr, element_bytes: 2, dims: m.dims.to_vec(), strides: m.strides.to_vec(), box_dims: m.box_dims.to_vec(), swizzle }
}
