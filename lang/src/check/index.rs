//! `x[...]`: integer positions, slices `a:b:c`, `...`, and gather by an
//! integer tensor (`wte[tokens]`, an embedding lookup).

use super::scope::{Scope, TVal, Val};
use super::ty::{Axis, Ty};
use super::{Checker, R};
use crate::ast::{self, ExprKind as K, IndexItem, Span};
use crate::Diagnostic;
use kiln_ir::{DimExpr, Op};

impl Checker<'_> {
    pub fn index(&mut self, scope: &mut Scope, x: TVal, base_span: Span, items: &[IndexItem], span: Span) -> R<TVal> {
        let rank = x.ty.rank();
        let ellipses = items.iter().filter(|i| matches!(i, IndexItem::Ellipsis(_))).count();
        let given = items.len() - ellipses;
        if ellipses > 1 || given > rank {
            let why = if ellipses > 1 { "only one `...` is allowed".to_string() } else { format!("{given} indices for a tensor of rank {rank}") };
            return Err(Diagnostic::new("E0314", why, span).with(base_span, x.ty.describe()).into());
        }
        // One item per axis: `...` and the missing tail become full slices.
        let mut per_axis: Vec<Option<&IndexItem>> = Vec::new();
        for it in items {
            match it {
                IndexItem::Ellipsis(_) => per_axis.extend(std::iter::repeat_n(None, rank - given)),
                it => per_axis.push(Some(it)),
            }
        }
        per_axis.resize(rank, None);

        let mut cur = x.clone();
        let mut dropped = Vec::new();
        let mut gather: Option<(usize, TVal)> = None;
        for (i, item) in per_axis.into_iter().enumerate() {
            let axis = cur.ty.axes[i].clone();
            let Some(item) = item else { continue };
            match item {
                IndexItem::Range { start, end, step, span } => {
                    let start_d = match start {
                        Some(e) => self.bound(scope, e, &axis.size)?,
                        None => DimExpr::default(),
                    };
                    let (end_d, end_name) = match end {
                        Some(e) => (self.bound(scope, e, &axis.size)?, self.dim_arg(scope, e).ok().and_then(|d| d.1)),
                        None => (axis.size.clone(), axis.name.clone()),
                    };
                    let step = match step {
                        Some(e) => match super::expr::eval_const(self, scope, e, "a slice step")? {
                            super::scope::Num::Int(s) if s >= 1 => s,
                            _ => return Err(Diagnostic::new("E0314", "a slice step must be a positive integer", e.span).into()),
                        },
                        None => 1,
                    };
                    let end_txt = end.as_ref().map_or(axis.written(), |e| self.sources.snippet(e.span).to_string());
                    self.require_le(scope, &DimExpr::default(), &start_d, None, *span, "the slice starts inside the axis")?;
                    self.require_le(scope, &start_d, &end_d, None, *span, "the slice is not reversed")?;
                    let texts = Some((end_txt, axis.written()));
                    self.require_le(scope, &end_d, &axis.size, texts, *span, &format!("the slice ends inside the axis `{}`", axis.written()))?;
                    if start_d == DimExpr::default() && end_d == axis.size && step == 1 {
                        continue;
                    }
                    let len = end_d.sub(&start_d).add(&DimExpr::constant(step - 1)).floor_div(step);
                    let name = if start_d == DimExpr::default() && step == 1 { end_name } else { None };
                    let mut axes = cur.ty.axes.clone();
                    axes[i] = Axis::new(len, name, Some(*span));
                    cur = self.emit(Op::Slice { axis: i as u32, start: start_d, end: end_d, step: step as u32 }, &[&cur], Ty::new(cur.ty.dtype, axes));
                }
                IndexItem::At(e) => match self.expr(e, scope)? {
                    Val::Weak(v, false) => {
                        let pos = self.bound(scope, e, &axis.size).unwrap_or_else(|_| DimExpr::constant(v as i64));
                        self.require_le(scope, &DimExpr::default(), &pos, None, e.span, "the index is not negative")?;
                        self.require_le(scope, &pos.add(&DimExpr::constant(1)), &axis.size, None, e.span, &format!("the index is inside the axis `{}`", axis.written()))?;
                        let mut axes = cur.ty.axes.clone();
                        axes[i] = Axis::unnamed(DimExpr::constant(1));
                        let end = pos.add(&DimExpr::constant(1));
                        cur = self.emit(Op::Slice { axis: i as u32, start: pos, end, step: 1 }, &[&cur], Ty::new(cur.ty.dtype, axes));
                        dropped.push(i);
                    }
                    Val::Tensor(t) if t.ty.dtype.is_int() => {
                        if gather.is_some() {
                            return Err(Diagnostic::new("E0314", "only one tensor index is supported", e.span).into());
                        }
                        gather = Some((i, t));
                    }
                    other => {
                        let t = self.tensor(&other, e.span, None)?;
                        return Err(Diagnostic::new("E0318", format!("an index must be an integer or an integer tensor, found {}", t.ty.describe()), e.span).into());
                    }
                },
                IndexItem::Ellipsis(_) => unreachable!("expanded above"),
            }
        }
        if let Some((axis, idx)) = gather {
            let size = cur.ty.axes[axis].size.clone();
            self.note_index_bound(&idx, &size);
            let mut axes: Vec<Axis> = cur.ty.axes[..axis].to_vec();
            axes.extend(idx.ty.axes.iter().cloned());
            axes.extend(cur.ty.axes[axis + 1..].iter().cloned());
            let shift = idx.ty.rank() as isize - 1;
            cur = self.emit(Op::Gather { axis: axis as u32 }, &[&cur, &idx], Ty::new(cur.ty.dtype, axes));
            // Dropped axes after the gathered one moved by the index's rank.
            for d in dropped.iter_mut() {
                if *d > axis {
                    *d = (*d as isize + shift) as usize;
                }
            }
        }
        if !dropped.is_empty() {
            let axes = cur.ty.axes.iter().enumerate().filter(|(i, _)| !dropped.contains(i)).map(|(_, a)| a.clone()).collect();
            cur = self.reshape(&cur, axes);
        }
        Ok(cur)
    }

    /// A slice bound or position as a dim; a negative constant counts from
    /// the end of the axis.
    fn bound(&self, scope: &Scope, e: &ast::Expr, size: &DimExpr) -> R<DimExpr> {
        let neg = match &e.kind {
            K::Unary(ast::UnOp::Neg, x) => Some(x),
            _ => None,
        };
        if let Some(x) = neg {
            let (d, _) = self.dim_arg(scope, x)?;
            return Ok(size.sub(&d));
        }
        Ok(self.dim_arg(scope, e)?.0)
    }
}
