//! File tests of the front end: diagnostics and IR dumps.

use kiln_lang::{compile_source, CompileError};
use kiln_tests::{filetest, repo_root};
use std::path::Path;

/// What `kiln check` prints, with the path relative to the test directory.
fn check_output(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read input");
    let name = Path::new(path.file_name().expect("file name"));
    match compile_source(name, text) {
        Ok(c) => c.signatures.iter().map(|s| s.clone() + "\n").collect(),
        Err(e @ CompileError::Diagnostics { .. }) => e.render(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn check_diagnostics() {
    filetest::run(&repo_root().join("tests/filetests/check"), check_output);
}

#[test]
fn ir_dumps() {
    filetest::run(&repo_root().join("tests/filetests/ir"), |path| {
        let c = kiln_lang::compile_file(path).unwrap_or_else(|e| panic!("{}", e.render()));
        kiln_ir::print::module(&c.module)
    });
}
