//! Kiln's typed tensor graph IR.
//!
//! A [`Module`] holds the parameters of a model and its entry points; each
//! entry point is a [`Graph`] in SSA form whose every value has a dtype and a
//! symbolic shape ([`DimExpr`]). The IR knows nothing of the surface syntax
//! or of any backend. [`verify`](mod@verify) checks a graph's invariants between
//! stages, [`print`](mod@print) renders the stable text form used by file tests and
//! `kiln ir`, and [`interp`](mod@interp) is the reference interpreter every other
//! backend is tested against.
#![warn(missing_docs)]

pub mod attention;
pub mod autodiff;
mod dim;
pub mod dropout;
mod dtype;
mod graph;
pub mod interp;
pub mod kernel;
mod op;
pub mod opt;
pub mod print;
pub mod rng;
pub mod schedule;
mod unroll;
mod types;
pub mod verify;

pub use attention::{AttnMask, AttnVariant, Attention};
pub use dim::{DimError, DimExpr, Facts, Truth};
pub use dtype::DType;
pub use graph::{Constraint, Function, Graph, Module, Node, Param, Relation, ValueId};
pub use op::{int_pow, BinaryOp, CmpOp, Init, Op, ReduceOp, UnaryOp};
pub use types::{TensorType, Type};
pub use unroll::unroll_scans;
