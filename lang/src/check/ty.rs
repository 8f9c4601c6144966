//! The checker's view of a tensor type: the IR type plus, per axis, the
//! dimension name it carries (for `over: T`, aliases and messages) and
//! where that axis came from (for provenance notes).

use crate::ast::Span;
use kiln_ir::{DType, DimExpr, TensorType};
use std::fmt::Write;

/// One axis: its size, the dim name it is known by, and its origin.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Axis {
    /// Size, with config constants substituted.
    pub size: DimExpr,
    /// The dim name (`T`, `n_embd`, an alias) when the axis has one.
    pub name: Option<String>,
    /// Where the axis got its size (an annotation or an expression).
    pub origin: Option<Span>,
    /// How an unnamed axis was written in a type (`3 * n_embd`), for messages.
    pub text: Option<String>,
}

impl Axis {
    pub fn new(size: DimExpr, name: Option<String>, origin: Option<Span>) -> Axis {
        Axis { size, name, origin, text: None }
    }

    pub fn unnamed(size: DimExpr) -> Axis {
        Axis { size, name: None, origin: None, text: None }
    }

    /// An axis declared in a type annotation.
    pub fn declared(size: DimExpr, name: Option<String>, d: &crate::ast::DimExpr) -> Axis {
        let text = Some(d.to_string()).filter(|t| name.is_none() && *t != size.to_string());
        Axis { size, name, origin: Some(d.span()), text }
    }

    /// The axis as a user wrote it: its name, else its written form, else its size.
    pub fn written(&self) -> String {
        self.name.clone().or_else(|| self.text.clone()).unwrap_or_else(|| self.size.to_string())
    }
}

/// A tensor type with named axes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ty {
    pub dtype: DType,
    pub axes: Vec<Axis>,
}

impl Ty {
    pub fn new(dtype: DType, axes: Vec<Axis>) -> Ty {
        Ty { dtype, axes }
    }

    /// The type itself if its element count fits in 64 bits (E0228 at
    /// `span` if not): every later product of its sizes then fits too.
    pub fn fits(self, span: Span) -> super::R<Ty> {
        match self.ir().checked_numel() {
            Some(_) => Ok(self),
            None => Err(super::scope::overflow(format_args!("the element count of {}", self.written()), span)),
        }
    }

    pub fn rank(&self) -> usize {
        self.axes.len()
    }

    pub fn sizes(&self) -> Vec<DimExpr> {
        self.axes.iter().map(|a| a.size.clone()).collect()
    }

    /// The IR type (names dropped).
    pub fn ir(&self) -> TensorType {
        TensorType::new(self.dtype, self.sizes())
    }

    pub fn with_dtype(&self, dtype: DType) -> Ty {
        Ty { dtype, axes: self.axes.clone() }
    }

    /// `f32[B, T, n_embd]`: names where known.
    pub fn written(&self) -> String {
        let axes: Vec<String> = self.axes.iter().map(Axis::written).collect();
        format!("{}[{}]", self.dtype, axes.join(", "))
    }

    /// `f32[B, T, 256]`: sizes with config values filled in.
    pub fn values(&self) -> String {
        self.ir().to_string()
    }

    /// Both forms when they differ: `f32[B, T, n_embd] = f32[B, T, 256]`.
    pub fn describe(&self) -> String {
        let (w, v) = (self.written(), self.values());
        if w == v {
            w
        } else {
            format!("{w} = {v}")
        }
    }
}

/// Notes saying where each named axis of the given types got its size,
/// e.g. "`T` comes from gpt.kl:70:28"; one note per distinct name.
pub(crate) fn provenance(tys: &[&Ty], locate: &dyn Fn(Span) -> String) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    for ty in tys {
        for a in &ty.axes {
            let (Some(name), Some(origin)) = (&a.name, a.origin) else { continue };
            if seen.contains(name) {
                continue;
            }
            seen.push(name.clone());
            let mut s = format!("`{name}`");
            if a.size.to_string() != *name {
                write!(s, " (= {})", a.size).unwrap();
            }
            write!(s, " comes from {}", locate(origin)).unwrap();
            notes.push(s);
        }
    }
    notes
}
