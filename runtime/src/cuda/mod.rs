//! The CUDA backend: kernels rendered as PTX ([`kiln_codegen::ptx`]) run
//! through a [`Device`]: [`device::run_program`] walks a program's steps
//! on any device, [`driver::CudaDevice`] is the GPU.

pub mod device;
pub mod driver;

pub use device::{run_program, Device};
pub use driver::{run_cuda, CudaDevice, CudaStats};
