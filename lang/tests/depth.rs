//! The library entry point survives programs as deep as its documented
//! limits on any thread, and refuses deeper ones with a diagnostic.

use kiln_ir::{BinaryOp, Op};
use kiln_lang::{compile_source, CompileError};
use std::path::Path;

/// `h0` calls `h1` ... calls `h{n-1}`; `forward` calls `h0`.
fn call_chain(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let inner = if i + 1 < n { format!("h{}(x)", i + 1) } else { "x".to_string() };
        out.push_str(&format!("fn h{i}(x: f32[N]) -> f32[N] {{\n    return {inner} * 2.0\n}}\n"));
    }
    out + "pub fn forward(x: f32[N]) -> f32[N] {\n    return h0(x)\n}\n"
}

/// The number of multiplies in `forward`, or the error codes. Compiles on a thread with a 256 KiB stack, far too small for the
/// inlining recursion without stack growth.
fn compile_on_small_stack(text: String) -> Result<usize, Vec<String>> {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || match compile_source(Path::new("chain.kl"), text) {
            Ok(c) => Ok(c.module.functions[0].graph.nodes.iter().filter(|n| n.op == Op::Binary(BinaryOp::Mul)).count()),
            Err(CompileError::Diagnostics { diagnostics, .. }) => Err(diagnostics.iter().map(|d| d.code.to_string()).collect()),
            Err(e) => panic!("{e}"),
        })
        .expect("spawn")
        .join()
        .expect("the checker overflowed its stack or panicked")
}

#[test]
fn a_2500_call_chain_compiles_on_a_small_stack() {
    // Every call inlined: one multiply each.
    assert_eq!(compile_on_small_stack(call_chain(2500)), Ok(2500));
}

#[test]
fn a_call_chain_past_the_limit_is_one_e0229() {
    assert_eq!(compile_on_small_stack(call_chain(10_050)), Err(vec!["E0229".to_string()]));
}
