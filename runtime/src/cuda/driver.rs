//! The CUDA driver as a [`Device`] (cudarc, loaded at run time: a machine
//! without a driver gets an error, never a panic).

use super::device::{run_program, Device, KernelArg, Launchable};
use crate::{RuntimeError, Tensor};
use cudarc::driver::{result, sys, CudaContext};
use kiln_codegen::ptx::flash::{Half, TensorMapParam, TmaSwizzle};
use kiln_codegen::ptx::{Arch, MAX_SHARED_BYTES};
use kiln_ir::schedule::{AttnBackward, ScheduleOptions};
use kiln_ir::{Function, Module};
use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first GPU, with what has been allocated and loaded on it.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    arch: Arch,
    allocs: Vec<sys::CUdeviceptr>,
    modules: Vec<sys::CUmodule>,
    /// Each loaded kernel with its launch shape (PTX text dropped).
    kernels: Vec<(sys::CUfunction, Launchable)>,
    stats: CudaStats,
}

/// What a run on the GPU did.
#[derive(Clone, Debug, Default)]
pub struct CudaStats {
    /// The GPU's name.
    pub device: String,
    /// Kernel launches.
    pub launches: u64,
    /// Wall time from each launch to its completion, summed.
    pub kernel_time: Duration,
    /// Attention nodes that ran on the FlashAttention kernels (the rest
    /// ran on their generic kernels).
    pub flash_nodes: usize,
}

fn driver(e: result::DriverError) -> RuntimeError {
    RuntimeError::Invalid(format!("CUDA: {e}"))
}

impl CudaDevice {
    /// Opens GPU 0; `no CUDA driver found` without a driver library.
    pub fn open() -> Result<CudaDevice, RuntimeError> {
        // SAFETY: only tries to load the driver library by name.
        if !unsafe { sys::is_culib_present() } {
            return Err(RuntimeError::Invalid("no CUDA driver found".into()));
        }
        let ctx = CudaContext::new(0).map_err(driver)?;
        let arch = match ctx.compute_capability().map_err(driver)? {
            (9, 0) => Arch::Sm90a,
            (major, _) if major >= 8 => Arch::Sm80,
            (major, minor) => return Err(RuntimeError::Invalid(format!("the GPU has compute capability {major}.{minor}; Kiln's PTX needs 8.0 or newer"))),
        };
        let device = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        Ok(CudaDevice { ctx, arch, allocs: Vec::new(), modules: Vec::new(), kernels: Vec::new(), stats: CudaStats { device, ..Default::default() } })
    }

    /// The architecture kernels are rendered for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// What the runs so far did.
    pub fn stats(&self) -> &CudaStats {
        &self.stats
    }

    /// Queues loaded kernel `k` on the default stream without waiting.
    fn enqueue(&mut self, k: usize, args: &[KernelArg]) -> Result<(), RuntimeError> {
        let (f, l) = self.kernels.get(k).ok_or_else(|| RuntimeError::Invalid(format!("no loaded kernel {k}")))?;
        // every argument's bytes stay where they are until the launch has
        // read them: both vectors are filled before any pointer is taken
        let mut values: Vec<u64> = Vec::with_capacity(args.len());
        let mut maps: Vec<sys::CUtensorMap> = Vec::with_capacity(args.len());
        for a in args {
            match a {
                KernelArg::Ptr(v) => values.push(*v),
                KernelArg::TensorMap(m, addr) => maps.push(tensor_map(m, *addr)?),
            }
        }
        let (mut vi, mut mi) = (values.iter_mut(), maps.iter_mut());
        let mut params: Vec<*mut c_void> = args
            .iter()
            .map(|a| match a {
                KernelArg::Ptr(_) => vi.next().map(|v| v as *mut u64 as *mut c_void),
                KernelArg::TensorMap(..) => mi.next().map(|m| m as *mut sys::CUtensorMap as *mut c_void),
            })
            .collect::<Option<_>>()
            .expect("one value per argument");
        let (g, b) = (l.grid, l.block);
        // SAFETY: one argument per parameter, as rendered (`.u64` pointers,
        // 64-byte aligned 128-byte tensor maps); the grid, block and
        // dynamic shared memory are the kernel's own.
        unsafe { result::launch_kernel(*f, (g[0], g[1], g[2]), (b[0], b[1], b[2]), l.dynamic_shared, std::ptr::null_mut(), &mut params) }.map_err(driver)
    }

    /// Seconds per run of `launches` (loaded kernels with their
    /// arguments, in order), run `reps` times back to back between two
    /// CUDA events after one untimed warm-up run.
    pub fn time_launches(&mut self, launches: &[(usize, Vec<KernelArg>)], reps: u32) -> Result<f64, RuntimeError> {
        self.ctx.bind_to_thread().map_err(driver)?;
        for (k, args) in launches {
            self.enqueue(*k, args)?;
        }
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let (start, end) = (result::event::create(flags).map_err(driver)?, result::event::create(flags).map_err(driver)?);
        let timed = (|| {
            // SAFETY: both events were just created in this context; the
            // default stream orders them around the launches.
            unsafe { result::event::record(start, std::ptr::null_mut()) }.map_err(driver)?;
            for _ in 0..reps.max(1) {
                for (k, args) in launches {
                    self.enqueue(*k, args)?;
                }
            }
            // SAFETY: as above.
            unsafe { result::event::record(end, std::ptr::null_mut()) }.map_err(driver)?;
            self.ctx.synchronize().map_err(driver)?;
            // SAFETY: both events are recorded and complete.
            unsafe { result::event::elapsed(start, end) }.map_err(driver)
        })();
        for e in [start, end] {
            // SAFETY: created above, destroyed once; nothing waits on them any more.
            let _ = unsafe { result::event::destroy(e) };
        }
        Ok(f64::from(timed?) / 1e3 / f64::from(reps.max(1)))
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        for p in self.allocs.drain(..) {
            // SAFETY: allocated by `alloc` in this context, freed once.
            let _ = unsafe { result::free_sync(p) };
        }
        for m in self.modules.drain(..) {
            // SAFETY: loaded by `load`, unloaded once; no launch is pending
            // (every launch is synchronized).
            let _ = unsafe { result::module::unload(m) };
        }
    }
}

impl Device for CudaDevice {
    fn alloc(&mut self, bytes: u64) -> Result<u64, RuntimeError> {
        self.ctx.bind_to_thread().map_err(driver)?;
        // SAFETY: a plain allocation in the bound context.
        let p = unsafe { result::malloc_sync(bytes as usize) }.map_err(driver)?;
        self.allocs.push(p);
        Ok(p)
    }

    fn upload(&mut self, addr: u64, bytes: &[u8]) -> Result<(), RuntimeError> {
        // SAFETY: `addr` lies in an allocation of at least `bytes.len()` bytes (the walker's plan).
        unsafe { result::memcpy_htod_sync(addr, bytes) }.map_err(driver)
    }

    fn download(&mut self, addr: u64, len: u64) -> Result<Vec<u8>, RuntimeError> {
        let mut out = vec![0u8; len as usize];
        // SAFETY: as in `upload`.
        unsafe { result::memcpy_dtoh_sync(&mut out, addr) }.map_err(driver)?;
        Ok(out)
    }

    fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), RuntimeError> {
        // SAFETY: as in `upload`, for both ranges.
        unsafe { result::memcpy_dtod_sync(dst, src, len as usize) }.map_err(driver)
    }

    fn load(&mut self, kernels: &[Launchable]) -> Result<(), RuntimeError> {
        self.ctx.bind_to_thread().map_err(driver)?;
        for k in kernels {
            let text = CString::new(k.ptx.as_str()).map_err(|_| RuntimeError::Invalid("PTX text with a NUL byte".into()))?;
            let name = CString::new(k.name.as_str()).map_err(|_| RuntimeError::Invalid("kernel name with a NUL byte".into()))?;
            // SAFETY: a NUL-terminated PTX image; the driver copies it.
            let m = unsafe { result::module::load_data(text.as_ptr() as *const c_void) }.map_err(driver)?;
            self.modules.push(m);
            // SAFETY: `m` was just loaded.
            let f = unsafe { result::module::get_function(m, name) }.map_err(driver)?;
            if u64::from(k.dynamic_shared) > MAX_SHARED_BYTES {
                // Above 48 KiB of dynamic shared memory a kernel must opt in.
                let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
                // SAFETY: `f` is a function of a loaded module.
                unsafe { result::function::set_function_attribute(f, attr, k.dynamic_shared as i32) }.map_err(driver)?;
            }
            self.kernels.push((f, Launchable { ptx: String::new(), ..k.clone() }));
        }
        Ok(())
    }

    fn launch(&mut self, k: usize, args: &[KernelArg]) -> Result<(), RuntimeError> {
        let start = Instant::now();
        self.enqueue(k, args)?;
        self.ctx.synchronize().map_err(driver)?;
        self.stats.launches += 1;
        self.stats.kernel_time += start.elapsed();
        Ok(())
    }
}

/// Runs an entry point on the GPU, as [`crate::cpu::run_cpu`] does on the
/// CPU (each launch is synchronized, so kernel times are exact).
pub fn run_cuda(m: &Module, f: &Function, params: &[Tensor], inputs: &[Tensor], dims: &BTreeMap<String, i64>) -> Result<(Vec<Tensor>, CudaStats), RuntimeError> {
    let mut dev = CudaDevice::open()?;
    // a GPU has far more threads than heads: the backward's generic
    // kernels (when the flash kernels don't apply) split over query blocks
    let opts = ScheduleOptions { attention_backward: Some(AttnBackward::Split), ..Default::default() };
    let (program, shapes) = crate::cpu::schedule_entry(m, f, dims, &opts)?;
    let arch = dev.arch();
    let outs = run_program(&mut dev, &program, arch, inputs, params).map_err(|e| e.in_function(&f.name))?;
    let outs = outs.into_iter().zip(shapes).zip(&f.graph.outputs).map(|((data, shape), o)| Tensor { dtype: f.graph.tensor_type(*o).dtype, shape, data }).collect();
    let flash_nodes = program.intrinsics.iter().filter(|x| super::flash::substitute(&program, x, arch).is_ok()).count();
    Ok((outs, CudaStats { flash_nodes, ..dev.stats.clone() }))
}

/// The driver's encoding of tensor map `m` over the tensor at `addr`, as
/// [`TensorMapParam`] documents.
fn tensor_map(m: &TensorMapParam, addr: u64) -> Result<sys::CUtensorMap, RuntimeError> {
    let dtype = match m.dtype {
        Half::Bf16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        Half::F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
    };
    let swizzle = match m.swizzle {
        TmaSwizzle::B128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
    };
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    let element_strides = [1u32; 3];
    // SAFETY: rank 3 matches the lengths of dims, box and element strides
    // (strides has rank - 1 entries); `map` is a writable, 64-byte aligned
    // CUtensorMap.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            dtype,
            3,
            addr as *mut c_void,
            m.dims.as_ptr(),
            m.strides.as_ptr(),
            m.box_dims.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    r.result().map_err(driver)?;
    Ok(map)
}
