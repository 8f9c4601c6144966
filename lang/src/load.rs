//! Loading a program: the root file, then every file it imports (paths
//! relative to the importing file), each parsed once.

use crate::ast::{self, FileId, Span};
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
    let bytes = std::fs::read(path).map_err(|error| CompileError::Io { path: path.to_path_buf(), error })?;
    match String::from_utf8(bytes) {
        Ok(text) => compile_source(path, text),
        Err(e) => {
            let mut sources = Sources::default();
            let d = not_utf8(&mut sources, path.to_path_buf(), e);
            Err(CompileError::Diagnostics { sources, diagnostics: vec![d] })
        }
    }
}

/// E0008 at the first byte that is not UTF-8. The file is kept (with that
/// byte and any later bad ones replaced) so the report can show the line.
fn not_utf8(sources: &mut Sources, path: PathBuf, e: std::string::FromUtf8Error) -> Diagnostic {
    let at = e.utf8_error().valid_up_to();
    let byte = e.as_bytes()[at];
    let id = sources.add(path, String::from_utf8_lossy(e.as_bytes()).into_owned());
    // The lossy text equals the original up to `at`, where U+FFFD (3 bytes) stands for the bad byte.
    Diagnostic::new("E0008", format!("the file is not valid UTF-8: byte 0x{byte:02x} at offset {at}"), Span::new(id, at, at + 3))
        .label("not UTF-8")
        .help("Kiln reads source files as UTF-8; re-save the file in that encoding")
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
                    match std::fs::read(&p).map(String::from_utf8) {
                        Ok(Ok(text)) => {
                            seen.push(canonical(&p));
                            queue.push(sources.add(p, text));
                        }
                        Ok(Err(e)) => {
                            seen.push(canonical(&p));
                            diagnostics.push(not_utf8(&mut sources, p, e));
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
