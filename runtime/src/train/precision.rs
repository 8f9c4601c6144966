//! Mixed precision: graph transforms and dynamic loss scaling.
//!
//! Training in bf16 or f16 keeps f32 *master* weights on the host and runs
//! the forward and backward passes with half-precision parameters and
//! activations:
//!
//! - [`with_loss_scale`] adds a scalar argument `loss_scale` to the loss
//!   function and multiplies the loss by it, so that differentiating the
//!   result gives gradients scaled by it (small f16 gradients would
//!   otherwise flush to zero). The trainer divides them back out in f32.
//! - [`to_half`] retypes a (gradient) function to a half dtype: every f32
//!   tensor becomes bf16/f16 — parameters (the module's parameters are
//!   retyped, so the executable loads them rounded from the f32 masters),
//!   constants, activations, gradients and the bodies of scans. Only
//!   scalars at the top level stay f32: the loss and its scaling, so the
//!   mean loss is accumulated and reported in f32; casts are inserted where
//!   the two meet. The CPU backend computes every op in f32 and rounds its
//!   result to the node's dtype, so this is storage precision, as on
//!   accelerators whose units accumulate in f32.
//! - [`LossScaler`] adapts the scale: it doubles after a run of clean
//!   steps and halves (skipping the update) when a gradient overflows.

use super::TrainError;
use kiln_ir::{DType, Function, Graph, Module, Op, TensorType, Type, ValueId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The name [`with_loss_scale`] gives the new argument (unless taken).
pub const LOSS_SCALE_ARG: &str = "loss_scale";

/// `f` with one more argument, a scalar of the loss's dtype, that
/// multiplies the loss. `f` must have a single scalar float output.
pub fn with_loss_scale(f: &Function) -> Result<Function, TrainError> {
    let mut out = f.clone();
    let g = &mut out.graph;
    let loss = match g.outputs[..] {
        [loss] => loss,
        _ => return Err(TrainError::Model(format!("`{}` must return a single scalar loss", f.name))),
    };
    let ty = match g.nodes.get(loss.index()).map(|n| &n.ty) {
        Some(Type::Tensor(t)) if t.rank() == 0 && t.dtype.is_float() => t.clone(),
        _ => return Err(TrainError::Model(format!("`{}` must return a scalar float loss", f.name))),
    };
    let mut name = LOSS_SCALE_ARG.to_string();
    while out.arg_names.contains(&name) {
        name.push('_');
    }
    let index = g.inputs.len() as u32;
    g.inputs.push(ty.clone());
    let scale = g.push_tensor(Op::Input { index }, vec![], ty.clone());
    let scaled = g.push_tensor(Op::Binary(kiln_ir::BinaryOp::Mul), vec![loss, scale], ty);
    g.outputs[0] = scaled;
    out.arg_names.push(name);
    out.arg_bounds.push(None);
    out.arg_ignore.push(None);
    Ok(out)
}

/// Retypes `f` of `m` to `half` storage (see the module docs): returns the
/// module with its f32 parameters retyped and the retyped function, whose
/// first output (the loss) stays f32. `half` must be bf16 or f16.
pub fn to_half(m: &Module, f: &Function, half: DType) -> Result<(Module, Function), TrainError> {
    if !matches!(half, DType::BF16 | DType::F16) {
        return Err(TrainError::Config(format!("mixed precision needs bf16 or f16, not {half}")));
    }
    let mut module = m.clone();
    for p in &mut module.params {
        if p.ty.dtype == DType::F32 {
            p.ty.dtype = half;
        }
    }
    let rt = Retype { module: &module, half };
    let mut graph = rt.graph(&f.graph, true)?;
    if let Some(&loss) = graph.outputs.first() {
        graph.outputs[0] = rt.coerce(&mut graph, &mut Caches::default(), loss, DType::F32);
    }
    let out = Function { graph, ..f.clone() };
    kiln_ir::verify::function(&module, &out)
        .map_err(|e| TrainError::Model(format!("internal error: the {half} gradient does not verify: {e}")))?;
    Ok((module, out))
}

/// Casts already made, so a value is cast to a dtype once.
#[derive(Default)]
struct Caches {
    casts: HashMap<(ValueId, DType), ValueId>,
}

struct Retype<'m> {
    module: &'m Module,
    half: DType,
}

impl Retype<'_> {
    /// The new type of a value of old type `t`: f32 becomes half except
    /// for top-level scalars.
    fn policy(&self, t: &TensorType, top: bool) -> TensorType {
        if t.dtype != DType::F32 || (top && t.rank() == 0) {
            t.clone()
        } else {
            t.with_dtype(self.half)
        }
    }

    /// `v` (of the new graph) as `dtype`: itself, a constant remade in
    /// that dtype, or a cast.
    fn coerce(&self, g: &mut Graph, c: &mut Caches, v: ValueId, dtype: DType) -> ValueId {
        let node = g.node(v);
        let Some(t) = node.ty.tensor() else { return v };
        if t.dtype == dtype || !t.dtype.is_float() {
            return v;
        }
        if let Some(&done) = c.casts.get(&(v, dtype)) {
            return done;
        }
        let ty = t.with_dtype(dtype);
        let op = match node.op {
            Op::Const { value } => Op::Const { value },
            _ => Op::Cast,
        };
        let args = if op == Op::Cast { vec![v] } else { vec![] };
        let out = g.push_tensor(op, args, ty);
        c.casts.insert((v, dtype), out);
        out
    }

    /// The retyped copy of `src`; `top` for the function's own graph (not
    /// a scan body). Body outputs are coerced to their new types.
    fn graph(&self, src: &Graph, top: bool) -> Result<Graph, TrainError> {
        let mut g = Graph {
            nodes: Vec::with_capacity(src.nodes.len() * 5 / 4),
            inputs: src.inputs.iter().map(|t| self.policy(t, top)).collect(),
            outputs: Vec::new(),
        };
        let mut c = Caches::default();
        let mut map: Vec<ValueId> = Vec::with_capacity(src.nodes.len());
        let internal = |msg: &str| TrainError::Model(format!("internal error: cannot retype the gradient: {msg}"));
        for n in &src.nodes {
            let old_float = |a: &ValueId| src.node(*a).ty.tensor().is_some_and(|t| t.dtype.is_float());
            let new_id = match &n.op {
                Op::Input { index } => {
                    let ty = g.inputs.get(*index as usize).cloned().ok_or_else(|| internal("input out of range"))?;
                    g.push_tensor(n.op.clone(), vec![], ty)
                }
                Op::Param { index } => {
                    let p = self.module.params.get(*index as usize).ok_or_else(|| internal("param out of range"))?;
                    g.push_tensor(n.op.clone(), vec![], p.ty.clone())
                }
                // Integer-valued positions stay exact in their own dtype.
                Op::Iota { .. } => g.push(n.op.clone(), vec![], n.ty.clone()),
                Op::Extract { index } => {
                    let a = map[n.args[0].index()];
                    let Type::Tuple(ts) = &g.node(a).ty else { return Err(internal("extract of a tensor")) };
                    let t = ts.get(*index as usize).cloned().ok_or_else(|| internal("extract out of range"))?;
                    g.push_tensor(n.op.clone(), vec![a], t)
                }
                Op::Scan { body, n_carry, n_seq } => {
                    let mut args = Vec::with_capacity(n.args.len());
                    for a in &n.args {
                        let v = map[a.index()];
                        let want = self.policy(src.tensor_type(*a), false).dtype;
                        args.push(self.coerce(&mut g, &mut c, v, want));
                    }
                    let body = self.graph(body, false)?;
                    let Type::Tuple(old) = &n.ty else { return Err(internal("scan of a tensor type")) };
                    let nc = *n_carry as usize;
                    let ts: Vec<TensorType> = old
                        .iter()
                        .enumerate()
                        .map(|(j, t)| {
                            let d = if j < nc { body.inputs[j].dtype } else { body.tensor_type(body.outputs[j]).dtype };
                            t.with_dtype(d)
                        })
                        .collect();
                    let op = Op::Scan { body: Box::new(body), n_carry: *n_carry, n_seq: *n_seq };
                    g.push(op, args, Type::Tuple(ts))
                }
                Op::Attention(a) | Op::AttentionGrad(a) => {
                    // Everything in the storage dtype but the logsumexp,
                    // which attention keeps in f32.
                    let forward = matches!(n.op, Op::Attention(_));
                    let lse = (!forward).then(|| a.forward_arity() + 1);
                    let mut args = Vec::with_capacity(n.args.len());
                    for (i, x) in n.args.iter().enumerate() {
                        let want = if Some(i) == lse { DType::F32 } else { self.policy(src.tensor_type(*x), false).dtype };
                        args.push(self.coerce(&mut g, &mut c, map[x.index()], want));
                    }
                    let tys: Vec<&TensorType> = args.iter().map(|v| g.tensor_type(*v)).collect();
                    let ts = if forward { a.forward_types(&tys) } else { a.backward_types(&tys) };
                    g.push(n.op.clone(), args, Type::Tuple(ts.map_err(|e| internal(&e))?))
                }
                Op::Compare(_) => {
                    // Compare in the wider dtype when the operands now differ.
                    let (a, b) = (map[n.args[0].index()], map[n.args[1].index()]);
                    let (da, db) = (g.tensor_type(a).dtype, g.tensor_type(b).dtype);
                    let (a, b) = if da == db {
                        (a, b)
                    } else if da == DType::F32 {
                        (a, self.coerce(&mut g, &mut c, b, DType::F32))
                    } else {
                        (self.coerce(&mut g, &mut c, a, DType::F32), b)
                    };
                    g.push(n.op.clone(), vec![a, b], n.ty.clone())
                }
                Op::Cast | Op::OneHot | Op::Reduce { op: kiln_ir::ReduceOp::ArgMax, .. } => {
                    let ty = self.policy(n.ty.tensor().ok_or_else(|| internal("tuple-typed op"))?, top);
                    let args = n.args.iter().map(|a| map[a.index()]).collect();
                    g.push_tensor(n.op.clone(), args, ty)
                }
                _ => {
                    // Every other op's float operands share the result's dtype
                    // (select's condition and gather's indices are not float).
                    let ty = self.policy(n.ty.tensor().ok_or_else(|| internal("tuple-typed op"))?, top);
                    let mut args = Vec::with_capacity(n.args.len());
                    for a in &n.args {
                        let v = map[a.index()];
                        args.push(if old_float(a) { self.coerce(&mut g, &mut c, v, ty.dtype) } else { v });
                    }
                    g.push_tensor(n.op.clone(), args, ty)
                }
            };
            map.push(new_id);
        }
        for &o in &src.outputs {
            let v = map[o.index()];
            let v = if top {
                v
            } else {
                let want = self.policy(src.tensor_type(o), false).dtype;
                self.coerce(&mut g, &mut c, v, want)
            };
            g.outputs.push(v);
        }
        if !top {
            // A carry's new value must have its input's type.
            for (j, t) in src.inputs.iter().enumerate().take(src.outputs.len()) {
                if t.dtype == DType::F32 && g.tensor_type(g.outputs[j]).dtype != g.inputs[j].dtype {
                    return Err(internal("a carry changed dtype"));
                }
            }
        }
        Ok(g)
    }
}

/// Dynamic loss scaling: the scale doubles after `growth_interval`
/// consecutive steps with finite gradients and halves on a step whose
/// gradients overflow (that step's update is skipped).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The current scale.
    pub scale: f64,
    /// Clean steps before the scale doubles.
    pub growth_interval: u32,
    /// Clean steps since the last change.
    pub clean_steps: u32,
    /// Steps skipped in a row (a run that keeps overflowing has diverged).
    pub skipped_in_a_row: u32,
}

impl LossScaler {
    /// The scale never exceeds this (f32 gradients would overflow).
    pub const MAX_SCALE: f64 = 16_777_216.0;
    /// After this many skipped steps in a row the run has diverged.
    pub const MAX_SKIPS: u32 = 24;

    /// A scaler starting at `scale`, doubling every `growth_interval` clean steps.
    pub fn new(scale: f64, growth_interval: u32) -> LossScaler {
        LossScaler { scale, growth_interval: growth_interval.max(1), clean_steps: 0, skipped_in_a_row: 0 }
    }

    /// Records a step: `finite` says whether its gradients were finite.
    /// Returns whether the update should be applied.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.skipped_in_a_row = 0;
            self.clean_steps += 1;
            if self.clean_steps >= self.growth_interval {
                self.clean_steps = 0;
                self.scale = (self.scale * 2.0).min(Self::MAX_SCALE);
            }
        } else {
            self.skipped_in_a_row += 1;
            self.clean_steps = 0;
            // Powers of two keep scaling exact; never below 2^-24.
            self.scale = (self.scale / 2.0).max(1.0 / 16_777_216.0);
        }
        finite
    }

    /// True when overflow persisted so long that the run has diverged.
    pub fn gave_up(&self) -> bool {
        self.skipped_in_a_row >= Self::MAX_SKIPS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaler_grows_and_backs_off() {
        let mut s = LossScaler::new(1024.0, 2);
        assert!(s.update(true));
        assert_eq!(s.scale, 1024.0);
        assert!(s.update(true));
        assert_eq!(s.scale, 2048.0);
        assert!(!s.update(false));
        assert_eq!(s.scale, 1024.0);
        assert_eq!(s.clean_steps, 0);
        for _ in 0..LossScaler::MAX_SKIPS - 2 {
            s.update(false);
        }
        assert!(!s.gave_up());
        s.update(false);
        assert!(s.gave_up());
        s.update(true);
        assert!(!s.gave_up());
    }
}
