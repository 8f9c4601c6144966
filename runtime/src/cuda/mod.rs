//! The CUDA backend: kernels rendered as PTX ([`kiln_codegen::ptx`]) run
//! through a [`Device`]; [`device::run_program`] walks a program's steps
//! on any device.

pub mod device;

pub use device::{run_program, Device};
