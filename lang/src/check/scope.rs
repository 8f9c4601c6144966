//! Names in scope: values, dimension bindings and facts; constant folding
//! and dimension-expression resolution.

use super::program::Program;
use super::ty::Ty;
use super::{Fail, R};
use crate::ast::{self, Span};
use crate::Diagnostic;
use kiln_ir::{DimExpr, Facts, ValueId};
use std::collections::HashMap;
use std::rc::Rc;

/// A tensor built in the graph of frame `depth`.
#[derive(Clone, Debug)]
pub(crate) struct TVal {
    pub id: ValueId,
    pub depth: usize,
    pub ty: Ty,
}

/// Where a layer value's parameters live.
#[derive(Clone, Debug)]
pub(crate) enum LayerSrc {
    /// Module parameters under this dotted path.
    Path(String),
    /// One layer of a stack inside a scan body: parameter full names
    /// (without the layer index) to the body's per-step slices.
    Bound(Rc<HashMap<String, TVal>>, String),
    /// A layer argument of a function checked on its own signature: only
    /// the types are known.
    Abstract,
}

/// A layer's parameters, passed around as one value.
#[derive(Clone, Debug)]
pub(crate) struct LayerVal {
    pub layer: String,
    pub src: LayerSrc,
    /// `Some(n)` for a whole stack of `n` layers (only `scan` takes it apart).
    pub stacked: Option<i64>,
}

/// A value during elaboration.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Tensor(TVal),
    /// A literal or config scalar not yet given a dtype: it takes the dtype
    /// of the tensor it meets (`x * 2.0` keeps x's dtype). `true` when float.
    Weak(f64, bool),
    Layer(LayerVal),
    Tuple(Vec<Val>),
    /// The value of a `let` whose right side failed; uses stay silent.
    Poison,
}

/// A dimension variable bound in a function: its size in the caller's
/// terms, the caller's name for that axis, and where it was bound.
#[derive(Clone, Debug)]
pub(crate) struct DimBind {
    pub size: DimExpr,
    pub caller_name: Option<String>,
    pub origin: Option<Span>,
}

/// One function instance's names.
#[derive(Default)]
pub(crate) struct Scope {
    pub dims: HashMap<String, DimBind>,
    pub vars: HashMap<String, Val>,
    pub facts: Facts,
}

/// A constant number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// The error for integer arithmetic past 64 bits (E0228).
pub(crate) fn overflow(what: impl std::fmt::Display, span: Span) -> Fail {
    Diagnostic::new("E0228", format!("integer overflow: {what} does not fit in 64 bits"), span)
        .help(format!("sizes and integer constants must stay below 2^63 ({})", i64::MAX))
        .into()
}

/// `x op y` for the integer operators `+ - *` (`None` for the others),
/// with overflow an error (E0228) rather than a wrapped value.
pub(crate) fn int_arith(op: ast::BinOp, x: i64, y: i64, span: Span) -> Option<R<i64>> {
    let (r, sym) = match op {
        ast::BinOp::Add => (x.checked_add(y), "+"),
        ast::BinOp::Sub => (x.checked_sub(y), "-"),
        ast::BinOp::Mul => (x.checked_mul(y), "*"),
        _ => return None,
    };
    Some(r.ok_or_else(|| overflow(format_args!("`{x} {sym} {y}`"), span)))
}

/// Folds a constant expression (config values, initializer arguments).
/// A name whose own definition failed stops the fold silently.
pub(crate) fn const_eval(e: &ast::Expr, prog: &Program) -> R<Num> {
    use ast::ExprKind as K;
    let not_const = || -> Fail {
        Diagnostic::new("E0217", "expected a constant", e.span)
            .help("constants are numbers, config names and arithmetic on them (+ - * / ** sqrt exp log)")
            .into()
    };
    Ok(match &e.kind {
        K::Int(i) => Num::Int(*i),
        K::Float(f) => Num::Float(*f),
        K::Name(n) if prog.failed.contains(n) => return Err(Fail::Reported),
        K::Name(n) => prog.lookup_const(n).ok_or_else(|| {
            Diagnostic::new("E0200", format!("unknown name `{n}` in a constant"), e.span)
                .help("a config value may only use config names defined before it")
        })?,
        K::Unary(ast::UnOp::Neg, x) => match const_eval(x, prog)? {
            Num::Int(i) => Num::Int(i.checked_neg().ok_or_else(|| overflow(format_args!("`-({i})`"), e.span))?),
            Num::Float(f) => Num::Float(-f),
        },
        K::Binary(a, op, b) => {
            let (x, y) = (const_eval(a, prog)?, const_eval(b, prog)?);
            if let (Num::Int(x), Num::Int(y)) = (x, y) {
                if let Some(r) = int_arith(*op, x, y, e.span) {
                    return Ok(Num::Int(r?));
                }
            }
            match (x, y, op) {
                (Num::Int(x), Num::Int(y), ast::BinOp::Div) => {
                    if y == 0 || x % y != 0 {
                        return Err(Diagnostic::new("E0310", format!("`{x} / {y}` is not a whole number"), e.span)
                            .help("integer config values divide exactly; write a float (`1.0 * a / b`) for a ratio")
                            .into());
                    }
                    Num::Int(x.checked_div(y).ok_or_else(|| overflow(format_args!("`{x} / {y}`"), e.span))?)
                }
                (x, y, ast::BinOp::Add) => Num::Float(x.f() + y.f()),
                (x, y, ast::BinOp::Sub) => Num::Float(x.f() - y.f()),
                (x, y, ast::BinOp::Mul) => Num::Float(x.f() * y.f()),
                (x, y, ast::BinOp::Div) => Num::Float(x.f() / y.f()),
                (x, y, ast::BinOp::Pow) => Num::Float(x.f().powf(y.f())),
                _ => return Err(not_const()),
            }
        }
        K::Call { func, args, kwargs } if args.len() == 1 && kwargs.is_empty() => {
            let x = const_eval(&args[0], prog)?.f();
            Num::Float(match func.name.as_str() {
                "sqrt" => x.sqrt(),
                "exp" => x.exp(),
                "log" => x.ln(),
                _ => return Err(not_const()),
            })
        }
        _ => return Err(not_const()),
    })
}

/// How many `dim` aliases may expand inside one another: far more than
/// any real program, and few enough for the recursion's stack.
pub(crate) const MAX_ALIAS_CHAIN: usize = 1000;

/// Resolves a dimension expression. Names are, in order: dims bound in the
/// function, config constants, aliases. With `free` given, an unknown name
/// becomes a fresh variable recorded there (signatures bind dims that way);
/// without it, an unknown name is an error.
pub(crate) fn resolve_dim(
    prog: &Program,
    dims: &HashMap<String, DimBind>,
    e: &ast::DimExpr,
    free: &mut Vec<(String, Span)>,
) -> R<(DimExpr, Option<String>)> {
    resolve_inner(prog, dims, e, Some(free), &mut Vec::new())
}

/// Like [`resolve_dim`], but every name must already be known.
pub(crate) fn resolve_known(prog: &Program, dims: &HashMap<String, DimBind>, e: &ast::DimExpr) -> R<(DimExpr, Option<String>)> {
    resolve_inner(prog, dims, e, None, &mut Vec::new())
}

/// `expanding` holds the aliases being expanded, outermost first: meeting
/// one of them again is a cycle.
fn resolve_inner(
    prog: &Program,
    dims: &HashMap<String, DimBind>,
    e: &ast::DimExpr,
    mut free: Option<&mut Vec<(String, Span)>>,
    expanding: &mut Vec<String>,
) -> R<(DimExpr, Option<String>)> {
    match e {
        ast::DimExpr::Int(v, _) => Ok((DimExpr::constant(*v), None)),
        ast::DimExpr::Name(id) => {
            let n = id.name.as_str();
            if let Some(b) = dims.get(n) {
                return Ok((b.size.clone(), Some(n.to_string())));
            }
            if let Some(v) = prog.dims.get(n) {
                return Ok((DimExpr::constant(*v), Some(n.to_string())));
            }
            if prog.failed.contains(n) {
                return Err(Fail::Reported);
            }
            if let Some(target) = prog.aliases.get(n) {
                if let Some(i) = expanding.iter().position(|a| a == n) {
                    let cycle = expanding[i..].iter().chain([&n.to_string()]).cloned().collect::<Vec<_>>().join(" -> ");
                    let d = Diagnostic::new("E0218", format!("dim alias `{n}` refers to itself"), id.span);
                    return Err(if i + 1 == expanding.len() { d } else { d.note(format!("the cycle is {cycle}")) }.into());
                }
                if expanding.len() >= MAX_ALIAS_CHAIN {
                    return Err(Diagnostic::new("E0229", format!("dim aliases nested more than {MAX_ALIAS_CHAIN} deep"), id.span)
                        .help("refer to the underlying dimension directly")
                        .into());
                }
                expanding.push(n.to_string());
                let r = resolve_inner(prog, dims, target, free, expanding);
                expanding.pop();
                return Ok((r?.0, Some(n.to_string())));
            }
            if prog.scalars.contains_key(n) {
                return Err(Diagnostic::new("E0204", format!("`{n}` is a float constant, not a dimension"), id.span).into());
            }
            match free {
                Some(f) if n.chars().next().is_some_and(|c| c.is_alphabetic()) => {
                    if !f.iter().any(|(x, _)| x == n) {
                        f.push((n.to_string(), id.span));
                    }
                    Ok((DimExpr::var(n), Some(n.to_string())))
                }
                _ => {
                    let cands = dims.keys().chain(prog.dims.keys()).chain(prog.aliases.keys());
                    let mut d = Diagnostic::new("E0200", format!("unknown dimension `{n}`"), id.span);
                    if let Some(s) = suggest(n, cands) {
                        d = d.help(format!("did you mean `{s}`?"));
                    } else {
                        d = d.help("dimensions are config constants, aliases (`dim S = T`) or names bound by the function's argument types");
                    }
                    Err(d.into())
                }
            }
        }
        ast::DimExpr::Bin(a, op, b, span) => {
            let (x, _) = resolve_inner(prog, dims, a, free.as_deref_mut(), expanding)?;
            let (y, _) = resolve_inner(prog, dims, b, free, expanding)?;
            Ok((dim_binop(&x, *op, &y, *span)?, None))
        }
    }
}

/// Checked dimension arithmetic: `None` (an overflow) becomes E0228 at `span`.
pub(crate) fn dim_checked(r: Option<DimExpr>, what: impl FnOnce() -> String, span: Span) -> R<DimExpr> {
    r.ok_or_else(|| overflow(what(), span))
}

/// Dimension arithmetic; `/` is exact division by a constant.
pub(crate) fn dim_binop(x: &DimExpr, op: ast::DimOp, y: &DimExpr, span: Span) -> R<DimExpr> {
    let paren = |d: &DimExpr| if d.to_string().contains(' ') { format!("({d})") } else { d.to_string() };
    let text = |sym: &'static str| move || format!("`{} {sym} {}`", paren(x), paren(y));
    Ok(match op {
        ast::DimOp::Add => dim_checked(x.checked_add(y), text("+"), span)?,
        ast::DimOp::Sub => dim_checked(x.checked_sub(y), text("-"), span)?,
        ast::DimOp::Mul => dim_checked(x.checked_mul(y), text("*"), span)?,
        ast::DimOp::Div | ast::DimOp::Mod => {
            let Some(c) = y.as_const().filter(|c| *c > 0) else {
                return Err(Diagnostic::new("E0310", format!("cannot divide a dimension by `{y}`"), span)
                    .help("dimensions divide only by positive constants (config values)")
                    .into());
            };
            if op == ast::DimOp::Mod {
                x.modulo(c)
            } else {
                x.div_exact(c).ok_or_else(|| {
                    let msg = match x.as_const() {
                        Some(v) => format!("`{v} / {c}` is not a whole number"),
                        None => format!("cannot prove that `{x}` is divisible by {c}"),
                    };
                    Diagnostic::new("E0310", msg, span).help("dimension division must be exact")
                })?
            }
        }
    })
}

/// The closest candidate by edit distance, if close enough to be a typo.
pub(crate) fn suggest<'a>(name: &str, cands: impl Iterator<Item = &'a String>) -> Option<String> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push((prev[j] + (ca != *cb) as usize).min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    let limit = (name.chars().count() / 3).clamp(1, 2);
    cands.map(|c| (dist(name, c), c)).filter(|(d, _)| *d <= limit).min().map(|(_, c)| c.clone())
}
