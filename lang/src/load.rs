//! Loading a program: the root file, then every file it imports (paths
//! relative to the importing file), each parsed once.

use crate::ast::{self, FileId};
use crate::check::{check, Checked};
use crate::{parse, Diagnostic, Sources};
use kiln_ir::Module;
use std::path::{Path, PathBuf};

/// A checked program ready for the later stages.
#[derive(Debug)]
pub struct Compiled {
    /// The lowered IR.
    pub module: Module,
    /// Each entry point's signature as written.
    pub signatures: Vec<String>,
    /// The loaded files (for rendering later diagnostics).
    pub sources: Sources,
}

/// Why compiling failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The root file could not be read.
    #[error("cannot read `{}`: {}", path.display(), io_reason(error))]
    Io {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The program has errors.
    #[error("{} error(s)", diagnostics.len())]
    Diagnostics {
        /// The loaded files.
        sources: Sources,
        /// The errors, in source order.
        diagnostics: Vec<Diagnostic>,
    },
}

impl CompileError {
    /// The full report: every diagnostic rendered, then a summary line.
    pub fn render(&self) -> String {
        match self {
            CompileError::Io { .. } => format!("error: {self}\n"),
            CompileError::Diagnostics { sources, diagnostics } => {
                let mut s: String = diagnostics.iter().map(|d| d.render(sources) + "\n").collect();
                let n = diagnostics.len();
                s.push_str(&format!("error: could not compile: {n} error{}\n", if n == 1 { "" } else { "s" }));
                s
            }
        }
    }
}

/// Reads, parses and checks a `.kl` file and its imports.
pub fn compile_file(path: &Path) -> Result<Compiled, CompileError> {
    let text = std::fs::read_to_string(path).map_err(|error| CompileError::Io { path: path.to_path_buf(), error })?;
    compile_source(path, text)
}

/// Like [`compile_file`], with the root file's text given (imports are
/// still read from disk, relative to `path`).
pub fn compile_source(path: &Path, text: String) -> Result<Compiled, CompileError> {
    let mut sources = Sources::default();
    let root = sources.add(path, text);
    let mut files: Vec<(FileId, ast::File)> = Vec::new();
    let mut diagnostics = Vec::new();
    let mut queue = vec![root];
    let mut seen: Vec<PathBuf> = vec![canonical(path)];
    while let Some(id) = queue.pop() {
        match parse(id, sources.text(id)) {
            Ok(file) => {
                for item in &file.items {
                    let ast::Item::Import { path: rel, span } = item else { continue };
                    let base = sources.path(id).parent().map(Path::to_path_buf).unwrap_or_default();
                    let p = base.join(rel);
                    if seen.contains(&canonical(&p)) {
                        continue;
                    }
                    match std::fs::read_to_string(&p) {
                        Ok(text) => {
                            seen.push(canonical(&p));
                            queue.push(sources.add(p, text));
                        }
                        Err(e) => diagnostics.push(
                            Diagnostic::new("E0100", format!("cannot import `{rel}`: {}", io_reason(&e)), *span)
                                .note(format!("looked for {}", p.display())),
                        ),
                    }
                }
                files.push((id, file));
            }
            Err(d) => diagnostics.push(d),
        }
    }
    if !diagnostics.is_empty() {
        return Err(CompileError::Diagnostics { sources, diagnostics });
    }
    files.sort_by_key(|(id, _)| *id);
    match check(&sources, &files) {
        Ok(Checked { module, signatures }) => Ok(Compiled { module, signatures, sources }),
        Err(mut diagnostics) => {
            diagnostics.sort_by_key(|d| (d.primary.span.file, d.primary.span.start));
            Err(CompileError::Diagnostics { sources, diagnostics })
        }
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// An OS error's message without the ` (os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}
