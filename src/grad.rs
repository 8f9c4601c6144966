//! `kiln grad`: the gradients of an entry point with respect to chosen
//! float inputs and parameters, written as `DIR/d_NAME.npy`.
//!
//! The entry is optimized first (as the trainer does, so fused attention
//! is differentiated by its fused backward), then turned into the scalar
//! `sum(output * cotangent)` by [`vjp_loss`] and differentiated by
//! [`grad`]: its gradients are the vector-Jacobian product of the given
//! cotangents. It runs on any backend, like `kiln run`.

use crate::{compile, execute, function, given_inputs, key_value, write_outputs, ExecArgs, Failed, Given};
use kiln_ir::autodiff::{grad, vjp_loss, ParamSet, Wrt};
use kiln_ir::{Function, Module};
use kiln_runtime::{self as rt, Tensor};
use std::path::{Path, PathBuf};

/// `kiln grad` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The `.kl` file.
    file: PathBuf,
    /// Entry point to differentiate.
    #[arg(long)]
    entry: String,
    /// What to differentiate with respect to, comma-separated: float inputs
    /// and parameters (by their safetensors name, or a stack's name for
    /// every layer). Default: every float input and parameter.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    wrt: Vec<String>,
    /// An output's cotangent as NAME=PATH.npy (repeatable). Default: 1 for
    /// a single scalar output; outputs without one contribute nothing.
    #[arg(long = "cotangent", value_name = "NAME=PATH")]
    cotangents: Vec<String>,
    #[command(flatten)]
    exec: ExecArgs,
}

/// One file to write: a slice of one gradient output.
struct File {
    /// `NAME` of `d_NAME.npy`.
    name: String,
    /// Which gradient (position after the loss in the gradient function's outputs).
    grad: usize,
    /// The layer of a stacked parameter, or the whole tensor.
    layer: Option<usize>,
}

/// Runs `kiln grad`.
pub fn run(a: &Args) -> Result<(), Failed> {
    let c = compile(&a.file)?;
    let m = &c.module;
    let f = kiln_ir::dropout::inference(function(&c, &a.entry)?);
    let (f, _) = a.exec.fuse.apply(m, &f)?;
    let (wrt, files) = select(m, &f, &a.wrt)?;
    let mut given = given_inputs(&f, &a.exec.inputs)?;
    let (outputs, cotangents) = cotangents(&f, &a.cotangents)?;
    let mut g = grad(m, &vjp_loss(m, &f, &outputs)?, &wrt)?;
    // Errors about dims and inputs name the entry the user gave.
    g.name = f.name.clone();
    given.extend(cotangents);
    let results = execute(m, &g, given, &a.exec, &mut crate::profile::Timings::new(1))?;
    let names: Vec<String> = files.iter().map(|file| format!("d_{}", file.name)).collect();
    let tensors: Vec<Tensor> = files.iter().map(|file| layer(&results[1 + file.grad], file.layer)).collect();
    write_outputs(&a.exec.out, &names, &tensors)
}

/// The whole tensor, or slice `i` of its leading axis.
fn layer(t: &Tensor, i: Option<usize>) -> Tensor {
    match i {
        None => t.clone(),
        Some(i) => {
            let n: usize = t.shape[1..].iter().product();
            Tensor::new(t.dtype, t.shape[1..].to_vec(), t.data[i * n..(i + 1) * n].to_vec())
        }
    }
}

/// The `--wrt` selection as a [`Wrt`] and the files it yields, parameters
/// first (the gradient function's order).
fn select(m: &Module, f: &Function, flags: &[String]) -> Result<(Wrt, Vec<File>), Failed> {
    // (storage name, param index, layer) of every float parameter.
    let mut params: Vec<(String, u32, Option<usize>)> = Vec::new();
    for (i, p) in m.params.iter().enumerate().filter(|(_, p)| p.ty.dtype.is_float()) {
        let names = rt::storage_layout(p)?.names;
        let stacked = p.stack.is_some();
        params.extend(names.into_iter().enumerate().map(|(l, n)| (n, i as u32, stacked.then_some(l))));
    }
    let float_input = |i: usize| f.graph.inputs[i].dtype.is_float();
    let inputs: Vec<usize> = (0..f.arg_names.len()).filter(|&i| float_input(i)).collect();

    let (chosen_params, chosen_inputs): (Vec<usize>, Vec<usize>) = if flags.is_empty() {
        ((0..params.len()).collect(), inputs)
    } else {
        let valid = || params.iter().map(|p| p.0.as_str()).chain(inputs.iter().map(|&i| f.arg_names[i].as_str())).collect::<Vec<_>>().join(", ");
        let (mut ps, mut is) = (Vec::new(), Vec::new());
        for name in flags {
            let stack = m.params.iter().position(|p| p.stack.is_some() && p.name == *name && p.ty.dtype.is_float());
            let layers: Vec<usize> = match stack {
                Some(s) => (0..params.len()).filter(|&k| params[k].1 == s as u32).collect(),
                None => params.iter().position(|p| p.0 == *name).into_iter().collect(),
            };
            if !layers.is_empty() {
                if layers.iter().any(|k| ps.contains(k)) {
                    return Err(Failed(format!("error: `{name}` is given twice in --wrt\n")));
                }
                ps.extend(layers);
            } else if let Some(i) = f.arg_names.iter().position(|n| n == name) {
                if !float_input(i) {
                    let ty = &f.graph.inputs[i];
                    return Err(Failed(format!("error: input `{name}` of `{}` is {ty}; only float inputs and parameters have gradients (--wrt takes: {})\n", f.name, valid())));
                }
                if is.contains(&i) {
                    return Err(Failed(format!("error: `{name}` is given twice in --wrt\n")));
                }
                is.push(i);
            } else {
                return Err(Failed(format!("error: `{}` has no float input or parameter `{name}`; --wrt takes: {}\n", f.name, valid())));
            }
        }
        (ps, is)
    };
    if chosen_params.is_empty() && chosen_inputs.is_empty() {
        return Err(Failed(format!("error: `{}` has no float input or parameter to differentiate\n", f.name)));
    }

    // One gradient per parameter, in order of first selection; a stack's layers share it.
    let mut order: Vec<u32> = Vec::new();
    let mut files = Vec::new();
    for &k in &chosen_params {
        let (name, p, layer) = &params[k];
        let grad = order.iter().position(|q| q == p).unwrap_or_else(|| {
            order.push(*p);
            order.len() - 1
        });
        files.push(File { name: name.clone(), grad, layer: *layer });
    }
    for (j, &i) in chosen_inputs.iter().enumerate() {
        let name = &f.arg_names[i];
        if files.iter().any(|file| file.name == *name) {
            return Err(Failed(format!("error: `{name}` names both a parameter and an input of `{}`; rename one to differentiate it\n", f.name)));
        }
        files.push(File { name: name.clone(), grad: order.len() + j, layer: None });
    }
    let wrt = Wrt { params: ParamSet::Only(order), inputs: chosen_inputs.iter().map(|&i| i as u32).collect() };
    Ok((wrt, files))
}

/// The outputs that get a cotangent, and the cotangents as inputs of the
/// [`vjp_loss`] function. Without `--cotangent`, a single scalar output
/// gets 1; any other output needs one.
fn cotangents(f: &Function, flags: &[String]) -> Result<(Vec<u32>, Vec<Given>), Failed> {
    let out_ty = |o: usize| f.graph.node(f.graph.outputs[o]).ty.tensor().cloned();
    if flags.is_empty() {
        return match (f.output_names.len(), out_ty(0)) {
            (1, Some(t)) if t.rank() == 0 && t.dtype.is_float() => Ok((vec![0], vec![Some((Tensor::new(t.dtype, vec![], vec![1.0]), "1".into()))])),
            _ => {
                let o = &f.output_names[0];
                let ty = out_ty(0).map_or("a tuple".into(), |t| t.to_string());
                Err(Failed(format!("error: `{}` returns `{o}`: {ty}, not a float scalar; give its cotangent with --cotangent {o}=PATH.npy\n", f.name)))
            }
        };
    }
    let (mut outputs, mut given) = (Vec::new(), Vec::new());
    for flag in flags {
        let (k, v) = key_value(flag, "cotangent")?;
        let Some(o) = f.output_names.iter().position(|n| n == k) else {
            return Err(Failed(format!("error: `{}` has no output `{k}`; its outputs are: {}\n", f.name, f.output_names.join(", "))));
        };
        if outputs.contains(&(o as u32)) {
            return Err(Failed(format!("error: output `{k}` given twice in --cotangent\n")));
        }
        outputs.push(o as u32);
        given.push(Some((rt::read_npy(Path::new(v))?, v.to_string())));
    }
    Ok((outputs, given))
}
