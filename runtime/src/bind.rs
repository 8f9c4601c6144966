//! Binding an entry point's dimension variables to concrete sizes.
//!
//! Sources, in order: `--dim NAME=N` overrides; the shapes of the inputs
//! that were given (an axis whose declared size is a single variable, such
//! as `T` in `i32[B, T]`, binds it); and for variables still unbound, a
//! small default: `B = 2`, `T = 16`, anything else `8` ([`default_dim`]).
//! Defaulted names are reported in [`BoundDims::defaulted`] so the caller
//! can say so ("using default dims: B = 2, T = 16"). Two sources that
//! disagree are an error naming both.
//!
//! Then every given input is checked against its declared type with the
//! dims filled in, integer inputs with an index bound are checked to lie
//! in `[0, bound)`, and every `where` constraint of the function is checked.

use crate::tensor::{check_consistent, type_string};
use crate::{RuntimeError, Tensor};
use kiln_ir::{DimError, DimExpr, Function};
use std::collections::BTreeMap;

/// The size a dimension variable gets when nothing binds it: `B` (batch)
/// 2, `T` (sequence length) 16, any other 8. Small, so a default run is fast.
pub fn default_dim(name: &str) -> i64 {
    match name {
        "B" => 2,
        "T" => 16,
        _ => 8,
    }
}

/// The most elements one tensor may have (2^34: 64 GiB of f32).
pub const MAX_ELEMENTS: i64 = 1 << 34;

/// An input value together with where it came from (a file name), for messages.
#[derive(Clone, Copy, Debug)]
pub struct GivenInput<'a> {
    /// The value.
    pub tensor: &'a Tensor,
    /// Where it came from, e.g. `x.npy`; printed as "got f32[2, 16] from x.npy".
    pub source: &'a str,
}

/// The result of [`bind_dims`]: every dimension's size, and which were defaulted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundDims {
    /// The size of every dimension variable of the function.
    pub dims: BTreeMap<String, i64>,
    /// The variables nothing bound, which got [`default_dim`], in the
    /// function's order.
    pub defaulted: Vec<String>,
}

impl BoundDims {
    /// The size of a dimension variable.
    pub fn get(&self, name: &str) -> Option<i64> {
        self.dims.get(name).copied()
    }

    /// `using default dims: B = 2, T = 16`, or `None` when nothing was defaulted.
    pub fn defaults_note(&self) -> Option<String> {
        if self.defaulted.is_empty() {
            return None;
        }
        let parts: Vec<String> = self.defaulted.iter().map(|n| format!("{n} = {}", self.dims[n])).collect();
        Some(format!("using default dims: {}", parts.join(", ")))
    }
}

/// Binds the dimension variables of `f` from the given inputs (parallel to
/// `f.arg_names`; `None` for inputs that will be generated) and overrides,
/// then checks the inputs and constraints (see the module docs).
pub fn bind_dims(
    f: &Function,
    given: &[Option<&Tensor>],
    overrides: &[(String, i64)],
) -> Result<BoundDims, RuntimeError> {
    let given: Vec<Option<GivenInput<'_>>> =
        given.iter().map(|g| g.map(|tensor| GivenInput { tensor, source: "" })).collect();
    bind_dims_from(f, &given, overrides)
}

/// [`bind_dims`] with the source of each given input, so errors can say
/// where a wrong value came from.
pub fn bind_dims_from(
    f: &Function,
    given: &[Option<GivenInput<'_>>],
    overrides: &[(String, i64)],
) -> Result<BoundDims, RuntimeError> {
    let inputs = &f.graph.inputs;
    if given.len() > inputs.len() {
        return Err(RuntimeError::Invalid(format!(
            "`{}` takes {} inputs, {} were given",
            f.name,
            inputs.len(),
            given.len()
        )));
    }
    let arg_name = |i: usize| f.arg_names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
    let vars = all_vars(f);

    // name -> (value, where it came from)
    let mut bound: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for (name, value) in overrides {
        let bad = |reason: String| RuntimeError::BadOverride { name: name.clone(), value: *value, reason };
        if !vars.contains(name) {
            let known = if vars.is_empty() { "it has none".to_string() } else { format!("its dimensions are {}", vars.join(", ")) };
            return Err(bad(format!("`{}` has no dimension `{name}` ({known})", f.name)));
        }
        if *value < 0 {
            return Err(bad("a dimension cannot be negative".into()));
        }
        bind(&mut bound, name, *value, format!("--dim {name}={value}"))?;
    }

    for (i, g) in given.iter().enumerate() {
        let Some(g) = g else { continue };
        let ty = &inputs[i];
        let t = g.tensor;
        check_consistent(t, &format!("input `{}`", arg_name(i)))?;
        if t.shape.len() != ty.rank() {
            return Err(RuntimeError::InputType { name: arg_name(i), expected: ty.to_string(), found: found(g) });
        }
        for (axis, d) in ty.shape.iter().enumerate() {
            let Some(v) = d.as_var() else { continue };
            let size = t.shape[axis];
            let site = format!("axis {axis} of input `{}`", arg_name(i));
            let size = i64::try_from(size).map_err(|_| RuntimeError::BadInput {
                name: arg_name(i),
                reason: format!("axis {axis} is too large"),
            })?;
            bind(&mut bound, v, size, site)?;
        }
    }

    let mut out = BoundDims::default();
    for v in &vars {
        match bound.get(v) {
            Some((value, _)) => {
                out.dims.insert(v.clone(), *value);
            }
            None => {
                out.dims.insert(v.clone(), default_dim(v));
                out.defaulted.push(v.clone());
            }
        }
    }
    let env = |n: &str| out.dims.get(n).copied();

    for (i, g) in given.iter().enumerate() {
        let Some(g) = g else { continue };
        let ty = &inputs[i];
        let bad = |reason: String| RuntimeError::BadInput { name: arg_name(i), reason };
        let mut shape = Vec::with_capacity(ty.rank());
        for d in &ty.shape {
            let v = d.eval(&env).map_err(|e| bad(e.to_string()))?;
            shape.push(usize::try_from(v).map_err(|_| bad(format!("dimension {d} evaluates to {v}")))?);
        }
        if g.tensor.dtype != ty.dtype || g.tensor.shape != shape {
            let mut expected = type_string(ty.dtype, &shape);
            let vs = type_vars(&ty.shape);
            if !vs.is_empty() {
                let parts: Vec<String> = vs.iter().map(|v| format!("{v} = {}", out.dims[v])).collect();
                expected = format!("{expected} ({})", parts.join(", "));
            }
            return Err(RuntimeError::InputType { name: arg_name(i), expected, found: found(g) });
        }
        if let Some(Some(b)) = f.arg_bounds.get(i) {
            let limit = b.eval(&env).map_err(|e| bad(format!("the index bound {b}: {e}")))?;
            let ignored = f.arg_ignore.get(i).copied().flatten().map(|c| c as f64);
            let bad_index = |&(_, &x): &(usize, &f64)| !(x >= 0.0 && x < limit as f64) && Some(x) != ignored;
            if let Some((pos, x)) = g.tensor.data.iter().enumerate().find(bad_index) {
                let how = if b.as_const().is_some() { String::new() } else { format!(" ({b} = {limit})") };
                let or = ignored.map_or(String::new(), |c| format!(" or the ignored index {c}"));
                return Err(bad(format!("element {pos} is {x}, outside the valid indices 0..{limit}{how}{or}")));
            }
        }
    }

    // Every value of the graph must fit in memory's address arithmetic:
    // a huge --dim is an error here, not an allocation abort later.
    for node in &f.graph.nodes {
        let Some(t) = node.ty.tensor() else { continue };
        // A count past i64 is as much too large as one past the limit.
        let n = match t.numel().eval(&env) {
            Ok(n) if n <= MAX_ELEMENTS => continue,
            Ok(n) => n.to_string(),
            Err(DimError::Overflow { .. }) => "more than 2^63".to_string(),
            Err(DimError::Unbound(_)) => continue,
        };
        let vs = type_vars(&t.shape);
        let parts: Vec<String> = vs.iter().map(|v| format!("{v} = {}", out.dims[v])).collect();
        return Err(RuntimeError::Invalid(format!(
            "`{}` would need a tensor {} of {n} elements ({}); at most {MAX_ELEMENTS} are supported",
            f.name, t, parts.join(", ")
        )));
    }

    for c in &f.constraints {
        if let Err(msg) = c.check(&env) {
            let message = match out.defaults_note() {
                Some(note) => format!("{msg} ({note}; set them with --dim NAME=N)"),
                None => msg,
            };
            return Err(RuntimeError::Constraint { function: f.name.clone(), message });
        }
    }
    Ok(out)
}

/// Records `name = value` from `site`, refusing a different earlier value.
fn bind(bound: &mut BTreeMap<String, (i64, String)>, name: &str, value: i64, site: String) -> Result<(), RuntimeError> {
    match bound.get(name) {
        Some((first, first_site)) if *first != value => Err(RuntimeError::DimConflict {
            dim: name.to_string(),
            first: *first,
            first_site: first_site.clone(),
            second: value,
            second_site: site,
        }),
        Some(_) => Ok(()),
        None => {
            bound.insert(name.to_string(), (value, site));
            Ok(())
        }
    }
}

/// The function's dimension variables, then any other variable its input
/// types, index bounds or constraints mention (so nothing is left unbound).
fn all_vars(f: &Function) -> Vec<String> {
    let mut vars = f.dim_vars.clone();
    let mut extra: Vec<String> = Vec::new();
    let exprs = f
        .graph
        .inputs
        .iter()
        .flat_map(|t| t.shape.iter())
        .chain(f.arg_bounds.iter().flatten())
        .chain(f.constraints.iter().flat_map(|c| [&c.lhs, &c.rhs]));
    for e in exprs {
        for v in e.vars() {
            if !vars.contains(&v) && !extra.contains(&v) {
                extra.push(v);
            }
        }
    }
    extra.sort();
    vars.extend(extra);
    vars
}

/// Variables of a shape in order of first appearance.
fn type_vars(shape: &[DimExpr]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in shape {
        for v in d.vars() {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// `f32[2, 16] from x.npy` (or without the source when there is none).
fn found(g: &GivenInput<'_>) -> String {
    let t = type_string(g.tensor.dtype, &g.tensor.shape);
    if g.source.is_empty() {
        t
    } else {
        format!("{t} from {}", g.source)
    }
}
