//! The vector-Jacobian product of any entry point, as a scalar loss that
//! [`grad`](super::grad) can differentiate: `sum(output * cotangent)`.
//!
//! The gradient of that loss with respect to a parameter or argument is the
//! VJP of the selected outputs with their cotangents, so one reverse sweep
//! serves entries with non-scalar or several outputs. Outputs that are not
//! selected contribute nothing: their cotangent is zero.

use super::build::B;
use super::AutodiffError;
use crate::verify;
use crate::{DType, Function, Module, Op, ReduceOp};

/// The argument name of output `name`'s cotangent in [`vjp_loss`]'s result.
pub fn cotangent_arg(name: &str) -> String {
    format!("cotangent.{name}")
}

/// A function `{name}_vjp` with the arguments of `f`, then one cotangent
/// per output position in `outputs` (same type as the output, named by
/// [`cotangent_arg`]), returning the f32 scalar `sum(output * cotangent)`
/// summed over the selected outputs.
pub fn vjp_loss(m: &Module, f: &Function, outputs: &[u32]) -> Result<Function, AutodiffError> {
    verify::function(m, f).map_err(AutodiffError::Invalid)?;
    let mut g = f.graph.clone();
    let mut arg_names = f.arg_names.clone();
    let mut arg_bounds = f.arg_bounds.clone();
    let mut arg_ignore = f.arg_ignore.clone();
    let mut loss = None;
    for (k, &o) in outputs.iter().enumerate() {
        let name = f.output_names.get(o as usize).ok_or(AutodiffError::OutputOutOfRange { index: o, count: f.output_names.len() })?;
        if outputs[..k].contains(&o) {
            return Err(AutodiffError::Duplicate { name: name.clone() });
        }
        let out = g.outputs[o as usize];
        let ty = match g.node(out).ty.tensor() {
            Some(t) if t.dtype.is_float() => t.clone(),
            other => {
                let ty = other.map_or("a tuple".to_string(), |t| t.to_string());
                return Err(AutodiffError::NotFloatOutput { name: name.clone(), ty });
            }
        };
        let index = g.inputs.len() as u32;
        g.inputs.push(ty.clone());
        arg_names.push(cotangent_arg(name));
        arg_bounds.push(None);
        arg_ignore.push(None);
        let mut b = B::new(&mut g);
        let c = b.g.push_tensor(Op::Input { index }, vec![], ty.clone());
        let prod = b.mul(out, c);
        let axes: Vec<u32> = (0..ty.rank() as u32).collect();
        let s = b.reduce(ReduceOp::Sum, prod, &axes, false);
        let s = if ty.dtype == DType::F32 { s } else { b.cast(s, DType::F32) };
        loss = Some(match loss {
            None => s,
            Some(l) => b.add(l, s),
        });
    }
    let loss = loss.ok_or_else(|| AutodiffError::NoCotangent { name: f.name.clone() })?;
    g.outputs = vec![loss];
    let out = Function {
        name: format!("{}_vjp", f.name),
        arg_names,
        arg_bounds,
        arg_ignore,
        output_names: vec!["vjp".into()],
        dim_vars: f.dim_vars.clone(),
        constraints: f.constraints.clone(),
        graph: g,
    };
    verify::function(m, &out).map_err(AutodiffError::Internal)?;
    Ok(out)
}
