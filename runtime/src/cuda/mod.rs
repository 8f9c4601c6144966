//! The CUDA backend: kernels rendered as PTX ([`kiln_codegen::ptx`]) run
//! through a [`Device`]: [`device::run_program`] walks a program's steps
//! on any device (attention on the FlashAttention kernels where
//! [`flash`] allows), [`driver::CudaDevice`] is the GPU.

pub mod device;
pub mod driver;
pub mod flash;

pub use device::{run_program, Device, KernelArg, Launchable};
pub use driver::{run_cuda, CudaDevice, CudaStats};
