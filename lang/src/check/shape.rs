//! Shape rules shared by many operations: equality of dims under the
//! function's facts, numpy broadcasting with the named-dims guard, and the
//! batched matrix product.

use super::scope::{Scope, TVal, Val};
use super::ty::{provenance, Axis, Ty};
use super::{Checker, Fail, R};
use crate::ast::Span;
use crate::Diagnostic;
use kiln_ir::{DType, DimExpr, Op, Truth};

impl Checker<'_> {
    /// Requires `a == b`; `what` describes the comparison for the message.
    pub fn require_eq(&self, scope: &Scope, a: &DimExpr, b: &DimExpr, span: Span, what: &str) -> R<()> {
        match scope.facts.eq(a, b) {
            Truth::True => Ok(()),
            Truth::False => Err(Diagnostic::new("E0306", format!("{what}: `{a}` is not `{b}`"), span).into()),
            Truth::Unknown => Err(Diagnostic::new("E0303", format!("{what}: cannot prove `{a} == {b}`"), span)
                .help("the sizes depend on values not known until run time; make them the same dimension in the signature")
                .into()),
        }
    }

    /// Requires `a <= b`; `texts` are the two sides as written, for the message.
    pub fn require_le(&self, scope: &Scope, a: &DimExpr, b: &DimExpr, texts: Option<(String, String)>, span: Span, what: &str) -> R<()> {
        let (x, y) = texts.unwrap_or_else(|| (a.to_string(), b.to_string()));
        match scope.facts.le(a, b) {
            Truth::True => Ok(()),
            Truth::False => Err(Diagnostic::new("E0312", format!("{what}: `{x} <= {y}` is false"), span).note(format!("`{a} <= {b}`")).into()),
            Truth::Unknown => Err(Diagnostic::new("E0311", format!("{what}: cannot prove `{x} <= {y}`"), span)
                .help(format!("state it in the function signature: `where {x} <= {y}`"))
                .into()),
        }
    }

    /// A tensor operand (materializing weak scalars as `dtype`, or the
    /// default f32/i64 when none is given).
    pub fn tensor(&mut self, v: &Val, span: Span, dtype: Option<DType>) -> R<TVal> {
        match v {
            Val::Tensor(t) => Ok(t.clone()),
            Val::Weak(x, is_float) => {
                let d = dtype.unwrap_or(if *is_float { DType::F32 } else { DType::I64 });
                Ok(self.konst(*x, d))
            }
            Val::Poison => Err(Fail::Reported),
            Val::Layer(l) => Err(Diagnostic::new("E0209", format!("expected a tensor, found the layer `{}`", l.layer), span)
                .help("use one of its parameters, e.g. `p.w`")
                .into()),
            Val::Tuple(t) => Err(Diagnostic::new("E0209", format!("expected a tensor, found a tuple of {} values", t.len()), span)
                .help("destructure it first: `let a, b = ...`")
                .into()),
        }
    }

    /// Tensor operands with a common dtype; weak scalars take it.
    pub fn unify_dtypes(&mut self, vals: &[(Val, Span)], what: &str) -> R<Vec<TVal>> {
        let mut dtype: Option<(DType, Span, String)> = None;
        for (v, span) in vals {
            match v {
                Val::Tensor(t) => match &dtype {
                    None => dtype = Some((t.ty.dtype, *span, t.ty.describe())),
                    Some((d, first, first_ty)) if *d != t.ty.dtype => {
                        return Err(Diagnostic::new("E0300", format!("dtypes differ in {what}: {d} and {}", t.ty.dtype), *span)
                            .label(format!("this is {}", t.ty.describe()))
                            .with(*first, format!("this is {first_ty}"))
                            .help(format!("convert one side explicitly, e.g. `cast(x, {d})`"))
                            .into())
                    }
                    _ => {}
                },
                Val::Weak(..) => {}
                other => {
                    self.tensor(other, *span, None)?;
                }
            }
        }
        let d = dtype.map(|d| d.0);
        vals.iter().map(|(v, s)| self.tensor(v, *s, d)).collect()
    }

    /// Numpy broadcasting of several operand types, refusing a size-1 axis
    /// that would expand into a dim its own operand already has elsewhere
    /// (`[B, 1] + [B]` silently becoming `[B, B]`).
    pub fn broadcast_axes(&self, scope: &Scope, ops: &[(&Ty, Span)], what: &str, span: Span) -> R<Vec<Axis>> {
        let rank = ops.iter().map(|(t, _)| t.rank()).max().unwrap_or(0);
        let mut out: Vec<Axis> = Vec::with_capacity(rank);
        // (operand, name) for each size-1 axis stretched to a named dim.
        let mut expanded: Vec<(usize, String)> = Vec::new();
        for i in 0..rank {
            // i counts from the left of the result; operand axes align right.
            let present: Vec<(usize, &Axis)> = ops
                .iter()
                .enumerate()
                .filter_map(|(k, (t, _))| (i + t.rank()).checked_sub(rank).map(|j| (k, &t.axes[j])))
                .collect();
            let is_one = |a: &Axis| a.size.as_const() == Some(1);
            let mut res = present.iter().find(|(_, a)| !is_one(a)).or(present.first()).map(|(_, a)| (*a).clone()).expect("some operand has the axis");
            for (k, a) in &present {
                if is_one(a) && !is_one(&res) {
                    if let Some(n) = &res.name {
                        expanded.push((*k, n.clone()));
                    }
                    continue;
                }
                match scope.facts.eq(&a.size, &res.size) {
                    Truth::True => {
                        if res.name.is_none() {
                            res.name = a.name.clone();
                            res.origin = a.origin;
                        }
                    }
                    t => {
                        let mut d = Diagnostic::new(
                            if t == Truth::False { "E0301" } else { "E0303" },
                            format!("shapes do not broadcast in {what}"),
                            span,
                        );
                        for (ty, s) in ops {
                            d = d.with(*s, ty.describe());
                        }
                        let tys: Vec<&Ty> = ops.iter().map(|(t, _)| *t).collect();
                        d = d.note(format!(
                            "axis -{}: `{}` vs `{}`{}",
                            rank - i,
                            res.written(),
                            a.written(),
                            if t == Truth::Unknown { ", which may differ at run time" } else { "" }
                        ));
                        for n in provenance(&tys, &|s| self.locate(s)) {
                            d = d.note(n);
                        }
                        return Err(d.into());
                    }
                }
            }
            out.push(res);
        }
        // The guard: a stretched size-1 axis may not add an axis named like
        // one the result already has more often than any operand has it.
        let count = |axes: &[Axis], n: &str| axes.iter().filter(|a| a.name.as_deref() == Some(n)).count();
        for (k, n) in &expanded {
            if count(&out, n) > ops.iter().map(|(t, _)| count(&t.axes, n)).max().unwrap_or(0) {
                let (t, s) = ops[*k];
                return Err(Diagnostic::new("E0302", format!("broadcasting in {what} would make a second `{n}` axis out of a size-1 axis"), s)
                    .label(format!("{} already has an axis `{n}`", t.describe()))
                    .note(format!("the result would be {}", Ty::new(t.dtype, out.clone()).written()))
                    .help(format!("if a new `{n}` axis is intended, write it explicitly with `expand(x, [...])`"))
                    .into());
            }
        }
        Ok(out)
    }

    /// An elementwise op over broadcast operands of one dtype. `out` is the
    /// result dtype when it differs from the operands' (comparisons).
    pub fn elementwise(&mut self, scope: &Scope, op: Op, vals: &[(Val, Span)], out: Option<DType>, what: &str, span: Span) -> R<TVal> {
        let ts = self.unify_dtypes(vals, what)?;
        let tys: Vec<(&Ty, Span)> = ts.iter().zip(vals).map(|(t, (_, s))| (&t.ty, *s)).collect();
        let axes = self.broadcast_axes(scope, &tys, what, span)?;
        let bs: Vec<TVal> = ts.iter().map(|t| self.broadcast(t, &axes)).collect();
        let refs: Vec<&TVal> = bs.iter().collect();
        let dtype = out.unwrap_or(ts[0].ty.dtype);
        Ok(self.emit(op, &refs, Ty::new(dtype, axes)))
    }

    /// `a @ b`: numpy matmul semantics (1-d operands gain and lose a unit
    /// axis; batch axes broadcast).
    pub fn matmul(&mut self, scope: &Scope, a: (Val, Span), b: (Val, Span), span: Span) -> R<TVal> {
        let span = self.between(a.1, b.1).unwrap_or(span);
        let ts = self.unify_dtypes(&[a.clone(), b.clone()], "`@`")?;
        let (mut x, mut y) = (ts[0].clone(), ts[1].clone());
        if !x.ty.dtype.is_float() {
            return Err(Diagnostic::new("E0300", format!("`@` needs float tensors, found {}", x.ty.dtype), span).into());
        }
        for (t, s) in [(&x, a.1), (&y, b.1)] {
            if t.ty.rank() == 0 {
                return Err(Diagnostic::new("E0305", "`@` needs tensors of rank 1 or more", s)
                    .label(format!("this is a scalar {}", t.ty.describe()))
                    .help("multiply by a scalar with `*`")
                    .into());
            }
        }
        let (xv, yv) = (x.ty.rank() == 1, y.ty.rank() == 1);
        if xv {
            let mut ax = vec![Axis::unnamed(DimExpr::constant(1))];
            ax.extend(x.ty.axes.clone());
            x = self.reshape(&x, ax);
        }
        if yv {
            let mut ax = y.ty.axes.clone();
            ax.push(Axis::unnamed(DimExpr::constant(1)));
            y = self.reshape(&y, ax);
        }
        let (xr, yr) = (x.ty.rank(), y.ty.rank());
        if yr == 2 && xr > 2 {
            // A shared weight: fold the batch axes into the rows instead of
            // broadcasting the weight (what every GEMM library wants).
            return self.matmul_folded(scope, x, y, (a.1, b.1), span, (xv, yv));
        }
        let (k1, k2) = (&x.ty.axes[xr - 1], &y.ty.axes[yr - 2]);
        self.require_contracted(scope, &x, &y, k1, k2, (a.1, b.1), span)?;
        let xb = Ty::new(x.ty.dtype, x.ty.axes[..xr - 2].to_vec());
        let yb = Ty::new(y.ty.dtype, y.ty.axes[..yr - 2].to_vec());
        let batch = self.broadcast_axes(scope, &[(&xb, a.1), (&yb, b.1)], "the batch axes of `@`", span)?;
        let with = |tail: &[Axis]| -> Vec<Axis> { batch.iter().cloned().chain(tail.iter().cloned()).collect() };
        let xa = with(&x.ty.axes[xr - 2..]);
        let ya = with(&y.ty.axes[yr - 2..]);
        let x = self.broadcast(&x, &xa);
        let y = self.broadcast(&y, &ya);
        let mut out = batch.clone();
        out.push(x.ty.axes[x.ty.rank() - 2].clone());
        out.push(y.ty.axes[y.ty.rank() - 1].clone());
        let r = self.emit(Op::MatMul, &[&x, &y], Ty::new(x.ty.dtype, out));
        let mut axes = r.ty.axes.clone();
        if yv {
            axes.pop();
        }
        if xv {
            axes.remove(axes.len() - 1 - (!yv) as usize);
        }
        Ok(self.reshape(&r, axes))
    }

    /// `x[..., m, k] @ y[k, n]` as `reshape(x, [rows, k]) @ y`, reshaped back.
    fn matmul_folded(&mut self, scope: &Scope, x: TVal, y: TVal, spans: (Span, Span), span: Span, vecs: (bool, bool)) -> R<TVal> {
        let xr = x.ty.rank();
        let (k1, k2) = (&x.ty.axes[xr - 1], &y.ty.axes[0]);
        self.require_contracted(scope, &x, &y, k1, k2, spans, span)?;
        let rows = x.ty.axes[..xr - 1].iter().fold(DimExpr::constant(1), |p, a| p.mul(&a.size));
        let flat = self.reshape(&x, vec![Axis::unnamed(rows), k1.clone()]);
        let n = y.ty.axes[1].clone();
        let m = self.emit(Op::MatMul, &[&flat, &y], Ty::new(x.ty.dtype, vec![flat.ty.axes[0].clone(), n.clone()]));
        let mut axes: Vec<Axis> = x.ty.axes[..xr - 1].to_vec();
        if !vecs.1 {
            axes.push(n);
        }
        if vecs.0 {
            axes.remove(axes.len() - 1 - (!vecs.1) as usize);
        }
        Ok(self.reshape(&m, axes))
    }

    /// Requires the contracted dims of `@` to be equal.
    #[allow(clippy::too_many_arguments)]
    fn require_contracted(&self, scope: &Scope, x: &TVal, y: &TVal, k1: &Axis, k2: &Axis, spans: (Span, Span), span: Span) -> R<()> {
        let t = scope.facts.eq(&k1.size, &k2.size);
        if t == Truth::True {
            return Ok(());
        }
        let mut d = Diagnostic::new(if t == Truth::Unknown { "E0303" } else { "E0304" }, "contracted dims differ in `@`", span)
            .with(spans.0, x.ty.describe())
            .with(spans.1, y.ty.describe())
            .note(format!("`{}` (last axis of the left) vs `{}` (second to last of the right)", k1.written(), k2.written()));
        for n in provenance(&[&x.ty, &y.ty], &|s| self.locate(s)) {
            d = d.note(n);
        }
        Err(d.help("transpose one operand, or check the weight's shape").into())
    }
}
