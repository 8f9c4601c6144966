//! Kiln's backends: renderers from the loop-level kernel IR to Cranelift
//! code for the CPU and PTX text for NVIDIA GPUs.
//!
//! Empty until the CPU backend lands: the foundation executes on the
//! reference interpreter (`kiln_ir::interp`). The crate exists so the
//! dependency direction `codegen → ir` is fixed from the start.
#![warn(missing_docs)]
