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

/// The first line's words (after `# dims:`) and every entry point
/// scheduled with the `NAME=N` dims among them.
fn scheduled(path: &Path) -> (String, Vec<(String, kiln_ir::kernel::Program)>) {
    let text = std::fs::read_to_string(path).expect("read input");
    let header = text.lines().next().and_then(|l| l.strip_prefix("# dims:")).expect("first line: `# dims: ...`").to_string();
    let dims: Vec<(String, i64)> = header
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("dim value")))
        .collect();
    let c = kiln_lang::compile_file(path).unwrap_or_else(|e| panic!("{}", e.render()));
    let env = |n: &str| dims.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    let programs = c
        .module
        .functions
        .iter()
        .map(|f| {
            let p = kiln_ir::schedule::schedule(&c.module, f, &env, &kiln_ir::schedule::ScheduleOptions { fuse: true, threads: 2, ..Default::default() }).unwrap_or_else(|e| panic!("{e}"));
            (f.name.clone(), p)
        })
        .collect();
    (header, programs)
}

/// Kernel programs: the first line says the dims and whether to print only
/// the host schedule (`# dims: B=2 T=8 summary`).
#[test]
fn kernel_programs() {
    filetest::run(&repo_root().join("tests/filetests/kernels"), |path| {
        let (header, programs) = scheduled(path);
        let summary = header.split_whitespace().any(|w| w == "summary");
        let mut out = String::new();
        for (name, p) in programs {
            out.push_str(&format!("== {name}: {} kernels\n", p.kernels.len()));
            let text = kiln_ir::kernel::print::program(&p);
            if summary {
                // Just the host schedule: which kernels run, in order.
                let steps = text.split("\nkernel ").next().unwrap_or("");
                out.extend(steps.lines().filter(|l| !l.starts_with("buf ") && !l.is_empty()).map(|l| format!("{l}\n")));
            } else {
                out.push_str(&text);
            }
        }
        out
    });
}

/// PTX text (sm_80) of every kernel, after its manifest line.
#[test]
fn ptx_kernels() {
    filetest::run(&repo_root().join("tests/filetests/ptx"), |path| {
        let mut out = String::new();
        for (name, p) in scheduled(path).1 {
            for k in &p.kernels {
                let r = kiln_codegen::ptx::render(k, kiln_codegen::ptx::Arch::Sm80).unwrap_or_else(|e| panic!("{e}"));
                let m = &r.manifest;
                out.push_str(&format!("== {name}: {} grid {} block {} shared {} B\n{}", m.name, m.grid, m.block, m.shared_bytes, r.ptx));
            }
        }
        out
    });
}

/// Graphs after the e-graph optimizer: one file per attention form (fused)
/// and per look-alike that must be left alone, with the fused nodes and
/// each run's stop reason.
#[test]
fn optimized_graphs() {
    use kiln_ir::opt::{optimize, OptOptions};
    filetest::run(&repo_root().join("tests/filetests/optimized"), |path| {
        let c = kiln_lang::compile_file(path).unwrap_or_else(|e| panic!("{}", e.render()));
        let mut out = String::new();
        for f in &c.module.functions {
            let (g, report) = optimize(&c.module, f, &OptOptions::default()).unwrap_or_else(|e| panic!("{e}"));
            out.push_str(&kiln_ir::print::function(&c.module, &g));
            for r in &report.runs {
                out.push_str(&format!("# {}: {}\n", r.scope, r.stop));
            }
            for (scope, a) in report.fused() {
                out.push_str(&format!("# fused in {scope}: attention[{a}]\n"));
            }
        }
        out
    });
}
