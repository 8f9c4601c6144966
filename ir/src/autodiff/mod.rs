//! Reverse-mode automatic differentiation, as a graph-to-graph transform.
//!
//! [`grad`] takes an entry point whose single output is a float scalar (a
//! loss) and returns a new entry point, `{name}_grad`, with the same
//! arguments. Its graph is a copy of the forward graph followed by the
//! adjoint graph; it returns the loss, then one gradient per selected
//! parameter (`grad.{param}`), then one per selected float argument
//! (`grad.{arg}`). Shapes stay symbolic: nothing is specialized to sizes.
//!
//! The driver walks the forward nodes backwards, applying each op's
//! vector-Jacobian product (the rules live in one file per op group) and
//! summing the contributions a value receives from its several users.
//! Only *active* values get adjoints: float values that depend on a
//! selected parameter or argument. Integer and bool values, constants and
//! masks therefore never receive a gradient, which also keeps `-inf` mask
//! constants out of the adjoint arithmetic.
//!
//! Conventions at non-differentiable points, chosen to match JAX:
//! `relu'(0) = 0`, `abs'(0) = 0`; binary `max`/`min` split the gradient
//! evenly between tied operands; `reduce_max`/`reduce_min` divide it evenly
//! among all tied maximal (minimal) elements. `pow(a, b)` gives `b` the
//! gradient `y * log(a)` with `log(0)` taken as 0 (so it is finite at
//! `a = 0`), and NaN for negative `a`.
//!
//! Fused attention's VJP is one `attention_grad` node (see `attention.rs`):
//! it recomputes the probabilities from the saved logsumexp instead of
//! differentiating the naive graph; `lse` itself and an additive mask have
//! no gradient (an error when one is needed).
//!
//! An entry with a non-scalar output, or several, is differentiated through
//! [`vjp_loss`] (`vjp.rs`): the loss `sum(output * cotangent)`, whose
//! gradient is the vector-Jacobian product.
//!
//! `scan` is differentiated by another `scan` over the reversed sequence;
//! see `scan.rs`. Its forward copy is augmented to also emit each step's
//! incoming carries, and the backward body *rematerializes* the forward
//! body for its step from them, trading compute for memory: nothing but
//! the carries is saved per step.

mod attention;
mod build;
mod elementwise;
mod index;
mod layout;
mod matmul;
mod normalize;
mod reduce;
mod scan;
mod vjp;

pub use vjp::{cotangent_arg, vjp_loss};

use crate::verify::{self, VerifyError};
use crate::{DimExpr, Function, Graph, Module, Node, Op, ReduceOp, TensorType, Type, ValueId};
use build::B;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use thiserror::Error;

/// Which parameters get gradients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParamSet {
    /// Every parameter of the module, in index order.
    #[default]
    All,
    /// These parameter indices, in this order; the others are frozen.
    Only(Vec<u32>),
}

/// What to differentiate with respect to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wrt {
    /// Selected parameters; frozen ones get no output.
    pub params: ParamSet,
    /// Argument positions of float arguments that also get a gradient, in
    /// output order.
    pub inputs: Vec<u32>,
}

impl Wrt {
    /// Every parameter, no arguments.
    pub fn all_params() -> Wrt {
        Wrt::default()
    }

    /// Only these parameters (by index into [`Module::params`]), no arguments.
    pub fn params(indices: impl IntoIterator<Item = u32>) -> Wrt {
        Wrt { params: ParamSet::Only(indices.into_iter().collect()), inputs: Vec::new() }
    }

    /// No parameters at all (for gradients with respect to arguments only).
    pub fn no_params() -> Wrt {
        Wrt::params([])
    }

    /// The same selection, plus gradients for these argument positions.
    pub fn with_inputs(mut self, indices: impl IntoIterator<Item = u32>) -> Wrt {
        self.inputs.extend(indices);
        self
    }
}

/// Why a gradient function could not be built.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum AutodiffError {
    /// The function given does not verify.
    #[error("cannot differentiate an invalid function: {0}")]
    Invalid(VerifyError),
    /// The function does not have exactly one output.
    #[error("function `{name}` has {count} outputs; a gradient needs exactly one (a scalar loss)")]
    OutputCount {
        /// The function's name.
        name: String,
        /// How many outputs it has.
        count: usize,
    },
    /// The single output is not a float scalar.
    #[error("function `{name}` returns {ty}; a gradient needs a float scalar")]
    NotScalarLoss {
        /// The function's name.
        name: String,
        /// The output's type, as IR text.
        ty: String,
    },
    /// A selected parameter index is out of range.
    #[error("parameter index {index} out of range ({count} parameters)")]
    ParamOutOfRange {
        /// The index given.
        index: u32,
        /// `Module::params.len()`.
        count: usize,
    },
    /// A selected argument index is out of range.
    #[error("argument index {index} out of range (`{name}` takes {count})")]
    InputOutOfRange {
        /// The index given.
        index: u32,
        /// The function's name.
        name: String,
        /// Its number of arguments.
        count: usize,
    },
    /// A selected argument is not a float tensor.
    #[error("argument `{name}` is {dtype}; only float arguments have gradients")]
    InputNotFloat {
        /// The argument's name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// A parameter or argument was selected twice.
    #[error("`{name}` is selected twice")]
    Duplicate {
        /// The parameter's or argument's name.
        name: String,
    },
    /// A selected output index is out of range.
    #[error("output index {index} out of range ({count} outputs)")]
    OutputOutOfRange {
        /// The index given.
        index: u32,
        /// The function's number of outputs.
        count: usize,
    },
    /// A selected output is not a float tensor, so it has no cotangent.
    #[error("output `{name}` is {ty}; only float outputs have a cotangent")]
    NotFloatOutput {
        /// The output's name.
        name: String,
        /// Its type, as IR text.
        ty: String,
    },
    /// A vector-Jacobian product was asked for with no output selected.
    #[error("function `{name}`: no output has a cotangent")]
    NoCotangent {
        /// The function's name.
        name: String,
    },
    /// An op on an active value has no derivative rule.
    #[error("cannot differentiate `{op}`: {reason}")]
    Unsupported {
        /// The op's name.
        op: String,
        /// Why.
        reason: String,
    },
    /// The gradient graph failed verification: a bug in this module.
    #[error("internal error: the gradient function does not verify: {0}")]
    Internal(VerifyError),
}

/// Builds the gradient entry point of `f`, a function of `m` with a single
/// float scalar output, with respect to the parameters and arguments that
/// `wrt` selects. See the [module docs](self) for the result's layout.
///
/// Selected parameters the loss does not depend on get a zero gradient, as
/// do selected non-float parameters.
pub fn grad(m: &Module, f: &Function, wrt: &Wrt) -> Result<Function, AutodiffError> {
    verify::function(m, f).map_err(AutodiffError::Invalid)?;
    let g = &f.graph;
    if g.outputs.len() != 1 {
        return Err(AutodiffError::OutputCount { name: f.name.clone(), count: g.outputs.len() });
    }
    let loss = g.outputs[0];
    let loss_ty = g.tensor_type(loss);
    if loss_ty.rank() != 0 || !loss_ty.dtype.is_float() {
        return Err(AutodiffError::NotScalarLoss { name: f.name.clone(), ty: loss_ty.to_string() });
    }

    let params: Vec<u32> = match &wrt.params {
        ParamSet::All => (0..m.params.len() as u32).collect(),
        ParamSet::Only(list) => list.clone(),
    };
    let mut selected = vec![false; m.params.len()];
    for &p in &params {
        let slot =
            selected.get_mut(p as usize).ok_or(AutodiffError::ParamOutOfRange { index: p, count: m.params.len() })?;
        if std::mem::replace(slot, true) {
            return Err(AutodiffError::Duplicate { name: m.params[p as usize].name.clone() });
        }
    }
    let mut input_act = vec![false; g.inputs.len()];
    for &i in &wrt.inputs {
        let count = g.inputs.len();
        let slot = input_act.get_mut(i as usize).ok_or_else(|| AutodiffError::InputOutOfRange {
            index: i,
            name: f.name.clone(),
            count,
        })?;
        let name = f.arg_names[i as usize].clone();
        if !g.inputs[i as usize].dtype.is_float() {
            return Err(AutodiffError::InputNotFloat { name, dtype: g.inputs[i as usize].dtype.to_string() });
        }
        if std::mem::replace(slot, true) {
            return Err(AutodiffError::Duplicate { name });
        }
    }

    let cx = Ctx { m, params: selected };
    let mut sw = Sweep::new(&cx, g, g.inputs.clone(), &input_act, &|j| j, &[loss]);
    if sw.active(loss) {
        let one = B::new(&mut sw.g).scalar(1.0, loss_ty.dtype);
        sw.seed(loss, one);
        sw.run()?;
    }

    let mut outputs = vec![loss];
    let mut output_names = f.output_names.clone();
    for &p in &params {
        let param = &m.params[p as usize];
        let d = match sw.param_grads.get(&p) {
            Some(&d) => d,
            None => B::new(&mut sw.g).zeros(&param.ty),
        };
        outputs.push(d);
        output_names.push(format!("grad.{}", param.name));
    }
    for &i in &wrt.inputs {
        let d = match sw.input_grads.get(&i) {
            Some(&d) => d,
            None => B::new(&mut sw.g).zeros(&g.inputs[i as usize]),
        };
        outputs.push(d);
        output_names.push(format!("grad.{}", f.arg_names[i as usize]));
    }
    let mut graph = sw.g;
    graph.outputs = outputs;
    let out = Function {
        name: format!("{}_grad", f.name),
        arg_names: f.arg_names.clone(),
        arg_bounds: f.arg_bounds.clone(),
        arg_ignore: f.arg_ignore.clone(),
        output_names,
        dim_vars: f.dim_vars.clone(),
        constraints: f.constraints.clone(),
        graph,
    };
    verify::function(m, &out).map_err(AutodiffError::Internal)?;
    Ok(out)
}

/// What every sweep, at any scan depth, shares.
struct Ctx<'m> {
    m: &'m Module,
    /// `params[i]`: parameter `i` is differentiated.
    params: Vec<bool>,
}

/// Per node, per result element (one for a tensor, one per tuple element):
/// does the value carry a derivative?
type Activity = Vec<Vec<bool>>;

/// The activity of `g`'s values when input `j` is active iff `inputs[j]`.
fn activity(cx: &Ctx, g: &Graph, inputs: &[bool]) -> Activity {
    let mut act: Activity = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let float = n.ty.tensor().is_some_and(|t| t.dtype.is_float());
        let row = match &n.op {
            Op::Input { index } => vec![float && inputs.get(*index as usize).copied().unwrap_or(false)],
            Op::Param { index } => vec![float && cx.params.get(*index as usize).copied().unwrap_or(false)],
            Op::Const { .. } | Op::Iota { .. } | Op::Compare(_) | Op::OneHot => vec![false],
            Op::Reduce { op: ReduceOp::ArgMax, .. } => vec![false],
            Op::Extract { index } => vec![act[n.args[0].index()].get(*index as usize).copied().unwrap_or(false)],
            Op::Scan { body, n_carry, .. } => {
                let args: Vec<bool> = n.args.iter().map(|a| act[a.index()][0]).collect();
                scan_activity(cx, body, *n_carry as usize, &args).tuple
            }
            Op::Attention(_) => vec![n.args.iter().any(|a| act[a.index()][0]); 2],
            _ => vec![float && n.args.iter().any(|a| act[a.index()][0])],
        };
        act.push(row);
    }
    act
}

/// The activity of a scan's body and results.
struct ScanActivity {
    /// Per body input: active (a carry is active when its initial value is,
    /// or when the body makes its next value active).
    inputs: Vec<bool>,
    /// The scan's result tuple.
    tuple: Vec<bool>,
}

/// Finds the carries' activity as a fixed point: a carry that starts
/// inactive becomes active when some step's new value depends on an active
/// value. Each round activates at least one more carry, so it terminates.
fn scan_activity(cx: &Ctx, body: &Graph, nc: usize, args: &[bool]) -> ScanActivity {
    let mut inputs = args.to_vec();
    loop {
        let act = activity(cx, body, &inputs);
        let mut changed = false;
        for j in 0..nc {
            if act[body.outputs[j].index()][0] && !inputs[j] {
                inputs[j] = true;
                changed = true;
            }
        }
        if !changed {
            let mut tuple = inputs[..nc].to_vec();
            tuple.extend(body.outputs[nc..].iter().map(|o| act[o.index()][0]));
            return ScanActivity { inputs, tuple };
        }
    }
}

/// Per node of `g`: does some root depend on it?
fn reaches(g: &Graph, roots: &[ValueId]) -> Vec<bool> {
    let mut reach = vec![false; g.nodes.len()];
    for r in roots {
        reach[r.index()] = true;
    }
    for i in (0..g.nodes.len()).rev() {
        if reach[i] {
            for a in &g.nodes[i].args {
                reach[a.index()] = true;
            }
        }
    }
    reach
}

/// Adds to `out` every parameter used in `g` or in its scans' bodies.
fn used_params(g: &Graph, out: &mut BTreeSet<u32>) {
    for n in &g.nodes {
        match &n.op {
            Op::Param { index } => {
                out.insert(*index);
            }
            Op::Scan { body, .. } => used_params(body, out),
            _ => {}
        }
    }
}

/// Reverse-mode state for one graph: a copy of a forward graph in nodes
/// `0..n_fwd` (same value ids), and the adjoint nodes appended after it.
struct Sweep<'c, 'm> {
    cx: &'c Ctx<'m>,
    /// The graph being built.
    g: Graph,
    /// Activity of the forward nodes.
    act: Activity,
    /// Number of forward nodes.
    n_fwd: usize,
    /// Adjoints found so far, keyed by value and tuple element (0 for tensors).
    adj: HashMap<(ValueId, u32), ValueId>,
    /// Summed adjoints of `input` nodes, by input index of `g`.
    input_grads: BTreeMap<u32, ValueId>,
    /// Summed gradients of the selected parameters.
    param_grads: BTreeMap<u32, ValueId>,
    /// For each forward scan augmented to save its carries: the tuple
    /// index of the first saved carry.
    saved: HashMap<ValueId, u32>,
}

impl<'c, 'm> Sweep<'c, 'm> {
    /// Starts a graph with the given `inputs` whose first nodes are a copy
    /// of `src`, with `src`'s input `j` read from input `remap(j)`.
    /// `input_act[j]` says whether `src`'s input `j` is active; `roots`
    /// are the values that will be seeded.
    fn new(
        cx: &'c Ctx<'m>,
        src: &Graph,
        inputs: Vec<TensorType>,
        input_act: &[bool],
        remap: &dyn Fn(u32) -> u32,
        roots: &[ValueId],
    ) -> Sweep<'c, 'm> {
        let act = activity(cx, src, input_act);
        let mut sw = Sweep {
            cx,
            g: Graph { nodes: Vec::with_capacity(src.nodes.len() * 3), inputs, outputs: Vec::new() },
            act,
            n_fwd: src.nodes.len(),
            adj: HashMap::new(),
            input_grads: BTreeMap::new(),
            param_grads: BTreeMap::new(),
            saved: HashMap::new(),
        };
        let reach = reaches(src, roots);
        sw.copy_forward(src, remap, &reach);
        sw
    }

    /// Copies `src` node for node. Active scans with carries that lead to
    /// a root (`reach`) are augmented to emit each step's incoming carries
    /// (after their own results), for the backward pass to rematerialize
    /// the step from.
    fn copy_forward(&mut self, src: &Graph, remap: &dyn Fn(u32) -> u32, reach: &[bool]) {
        for (i, n) in src.nodes.iter().enumerate() {
            let mut n = n.clone();
            let differentiated = reach[i] && self.act[i].iter().any(|&a| a);
            match &mut n.op {
                Op::Input { index } => *index = remap(*index),
                Op::Scan { body, n_carry, .. } if *n_carry > 0 && differentiated => {
                    let Type::Tuple(ts) = &mut n.ty else { unreachable!("verified: scan yields a tuple") };
                    let nc = *n_carry as usize;
                    let len = self.g.tensor_type(n.args[nc]).shape[0].clone();
                    self.saved.insert(ValueId(i as u32), ts.len() as u32);
                    for j in 0..nc {
                        let t = body.inputs[j].clone();
                        let want = Op::Input { index: j as u32 };
                        let x = match body.nodes.iter().position(|n| n.op == want) {
                            Some(at) => ValueId(at as u32),
                            None => body.push_tensor(want, vec![], t.clone()),
                        };
                        body.outputs.push(x);
                        let mut shape = vec![len.clone()];
                        shape.extend(t.shape);
                        ts.push(TensorType::new(t.dtype, shape));
                    }
                }
                _ => {}
            }
            self.g.nodes.push(n);
        }
    }

    /// Is forward value `v` (a tensor) active?
    fn active(&self, v: ValueId) -> bool {
        self.act[v.index()][0]
    }

    /// Adds `d` to the adjoint of element `index` of `v`.
    fn accumulate(&mut self, v: ValueId, index: u32, d: ValueId) {
        let sum = match self.adj.get(&(v, index)) {
            Some(&old) => B::new(&mut self.g).add(old, d),
            None => d,
        };
        self.adj.insert((v, index), sum);
    }

    /// Adds `d` to the adjoint of tensor `v`.
    fn seed(&mut self, v: ValueId, d: ValueId) {
        self.accumulate(v, 0, d);
    }

    /// Adds `d` to the gradient of parameter `p`.
    fn add_param_grad(&mut self, p: u32, d: ValueId) {
        let sum = match self.param_grads.get(&p) {
            Some(&old) => B::new(&mut self.g).add(old, d),
            None => d,
        };
        self.param_grads.insert(p, sum);
    }

    /// Walks the forward nodes backwards, turning each active node's
    /// adjoint into its arguments' adjoints.
    fn run(&mut self) -> Result<(), AutodiffError> {
        for i in (0..self.n_fwd).rev() {
            let v = ValueId(i as u32);
            if let Op::Scan { .. } = &self.g.nodes[i].op {
                let n = match &self.g.nodes[i].ty {
                    Type::Tuple(ts) => ts.len(),
                    Type::Tensor(_) => unreachable!("verified: scan yields a tuple"),
                };
                let dys: Vec<Option<ValueId>> = (0..n as u32).map(|k| self.adj.get(&(v, k)).copied()).collect();
                if dys.iter().any(Option::is_some) {
                    let contribs = scan::vjp(self, v, &dys)?;
                    self.distribute(v, contribs);
                }
                continue;
            }
            if let Op::Attention(_) = &self.g.nodes[i].op {
                if self.adj.contains_key(&(v, 1)) {
                    return Err(unsupported(&self.g.nodes[i].op, "its logsumexp result is not differentiable"));
                }
                if let Some(&dy) = self.adj.get(&(v, 0)) {
                    let node = self.g.nodes[i].clone();
                    let need: Vec<bool> = node.args.iter().map(|&a| self.active(a)).collect();
                    let contribs = attention::vjp(&mut B::new(&mut self.g), &node, v, dy, &need)?;
                    self.distribute(v, contribs);
                }
                continue;
            }
            let Some(&dy) = self.adj.get(&(v, 0)) else { continue };
            if !self.act[i][0] {
                continue;
            }
            let node = self.g.nodes[i].clone();
            match node.op {
                Op::Input { index } => {
                    let sum = match self.input_grads.get(&index) {
                        Some(&old) => B::new(&mut self.g).add(old, dy),
                        None => dy,
                    };
                    self.input_grads.insert(index, sum);
                }
                Op::Param { index } => self.add_param_grad(index, dy),
                Op::Extract { index } => self.accumulate(node.args[0], index, dy),
                _ => {
                    let need: Vec<bool> = node.args.iter().map(|&a| self.active(a)).collect();
                    let contribs = vjp(&mut B::new(&mut self.g), &node, v, dy, &need)?;
                    self.distribute(v, contribs);
                }
            }
        }
        Ok(())
    }

    /// Adds per-argument adjoint contributions of node `v` to its active arguments.
    fn distribute(&mut self, v: ValueId, contribs: Vec<Option<ValueId>>) {
        let args = self.g.nodes[v.index()].args.clone();
        debug_assert_eq!(args.len(), contribs.len());
        for (a, c) in args.into_iter().zip(contribs) {
            if let Some(c) = c {
                if self.active(a) {
                    self.seed(a, c);
                }
            }
        }
    }
}

/// The adjoints of a tensor node's arguments (`None` where not needed or
/// not differentiable), given its result `y` and the result's adjoint `dy`.
fn vjp(b: &mut B, node: &Node, y: ValueId, dy: ValueId, need: &[bool]) -> Result<Vec<Option<ValueId>>, AutodiffError> {
    match &node.op {
        Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast => elementwise::vjp(b, node, y, dy, need),
        Op::Broadcast | Op::Reshape | Op::Transpose { .. } | Op::Concat { .. } | Op::Slice { .. } => {
            Ok(layout::vjp(b, node, dy, need))
        }
        Op::Reduce { .. } => Ok(reduce::vjp(b, node, y, dy, need)),
        Op::MatMul => Ok(matmul::vjp(b, node, dy, need)),
        Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::LayerNorm { .. } | Op::RmsNorm { .. } => {
            Ok(normalize::vjp(b, node, y, dy, need))
        }
        Op::Gather { .. } => Ok(index::vjp(b, node, dy, need)),
        // Same seed, same flat indices: the forward's mask, scaled alike.
        Op::Dropout { p } => Ok(vec![Some(b.dropout(dy, node.args[1], *p)), None]),
        op => Err(unsupported(op, "it has no derivative rule for float operands")),
    }
}

/// An [`AutodiffError::Unsupported`] for `op`.
fn unsupported(op: &Op, reason: &str) -> AutodiffError {
    AutodiffError::Unsupported { op: op.name(), reason: reason.to_string() }
}

/// The product of some dims.
fn product(dims: &[DimExpr]) -> DimExpr {
    dims.iter().fold(DimExpr::constant(1), |acc, d| acc.mul(d))
}
