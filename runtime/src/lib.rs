//! Kiln's host-side runtime: everything between files on disk and the
//! reference interpreter.
//!
//! - [`npy`]: read and write NumPy `.npy` arrays (inputs and outputs).
//! - [`safetensors`]: load and save model weights, including stacked layers.
//! - [`init`]: deterministic parameter initialization from a seed.
//! - [`inputs`]: random inputs for a quick run without data.
//! - [`bind`]: bind dimension variables (`B`, `T`, ...) from input shapes,
//!   `--dim` overrides and defaults, and check inputs and constraints.
//! - [`exec`]: run an entry point on the reference interpreter.
//! - [`cpu`]: run an entry point natively: scheduled, JIT-compiled kernels
//!   on all cores.
//! - [`fsutil`]: atomic file replacement and output directories.
//! - [`memory`]: the memory a run may take, checked before allocating.
//! - [`train`]: optimizers, schedules, the training loop, checkpoints and
//!   mixed precision.
//!
//! Tensors are [`kiln_ir::interp::Tensor`]: a dtype, a shape and row-major
//! `f64` elements. Nothing here panics on user input: every problem with a
//! file, a checkpoint or an input is a [`RuntimeError`] whose message is
//! one line naming the file, parameter or input at fault.
#![warn(missing_docs)]

pub mod bind;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod error;
pub mod exec;
pub mod fsutil;
pub mod init;
pub mod inputs;
pub mod memory;
pub mod npy;
pub mod safetensors;
pub mod tensor;
pub mod train;

pub use bind::{bind_dims, bind_dims_from, default_dim, BoundDims, GivenInput};
pub use cpu::{run_cpu, Cache, CpuExecutable, Pool, Stats};
pub use error::RuntimeError;
pub use exec::run_reference;
pub use fsutil::{
    create_output_dir, lock_dir, read_file, remove_temp_files, write_atomic, write_atomic_with, DirLock,
};
pub use init::{init_param, init_params};
pub use inputs::random_input;
pub use kiln_ir::interp::{Precision, Tensor};
pub use npy::{decode_npy, encode_npy, read_npy, read_npy_as, write_npy};
pub use safetensors::{decode_params, encode_params, load_params, save_params, storage_layout, StorageLayout};
pub use tensor::type_string;
