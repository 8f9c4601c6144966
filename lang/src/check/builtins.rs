//! Builtin functions: math, reductions, normalizations, shape changes,
//! masks and losses. Each takes its arguments unevaluated, because some
//! are dims, axes or dtypes rather than values.

use super::expr::eval_const;
use super::scope::{resolve_known, Scope, TVal, Val};
use super::ty::{Axis, Ty};
use super::{Checker, Fail, R};
use crate::ast::{self, ExprKind as K, Span};
use crate::Diagnostic;
use kiln_ir::{BinaryOp, CmpOp, DType, DimExpr, Op, ReduceOp, Truth, UnaryOp};

/// Every builtin's name, for "is this name taken" and suggestions.
const BUILTINS: &[&str] = &[
    "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "gelu", "gelu_tanh", "silu", "erf", "sin", "cos", "abs",
    "pow", "maximum", "minimum", "sum", "mean", "max", "min", "argmax", "softmax", "log_softmax", "layernorm",
    "rmsnorm", "transpose", "permute", "reshape", "expand", "unsqueeze", "squeeze", "concat", "split", "where",
    "cast", "one_hot", "iota", "arange", "tril", "triu", "zeros", "ones", "full", "cross_entropy", "mse", "dropout",
];

/// True for the names of builtin functions.
pub(crate) fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

/// A call's arguments, unevaluated.
pub(crate) struct Args<'e> {
    pub name: &'e str,
    pub pos: &'e [ast::Expr],
    pub kw: &'e [(ast::Ident, ast::Expr)],
    pub span: Span,
}

impl<'e> Args<'e> {
    /// Checks the positional count and the keyword names.
    fn expect(&self, min: usize, max: usize, kws: &[&str]) -> R<()> {
        if self.pos.len() < min || self.pos.len() > max {
            let n = if min == max { format!("{min}") } else { format!("{min} to {max}") };
            return Err(Diagnostic::new("E0206", format!("`{}` takes {n} positional argument{}, {} given", self.name, if max == 1 { "" } else { "s" }, self.pos.len()), self.span).into());
        }
        super::program::unique(self.kw.iter().map(|(k, _)| k))?;
        for (k, _) in self.kw {
            if !kws.contains(&k.name.as_str()) {
                let help = if kws.is_empty() { "it takes no keyword arguments".to_string() } else { format!("its keyword arguments are: {}", kws.join(", ")) };
                return Err(Diagnostic::new("E0207", format!("`{}` has no keyword argument `{}`", self.name, k.name), k.span).help(help).into());
            }
        }
        Ok(())
    }

    fn kw(&self, name: &str) -> Option<&'e ast::Expr> {
        self.kw.iter().find(|(k, _)| k.name == name).map(|(_, e)| e)
    }
}

impl<'a> Checker<'a> {
    /// A call: a user function if one has the name, else a builtin.
    pub fn call(&mut self, scope: &mut Scope, func: &ast::Ident, pos: &[ast::Expr], kw: &[(ast::Ident, ast::Expr)], span: Span) -> R<Val> {
        let prog = self.prog;
        if let Some(def) = prog.fns.get(&func.name).copied() {
            if let Some((k, _)) = kw.first() {
                return Err(Diagnostic::new("E0207", format!("`{}` takes no keyword arguments", func.name), k.span).into());
            }
            let mut args = Vec::new();
            for a in pos {
                args.push((self.expr(a, scope)?, a.span));
            }
            return self.call_user(scope, def, args, span);
        }
        let a = Args { name: &func.name, pos, kw, span: func.span };
        self.builtin(scope, &a).map_err(|f| match f {
            Fail::Diag(d) if d.code == "E0299" => {
                let cands: Vec<String> = BUILTINS.iter().map(|s| s.to_string()).chain(prog.fns.keys().cloned()).collect();
                let mut d = Diagnostic::new("E0205", format!("unknown function `{}`", func.name), func.span);
                if let Some(s) = super::scope::suggest(&func.name, cands.iter()) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                d.into()
            }
            f => f,
        })
    }

    fn arg(&mut self, scope: &mut Scope, e: &ast::Expr) -> R<(Val, Span)> {
        Ok((self.expr(e, scope)?, e.span))
    }

    fn arg_tensor(&mut self, scope: &mut Scope, e: &ast::Expr) -> R<TVal> {
        let v = self.expr(e, scope)?;
        self.tensor(&v, e.span, None)
    }

    fn float_tensor(&mut self, scope: &mut Scope, e: &ast::Expr, what: &str) -> R<TVal> {
        let t = self.arg_tensor(scope, e)?;
        if !t.ty.dtype.is_float() {
            return Err(Diagnostic::new("E0300", format!("`{what}` needs a float tensor, found {}", t.ty.describe()), e.span)
                .help("convert with `cast(x, f32)`")
                .into());
        }
        Ok(t)
    }

    fn builtin(&mut self, scope: &mut Scope, a: &Args) -> R<Val> {
        let unary = |n: &str| -> Option<(UnaryOp, Option<fn(f64) -> f64>)> {
            Some(match n {
                "exp" => (UnaryOp::Exp, Some(f64::exp)),
                "log" => (UnaryOp::Log, Some(f64::ln)),
                "sqrt" => (UnaryOp::Sqrt, Some(f64::sqrt)),
                "rsqrt" => (UnaryOp::Rsqrt, Some(|x: f64| 1.0 / x.sqrt())),
                "tanh" => (UnaryOp::Tanh, Some(f64::tanh)),
                "sigmoid" => (UnaryOp::Sigmoid, Some(|x: f64| 1.0 / (1.0 + (-x).exp()))),
                "relu" => (UnaryOp::Relu, Some(|x: f64| x.max(0.0))),
                "sin" => (UnaryOp::Sin, Some(f64::sin)),
                "cos" => (UnaryOp::Cos, Some(f64::cos)),
                "abs" => (UnaryOp::Abs, Some(f64::abs)),
                "gelu" => (UnaryOp::Gelu, None),
                "gelu_tanh" => (UnaryOp::GeluTanh, None),
                "silu" => (UnaryOp::Silu, None),
                "erf" => (UnaryOp::Erf, None),
                _ => return None,
            })
        };
        if let Some((op, fold)) = unary(a.name) {
            a.expect(1, 1, &[])?;
            let v = self.expr(&a.pos[0], scope)?;
            if let (Val::Weak(x, _), Some(f)) = (&v, fold) {
                return Ok(Val::Weak(f(*x), true));
            }
            let t = self.tensor(&v, a.pos[0].span, Some(DType::F32))?;
            if !t.ty.dtype.is_float() && op != UnaryOp::Abs {
                return Err(Diagnostic::new("E0300", format!("`{}` needs a float tensor, found {}", a.name, t.ty.describe()), a.pos[0].span)
                    .help("convert with `cast(x, f32)`")
                    .into());
            }
            return Ok(Val::Tensor(self.emit(Op::Unary(op), &[&t], t.ty.clone())));
        }
        let t = match a.name {
            "pow" | "maximum" | "minimum" => {
                a.expect(2, 2, &[])?;
                let x = self.arg(scope, &a.pos[0])?;
                let y = self.arg(scope, &a.pos[1])?;
                let op = match a.name {
                    "pow" => BinaryOp::Pow,
                    "maximum" => BinaryOp::Max,
                    _ => BinaryOp::Min,
                };
                self.elementwise(scope, Op::Binary(op), &[x, y], None, &format!("`{}`", a.name), a.span)?
            }
            "sum" | "mean" | "max" | "min" | "argmax" => self.reduce(scope, a)?,
            "softmax" | "log_softmax" => {
                a.expect(1, 1, &["over"])?;
                let x = self.float_tensor(scope, &a.pos[0], a.name)?;
                let axis = match a.kw("over") {
                    Some(e) => self.axis_of(scope, &x.ty, e, a.name)?,
                    None => self.last_axis(&x, a)?,
                } as u32;
                let op = if a.name == "softmax" { Op::Softmax { axis } } else { Op::LogSoftmax { axis } };
                let ty = x.ty.clone();
                self.emit(op, &[&x], ty)
            }
            "layernorm" | "rmsnorm" => self.norm(scope, a)?,
            "transpose" | "permute" => self.permute(scope, a)?,
            "reshape" | "expand" => {
                a.expect(2, 2, &[])?;
                let x = self.arg_tensor(scope, &a.pos[0])?;
                let dims = self.dim_list(scope, &a.pos[1])?;
                if a.name == "reshape" {
                    self.reshape_to(scope, x, dims, a)?
                } else {
                    let axes: Vec<Axis> = dims.into_iter().map(|(d, n, s)| Axis::new(d.unwrap_or_default(), n, Some(s))).collect();
                    let target = Ty::new(x.ty.dtype, axes.clone());
                    self.broadcast_axes(scope, &[(&x.ty, a.pos[0].span), (&target, a.pos[1].span)], "`expand`", a.span)?;
                    if target.rank() < x.ty.rank() {
                        return Err(Diagnostic::new("E0305", "`expand` cannot drop axes", a.span).into());
                    }
                    self.emit(Op::Broadcast, &[&x], target)
                }
            }
            "unsqueeze" | "squeeze" => {
                a.expect(2, 2, &[])?;
                let x = self.arg_tensor(scope, &a.pos[0])?;
                let mut axes = x.ty.axes.clone();
                let rank = if a.name == "unsqueeze" { axes.len() + 1 } else { axes.len() };
                let i = self.position(scope, &a.pos[1], rank, a.name)?;
                if a.name == "unsqueeze" {
                    axes.insert(i, Axis::unnamed(DimExpr::constant(1)));
                } else {
                    if axes[i].size.as_const() != Some(1) {
                        return Err(Diagnostic::new("E0305", format!("`squeeze` needs an axis of size 1; axis {i} is `{}`", axes[i].written()), a.pos[1].span).into());
                    }
                    axes.remove(i);
                }
                self.reshape(&x, axes)
            }
            "concat" => self.concat(scope, a)?,
            "split" => return self.split(scope, a),
            "where" => {
                a.expect(3, 3, &[])?;
                let c = self.arg_tensor(scope, &a.pos[0])?;
                if c.ty.dtype != DType::Bool {
                    return Err(Diagnostic::new("E0300", format!("the condition of `where` must be bool, found {}", c.ty.describe()), a.pos[0].span).into());
                }
                let x = self.arg(scope, &a.pos[1])?;
                let y = self.arg(scope, &a.pos[2])?;
                let vals = self.unify_dtypes(&[x.clone(), y.clone()], "`where`")?;
                let tys = [(&c.ty, a.pos[0].span), (&vals[0].ty, x.1), (&vals[1].ty, y.1)];
                let axes = self.broadcast_axes(scope, &tys, "`where`", a.span)?;
                let c = self.broadcast(&c, &axes);
                let x = self.broadcast(&vals[0], &axes);
                let y = self.broadcast(&vals[1], &axes);
                let ty = Ty::new(x.ty.dtype, axes);
                self.emit(Op::Select, &[&c, &x, &y], ty)
            }
            "cast" => {
                a.expect(2, 2, &[])?;
                let x = self.arg_tensor(scope, &a.pos[0])?;
                let d = match &a.pos[1].kind {
                    K::DType(d) => DType::from_name(d).expect("lexer dtype"),
                    _ => return Err(Diagnostic::new("E0209", "the second argument of `cast` must be a dtype", a.pos[1].span).help("e.g. `cast(x, bf16)`").into()),
                };
                self.cast(&x, d)
            }
            "one_hot" => {
                a.expect(2, 2, &["dtype"])?;
                let idx = self.arg_tensor(scope, &a.pos[0])?;
                let (n, name) = self.dim_arg(scope, &a.pos[1])?;
                let dtype = self.dtype_kw(a, DType::F32)?;
                self.one_hot(&idx, a.pos[0].span, n, name, Some(a.pos[1].span), dtype)?
            }
            "iota" | "arange" => {
                a.expect(1, 1, &[])?;
                let (n, name) = self.dim_arg(scope, &a.pos[0])?;
                self.emit(Op::Iota { axis: 0 }, &[], Ty::new(DType::I64, vec![Axis::new(n, name, Some(a.pos[0].span))]))
            }
            "tril" | "triu" => self.triangle(scope, a)?,
            "zeros" | "ones" | "full" => {
                let (n, value) = match a.name {
                    "full" => (2, None),
                    "zeros" => (1, Some(0.0)),
                    _ => (1, Some(1.0)),
                };
                a.expect(n, n, &["dtype"])?;
                let dims = self.dim_list(scope, &a.pos[0])?;
                let axes: R<Vec<Axis>> = dims
                    .into_iter()
                    .map(|(d, n, s)| d.map(|d| Axis::new(d, n, Some(s))).ok_or_else(|| Diagnostic::new("E0315", "`-1` is not allowed here", s).into()))
                    .collect();
                let value = match value {
                    Some(v) => v,
                    None => eval_const(self, scope, &a.pos[1], &format!("the value of `{}`", a.name))?.f(),
                };
                let dtype = self.dtype_kw(a, DType::F32)?;
                self.filled(value, dtype, &axes?)
            }
            "cross_entropy" => self.cross_entropy(scope, a)?,
            "dropout" => self.dropout(scope, a)?,
            "mse" => {
                a.expect(2, 2, &[])?;
                let x = self.arg(scope, &a.pos[0])?;
                let y = self.arg(scope, &a.pos[1])?;
                let d = self.elementwise(scope, Op::Binary(BinaryOp::Sub), &[x, y], None, "`mse`", a.span)?;
                if !d.ty.dtype.is_float() {
                    return Err(Diagnostic::new("E0300", "`mse` needs float tensors", a.span).into());
                }
                let sq = self.emit(Op::Binary(BinaryOp::Mul), &[&d, &d], d.ty.clone());
                self.reduce_all(&sq, ReduceOp::Mean)
            }
            _ => return Err(Diagnostic::new("E0299", "unknown", a.span).into()),
        };
        Ok(Val::Tensor(t))
    }

    fn dtype_kw(&self, a: &Args, default: DType) -> R<DType> {
        match a.kw("dtype") {
            None => Ok(default),
            Some(e) => match &e.kind {
                K::DType(d) => Ok(DType::from_name(d).expect("lexer dtype")),
                _ => Err(Diagnostic::new("E0209", "`dtype:` takes a dtype such as f32", e.span).into()),
            },
        }
    }

    /// Reduces every axis.
    pub fn reduce_all(&mut self, x: &TVal, op: ReduceOp) -> TVal {
        if x.ty.rank() == 0 {
            return x.clone();
        }
        let axes = (0..x.ty.rank() as u32).collect();
        self.emit(Op::Reduce { op, axes, keepdim: false }, &[x], Ty::new(x.ty.dtype, vec![]))
    }

    fn last_axis(&self, x: &TVal, a: &Args) -> R<usize> {
        x.ty.rank().checked_sub(1).ok_or_else(|| Diagnostic::new("E0305", format!("`{}` needs a tensor of rank 1 or more", a.name), a.span).into())
    }

    fn reduce(&mut self, scope: &mut Scope, a: &Args) -> R<TVal> {
        a.expect(1, 1, &["over", "keepdim"])?;
        let x = self.arg_tensor(scope, &a.pos[0])?;
        let keepdim = match a.kw("keepdim") {
            None => false,
            Some(ast::Expr { kind: K::Bool(b), .. }) => *b,
            Some(e) => return Err(Diagnostic::new("E0209", "`keepdim:` takes true or false", e.span).into()),
        };
        let mut axes = match a.kw("over") {
            Some(e) => self.axes_of(scope, &x.ty, e, a.name)?,
            None => (0..x.ty.rank()).collect(),
        };
        axes.sort();
        axes.dedup();
        let op = match a.name {
            "sum" => ReduceOp::Sum,
            "mean" => ReduceOp::Mean,
            "max" => ReduceOp::Max,
            "min" => ReduceOp::Min,
            _ => ReduceOp::ArgMax,
        };
        if op == ReduceOp::Mean && !x.ty.dtype.is_float() {
            return Err(Diagnostic::new("E0300", format!("`mean` needs a float tensor, found {}", x.ty.describe()), a.pos[0].span).into());
        }
        if op == ReduceOp::ArgMax && axes.len() != 1 {
            return Err(Diagnostic::new("E0309", "`argmax` reduces exactly one axis", a.span).help("name it with `over:`").into());
        }
        let dtype = if op == ReduceOp::ArgMax { DType::I64 } else { x.ty.dtype };
        let out: Vec<Axis> = x
            .ty
            .axes
            .iter()
            .enumerate()
            .filter_map(|(i, ax)| match (axes.contains(&i), keepdim) {
                (false, _) => Some(ax.clone()),
                (true, true) => Some(Axis::unnamed(DimExpr::constant(1))),
                (true, false) => None,
            })
            .collect();
        let axes = axes.into_iter().map(|i| i as u32).collect();
        Ok(self.emit(Op::Reduce { op, axes, keepdim }, &[&x], Ty::new(dtype, out)))
    }

    fn norm(&mut self, scope: &mut Scope, a: &Args) -> R<TVal> {
        let ln = a.name == "layernorm";
        let n = if ln { 3 } else { 2 };
        a.expect(n, n, &["eps", "over"])?;
        let x = self.float_tensor(scope, &a.pos[0], a.name)?;
        let last = self.last_axis(&x, a)?;
        if let Some(e) = a.kw("over") {
            if self.axis_of(scope, &x.ty, e, a.name)? != last {
                return Err(Diagnostic::new("E0309", format!("`{}` normalizes the last axis only", a.name), e.span)
                    .help("move the axis last with `transpose` or `rearrange` first")
                    .into());
            }
        }
        let eps = match a.kw("eps") {
            Some(e) => eval_const(self, scope, e, &format!("`eps:` of `{}`", a.name))?.f(),
            None => 1e-5,
        };
        let mut args = vec![x.clone()];
        for p in &a.pos[1..] {
            let v = self.arg(scope, p)?;
            let t = self.tensor(&v.0, p.span, Some(x.ty.dtype))?;
            if t.ty.dtype != x.ty.dtype || t.ty.rank() != 1 {
                return Err(Diagnostic::new("E0306", format!("the scale and shift of `{}` must be {}[{}], found {}", a.name, x.ty.dtype, x.ty.axes[last].written(), t.ty.describe()), p.span).into());
            }
            self.require_eq(scope, &t.ty.axes[0].size, &x.ty.axes[last].size, p.span, &format!("the scale and shift of `{}` match the last axis", a.name))?;
            args.push(t);
        }
        let refs: Vec<&TVal> = args.iter().collect();
        let op = if ln { Op::LayerNorm { eps } } else { Op::RmsNorm { eps } };
        Ok(self.emit(op, &refs, x.ty.clone()))
    }

    fn permute(&mut self, scope: &mut Scope, a: &Args) -> R<TVal> {
        let x = self.arg_tensor(scope, &a.pos.first().ok_or_else(|| Diagnostic::new("E0206", format!("`{}` needs a tensor", a.name), a.span))?.clone())?;
        let r = x.ty.rank();
        if a.name == "transpose" {
            a.expect(1, 3, &[])?;
            let (i, j) = match a.pos.len() {
                1 if r >= 2 => (r - 2, r - 1),
                1 => return Err(Diagnostic::new("E0305", "`transpose` needs rank 2 or more", a.pos[0].span).label(x.ty.describe()).into()),
                3 => (self.axis_of(scope, &x.ty, &a.pos[1], a.name)?, self.axis_of(scope, &x.ty, &a.pos[2], a.name)?),
                _ => return Err(Diagnostic::new("E0206", "`transpose` takes a tensor and optionally two axes", a.span).into()),
            };
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(i, j);
            return Ok(self.transpose(&x, &perm));
        }
        a.expect(2, usize::MAX, &[])?;
        let perm: Vec<usize> = match &a.pos[1..] {
            [ast::Expr { kind: K::List(items) | K::Tuple(items), .. }] => {
                items.iter().map(|e| self.axis_of(scope, &x.ty, e, "permute")).collect::<R<_>>()?
            }
            items => items.iter().map(|e| self.axis_of(scope, &x.ty, e, "permute")).collect::<R<_>>()?,
        };
        let mut sorted = perm.clone();
        sorted.sort();
        if sorted != (0..r).collect::<Vec<_>>() {
            return Err(Diagnostic::new("E0309", format!("`permute` needs each of the {r} axes exactly once"), a.span).label(x.ty.describe()).into());
        }
        Ok(self.transpose(&x, &perm))
    }

    /// `[d1, d2, ...]` as dims; `-1` (one at most) comes back as `None`.
    fn dim_list(&mut self, scope: &Scope, e: &ast::Expr) -> R<Vec<(Option<DimExpr>, Option<String>, Span)>> {
        let (K::List(items) | K::Tuple(items)) = &e.kind else {
            return Err(Diagnostic::new("E0209", "expected a list of dimensions such as `[B, T, n_embd]`", e.span).into());
        };
        let mut out = Vec::new();
        for it in items {
            if matches!(&it.kind, K::Unary(ast::UnOp::Neg, x) if matches!(x.kind, K::Int(1))) {
                out.push((None, None, it.span));
            } else {
                let (d, n) = self.dim_arg(scope, it)?;
                out.push((Some(d), n, it.span));
            }
        }
        Ok(out)
    }

    /// A value expression read as a dimension: integers, dim names,
    /// `+ - * / %` of those.
    pub fn dim_arg(&self, scope: &Scope, e: &ast::Expr) -> R<(DimExpr, Option<String>)> {
        let bad = || -> Fail {
            Diagnostic::new("E0204", "expected a dimension", e.span).help("dimensions are integers, config constants and dim names, with + - * / %").into()
        };
        match &e.kind {
            K::Int(i) => Ok((DimExpr::constant(*i), None)),
            K::Name(n) => {
                let id = ast::Ident { name: n.clone(), span: e.span };
                Ok(resolve_known(self.prog, &scope.dims, &ast::DimExpr::Name(id))?)
            }
            K::Unary(ast::UnOp::Neg, x) => Ok((self.dim_arg(scope, x)?.0.scale(-1), None)),
            K::Binary(x, op, y) => {
                let op = match op {
                    ast::BinOp::Add => ast::DimOp::Add,
                    ast::BinOp::Sub => ast::DimOp::Sub,
                    ast::BinOp::Mul => ast::DimOp::Mul,
                    ast::BinOp::Div => ast::DimOp::Div,
                    _ => return Err(bad()),
                };
                let (a, _) = self.dim_arg(scope, x)?;
                let (b, _) = self.dim_arg(scope, y)?;
                Ok((super::scope::dim_binop(&a, op, &b, e.span)?, None))
            }
            _ => Err(bad()),
        }
    }

    fn reshape_to(&mut self, scope: &Scope, x: TVal, dims: Vec<(Option<DimExpr>, Option<String>, Span)>, a: &Args) -> R<TVal> {
        let numel = x.ty.ir().numel();
        let known = dims.iter().filter_map(|d| d.0.as_ref()).try_fold(DimExpr::constant(1), |p, d| p.checked_mul(d));
        let known = super::scope::dim_checked(known, || "the product of the sizes".to_string(), a.span)?;
        let holes = dims.iter().filter(|d| d.0.is_none()).count();
        let fill = match holes {
            0 => None,
            1 => match known.as_const().and_then(|k| numel.div_exact(k)) {
                Some(f) => Some(f),
                None => return Err(Diagnostic::new("E0315", format!("cannot infer `-1`: {numel} elements are not divisible by {known}"), a.span).into()),
            },
            _ => return Err(Diagnostic::new("E0315", "`reshape` takes at most one `-1`", a.span).into()),
        };
        let axes: Vec<Axis> = dims.into_iter().map(|(d, n, s)| Axis::new(d.or_else(|| fill.clone()).expect("filled"), n, Some(s))).collect();
        let new = Ty::new(x.ty.dtype, axes);
        match scope.facts.eq(&numel, &new.ir().numel()) {
            Truth::True => Ok(self.reshape(&x, new.axes)),
            t => Err(Diagnostic::new(if t == Truth::False { "E0315" } else { "E0303" }, "`reshape` changes the number of elements", a.span)
                .with(a.pos[0].span, format!("{} has {numel} elements", x.ty.describe()))
                .note(format!("{} has {}", new.written(), new.ir().numel()))
                .into()),
        }
    }

    fn concat(&mut self, scope: &mut Scope, a: &Args) -> R<TVal> {
        let items: Vec<&ast::Expr> = match a.pos {
            [ast::Expr { kind: K::List(items), .. }] => items.iter().collect(),
            p => p.iter().collect(),
        };
        if items.len() < 2 || a.kw.len() != 1 {
            a.expect(usize::MAX, usize::MAX, &["over"])?;
        }
        a.expect(1, usize::MAX, &["over"])?;
        let over = a.kw("over").ok_or_else(|| Diagnostic::new("E0208", "`concat` needs `over:`, the axis to join along", a.span))?;
        let mut vals = Vec::new();
        for e in &items {
            vals.push(self.arg(scope, e)?);
        }
        let ts = self.unify_dtypes(&vals, "`concat`")?;
        let first = &ts[0];
        let axis = self.axis_of(scope, &first.ty, over, "concat")?;
        let mut total = DimExpr::default();
        for (t, e) in ts.iter().zip(&items) {
            if t.ty.rank() != first.ty.rank() {
                return Err(Diagnostic::new("E0305", "`concat` needs tensors of one rank", e.span).label(t.ty.describe()).with(items[0].span, first.ty.describe()).into());
            }
            for (i, (x, y)) in t.ty.axes.iter().zip(&first.ty.axes).enumerate() {
                if i != axis {
                    self.require_eq(scope, &x.size, &y.size, e.span, &format!("`concat` axis {i}"))?;
                }
            }
            total = super::scope::dim_checked(total.checked_add(&t.ty.axes[axis].size), || "the concatenated size".to_string(), e.span)?;
        }
        let mut axes = first.ty.axes.clone();
        axes[axis] = Axis::new(total, None, Some(a.span));
        let refs: Vec<&TVal> = ts.iter().collect();
        Ok(self.emit(Op::Concat { axis: axis as u32 }, &refs, Ty::new(first.ty.dtype, axes)))
    }

    fn split(&mut self, scope: &mut Scope, a: &Args) -> R<Val> {
        a.expect(2, 2, &["over"])?;
        let x = self.arg_tensor(scope, &a.pos[0])?;
        let axis = match a.kw("over") {
            Some(e) => self.axis_of(scope, &x.ty, e, "split")?,
            None => self.last_axis(&x, a)?,
        };
        let size = x.ty.axes[axis].size.clone();
        let sizes: Vec<DimExpr> = match &a.pos[1].kind {
            K::List(_) | K::Tuple(_) => self.dim_list(scope, &a.pos[1])?.into_iter().map(|d| d.0.unwrap_or_default()).collect(),
            _ => {
                let n = match eval_const(self, scope, &a.pos[1], "the count of `split`")? {
                    super::scope::Num::Int(n) if n >= 1 => n,
                    _ => return Err(Diagnostic::new("E0209", "`split` takes a positive count or a list of sizes", a.pos[1].span).into()),
                };
                let part = size.div_exact(n).ok_or_else(|| {
                    Diagnostic::new("E0310", format!("cannot split `{}` into {n} equal parts", x.ty.axes[axis].written()), a.span).note(format!("the axis has size {size}"))
                })?;
                vec![part; n as usize]
            }
        };
        let total = sizes.iter().try_fold(DimExpr::default(), |s, d| s.checked_add(d));
        let total = super::scope::dim_checked(total, || "the sum of the parts".to_string(), a.span)?;
        self.require_eq(scope, &total, &size, a.span, "the parts of `split` add up to the axis")?;
        let mut start = DimExpr::default();
        let mut out = Vec::new();
        for s in sizes {
            let end = start.add(&s);
            let mut axes = x.ty.axes.clone();
            axes[axis] = Axis::new(s, None, Some(a.span));
            out.push(Val::Tensor(self.emit(Op::Slice { axis: axis as u32, start: start.clone(), end: end.clone(), step: 1 }, &[&x], Ty::new(x.ty.dtype, axes))));
            start = end;
        }
        Ok(Val::Tuple(out))
    }

    pub fn one_hot(&mut self, idx: &TVal, span: Span, n: DimExpr, name: Option<String>, origin: Option<Span>, dtype: DType) -> R<TVal> {
        if !idx.ty.dtype.is_int() {
            return Err(Diagnostic::new("E0318", format!("indices must be integers, found {}", idx.ty.describe()), span).into());
        }
        self.note_index_bound(idx, &n);
        let mut axes = idx.ty.axes.clone();
        axes.push(Axis::new(n, name, origin));
        Ok(self.emit(Op::OneHot, &[idx], Ty::new(dtype, axes)))
    }

    fn triangle(&mut self, scope: &mut Scope, a: &Args) -> R<TVal> {
        a.expect(1, 2, &["k"])?;
        let k = match a.kw("k") {
            Some(e) => match eval_const(self, scope, e, &format!("`k:` of `{}`", a.name))? {
                super::scope::Num::Int(k) => k,
                _ => return Err(Diagnostic::new("E0209", "`k:` takes an integer", e.span).into()),
            },
            None => 0,
        };
        // `tril(T, S)` builds a mask; `tril(x)` masks a tensor's last two axes.
        let as_dims = a.pos.len() == 2;
        let (rows, cols, x) = if as_dims {
            let (r, rn) = self.dim_arg(scope, &a.pos[0])?;
            let (c, cn) = self.dim_arg(scope, &a.pos[1])?;
            (Axis::new(r, rn, Some(a.pos[0].span)), Axis::new(c, cn, Some(a.pos[1].span)), None)
        } else {
            let x = self.arg_tensor(scope, &a.pos[0])?;
            let r = x.ty.rank();
            if r < 2 {
                return Err(Diagnostic::new("E0305", format!("`{}` needs rank 2 or more", a.name), a.pos[0].span).label(x.ty.describe()).into());
            }
            (x.ty.axes[r - 2].clone(), x.ty.axes[r - 1].clone(), Some(x))
        };
        let axes = vec![rows, cols];
        let i = self.emit(Op::Iota { axis: 0 }, &[], Ty::new(DType::I64, axes.clone()));
        let j = self.emit(Op::Iota { axis: 1 }, &[], Ty::new(DType::I64, axes.clone()));
        let ik = if k == 0 {
            i
        } else {
            let kc = self.filled(k as f64, DType::I64, &axes);
            self.emit(Op::Binary(BinaryOp::Add), &[&i, &kc], i.ty.clone())
        };
        // tril keeps j <= i + k; triu keeps j >= i + k.
        let cmp = if a.name == "tril" { CmpOp::Le } else { CmpOp::Ge };
        let mask = self.emit(Op::Compare(cmp), &[&j, &ik], Ty::new(DType::Bool, axes));
        let Some(x) = x else { return Ok(mask) };
        let m = self.broadcast(&mask, &x.ty.axes);
        let zero = self.filled(0.0, x.ty.dtype, &x.ty.axes);
        Ok(self.emit(Op::Select, &[&m, &x, &zero], x.ty.clone()))
    }

    /// `dropout(x, p)`: inverted dropout with a constant probability
    /// `p` in `[0, 1)` (see `Op::Dropout`); the seed is a hidden argument
    /// of the entry point, and evaluation graphs drop the node.
    fn dropout(&mut self, scope: &mut Scope, a: &Args) -> R<TVal> {
        a.expect(2, 2, &[])?;
        let x = self.float_tensor(scope, &a.pos[0], "dropout")?;
        let p = eval_const(self, scope, &a.pos[1], "the probability of `dropout`")?.f();
        if !(0.0..1.0).contains(&p) {
            return Err(Diagnostic::new("E0226", format!("the dropout probability must be in [0, 1), got {p}"), a.pos[1].span)
                .help("`p` is the fraction of elements zeroed in training")
                .into());
        }
        if p == 0.0 {
            // The identity in both modes: no node, no seed.
            return Ok(x);
        }
        let seed = self.dropout_seed();
        Ok(self.emit(Op::Dropout { p }, &[&x, &seed], x.ty.clone()))
    }

    /// Mean negative log-likelihood of `targets` under `softmax(logits)`.
    /// It is lowered as `log_softmax`, a one-hot pick and a sum over the
    /// class axis, which the scheduler runs as one kernel per row. With
    /// `ignore_index: c`, targets equal to `c` (padding) contribute nothing
    /// and the mean is over the others (0 when every target is ignored).
    fn cross_entropy(&mut self, scope: &mut Scope, a: &Args) -> R<TVal> {
        a.expect(2, 2, &["over", "ignore_index"])?;
        let logits = self.float_tensor(scope, &a.pos[0], "cross_entropy")?;
        let targets = self.arg_tensor(scope, &a.pos[1])?;
        let axis = match a.kw("over") {
            Some(e) => self.axis_of(scope, &logits.ty, e, "cross_entropy")?,
            None => self.last_axis(&logits, a)?,
        };
        let ignore = match a.kw("ignore_index") {
            Some(e) => match eval_const(self, scope, e, "`ignore_index:` of `cross_entropy`")? {
                super::scope::Num::Int(k) => Some(k),
                _ => return Err(Diagnostic::new("E0209", "`ignore_index:` takes an integer", e.span).into()),
            },
            None => None,
        };
        let mut rest = logits.ty.axes.clone();
        let class = rest.remove(axis);
        if targets.ty.rank() != rest.len() {
            return Err(Diagnostic::new("E0305", "targets must have the logits' shape without the class axis", a.pos[1].span)
                .label(targets.ty.describe())
                .with(a.pos[0].span, logits.ty.describe())
                .into());
        }
        for (t, l) in targets.ty.axes.iter().zip(&rest) {
            self.require_eq(scope, &t.size, &l.size, a.pos[1].span, "targets match the logits")?;
        }
        let dtype = logits.ty.dtype;
        // Ignored targets pick class 0, and their loss is masked out below.
        let (valid, picked_targets) = match ignore {
            Some(c) => {
                self.note_index_bound(&targets, &class.size);
                self.note_ignored_index(&targets, c);
                let k = self.filled(c as f64, targets.ty.dtype, &targets.ty.axes);
                let valid = self.emit(Op::Compare(CmpOp::Ne), &[&targets, &k], targets.ty.with_dtype(DType::Bool));
                let zero = self.filled(0.0, targets.ty.dtype, &targets.ty.axes);
                let picked = self.emit(Op::Select, &[&valid, &targets, &zero], targets.ty.clone());
                (Some(valid), picked)
            }
            None => (None, targets.clone()),
        };
        let logp = self.emit(Op::LogSoftmax { axis: axis as u32 }, &[&logits], logits.ty.clone());
        let oh = self.one_hot(&picked_targets, a.pos[1].span, class.size.clone(), class.name.clone(), class.origin, dtype)?;
        // one_hot puts the class axis last; move it to `axis`.
        let r = oh.ty.rank();
        let mut perm: Vec<usize> = (0..r - 1).collect();
        perm.insert(axis, r - 1);
        let oh = self.transpose(&oh, &perm);
        let picked = self.emit(Op::Binary(BinaryOp::Mul), &[&logp, &oh], logits.ty.clone());
        let ll = self.emit(Op::Reduce { op: ReduceOp::Sum, axes: vec![axis as u32], keepdim: false }, &[&picked], Ty::new(dtype, rest));
        let mean = match valid {
            None => self.reduce_all(&ll, ReduceOp::Mean),
            Some(v) => {
                let zero = self.filled(0.0, dtype, &ll.ty.axes);
                let kept = self.emit(Op::Select, &[&v, &ll, &zero], ll.ty.clone());
                let total = self.reduce_all(&kept, ReduceOp::Sum);
                let count = self.cast(&v, dtype);
                let count = self.reduce_all(&count, ReduceOp::Sum);
                let one = self.konst(1.0, dtype);
                let count = self.emit(Op::Binary(BinaryOp::Max), &[&count, &one], count.ty.clone());
                self.emit(Op::Binary(BinaryOp::Div), &[&total, &count], total.ty.clone())
            }
        };
        Ok(self.emit(Op::Unary(UnaryOp::Neg), &[&mean], mean.ty.clone()))
    }

    /// An axis given by dim name or position (`over: T`, `over: -1`).
    pub fn axis_of(&self, scope: &Scope, ty: &Ty, e: &ast::Expr, what: &str) -> R<usize> {
        match &e.kind {
            K::Int(_) | K::Unary(ast::UnOp::Neg, _) => self.position(scope, e, ty.rank(), what),
            K::Name(n) => {
                let named: Vec<usize> = (0..ty.rank()).filter(|&i| ty.axes[i].name.as_deref() == Some(n)).collect();
                match named.as_slice() {
                    [i] => return Ok(*i),
                    [_, _, ..] => {
                        return Err(Diagnostic::new("E0308", format!("`{n}` names {} axes of {}", named.len(), ty.written()), e.span)
                            .help(format!("give one of them another name: declare `dim S = {n}` and ascribe it, e.g. `let s: f32[..., {n}, S] = ...`"))
                            .into())
                    }
                    [] => {}
                }
                let id = ast::Ident { name: n.clone(), span: e.span };
                let (size, _) = resolve_known(self.prog, &scope.dims, &ast::DimExpr::Name(id)).map_err(|_| {
                    Diagnostic::new("E0307", format!("`{n}` is not a dimension"), e.span).help("name an axis by its dimension, or give its position (`over: -1`)")
                })?;
                let sized: Vec<usize> = (0..ty.rank()).filter(|&i| ty.axes[i].name.is_none() && scope.facts.eq(&ty.axes[i].size, &size) == Truth::True).collect();
                match sized.as_slice() {
                    [i] => Ok(*i),
                    _ => Err(Diagnostic::new("E0307", format!("{} has no axis `{n}`", ty.written()), e.span)
                        .note(format!("the axes are {}", ty.describe()))
                        .help("name an existing axis, or give its position (`over: -1`)")
                        .into()),
                }
            }
            _ => Err(Diagnostic::new("E0307", format!("`{what}` expects an axis: a dim name or a position"), e.span).into()),
        }
    }

    /// Several axes: one, or a list.
    fn axes_of(&self, scope: &Scope, ty: &Ty, e: &ast::Expr, what: &str) -> R<Vec<usize>> {
        match &e.kind {
            K::List(items) | K::Tuple(items) => items.iter().map(|x| self.axis_of(scope, ty, x, what)).collect(),
            _ => Ok(vec![self.axis_of(scope, ty, e, what)?]),
        }
    }

    /// An integer position, negative from the end, checked against `rank`.
    fn position(&self, scope: &Scope, e: &ast::Expr, rank: usize, what: &str) -> R<usize> {
        let i = match eval_const(self, scope, e, &format!("the axis of `{what}`"))? {
            super::scope::Num::Int(i) => i,
            _ => return Err(Diagnostic::new("E0309", "an axis position must be an integer", e.span).into()),
        };
        let j = if i < 0 { i + rank as i64 } else { i };
        if j < 0 || j >= rank as i64 {
            return Err(Diagnostic::new("E0309", format!("axis {i} is out of range for `{what}` on a tensor of rank {rank}"), e.span).into());
        }
        Ok(j as usize)
    }
}
