//! Kiln's tensor DSL: the front end.
//!
//! [`compile_file`] reads a `.kl` file and its imports, [`parse`]s each (a
//! logos lexer feeding a lalrpop grammar), and [`check::check`]s the
//! program: names, dtypes and symbolic shapes, lowered to a
//! [`kiln_ir::Module`]. Every error is a [`Diagnostic`] with a code and a
//! source location; no input makes it panic.
#![warn(missing_docs)]

pub mod ast;
pub mod check;
mod diag;
mod lexer;
mod load;
mod parser;
mod source;

pub use diag::{Diagnostic, Label};
pub use lexer::Token;
pub use load::{compile_file, compile_source, CompileError, Compiled};
pub use parser::parse;
pub use source::Sources;
