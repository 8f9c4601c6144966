//! The reference interpreter: the oracle every backend is tested against.
//!
//! It is deliberately naive (plain loops over row-major `f64` data) so that
//! it is obviously right. Each op is computed in f64; [`Precision`] decides
//! whether float results are then rounded to their dtype. Integer and bool
//! results are always exact for their dtype (wrapping like a two's
//! complement cast), as long as values stay within 2^53.
//!
//! [`run`] verifies the graph first, so a verified graph with inputs that
//! match its declared types never panics: every runtime failure (unbound
//! dims, bad indices, integer division by zero) is an [`InterpError`].

mod attention;
mod elementwise;
mod error;
mod index;
mod layout;
mod matmul;
mod normalize;
mod reduce;
pub(crate) mod scalar;
mod scan;
mod tensor;

pub use error::InterpError;
pub use scalar::{erf, erfc};
pub use tensor::Tensor;

use crate::{DType, DimExpr, Graph, Module, Node, Op, Type};
use error::OpError;
use tensor::{numel, shape_str};

/// The reference's error for reduction node `node` (`%3 = reduce_argmax`)
/// of `count` values per result, when it has none (see
/// `reduce::empty_error`): known once the dims are, so the scheduler
/// refuses the same cases before a backend runs anything.
pub(crate) fn empty_reduce_error(node: String, op: crate::ReduceOp, dtype: DType, count: usize) -> Option<InterpError> {
    reduce::empty_error(op, dtype, count).map(|e| e.at(node))
}

/// How float results are stored between ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Ideal math: float values are never rounded to their dtype.
    F64,
    /// Every float element of every op's result (and of every input and
    /// parameter) is rounded to the node's dtype. This models f32 (or f16,
    /// bf16) *storage*; each op's internals, such as a matmul's or a
    /// reduction's accumulation, are still computed in f64, so it does not
    /// model a backend's accumulation order.
    F32,
}

/// Runs `g` (a graph of `m`) and returns its outputs.
///
/// `dims` binds the dimension variables of symbolic shapes; `params[i]` is
/// the value of [`crate::Param`] `i` and `inputs[i]` the graph's `i`-th
/// argument, each checked against its declared type.
pub fn run(
    m: &Module,
    g: &Graph,
    dims: &dyn Fn(&str) -> Option<i64>,
    params: &[Tensor],
    inputs: &[Tensor],
    precision: Precision,
) -> Result<Vec<Tensor>, InterpError> {
    crate::verify::graph(m, g)?;
    Env { m, dims, params, precision }.eval(g, inputs)
}

/// What every node evaluation needs besides its arguments.
pub(crate) struct Env<'a> {
    m: &'a Module,
    dims: &'a dyn Fn(&str) -> Option<i64>,
    params: &'a [Tensor],
    precision: Precision,
}

/// A computed value: one tensor, or the tuple a scan yields.
enum Value {
    Tensor(Tensor),
    Tuple(Vec<Tensor>),
}

impl Env<'_> {
    /// A symbolic shape with the dims bound.
    fn shape(&self, shape: &[DimExpr]) -> Result<Vec<usize>, InterpError> {
        shape.iter().map(|d| self.dim(d)).collect()
    }

    fn dim(&self, d: &DimExpr) -> Result<usize, InterpError> {
        let v = d.eval(self.dims).map_err(InterpError::Dim)?;
        usize::try_from(v).map_err(|_| InterpError::NegativeDim { expr: d.to_string(), value: v })
    }

    fn index(&self, d: &DimExpr) -> Result<i64, InterpError> {
        d.eval(self.dims).map_err(InterpError::Dim)
    }

    /// Rounds a result to its dtype: always for integers and bools, and for
    /// floats in f32 mode.
    fn finish(&self, mut t: Tensor) -> Tensor {
        if !t.dtype.is_float() || self.precision == Precision::F32 {
            for x in &mut t.data {
                *x = t.dtype.round(*x);
            }
        }
        t
    }

    /// Checks a caller-supplied tensor (`what` names it) against a declared
    /// type, then rounds it like any other value.
    fn admit(
        &self,
        what: String,
        t: &Tensor,
        dtype: DType,
        shape: &[usize],
        mismatch: impl Fn(String, String) -> InterpError,
    ) -> Result<Tensor, InterpError> {
        let expected = format!("{dtype}{}", shape_str(shape));
        let got = format!("{}{}", t.dtype, shape_str(&t.shape));
        if t.dtype != dtype || t.shape != shape {
            return Err(mismatch(expected, got));
        }
        if t.data.len() != numel(shape) {
            return Err(mismatch(expected, format!("{got} with {} elements", t.data.len())));
        }
        if let Some((pos, &value)) = t.data.iter().enumerate().find(|(_, &x)| !dtype.is_float() && dtype.round(x) != x)
        {
            return Err(InterpError::NotRepresentable { what, pos, value, dtype: dtype.to_string() });
        }
        Ok(self.finish(t.clone()))
    }

    /// Evaluates a graph on checked inputs.
    fn eval(&self, g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
        if inputs.len() != g.inputs.len() {
            return Err(InterpError::InputCount { expected: g.inputs.len(), got: inputs.len() });
        }
        let mut admitted = Vec::with_capacity(inputs.len());
        for (index, (t, ty)) in inputs.iter().zip(&g.inputs).enumerate() {
            let shape = self.shape(&ty.shape)?;
            let t = self.admit(format!("input {index}"), t, ty.dtype, &shape, |expected, got| {
                InterpError::InputMismatch { index, expected, got }
            })?;
            admitted.push(t);
        }
        let mut vals: Vec<Value> = Vec::with_capacity(g.nodes.len());
        for (i, n) in g.nodes.iter().enumerate() {
            let desc = format!("%{i} = {}", n.op.name());
            let v = self.node(n, &vals, &admitted, &desc).map_err(|e| e.at(desc.clone()))?;
            vals.push(v);
        }
        let output = |v: &Value| match v {
            Value::Tensor(t) => t.clone(),
            Value::Tuple(_) => unreachable!("verified: outputs are tensors"),
        };
        Ok(g.outputs.iter().map(|o| output(&vals[o.index()])).collect())
    }

    /// Evaluates one node and checks its result shapes against the node's type.
    fn node(&self, n: &Node, vals: &[Value], inputs: &[Tensor], desc: &str) -> Result<Value, OpError> {
        let want = match &n.ty {
            Type::Tensor(t) => vec![self.shape(&t.shape)],
            Type::Tuple(ts) => ts.iter().map(|t| self.shape(&t.shape)).collect(),
        };
        let want = want.into_iter().collect::<Result<Vec<_>, _>>().map_err(OpError::Full)?;
        // Tuples (only ever the argument of `extract`) are left out here.
        let args: Vec<&Tensor> = n
            .args
            .iter()
            .filter_map(|a| match &vals[a.index()] {
                Value::Tensor(t) => Some(t),
                Value::Tuple(_) => None,
            })
            .collect();
        let out = match (&n.op, &n.ty) {
            (Op::Scan { body, n_carry, n_seq }, _) => {
                let scan = scan::Scan { body, n_carry: *n_carry as usize, n_seq: *n_seq as usize, desc };
                Value::Tuple(scan.run(self, &args, &want)?)
            }
            (Op::Attention(at) | Op::AttentionGrad(at), _) => {
                let c = at.causal.as_ref().map_or(Ok(0), |c| self.index(c)).map_err(OpError::Full)?;
                let ts = if matches!(n.op, Op::Attention(_)) {
                    attention::forward(at, &args, c)
                } else {
                    attention::backward(at, &args, c)
                };
                Value::Tuple(ts.into_iter().map(|t| self.finish(t)).collect())
            }
            (Op::Extract { index }, _) => match &vals[n.args[0].index()] {
                Value::Tuple(ts) => Value::Tensor(ts[*index as usize].clone()),
                Value::Tensor(_) => unreachable!("verified: extract takes a tuple"),
            },
            (op, Type::Tensor(t)) => Value::Tensor(self.tensor_op(op, &args, t.dtype, &want[0], inputs)?),
            (_, Type::Tuple(_)) => unreachable!("verified: only scan and attention yield tuples"),
        };
        let got: Vec<&[usize]> = match &out {
            Value::Tensor(t) => vec![&t.shape],
            Value::Tuple(ts) => ts.iter().map(|t| t.shape.as_slice()).collect(),
        };
        for (g, w) in got.iter().zip(&want) {
            if *g != w.as_slice() {
                return Err(
                    format!("result shape {} disagrees with the node's type {}", shape_str(g), shape_str(w)).into()
                );
            }
        }
        Ok(out)
    }

    /// Evaluates an op whose result is one tensor of `dtype` and `shape`.
    fn tensor_op(
        &self,
        op: &Op,
        a: &[&Tensor],
        dtype: DType,
        shape: &[usize],
        inputs: &[Tensor],
    ) -> Result<Tensor, OpError> {
        let t = match op {
            Op::Input { index } => return Ok(inputs[*index as usize].clone()),
            Op::Param { index } => return self.param(*index as usize, shape).map_err(OpError::Full),
            Op::Const { value } => Tensor::scalar(dtype, *value),
            Op::Iota { axis } => index::iota(*axis as usize, shape, dtype),
            Op::Unary(u) => elementwise::unary(*u, a[0]),
            Op::Binary(b) => elementwise::binary(*b, a[0], a[1])?,
            Op::Compare(c) => elementwise::compare(*c, a[0], a[1]),
            Op::Select => elementwise::select(a[0], a[1], a[2]),
            Op::Cast => Tensor::new(dtype, a[0].shape.clone(), a[0].data.clone()),
            Op::Broadcast => layout::broadcast(a[0], shape)?,
            Op::Reshape => layout::reshape(a[0], shape)?,
            Op::Transpose { perm } => layout::transpose(a[0], perm),
            Op::Reduce { op, axes, keepdim } => reduce::reduce(*op, a[0], axes, *keepdim)?,
            Op::MatMul => matmul::matmul(a[0], a[1]),
            Op::Softmax { axis } => normalize::softmax(a[0], *axis as usize, false),
            Op::LogSoftmax { axis } => normalize::softmax(a[0], *axis as usize, true),
            Op::LayerNorm { eps } => normalize::layer_norm(a[0], a[1], a[2], *eps),
            Op::RmsNorm { eps } => normalize::rms_norm(a[0], a[1], *eps),
            Op::Concat { axis } => layout::concat(a, *axis as usize),
            Op::Slice { axis, start, end, step } => {
                let start = self.index(start).map_err(OpError::Full)?;
                let end = self.index(end).map_err(OpError::Full)?;
                layout::slice(a[0], *axis as usize, start, end, *step as usize)?
            }
            Op::Gather { axis } => index::gather(a[0], a[1], *axis as usize)?,
            Op::OneHot => index::one_hot(a[0], shape, dtype)?,
            Op::Dropout { p } => elementwise::dropout(a[0], a[1], *p),
            Op::Scan { .. } | Op::Extract { .. } | Op::Attention(_) | Op::AttentionGrad(_) => {
                unreachable!("handled by node")
            }
        };
        Ok(self.finish(t))
    }

    /// The value of parameter `index`, checked against the module.
    fn param(&self, index: usize, shape: &[usize]) -> Result<Tensor, InterpError> {
        let p = &self.m.params[index];
        let t = self.params.get(index).ok_or_else(|| InterpError::MissingParam {
            index,
            name: p.name.clone(),
            given: self.params.len(),
        })?;
        self.admit(format!("param {index} `{}`", p.name), t, p.ty.dtype, shape, |expected, got| {
            InterpError::ParamMismatch { index, name: p.name.clone(), expected, got }
        })
    }
}
