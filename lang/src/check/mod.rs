//! The checker: name resolution, dtype and symbolic shape inference, and
//! lowering to the graph IR, in one walk over the syntax tree.
//!
//! Each `pub fn` becomes an IR entry point; other functions are inlined at
//! their call sites. A function no entry point reaches is checked once on
//! its own signature, so an error in a function nobody calls is still
//! reported; each body is elaborated from its outermost caller only, so a
//! chain of n calls costs n elaborations, not n². Layers are parameter
//! groups; a stacked layer's parameters carry a leading layer axis and are
//! iterated with `scan`.
//!
//! Stages inside: `program.rs` collects config, aliases, layers,
//! parameters and functions; the `Checker` elaborates function bodies
//! expression by expression (`expr.rs`, `builtins.rs`, `shape.rs`,
//! `index.rs`, `einsum.rs`, `rearrange.rs`, `scan.rs`).

mod builtins;
mod calls;
mod einsum;
mod expr;
mod frame;
mod index;
mod program;
mod rearrange;
mod scan;
mod scope;
mod shape;
mod ty;

use crate::ast::{self, FileId, Span};
use crate::{Diagnostic, Sources};
use frame::Frame;
use kiln_ir::Module;
use program::Program;
use std::collections::HashSet;

/// What a successful check produces.
#[derive(Debug)]
pub struct Checked {
    /// The lowered program.
    pub module: Module,
    /// Each entry point's signature as written, for `kiln check`.
    pub signatures: Vec<String>,
}

/// Why elaborating something stopped: a new diagnostic, or an error that
/// was already reported (a poisoned name), which must not be reported twice.
#[derive(Debug)]
pub(crate) enum Fail {
    Diag(Box<Diagnostic>),
    Reported,
}

impl From<Diagnostic> for Fail {
    fn from(d: Diagnostic) -> Fail {
        Fail::Diag(Box::new(d))
    }
}

pub(crate) type R<T> = Result<T, Fail>;

/// Records a failure unless it was already reported.
pub(crate) fn report(diags: &mut Vec<Diagnostic>, f: Fail) {
    if let Fail::Diag(d) = f {
        diags.push(*d);
    }
}

/// Checks parsed files (the root first, then its imports) and lowers them.
pub fn check(sources: &Sources, files: &[(FileId, ast::File)]) -> Result<Checked, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let prog = Program::build(files, &mut diags);
    let mut cx = Checker { sources, prog: &prog, diags, frames: Vec::new(), call_stack: Vec::new(), calling: HashSet::new(), elaborated: HashSet::new(), too_deep: false };
    let mut module = Module { params: prog.params.clone(), functions: Vec::new() };
    let mut signatures = Vec::new();
    for def in prog.fn_order.iter().map(|n| prog.fns[n]).filter(|d| d.public) {
        if let Some(f) = cx.entry(def) {
            module.functions.push(f);
        }
        signatures.push(signature(sources, def));
    }
    // Helpers no entry point reached: the outermost callers first (each
    // elaborates its callees), then any left, e.g. in a recursive cycle.
    let called: HashSet<&str> = prog.fn_order.iter().flat_map(|n| calls::callees(prog.fns[n])).collect();
    let helpers = || prog.fn_order.iter().map(|n| prog.fns[n]).filter(|d| !d.public);
    for def in helpers().filter(|d| !called.contains(d.name.name.as_str())).chain(helpers()) {
        if !cx.elaborated.contains(&def.name.name) {
            cx.standalone(def);
        }
    }
    let mut diags = cx.diags;
    let mut seen = HashSet::new();
    diags.retain(|d| seen.insert((d.code, d.primary.span, d.message.clone())));
    if !diags.is_empty() {
        return Err(diags);
    }
    if let Err(e) = kiln_ir::verify::module(&module) {
        let span = prog.fn_order.first().map(|n| prog.fns[n].name.span).unwrap_or_default();
        return Err(vec![Diagnostic::new("E0900", format!("internal compiler error: the lowered IR is invalid: {e}"), span)
            .help("this is a bug in Kiln, not in your program; please report it with the .kl file")]);
    }
    Ok(Checked { module, signatures })
}

/// The signature as written, on one line.
fn signature(sources: &Sources, def: &ast::FnDef) -> String {
    let mut s = sources.snippet(def.span).split_whitespace().collect::<Vec<_>>().join(" ");
    for w in &def.wheres {
        s.push_str(if s.contains(" where ") { ", " } else { " where " });
        s.push_str(&sources.snippet(w.span).split_whitespace().collect::<Vec<_>>().join(" "));
    }
    s
}

/// Elaboration state shared by every function body.
pub(crate) struct Checker<'a> {
    pub sources: &'a Sources,
    pub prog: &'a Program<'a>,
    pub diags: Vec<Diagnostic>,
    /// The graphs being built: the entry's, then one per enclosing scan body.
    pub frames: Vec<Frame>,
    /// Functions being inlined, innermost last (to refuse recursion).
    pub call_stack: Vec<String>,
    /// The names in `call_stack`, for a constant-time recursion check.
    pub calling: HashSet<String>,
    /// Functions whose body has been elaborated (inlined or on their own
    /// signature): each is checked, and reported on, through that.
    pub elaborated: HashSet<String>,
    /// Whether E0229 (calls nested too deeply) was reported: once is enough.
    pub too_deep: bool,
}

impl Checker<'_> {
    /// `file:line:col` of a span, for notes.
    pub fn locate(&self, span: Span) -> String {
        let (l, c) = self.sources.line_col(span.file, span.start);
        format!("{}:{l}:{c}", self.sources.path(span.file).display())
    }

    /// The operator between two operands: the non-blank text between their spans.
    pub fn between(&self, a: Span, b: Span) -> Option<Span> {
        if a.file != b.file || a.end > b.start {
            return None;
        }
        let gap = self.sources.text(a.file).get(a.end as usize..b.start as usize)?;
        let start = a.end as usize + (gap.len() - gap.trim_start().len());
        let end = b.start as usize - (gap.len() - gap.trim_end().len());
        (start < end).then(|| Span::new(a.file, start, end))
    }

    /// Records a failure unless it was already reported.
    pub fn report(&mut self, f: Fail) {
        report(&mut self.diags, f);
    }
}
