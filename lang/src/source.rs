//! The source files of one compilation: the root file and its imports.

use crate::ast::{FileId, Span};
use std::path::{Path, PathBuf};

/// Every file loaded for one compilation, by [`FileId`].
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<(PathBuf, String)>,
}

impl Sources {
    /// Adds a file's text and returns its id.
    pub fn add(&mut self, path: impl Into<PathBuf>, text: String) -> FileId {
        self.files.push((path.into(), text));
        FileId(self.files.len() as u32 - 1)
    }

    /// The id of an already loaded file.
    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files.iter().position(|(p, _)| p == path).map(|i| FileId(i as u32))
    }

    /// The path a file was loaded from.
    pub fn path(&self, id: FileId) -> &Path {
        &self.files[id.0 as usize].0
    }

    /// The text of a file.
    pub fn text(&self, id: FileId) -> &str {
        &self.files[id.0 as usize].1
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, id: FileId, offset: u32) -> (usize, usize) {
        let text = self.text(id);
        let offset = (offset as usize).min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        let text = self.text(span.file);
        let s = floor_char_boundary(text, span.start as usize);
        let e = floor_char_boundary(text, span.end as usize).max(s);
        &text[s..e]
    }
}

/// The largest char boundary `<= i` (clamped to the text).
pub(crate) fn floor_char_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
