//! Program-level declarations: config constants, dim aliases, layers,
//! parameters and functions, collected from every loaded file.

use super::scope::{const_eval, Num};
use super::ty::{Axis, Ty};
use super::{report, Fail, R};
use crate::ast::{self, FileId, ParamKind};
use crate::Diagnostic;
use kiln_ir::{DType, DimExpr, Init, Param};
use std::collections::{HashMap, HashSet};

/// How deep layers may contain layers: far more than any real model, and
/// few enough for the recursion's stack.
pub(crate) const MAX_LAYER_NESTING: usize = 1000;

/// A top-level layer instance (`param blocks: Block[n_layer]`).
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub layer: String,
    pub count: Option<i64>,
}

/// Everything declared at the top level.
pub(crate) struct Program<'a> {
    /// Integer config constants: the model's fixed dims.
    pub dims: HashMap<String, i64>,
    /// Float config constants (eps, ...).
    pub scalars: HashMap<String, f64>,
    /// `dim S = T`.
    pub aliases: HashMap<String, &'a ast::DimExpr>,
    pub layers: HashMap<String, &'a ast::LayerDef>,
    pub instances: HashMap<String, Instance>,
    /// Full dotted name → index into `params`.
    pub param_index: HashMap<String, u32>,
    pub params: Vec<Param>,
    /// Each parameter's type with axis names (parallel to `params`).
    pub param_tys: Vec<Ty>,
    pub fns: HashMap<String, &'a ast::FnDef>,
    /// Function names in source order.
    pub fn_order: Vec<String>,
    /// Config entries and parameters whose definition failed (already
    /// reported): uses of them stay silent instead of "unknown name".
    pub failed: HashSet<String>,
}

/// E0201 for the second definition of a name.
pub(crate) fn defined_twice(name: &ast::Ident, first: ast::Span) -> Diagnostic {
    Diagnostic::new("E0201", format!("`{}` is defined twice", name.name), name.span)
        .label("second definition")
        .with(first, "first definition")
}

/// Reports every name that repeats an earlier one in the same list
/// (arguments, results, a layer's parameters, `let` names).
pub(crate) fn duplicates<'i>(names: impl IntoIterator<Item = &'i ast::Ident>) -> Vec<Diagnostic> {
    let mut seen: HashMap<&str, ast::Span> = HashMap::new();
    let mut out = Vec::new();
    for n in names {
        match seen.get(n.name.as_str()) {
            Some(first) => out.push(defined_twice(n, *first)),
            None => {
                seen.insert(&n.name, n.span);
            }
        }
    }
    out
}

/// The first of [`duplicates`] as a failure, for lists checked as one unit.
pub(crate) fn unique<'i>(names: impl IntoIterator<Item = &'i ast::Ident>) -> R<()> {
    duplicates(names).into_iter().next().map_or(Ok(()), |d| Err(d.into()))
}

/// Names that user definitions may not take.
pub(crate) fn is_reserved(name: &str) -> bool {
    super::builtins::is_builtin(name) || matches!(name, "inf" | "pi") || name == kiln_ir::dropout::SEED_ARG
}

impl<'a> Program<'a> {
    pub fn build(files: &'a [(FileId, ast::File)], diags: &mut Vec<Diagnostic>) -> Program<'a> {
        let mut p = Program {
            dims: HashMap::new(),
            scalars: HashMap::new(),
            aliases: HashMap::new(),
            layers: HashMap::new(),
            instances: HashMap::new(),
            param_index: HashMap::new(),
            params: Vec::new(),
            param_tys: Vec::new(),
            fns: HashMap::new(),
            fn_order: Vec::new(),
            failed: HashSet::new(),
        };
        // Imports come after the root in `files`; declarations must be
        // visible regardless of order, so collect in two passes: names first.
        let mut seen: HashMap<String, ast::Span> = HashMap::new();
        let mut claim = |name: &ast::Ident, diags: &mut Vec<Diagnostic>| -> bool {
            if is_reserved(&name.name) {
                diags.push(
                    Diagnostic::new("E0201", format!("`{}` is a builtin and cannot be redefined", name.name), name.span)
                        .help("choose another name"),
                );
                return false;
            }
            if let Some(prev) = seen.get(&name.name) {
                diags.push(defined_twice(name, *prev));
                return false;
            }
            seen.insert(name.name.clone(), name.span);
            true
        };
        let items: Vec<&ast::Item> = files.iter().flat_map(|(_, f)| &f.items).collect();
        for item in &items {
            match item {
                ast::Item::Config(entries) => {
                    for e in entries {
                        if !claim(&e.name, diags) {
                            continue;
                        }
                        match const_eval(&e.value, &p) {
                            Ok(Num::Int(v)) if v >= 1 => {
                                p.dims.insert(e.name.name.clone(), v);
                            }
                            Ok(Num::Int(v)) => {
                                diags.push(
                                    Diagnostic::new("E0210", format!("config dimension `{}` is {v}; dimensions must be at least 1", e.name), e.value.span)
                                        .help("write a float (e.g. `0.0`) if this is a scalar, not a size"),
                                );
                                p.failed.insert(e.name.name.clone());
                            }
                            Ok(Num::Float(v)) => {
                                p.scalars.insert(e.name.name.clone(), v);
                            }
                            Err(f) => {
                                report(diags, f);
                                p.failed.insert(e.name.name.clone());
                            }
                        }
                    }
                }
                ast::Item::DimAlias { name, target } => {
                    if claim(name, diags) {
                        p.aliases.insert(name.name.clone(), target);
                    }
                }
                ast::Item::Layer(l) => {
                    diags.extend(duplicates(l.params.iter().map(|d| &d.name)));
                    if claim(&l.name, diags) {
                        p.layers.insert(l.name.name.clone(), l);
                    }
                }
                ast::Item::Fn(f) => {
                    diags.extend(duplicates(f.args.iter().map(|a| &a.name)));
                    diags.extend(duplicates(f.results.iter().filter_map(|r| r.0.as_ref())));
                    if claim(&f.name, diags) {
                        p.fns.insert(f.name.name.clone(), f);
                        p.fn_order.push(f.name.name.clone());
                    }
                }
                ast::Item::Param(d) => {
                    claim(&d.name, diags);
                }
                ast::Item::Import { .. } => {}
            }
        }
        for item in &items {
            if let ast::Item::Param(d) = item {
                p.add_param(d, "", None, &mut Vec::new(), diags);
            }
        }
        p
    }

    /// A config constant's value.
    pub fn lookup_const(&self, name: &str) -> Option<Num> {
        if let Some(v) = self.dims.get(name) {
            return Some(Num::Int(*v));
        }
        if let Some(v) = self.scalars.get(name) {
            return Some(Num::Float(*v));
        }
        match name {
            "inf" => Some(Num::Float(f64::INFINITY)),
            "pi" => Some(Num::Float(std::f64::consts::PI)),
            _ => None,
        }
    }

    /// Resolves a parameter's declared type: config dims only.
    pub fn param_ty(&self, t: &ast::TypeExpr) -> R<Ty> {
        let dtype = DType::from_name(&t.dtype.name).ok_or_else(|| {
            Diagnostic::new("E0203", format!("unknown dtype `{}`", t.dtype.name), t.dtype.span)
                .help("dtypes are f32, f16, bf16, i32, i64 and bool")
        })?;
        let mut axes = Vec::new();
        for d in &t.dims {
            let (size, name) = super::scope::resolve_known(self, &HashMap::new(), d).map_err(|f| match f {
                Fail::Diag(e) if e.code == "E0200" => Diagnostic { code: "E0204", ..*e }
                    .help("parameter shapes may use only config constants: every weight has a fixed size")
                    .into(),
                f => f,
            })?;
            axes.push(Axis::declared(size, name, d));
        }
        Ty::new(dtype, axes).fits(t.span)
    }

    /// Adds a parameter (a tensor, or a layer's parameters under its name).
    /// `layers` holds the layers being expanded, outermost first.
    fn add_param(
        &mut self,
        d: &ast::ParamDecl,
        prefix: &str,
        stack: Option<(String, i64, ast::Span)>,
        layers: &mut Vec<String>,
        diags: &mut Vec<Diagnostic>,
    ) {
        let name = format!("{prefix}{}", d.name.name);
        if let Err(f) = self.add_param_inner(d, &name, stack, layers, diags) {
            report(diags, f);
            self.failed.insert(name);
        }
    }

    fn add_param_inner(
        &mut self,
        d: &ast::ParamDecl,
        name: &str,
        stack: Option<(String, i64, ast::Span)>,
        layers: &mut Vec<String>,
        diags: &mut Vec<Diagnostic>,
    ) -> R<()> {
        match &d.kind {
            ParamKind::Tensor { ty, init } => {
                let mut ty = self.param_ty(ty)?;
                let init = self.init(init)?;
                if let Some((_, n, span)) = &stack {
                    ty.axes.insert(0, Axis::new(DimExpr::constant(*n), None, Some(*span)));
                    ty = ty.fits(*span)?;
                }
                self.param_index.insert(name.to_string(), self.params.len() as u32);
                self.params.push(Param { name: name.to_string(), ty: ty.ir(), init, stack: stack.map(|s| s.0) });
                self.param_tys.push(ty);
            }
            ParamKind::Layer { layer, count } => {
                if let Some(i) = layers.iter().position(|l| *l == layer.name) {
                    let mut d = Diagnostic::new("E0214", format!("layer `{}` contains itself", layer.name), layer.span);
                    if i + 1 < layers.len() {
                        let cycle = layers[i..].iter().chain([&layer.name]).cloned().collect::<Vec<_>>().join(" -> ");
                        d = d.note(format!("the cycle is {cycle}"));
                    }
                    return Err(d.into());
                }
                if layers.len() >= MAX_LAYER_NESTING {
                    return Err(Diagnostic::new("E0229", format!("layers nested more than {MAX_LAYER_NESTING} deep"), layer.span)
                        .help("flatten the nesting; use a stack (`Block[n]`) for repetition")
                        .into());
                }
                let Some(def) = self.layers.get(&layer.name).copied() else {
                    return Err(self.unknown_layer(layer).into());
                };
                let stack = match (count, &stack) {
                    (None, _) => stack,
                    (Some(c), Some((outer, _, span))) => {
                        return Err(Diagnostic::new("E0215", "a layer stack inside a layer stack is not supported", c.span())
                            .with(*span, format!("inside the stack `{outer}`"))
                            .into())
                    }
                    (Some(c), None) => match super::scope::resolve_dim(self, &HashMap::new(), c, &mut Vec::new())?.0.as_const() {
                        Some(n) => Some((name.to_string(), n, c.span())),
                        None => return Err(Diagnostic::new("E0204", "a layer count must be a config constant", c.span()).into()),
                    },
                };
                if !name.contains('.') {
                    let count = stack.as_ref().filter(|s| s.0 == name).map(|s| s.1);
                    self.instances.insert(name.to_string(), Instance { layer: layer.name.clone(), count });
                }
                layers.push(layer.name.clone());
                for sub in &def.params {
                    self.add_param(sub, &format!("{name}."), stack.clone(), layers, diags);
                }
                layers.pop();
            }
        }
        Ok(())
    }

    pub fn unknown_layer(&self, layer: &ast::Ident) -> Diagnostic {
        let mut d = Diagnostic::new("E0202", format!("unknown layer `{}`", layer.name), layer.span);
        if let Some(s) = super::scope::suggest(&layer.name, self.layers.keys()) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        d
    }

    /// Reads an initializer: `normal(std: s, mean: m)`, `uniform(low: a, high: b)`,
    /// `zeros`, `ones`, `constant(c)`.
    fn init(&self, e: &ast::Expr) -> R<Init> {
        let bad = || {
            Diagnostic::new("E0216", "unknown initializer", e.span)
                .help("use normal(std: s), uniform(low: a, high: b), zeros, ones or constant(c)")
        };
        let (name, args, kwargs): (&str, &[ast::Expr], &[(ast::Ident, ast::Expr)]) = match &e.kind {
            ast::ExprKind::Name(n) => (n, &[], &[]),
            ast::ExprKind::Call { func, args, kwargs } => (&func.name, args, kwargs),
            _ => return Err(bad().into()),
        };
        let num = |x: &ast::Expr| -> R<f64> { Ok(const_eval(x, self)?.f()) };
        // Positional arguments fill the named slots in order.
        let get = |slots: &[&str], defaults: &[Option<f64>]| -> R<Vec<f64>> {
            if args.len() > slots.len() {
                return Err(Diagnostic::new("E0206", format!("`{name}` takes at most {} arguments", slots.len()), e.span).into());
            }
            let mut vals: Vec<Option<f64>> = defaults.to_vec();
            for (i, a) in args.iter().enumerate() {
                vals[i] = Some(num(a)?);
            }
            unique(kwargs.iter().map(|(k, _)| k))?;
            for (k, v) in kwargs {
                let i = slots.iter().position(|s| *s == k.name).ok_or_else(|| {
                    Diagnostic::new("E0207", format!("`{name}` has no argument `{}`", k.name), k.span)
                        .help(format!("its arguments are: {}", slots.join(", ")))
                })?;
                if let Some(positional) = args.get(i) {
                    return Err(defined_twice(k, positional.span).into());
                }
                vals[i] = Some(num(v)?);
            }
            vals.iter()
                .zip(slots)
                .map(|(v, s)| v.ok_or_else(|| Diagnostic::new("E0208", format!("`{name}` needs `{s}`"), e.span).into()))
                .collect()
        };
        match name {
            "normal" => {
                let v = get(&["std", "mean"], &[None, Some(0.0)])?;
                Ok(Init::Normal { std: v[0], mean: v[1] })
            }
            "uniform" => {
                let v = get(&["low", "high"], &[None, None])?;
                Ok(Init::Uniform { low: v[0], high: v[1] })
            }
            "zeros" => get(&[], &[]).map(|_| Init::Constant(0.0)),
            "ones" => get(&[], &[]).map(|_| Init::Constant(1.0)),
            "constant" => Ok(Init::Constant(get(&["value"], &[None])?[0])),
            _ => Err(bad().into()),
        }
    }
}
