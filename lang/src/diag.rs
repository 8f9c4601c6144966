//! Diagnostics: an error code, a message, labelled spans and notes,
//! rendered in the rustc style behind a one-line `file:line:col: error[E..]:`
//! header that editors and `grep` understand.
//!
//! ```text
//! models/bad.kl:4:13: error[E0301]: shapes do not broadcast in `+`
//!   |
//! 4 |     let y = x + w
//!   |             ^   - f32[n_embd, 3 * n_embd] = f32[256, 768]
//!   |             |
//!   |             f32[B, T, n_embd] = f32[B, T, 256]
//!   = note: ...
//! ```
//!
//! The header format is the reason this renderer is written here rather
//! than taken from a crate: codespan-reporting and annotate-snippets both
//! put the location on a second line.

use crate::ast::Span;
use crate::source::{floor_char_boundary, Sources};
use std::fmt::Write;

/// A labelled span.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// What it points at.
    pub span: Span,
    /// What to say there (may be empty).
    pub text: String,
}

/// One error, with everything needed to explain it.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Stable code, `E0xxx`; `docs/errors.md` explains each.
    pub code: &'static str,
    /// One-line summary.
    pub message: String,
    /// The main location (marked `^`).
    pub primary: Label,
    /// Related locations (marked `-`).
    pub secondary: Vec<Label>,
    /// `= note:` lines: values, provenance.
    pub notes: Vec<String>,
    /// `= help:` line: how to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with a primary span and no label text.
    pub fn new(code: &'static str, message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            primary: Label { span, text: String::new() },
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Sets the primary label's text.
    pub fn label(mut self, text: impl Into<String>) -> Self {
        self.primary.text = text.into();
        self
    }

    /// Adds a secondary label.
    pub fn with(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label { span, text: text.into() });
        self
    }

    /// Adds a note.
    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.notes.push(text.into());
        self
    }

    /// Sets the help line.
    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.help = Some(text.into());
        self
    }

    /// Renders the diagnostic against the loaded sources.
    pub fn render(&self, sources: &Sources) -> String {
        let mut out = String::new();
        let p = self.primary.span;
        let (line, col) = sources.line_col(p.file, p.start);
        writeln!(out, "{}:{line}:{col}: error[{}]: {}", sources.path(p.file).display(), self.code, self.message)
            .unwrap();
        // Labels grouped by line, primary first; labels in other files get
        // their own `-->` header.
        let mut labels = vec![(&self.primary, '^')];
        labels.extend(self.secondary.iter().map(|l| (l, '-')));
        let width = labels
            .iter()
            .filter(|(l, _)| l.span.file == p.file)
            .map(|(l, _)| sources.line_col(l.span.file, l.span.start).0.to_string().len())
            .max()
            .unwrap_or(1);
        let mut lines: Vec<(crate::ast::FileId, usize)> = Vec::new();
        for (l, _) in &labels {
            let key = (l.span.file, sources.line_col(l.span.file, l.span.start).0);
            if !lines.contains(&key) {
                lines.push(key);
            }
        }
        lines.sort_by_key(|&(f, n)| (f != p.file, f, n));
        let pad = " ".repeat(width);
        writeln!(out, "{pad} |").unwrap();
        let mut current_file = p.file;
        for (file, n) in lines {
            if file != current_file {
                let first = labels.iter().find(|(l, _)| l.span.file == file).unwrap().0.span;
                let (l2, c2) = sources.line_col(file, first.start);
                writeln!(out, "{pad}--> {}:{l2}:{c2}", sources.path(file).display()).unwrap();
                current_file = file;
            }
            let text = sources.text(file);
            let src_line = text.lines().nth(n - 1).unwrap_or("");
            writeln!(out, "{:>width$} | {src_line}", n).unwrap();
            let mut on_line: Vec<(usize, usize, char, &str)> = labels
                .iter()
                .filter(|(l, _)| l.span.file == file && sources.line_col(file, l.span.start).0 == n)
                .map(|(l, mark)| {
                    let c = sources.line_col(file, l.span.start).1 - 1;
                    let s = floor_char_boundary(text, l.span.start as usize);
                    let e = floor_char_boundary(text, l.span.end as usize).max(s);
                    let covered = text[s..e].split('\n').next().unwrap_or("").chars().count();
                    (c, covered.max(1), *mark, l.text.as_str())
                })
                .collect();
            on_line.sort_by_key(|x| x.0);
            // First row: every marker; the rightmost label's text beside it.
            // Overlapping labels: the primary's `^` wins over `-`.
            let width_needed = on_line.iter().map(|(c, w, _, _)| c + w).max().unwrap_or(0);
            let mut cells = vec![' '; width_needed];
            for (c, w, mark, _) in &on_line {
                for cell in &mut cells[*c..c + w] {
                    if *cell != '^' {
                        *cell = *mark;
                    }
                }
            }
            let mut row: String = cells.into_iter().collect();
            if let Some(last) = on_line.last().filter(|l| !l.3.is_empty()) {
                write!(row, " {}", last.3).unwrap();
            }
            writeln!(out, "{pad} | {row}").unwrap();
            // Other labels hang below their markers, right to left.
            for i in (0..on_line.len().saturating_sub(1)).rev() {
                if on_line[i].3.is_empty() {
                    continue;
                }
                let mut bars = String::new();
                for (c, _, _, t) in &on_line[..i] {
                    if !t.is_empty() {
                        while bars.chars().count() < *c {
                            bars.push(' ');
                        }
                        bars.push('|');
                    }
                }
                let mut stem = bars.clone();
                while stem.chars().count() < on_line[i].0 {
                    stem.push(' ');
                }
                writeln!(out, "{pad} | {stem}|").unwrap();
                writeln!(out, "{pad} | {stem}{}", on_line[i].3).unwrap();
            }
        }
        for n in &self.notes {
            writeln!(out, "{pad} = note: {n}").unwrap();
        }
        if let Some(h) = &self.help {
            writeln!(out, "{pad} = help: {h}").unwrap();
        }
        out
    }
}
