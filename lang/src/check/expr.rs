//! Function bodies: signatures, statements, expressions and inlined calls.

use super::frame::Frame;
use super::scope::{const_eval, dim_checked, resolve_dim, resolve_known, suggest, DimBind, LayerSrc, LayerVal, Num, Scope, TVal, Val};
use super::ty::{Axis, Ty};
use super::{Checker, Fail, R};
use crate::ast::{self, ArgType, ExprKind as K, Span};
use crate::Diagnostic;
use kiln_ir::{BinaryOp, CmpOp, Constraint, DType, DimExpr, Function, Op, Relation, Truth, UnaryOp};
use std::collections::HashMap;

/// How deep inlined calls may nest: far beyond real models, and a bound
/// on the memory a pathological chain takes.
pub(crate) const MAX_CALL_DEPTH: usize = 10_000;

/// Stack left below which [`Checker::expr`] switches to a new segment: more
/// than the deepest walk between two of its calls (a builtin's frames).
const STACK_RED_ZONE: usize = 256 * 1024;

/// The size of each new stack segment.
const STACK_SEGMENT: usize = 4 * 1024 * 1024;

impl<'a> Checker<'a> {
    /// Lowers a `pub fn` to an IR entry point.
    pub fn entry(&mut self, def: &'a ast::FnDef) -> Option<Function> {
        self.frames.push(Frame::default());
        let r = self.entry_inner(def);
        let frame = self.frames.pop().expect("entry frame");
        match r {
            Ok((outputs, dim_vars, constraints)) => {
                let mut graph = frame.graph;
                graph.outputs = outputs;
                let output_names = match def.results.len() {
                    1 => vec![def.results[0].0.as_ref().map_or("out".to_string(), |n| n.name.clone())],
                    _ => def.results.iter().enumerate().map(|(i, (n, _))| n.as_ref().map_or(format!("out{i}"), |n| n.name.clone())).collect(),
                };
                let hidden = frame.seed.map(|_| kiln_ir::dropout::SEED_ARG.to_string());
                Some(Function {
                    name: def.name.name.clone(),
                    arg_names: def.args.iter().map(|a| a.name.name.clone()).chain(hidden).collect(),
                    arg_bounds: frame.bounds,
                    arg_ignore: frame.ignore,
                    output_names,
                    dim_vars,
                    constraints,
                    graph,
                })
            }
            Err(f) => {
                self.report(f);
                None
            }
        }
    }

    /// Checks a non-entry function on its own signature, discarding the graph.
    pub fn standalone(&mut self, def: &'a ast::FnDef) {
        self.elaborated.insert(def.name.name.clone());
        self.frames.push(Frame::default());
        if let Err(f) = self.entry_inner(def) {
            self.report(f);
        }
        self.frames.pop();
    }

    #[allow(clippy::type_complexity)]
    fn entry_inner(&mut self, def: &'a ast::FnDef) -> R<(Vec<kiln_ir::ValueId>, Vec<String>, Vec<Constraint>)> {
        let prog = self.prog;
        let mut free = Vec::new();
        let mut scope = Scope::default();
        for arg in &def.args {
            let val = match &arg.ty {
                ArgType::Tensor(t) => {
                    let dtype = dtype_of(&t.dtype)?;
                    let mut axes = Vec::new();
                    for d in &t.dims {
                        let (size, name) = resolve_dim(prog, &scope.dims, d, &mut free)?;
                        axes.push(Axis::declared(size, name, d));
                    }
                    let ty = Ty::new(dtype, axes).fits(t.span)?;
                    let frame = self.frames.last_mut().expect("frame");
                    let index = frame.graph.inputs.len();
                    frame.graph.inputs.push(ty.ir());
                    let id = frame.graph.push_tensor(Op::Input { index: index as u32 }, vec![], ty.ir());
                    frame.arg_of.insert(id, index);
                    frame.bounds.push(None);
                    frame.ignore.push(None);
                    Val::Tensor(TVal { id, depth: self.depth(), ty })
                }
                ArgType::Layer(l) => {
                    if def.public {
                        return Err(Diagnostic::new("E0219", format!("entry point `{}` takes a layer argument", def.name), l.span)
                            .help("a `pub fn` takes tensors only; it reads parameters by name. Remove `pub` to make it a helper")
                            .into());
                    }
                    if !prog.layers.contains_key(&l.name) {
                        return Err(prog.unknown_layer(l).into());
                    }
                    Val::Layer(LayerVal { layer: l.name.clone(), src: LayerSrc::Abstract, stacked: None })
                }
            };
            for (v, span) in &free {
                scope.dims.entry(v.clone()).or_insert(DimBind {
                    size: DimExpr::var(v),
                    caller_name: Some(v.clone()),
                    origin: Some(*span),
                });
            }
            self.bind_name(&mut scope, &arg.name, val)?;
        }
        let mut constraints = Vec::new();
        for w in &def.wheres {
            let (l, r, rel) = self.where_clause(&scope, w)?;
            let text = self.sources.snippet(w.span).split_whitespace().collect::<Vec<_>>().join(" ");
            let truth = match rel {
                Relation::Le => scope.facts.le(&l, &r),
                _ => scope.facts.eq(&l, &r),
            };
            match truth {
                Truth::True => {}
                Truth::False => {
                    let (a, _) = resolve_known(self.prog, &scope.dims, &w.lhs)?;
                    let (b, _) = resolve_known(self.prog, &scope.dims, &w.rhs)?;
                    return Err(Diagnostic::new("E0312", format!("`{text}` is always false"), w.span)
                        .note(format!("with config values it reads `{a} {} {b}`", cmp_text(w.op)))
                        .into())
                }
                Truth::Unknown => {
                    if rel == Relation::Le {
                        scope.facts.le.push((l.clone(), r.clone()));
                    }
                    let consts = [&w.lhs, &w.rhs].iter().flat_map(|d| d.names()).filter_map(|n| Some((n.to_string(), *prog.dims.get(n)?))).collect();
                    constraints.push(Constraint { lhs: l, rel, rhs: r, text, consts });
                }
            }
        }
        let results = self.body(def, &mut scope)?;
        Ok((results.iter().map(|t| t.id).collect(), free.into_iter().map(|(v, _)| v).collect(), constraints))
    }

    /// A `where` clause as `(lhs, rhs, relation)`; `<` and `>` become `<=`.
    fn where_clause(&self, scope: &Scope, w: &ast::WhereClause) -> R<(DimExpr, DimExpr, Relation)> {
        let (l, _) = resolve_known(self.prog, &scope.dims, &w.lhs)?;
        let (r, _) = resolve_known(self.prog, &scope.dims, &w.rhs)?;
        let one = DimExpr::constant(1);
        Ok(match w.op {
            ast::CmpOp::Le => (l, r, Relation::Le),
            ast::CmpOp::Lt => (dim_checked(l.checked_add(&one), || format!("`{l} + 1`"), w.span)?, r, Relation::Le),
            ast::CmpOp::Ge => (r, l, Relation::Le),
            ast::CmpOp::Gt => (dim_checked(r.checked_add(&one), || format!("`{r} + 1`"), w.span)?, l, Relation::Le),
            ast::CmpOp::Eq => (l, r, Relation::Eq),
            ast::CmpOp::Ne => {
                return Err(Diagnostic::new("E0220", "`!=` is not supported in `where` clauses", w.span)
                    .help("use `<`, `<=`, `==`, `>=` or `>`")
                    .into())
            }
        })
    }

    /// Runs a function body and checks its results against the signature,
    /// giving them the declared axis names (in the function's own terms).
    fn body(&mut self, def: &'a ast::FnDef, scope: &mut Scope) -> R<Vec<TVal>> {
        let mut ret: Option<(Val, Span)> = None;
        for (i, stmt) in def.body.iter().enumerate() {
            match stmt {
                ast::Stmt::Let { names, ty, value, .. } => self.let_stmt(scope, names, ty.as_ref(), value),
                ast::Stmt::Return(e, span) => {
                    if i + 1 != def.body.len() {
                        return Err(Diagnostic::new("E0211", "`return` must be the last statement", *span).into());
                    }
                    ret = Some((self.expr(e, scope)?, e.span));
                }
            }
        }
        let Some((val, span)) = ret else {
            return Err(Diagnostic::new("E0211", format!("function `{}` has no `return`", def.name), def.name.span)
                .help("end the body with `return <expr>`")
                .into());
        };
        let vals = match (val, def.results.len()) {
            (Val::Tuple(vs), n) if n > 1 => {
                if vs.len() != n {
                    return Err(Diagnostic::new("E0306", format!("`{}` returns {} values, its signature declares {n}", def.name, vs.len()), span).into());
                }
                vs
            }
            (v, 1) => vec![v],
            (_, n) => {
                return Err(Diagnostic::new("E0306", format!("`{}` must return a tuple of {n} values", def.name), span).into());
            }
        };
        let mut out = Vec::new();
        for (v, (_, t)) in vals.iter().zip(&def.results) {
            let declared = self.type_expr(scope, t)?;
            let tv = self.tensor(v, span, Some(declared.dtype))?;
            out.push(self.ascribe(scope, &tv, &declared, span, &format!("the result of `{}`", def.name))?);
        }
        Ok(out)
    }

    /// Resolves a type annotation with the dims in scope.
    pub fn type_expr(&self, scope: &Scope, t: &ast::TypeExpr) -> R<Ty> {
        let dtype = dtype_of(&t.dtype)?;
        let mut axes = Vec::new();
        for d in &t.dims {
            let (size, name) = resolve_known(self.prog, &scope.dims, d)?;
            axes.push(Axis::declared(size, name, d));
        }
        Ty::new(dtype, axes).fits(t.span)
    }

    /// Checks `v` against a declared type and renames its axes to the
    /// declared names (how a dim alias reaches an axis).
    pub fn ascribe(&mut self, scope: &Scope, v: &TVal, declared: &Ty, span: Span, what: &str) -> R<TVal> {
        let mismatch = |code: &'static str, why: String| -> Fail {
            Diagnostic::new(code, format!("{what} has type {}, expected {}", v.ty.written(), declared.written()), span)
                .label(v.ty.describe())
                .note(why)
                .note(format!("expected {}", declared.describe()))
                .into()
        };
        if v.ty.dtype != declared.dtype {
            return Err(mismatch("E0300", format!("dtype {} vs {}", v.ty.dtype, declared.dtype)));
        }
        if v.ty.rank() != declared.rank() {
            return Err(mismatch("E0305", format!("rank {} vs {}", v.ty.rank(), declared.rank())));
        }
        let mut axes = Vec::new();
        for (i, (a, d)) in v.ty.axes.iter().zip(&declared.axes).enumerate() {
            match scope.facts.eq(&a.size, &d.size) {
                Truth::True => axes.push(Axis::new(a.size.clone(), d.name.clone(), a.origin.or(d.origin))),
                Truth::False => return Err(mismatch("E0306", format!("axis {i}: `{}` vs `{}`", a.written(), d.written()))),
                Truth::Unknown => {
                    return Err(mismatch("E0303", format!("axis {i}: cannot prove `{} == {}`", a.size, d.size)))
                }
            }
        }
        Ok(TVal { ty: Ty::new(v.ty.dtype, axes), ..v.clone() })
    }

    pub fn let_stmt(&mut self, scope: &mut Scope, names: &[ast::Ident], ty: Option<&ast::TypeExpr>, value: &ast::Expr) {
        let r = (|| -> R<Vec<Val>> {
            let mut v = self.expr(value, scope)?;
            if let Some(t) = ty {
                let declared = self.type_expr(scope, t)?;
                let tv = self.tensor(&v, value.span, Some(declared.dtype))?;
                v = Val::Tensor(self.ascribe(scope, &tv, &declared, value.span, &format!("`{}`", names[0]))?);
            }
            if names.len() == 1 {
                return Ok(vec![v]);
            }
            match v {
                Val::Tuple(vs) if vs.len() == names.len() => Ok(vs),
                Val::Tuple(vs) => Err(Diagnostic::new("E0221", format!("{} names for a tuple of {} values", names.len(), vs.len()), value.span).into()),
                _ => Err(Diagnostic::new("E0221", format!("{} names for a single value", names.len()), value.span).into()),
            }
        })();
        match r {
            Ok(vals) => {
                self.diags.extend(super::program::duplicates(names));
                for (n, v) in names.iter().zip(vals) {
                    if let Err(f) = self.bind_name(scope, n, v) {
                        // Later uses of the name stay silent.
                        self.report(f);
                        scope.vars.insert(n.name.clone(), Val::Poison);
                    }
                }
            }
            Err(f) => {
                self.report(f);
                for n in names {
                    scope.vars.insert(n.name.clone(), Val::Poison);
                }
            }
        }
    }

    /// Binds a local name; builtins and dims cannot be shadowed.
    pub fn bind_name(&self, scope: &mut Scope, n: &ast::Ident, v: Val) -> R<()> {
        if super::program::is_reserved(&n.name) {
            return Err(Diagnostic::new("E0201", format!("`{}` is a builtin and cannot be rebound", n.name), n.span).into());
        }
        if scope.dims.contains_key(&n.name) || self.prog.dims.contains_key(&n.name) || self.prog.aliases.contains_key(&n.name) {
            return Err(Diagnostic::new("E0201", format!("`{}` is a dimension and cannot name a value", n.name), n.span).into());
        }
        scope.vars.insert(n.name.clone(), v);
        Ok(())
    }

    /// Elaborates an expression. Inlined calls nest this walk as deep as
    /// the call chain (up to [`MAX_CALL_DEPTH`]), so it moves to a fresh
    /// heap-allocated stack segment whenever the current one runs low.
    pub fn expr(&mut self, e: &ast::Expr, scope: &mut Scope) -> R<Val> {
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || self.expr_inner(e, scope))
    }

    fn expr_inner(&mut self, e: &ast::Expr, scope: &mut Scope) -> R<Val> {
        Ok(match &e.kind {
            K::Int(i) => Val::Weak(*i as f64, false),
            K::Float(f) => Val::Weak(*f, true),
            K::Bool(b) => Val::Tensor(self.konst(*b as u8 as f64, DType::Bool)),
            K::Name(n) => self.name(n, e.span, scope)?,
            K::DType(d) => {
                return Err(Diagnostic::new("E0209", format!("the dtype `{d}` is not a value"), e.span)
                    .help(format!("to convert, write `cast(x, {d})`"))
                    .into())
            }
            K::Field(base, field) => {
                let b = self.expr(base, scope)?;
                self.field(b, field, base.span)?
            }
            K::Binary(a, op, b) => {
                let x = (self.expr(a, scope)?, a.span);
                let y = (self.expr(b, scope)?, b.span);
                self.binary(scope, *op, x, y, e.span)?
            }
            K::Compare(a, op, b) => {
                let x = (self.expr(a, scope)?, a.span);
                let y = (self.expr(b, scope)?, b.span);
                let op = match op {
                    ast::CmpOp::Eq => CmpOp::Eq,
                    ast::CmpOp::Ne => CmpOp::Ne,
                    ast::CmpOp::Lt => CmpOp::Lt,
                    ast::CmpOp::Le => CmpOp::Le,
                    ast::CmpOp::Gt => CmpOp::Gt,
                    ast::CmpOp::Ge => CmpOp::Ge,
                };
                let span = self.between(x.1, y.1).unwrap_or(e.span);
                Val::Tensor(self.elementwise(scope, Op::Compare(op), &[x, y], Some(DType::Bool), "a comparison", span)?)
            }
            K::Unary(ast::UnOp::Neg, x) => match self.expr(x, scope)? {
                Val::Weak(v, f) => Val::Weak(-v, f),
                v => {
                    let t = self.tensor(&v, x.span, None)?;
                    if t.ty.dtype == DType::Bool {
                        return Err(Diagnostic::new("E0300", "cannot negate a bool tensor", e.span).help("use `not`").into());
                    }
                    Val::Tensor(self.emit(Op::Unary(UnaryOp::Neg), &[&t], t.ty.clone()))
                }
            },
            K::Unary(ast::UnOp::Not, x) => {
                let v = self.expr(x, scope)?;
                let t = self.tensor(&v, x.span, Some(DType::Bool))?;
                if t.ty.dtype != DType::Bool {
                    return Err(Diagnostic::new("E0300", format!("`not` needs a bool tensor, found {}", t.ty.dtype), x.span).into());
                }
                Val::Tensor(self.emit(Op::Unary(UnaryOp::Not), &[&t], t.ty.clone()))
            }
            K::Call { func, args, kwargs } => self.call(scope, func, args, kwargs, e.span)?,
            K::Index(base, items) => {
                let b = self.expr(base, scope)?;
                let t = self.tensor(&b, base.span, None)?;
                Val::Tensor(self.index(scope, t, base.span, items, e.span)?)
            }
            K::List(items) | K::Tuple(items) => {
                let mut vs = Vec::new();
                for it in items {
                    vs.push(self.expr(it, scope)?);
                }
                Val::Tuple(vs)
            }
            K::Einsum { operands, output } => Val::Tensor(self.einsum(scope, operands, output)?),
            K::Rearrange { input, from, to, sizes } => {
                let v = self.expr(input, scope)?;
                let t = self.tensor(&v, input.span, None)?;
                Val::Tensor(self.rearrange(scope, t, input.span, from, to, sizes, e.span)?)
            }
            K::Scan(s) => self.scan(scope, s, e.span)?,
        })
    }

    fn name(&mut self, n: &str, span: Span, scope: &Scope) -> R<Val> {
        let prog = self.prog;
        if let Some(v) = scope.vars.get(n) {
            return match v {
                Val::Poison => Err(Fail::Reported),
                v => Ok(v.clone()),
            };
        }
        if prog.failed.contains(n) {
            return Err(Fail::Reported);
        }
        if let Some(inst) = prog.instances.get(n) {
            return Ok(Val::Layer(LayerVal { layer: inst.layer.clone(), src: LayerSrc::Path(n.to_string()), stacked: inst.count }));
        }
        if let Some(&i) = prog.param_index.get(n) {
            return Ok(Val::Tensor(self.param(i)));
        }
        if let Some(c) = prog.lookup_const(n) {
            return Ok(match c {
                Num::Int(i) => Val::Weak(i as f64, false),
                Num::Float(f) => Val::Weak(f, true),
            });
        }
        if scope.dims.contains_key(n) || prog.aliases.contains_key(n) {
            return Err(Diagnostic::new("E0222", format!("the dimension `{n}` is not known until run time and cannot be used as a value"), span)
                .help("only config constants can be used as numbers; use `iota(...)` for positions")
                .into());
        }
        let cands = scope.vars.keys().chain(prog.param_index.keys()).chain(prog.instances.keys()).chain(prog.dims.keys()).chain(prog.scalars.keys());
        let mut d = Diagnostic::new("E0200", format!("unknown name `{n}`"), span);
        if let Some(s) = suggest(n, cands) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        Err(d.into())
    }

    /// A module parameter as a value in the current graph.
    fn param(&mut self, index: u32) -> TVal {
        let ty = self.prog.param_tys[index as usize].clone();
        self.emit(Op::Param { index }, &[], ty)
    }

    /// `layer.field`: a tensor parameter or a sub-layer.
    fn field(&mut self, base: Val, field: &ast::Ident, base_span: Span) -> R<Val> {
        let prog = self.prog;
        let l = match base {
            Val::Layer(l) => l,
            Val::Poison => return Err(Fail::Reported),
            _ => {
                return Err(Diagnostic::new("E0209", format!("`.{}` needs a layer on the left", field.name), base_span)
                    .label("this is not a layer")
                    .into())
            }
        };
        if l.stacked.is_some() {
            return Err(Diagnostic::new("E0223", format!("`{}` is a stack of layers; iterate it with `scan`", l.layer), base_span)
                .help("e.g. `scan blk in blocks with h = x { next h = block(blk, h) }`")
                .into());
        }
        let def = prog.layers[&l.layer];
        let Some(decl) = def.params.iter().find(|p| p.name.name == field.name) else {
            let names: Vec<String> = def.params.iter().map(|p| p.name.name.clone()).collect();
            let mut d = Diagnostic::new("E0212", format!("layer `{}` has no parameter `{}`", l.layer, field.name), field.span);
            d = match suggest(&field.name, names.iter()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!("its parameters are: {}", names.join(", "))),
            };
            return Err(d.into());
        };
        let sub = |path: &str| format!("{path}.{}", field.name);
        match &decl.kind {
            // the declaration's unknown layer may be reported already (when
            // it is instantiated); reading through it must not go further
            ast::ParamKind::Layer { layer, .. } if !prog.layers.contains_key(&layer.name) => Err(prog.unknown_layer(layer).into()),
            ast::ParamKind::Layer { layer, count } => Ok(Val::Layer(LayerVal {
                layer: layer.name.clone(),
                src: match &l.src {
                    LayerSrc::Path(p) => LayerSrc::Path(sub(p)),
                    LayerSrc::Bound(m, p) => LayerSrc::Bound(m.clone(), sub(p)),
                    LayerSrc::Abstract => LayerSrc::Abstract,
                },
                stacked: count.as_ref().and_then(|c| resolve_known(prog, &HashMap::new(), c).ok()).and_then(|(n, _)| n.as_const()),
            })),
            ast::ParamKind::Tensor { ty, .. } => match &l.src {
                LayerSrc::Path(p) => {
                    let i = prog.param_index.get(&sub(p)).copied().ok_or(Fail::Reported)?;
                    Ok(Val::Tensor(self.param(i)))
                }
                LayerSrc::Bound(m, p) => m.get(&sub(p)).cloned().map(Val::Tensor).ok_or(Fail::Reported),
                LayerSrc::Abstract => {
                    let ty = prog.param_ty(ty)?;
                    let frame = self.frames.last_mut().expect("frame");
                    let index = frame.graph.inputs.len() as u32;
                    frame.graph.inputs.push(ty.ir());
                    let id = frame.graph.push_tensor(Op::Input { index }, vec![], ty.ir());
                    Ok(Val::Tensor(TVal { id, depth: self.depth(), ty }))
                }
            },
        }
    }

    /// `a op b` for the arithmetic and logical operators.
    fn binary(&mut self, scope: &Scope, op: ast::BinOp, x: (Val, Span), y: (Val, Span), span: Span) -> R<Val> {
        if let (Val::Weak(a, fa), Val::Weak(b, fb)) = (&x.0, &y.0) {
            let (a, b, float) = (*a, *b, *fa || *fb);
            // Integer literals and config values: exact, never wrapped.
            if !float {
                if let Some(r) = super::scope::int_arith(op, a as i64, b as i64, span) {
                    return Ok(Val::Weak(r? as f64, false));
                }
            }
            let v = match op {
                ast::BinOp::Add => a + b,
                ast::BinOp::Sub => a - b,
                ast::BinOp::Mul => a * b,
                ast::BinOp::Div if float => a / b,
                ast::BinOp::Div if b == 0.0 => return Err(Diagnostic::new("E0224", "integer division by zero", span).into()),
                ast::BinOp::Div => (a / b).trunc(),
                ast::BinOp::Pow => a.powf(b),
                _ => return self.binary_tensor(scope, op, x, y, span).map(Val::Tensor),
            };
            return Ok(Val::Weak(v, float || matches!(op, ast::BinOp::Pow) && b < 0.0));
        }
        self.binary_tensor(scope, op, x, y, span).map(Val::Tensor)
    }

    fn binary_tensor(&mut self, scope: &Scope, op: ast::BinOp, x: (Val, Span), y: (Val, Span), span: Span) -> R<TVal> {
        let (bop, sym) = match op {
            ast::BinOp::MatMul => return self.matmul(scope, x, y, span),
            ast::BinOp::Add => (BinaryOp::Add, "`+`"),
            ast::BinOp::Sub => (BinaryOp::Sub, "`-`"),
            ast::BinOp::Mul => (BinaryOp::Mul, "`*`"),
            ast::BinOp::Div => (BinaryOp::Div, "`/`"),
            ast::BinOp::Pow => (BinaryOp::Pow, "`**`"),
            ast::BinOp::And => (BinaryOp::And, "`and`"),
            ast::BinOp::Or => (BinaryOp::Or, "`or`"),
        };
        let logical = matches!(op, ast::BinOp::And | ast::BinOp::Or);
        let span = self.between(x.1, y.1).unwrap_or(span);
        let r = self.elementwise(scope, Op::Binary(bop), &[x.clone(), y.clone()], None, sym, span)?;
        if logical != (r.ty.dtype == DType::Bool) {
            let want = if logical { "bool tensors" } else { "numbers, not bool" };
            return Err(Diagnostic::new("E0300", format!("{sym} needs {want}; found {}", r.ty.dtype), span).into());
        }
        Ok(r)
    }

    /// A user function call: checks the arguments against the signature,
    /// binds the callee's dims, inlines the body, and maps result axis
    /// names back to the caller's.
    pub fn call_user(&mut self, scope: &Scope, def: &'a ast::FnDef, args: Vec<(Val, Span)>, span: Span) -> R<Val> {
        let prog = self.prog;
        if args.len() != def.args.len() {
            return Err(Diagnostic::new("E0206", format!("`{}` takes {} arguments, {} given", def.name, def.args.len(), args.len()), span)
                .with(def.span, "defined here")
                .into());
        }
        if self.call_stack.len() >= MAX_CALL_DEPTH {
            if std::mem::replace(&mut self.too_deep, true) {
                return Err(Fail::Reported);
            }
            return Err(Diagnostic::new("E0229", format!("function calls nested more than {MAX_CALL_DEPTH} deep"), span)
                .note(format!("the innermost calls are {} -> {}", self.call_stack[self.call_stack.len() - 3..].join(" -> "), def.name))
                .help("flatten the call chain; express repetition with `scan`")
                .into());
        }
        if self.calling.contains(&def.name.name) {
            return Err(Diagnostic::new("E0213", format!("`{}` calls itself", def.name), span)
                .help("recursion is not supported; use `scan` for loops")
                .into());
        }
        let mut callee = Scope { facts: scope.facts.clone(), ..Scope::default() };
        // Pass 1: bind every dim written as a plain new name from the argument's axis.
        for (arg, (v, vspan)) in def.args.iter().zip(&args) {
            let ArgType::Tensor(t) = &arg.ty else { continue };
            let Val::Tensor(tv) = v else { continue };
            if tv.ty.rank() != t.dims.len() {
                continue;
            }
            for (d, a) in t.dims.iter().zip(&tv.ty.axes) {
                if let ast::DimExpr::Name(id) = d {
                    let n = &id.name;
                    let known = prog.dims.contains_key(n) || prog.aliases.contains_key(n) || callee.dims.contains_key(n);
                    if !known {
                        callee.dims.insert(n.clone(), DimBind { size: a.size.clone(), caller_name: a.name.clone(), origin: a.origin.or(Some(*vspan)) });
                    }
                }
            }
        }
        // Pass 2: check every argument fully and bind the names.
        for (arg, (v, vspan)) in def.args.iter().zip(args) {
            let what = format!("argument `{}` of `{}`", arg.name, def.name);
            let val = match (&arg.ty, v) {
                (_, Val::Poison) => return Err(Fail::Reported),
                (ArgType::Tensor(t), v) => {
                    let declared = match self.type_expr(&callee, t) {
                        Ok(d) => d,
                        Err(Fail::Diag(d)) if d.code == "E0200" => {
                            return Err(Diagnostic::new("E0225", format!("{what} has a dimension the arguments do not bind"), t.span)
                                .note(d.message.clone())
                                .into())
                        }
                        Err(e) => return Err(e),
                    };
                    let tv = self.tensor(&v, vspan, Some(declared.dtype))?;
                    Val::Tensor(self.ascribe(&callee, &tv, &declared, vspan, &what).map_err(|f| match f {
                        Fail::Diag(d) => Fail::Diag(Box::new(d.with(arg.name.span, "declared here"))),
                        f => f,
                    })?)
                }
                (ArgType::Layer(l), Val::Layer(lv)) if lv.layer == l.name && lv.stacked.is_none() => Val::Layer(lv),
                (ArgType::Layer(l), v) => {
                    let found = match v {
                        Val::Layer(lv) if lv.stacked.is_some() => format!("a stack of `{}` layers", lv.layer),
                        Val::Layer(lv) => format!("a `{}` layer", lv.layer),
                        _ => "a tensor".to_string(),
                    };
                    return Err(Diagnostic::new("E0209", format!("{what} must be a `{}` layer, found {found}", l.name), vspan)
                        .with(arg.name.span, "declared here")
                        .into());
                }
            };
            callee.vars.insert(arg.name.name.clone(), val);
        }
        for w in &def.wheres {
            let (l, r, rel) = self.where_clause(&callee, w)?;
            let truth = if rel == Relation::Le { scope.facts.le(&l, &r) } else { scope.facts.eq(&l, &r) };
            let text = self.sources.snippet(w.span).to_string();
            match truth {
                Truth::True => {}
                Truth::False => {
                    return Err(Diagnostic::new("E0312", format!("`{}` requires `{text}`, which is false here", def.name), span)
                        .with(w.span, "required here")
                        .note(format!("here it reads `{l}` vs `{r}`"))
                        .into())
                }
                Truth::Unknown => {
                    // The clause in the caller's names, where each callee dim has one.
                    let caller_text = rename_words(&text, &|w| callee.dims.get(w).and_then(|b| b.caller_name.clone()));
                    return Err(Diagnostic::new("E0319", format!("cannot prove `{caller_text}`, which `{}` requires", def.name), span)
                        .with(w.span, "required here")
                        .note(format!("with the sizes here it reads `{l}` vs `{r}`"))
                        .help(format!("add `where {caller_text}` to the calling function"))
                        .into())
                }
            }
            if rel == Relation::Le {
                callee.facts.le.push((l, r));
            }
        }
        self.elaborated.insert(def.name.name.clone());
        self.call_stack.push(def.name.name.clone());
        self.calling.insert(def.name.name.clone());
        let results = self.body(def, &mut callee);
        self.calling.remove(&def.name.name);
        self.call_stack.pop();
        let results = results?;
        let back = |t: TVal| -> TVal {
            let axes = t
                .ty
                .axes
                .iter()
                .map(|a| match a.name.as_ref().and_then(|n| callee.dims.get(n)) {
                    Some(b) => Axis::new(a.size.clone(), b.caller_name.clone(), b.origin),
                    None => a.clone(),
                })
                .collect();
            TVal { ty: Ty::new(t.ty.dtype, axes), ..t }
        };
        let mut vals: Vec<Val> = results.into_iter().map(|t| Val::Tensor(back(t))).collect();
        Ok(if vals.len() == 1 { vals.pop().expect("one result") } else { Val::Tuple(vals) })
    }
}

fn cmp_text(op: ast::CmpOp) -> &'static str {
    match op {
        ast::CmpOp::Eq => "==",
        ast::CmpOp::Ne => "!=",
        ast::CmpOp::Lt => "<",
        ast::CmpOp::Le => "<=",
        ast::CmpOp::Gt => ">",
        ast::CmpOp::Ge => ">=",
    }
}

/// Replaces each identifier in `text` for which `f` has a replacement.
fn rename_words(text: &str, f: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            out.push_str(&f(word).unwrap_or_else(|| word.clone()));
            word.clear();
        }
    };
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The dtype a type annotation names.
pub(crate) fn dtype_of(id: &ast::Ident) -> R<DType> {
    DType::from_name(&id.name).ok_or_else(|| {
        Diagnostic::new("E0203", format!("unknown dtype `{}`", id.name), id.span)
            .help("dtypes are f32, f16, bf16, i32, i64 and bool")
            .into()
    })
}

/// Folds a value expression that must be a constant (slice steps, counts,
/// keywords such as `eps:`). `what` names the argument, for the error when
/// a local value, a parameter or a run-time dimension is given instead.
pub(crate) fn eval_const(cx: &Checker, scope: &Scope, e: &ast::Expr, what: &str) -> R<Num> {
    const_eval(e, cx.prog).map_err(|f| {
        // Only "unknown name" means a non-constant name: say what it is.
        let d = match &f {
            Fail::Diag(d) if d.code == "E0200" => d,
            _ => return f,
        };
        let n = cx.sources.snippet(d.primary.span);
        let kind = match scope.vars.get(n) {
            Some(Val::Poison) => return Fail::Reported,
            Some(Val::Tensor(t)) => format!("a tensor ({})", t.ty.written()),
            Some(Val::Weak(..)) => "a local value".to_string(),
            Some(Val::Layer(_)) => "a layer".to_string(),
            Some(Val::Tuple(_)) => "a tuple".to_string(),
            None if cx.prog.param_index.contains_key(n) => "a parameter".to_string(),
            None if scope.dims.contains_key(n) || cx.prog.aliases.contains_key(n) => "a dimension known only at run time".to_string(),
            None => return f,
        };
        Diagnostic::new("E0217", format!("{what} must be a constant, but `{n}` is {kind}"), d.primary.span)
            .help("constants are numbers, config values and arithmetic on them; declare the value in `config { }`")
            .into()
    })
}
