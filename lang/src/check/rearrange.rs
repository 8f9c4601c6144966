//! `rearrange(x, b t (h d) -> b h t d, h: n_head)`: einops patterns, parsed
//! by the grammar and checked here, divisibility included, then lowered to
//! reshape, transpose, reshape.

use super::scope::{resolve_known, Scope, TVal};
use super::ty::Axis;
use super::{Checker, R};
use crate::ast::{self, PatternAxis, Span};
use crate::Diagnostic;
use kiln_ir::DimExpr;
use std::collections::HashMap;

fn axis_span(p: &PatternAxis) -> Span {
    match p {
        PatternAxis::Name(i) => i.span,
        PatternAxis::Group(_, s) | PatternAxis::Unit(s) => *s,
    }
}

impl Checker<'_> {
    #[allow(clippy::too_many_arguments)]
    pub fn rearrange(
        &mut self,
        scope: &mut Scope,
        x: TVal,
        x_span: Span,
        from: &[PatternAxis],
        to: &[PatternAxis],
        sizes: &[(ast::Ident, ast::DimExpr)],
        span: Span,
    ) -> R<TVal> {
        let pat_span = |p: &[PatternAxis]| p.first().map(|a| axis_span(a).to(axis_span(p.last().expect("non-empty")))).unwrap_or(span);
        if from.len() != x.ty.rank() {
            return Err(Diagnostic::new("E0316", format!("the pattern has {} axes, the tensor has {}", from.len(), x.ty.rank()), pat_span(from))
                .with(x_span, x.ty.describe())
                .into());
        }
        super::program::unique(sizes.iter().map(|(l, _)| l))?;
        let mut given: HashMap<&str, (DimExpr, Option<String>, Span)> = HashMap::new();
        for (l, d) in sizes {
            let (size, name) = resolve_known(self.prog, &scope.dims, d)?;
            given.insert(&l.name, (size, name, l.span));
        }
        // Each left letter's axis, in order.
        let mut letters: Vec<(String, Axis)> = Vec::new();
        let add = |cx: &Self, id: &ast::Ident, axis: Axis, letters: &mut Vec<(String, Axis)>| -> R<()> {
            if letters.iter().any(|(l, _)| *l == id.name) {
                return Err(Diagnostic::new("E0316", format!("`{}` appears twice on the left of the pattern", id.name), id.span).into());
            }
            if let Some((size, _, s)) = given.get(id.name.as_str()) {
                cx.require_eq(scope, &axis.size, size, *s, &format!("the size given for `{}`", id.name))?;
            }
            letters.push((id.name.clone(), axis));
            Ok(())
        };
        for (p, axis) in from.iter().zip(&x.ty.axes) {
            match p {
                PatternAxis::Name(id) => add(self, id, axis.clone(), &mut letters)?,
                PatternAxis::Unit(s) => self.require_eq(scope, &axis.size, &DimExpr::constant(1), *s, "a `1` in the pattern")?,
                PatternAxis::Group(ids, gspan) => {
                    let unknown: Vec<&ast::Ident> = ids.iter().filter(|i| !given.contains_key(i.name.as_str())).collect();
                    let known = ids.iter().filter_map(|i| given.get(i.name.as_str())).try_fold(DimExpr::constant(1), |p, g| p.checked_mul(&g.0));
                    let known = super::scope::dim_checked(known, || "the product of the group's sizes".to_string(), *gspan)?;
                    let inferred = match unknown.as_slice() {
                        [] => {
                            self.require_eq(scope, &known, &axis.size, *gspan, "the group's sizes multiply to the axis")?;
                            None
                        }
                        [one] => {
                            let q = known.as_const().and_then(|k| axis.size.div_exact(k)).ok_or_else(|| {
                                let given_txt: Vec<String> = ids.iter().filter_map(|i| given.get(i.name.as_str()).map(|g| format!("{} = {}", i.name, g.0))).collect();
                                Diagnostic::new("E0310", format!("cannot split axis `{}` into `({})`", axis.written(), ids.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(" ")), *gspan)
                                    .note(format!("the axis has size {}, which is not divisible by {known} ({})", axis.size, given_txt.join(", ")))
                            })?;
                            Some((one.name.clone(), q))
                        }
                        _ => {
                            return Err(Diagnostic::new("E0316", format!("cannot infer the sizes of both `{}` and `{}`", unknown[0].name, unknown[1].name), *gspan)
                                .help(format!("give one of them: `{}: ...`", unknown[0].name))
                                .into())
                        }
                    };
                    for id in ids {
                        let (size, name) = match given.get(id.name.as_str()) {
                            Some((s, n, _)) => (s.clone(), n.clone()),
                            None => (inferred.as_ref().expect("one unknown").1.clone(), None),
                        };
                        let name = if self.prog.dims.contains_key(&id.name) || scope.dims.contains_key(&id.name) { Some(id.name.clone()) } else { name };
                        add(self, id, Axis::new(size, name, Some(id.span)), &mut letters)?;
                    }
                }
            }
        }
        if let Some((l, (_, _, s))) = given.iter().find(|(l, _)| !letters.iter().any(|(x, _)| x == *l)) {
            return Err(Diagnostic::new("E0316", format!("`{l}` is given a size but is not in the pattern"), *s).into());
        }
        // The right side: every left letter exactly once, units allowed.
        let mut seen: Vec<String> = Vec::new();
        let mut order = Vec::new();
        let mut out_axes = Vec::new();
        let use_letter = |id: &ast::Ident, seen: &mut Vec<String>| -> R<(usize, Axis)> {
            let Some(i) = letters.iter().position(|(l, _)| *l == id.name) else {
                return Err(Diagnostic::new("E0316", format!("`{}` is not on the left of the pattern", id.name), id.span)
                    .help("rearrange only moves, splits and merges axes; use `expand` to add one")
                    .into());
            };
            if seen.contains(&letters[i].0) {
                return Err(Diagnostic::new("E0316", format!("`{}` appears twice on the right of the pattern", id.name), id.span).into());
            }
            seen.push(letters[i].0.clone());
            Ok((i, letters[i].1.clone()))
        };
        for p in to {
            match p {
                PatternAxis::Name(id) => {
                    let (i, a) = use_letter(id, &mut seen)?;
                    order.push(i);
                    out_axes.push(a);
                }
                PatternAxis::Unit(_) => out_axes.push(Axis::unnamed(DimExpr::constant(1))),
                PatternAxis::Group(ids, gspan) => {
                    let mut size = DimExpr::constant(1);
                    for id in ids {
                        let (i, a) = use_letter(id, &mut seen)?;
                        order.push(i);
                        size = size.mul(&a.size);
                    }
                    out_axes.push(Axis::new(size, None, Some(*gspan)));
                }
            }
        }
        if let Some((l, _)) = letters.iter().find(|(l, _)| !seen.contains(l)) {
            return Err(Diagnostic::new("E0316", format!("`{l}` disappears on the right of the pattern"), pat_span(to))
                .help("rearrange keeps every element; reduce it first with `sum`/`mean`, or index it")
                .into());
        }
        let split = self.reshape(&x, letters.iter().map(|(_, a)| a.clone()).collect());
        let moved = self.transpose(&split, &order);
        Ok(self.reshape(&moved, out_axes))
    }
}
