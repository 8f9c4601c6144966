//! A [`Device`] backed by the PTX emulator, so the PTX backend's kernels
//! run (and are checked) without a GPU.

use kiln_codegen::ptx::{Manifest, PtxKernel};
use kiln_runtime::cuda::Device;
use kiln_runtime::RuntimeError;

/// Emulated device memory plus the parsed kernels.
#[derive(Default)]
pub struct EmuDevice {
    mem: ptxemu::Memory,
    kernels: Vec<(ptxemu::Module, Manifest)>,
    /// Warp instructions executed so far, over every launch.
    pub instructions: u64,
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

    fn load(&mut self, kernels: &[PtxKernel]) -> Result<(), RuntimeError> {
        self.kernels = kernels.iter().map(|k| Ok((ptxemu::Module::parse(&k.ptx).map_err(emu)?, k.manifest.clone()))).collect::<Result<_, RuntimeError>>()?;
        Ok(())
    }

    fn launch(&mut self, k: usize, args: &[u64]) -> Result<(), RuntimeError> {
        let (module, m) = &self.kernels[k];
        let launch = ptxemu::Launch { grid: [m.grid as u32, 1, 1], block: [m.block, 1, 1], dynamic_shared: 0 };
        let args: Vec<ptxemu::Arg> = args.iter().map(|a| ptxemu::Arg::U64(*a)).collect();
        let stats = module.launch(&m.name, launch, &args, &mut self.mem).map_err(emu)?;
        self.instructions += stats.instructions;
        Ok(())
    }
}
