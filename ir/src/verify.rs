//! The verifier: checks a graph's invariants between compiler stages.
//!
//! Every node's arguments must precede it, have the right count, and the
//! node's result type must be the one its op's rule derives from the
//! argument types. Shapes are compared with `DimExpr` equality, which is
//! structural on canonical polynomials, so `B*T` and `T*B` agree but `T`
//! and `T + 0*B` are already the same value. Only `scan` produces tuples
//! and only `extract` consumes them; graph outputs are tensors.

use crate::{
    BinaryOp, DType, DimExpr, Function, Graph, Module, Node, Op, ReduceOp, TensorType, Type, UnaryOp, ValueId,
};
use thiserror::Error;

/// What the verifier found wrong, with enough context to find the node.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum VerifyError {
    /// A node breaks its op's rule; `node` renders it as `%12 = matmul %3, %4 : f32[2, 3]`.
    #[error("{node}: {msg}")]
    Node {
        /// The offending value.
        id: ValueId,
        /// The node as IR text (without attributes).
        node: String,
        /// What is wrong.
        msg: String,
    },
    /// A graph output is invalid.
    #[error("output {index} ({value}): {msg}")]
    Output {
        /// Position in `Graph::outputs`.
        index: usize,
        /// The output value.
        value: ValueId,
        /// What is wrong.
        msg: String,
    },
    /// An error inside the body graph of a `scan` node.
    #[error("in the body of {node}: {inner}")]
    Body {
        /// The scan node as IR text.
        node: String,
        /// The error inside the body.
        inner: Box<VerifyError>,
    },
    /// A function's metadata disagrees with its graph.
    #[error("function `{name}`: {msg}")]
    Function {
        /// The function's name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// An error inside a function's graph.
    #[error("in function `{name}`: {inner}")]
    InFunction {
        /// The function's name.
        name: String,
        /// The error inside the graph.
        inner: Box<VerifyError>,
    },
    /// A module parameter is malformed.
    #[error("param {index} `{name}`: {msg}")]
    Param {
        /// Index into `Module::params`.
        index: usize,
        /// The parameter's name.
        name: String,
        /// What is wrong.
        msg: String,
    },
}

/// Checks every parameter and every function of a module.
pub fn module(m: &Module) -> Result<(), VerifyError> {
    for (index, p) in m.params.iter().enumerate() {
        let err = |msg: String| VerifyError::Param { index, name: p.name.clone(), msg };
        if let Some(stack) = &p.stack {
            if !p.name.starts_with(stack.as_str()) {
                return Err(err(format!("stack `{stack}` is not a prefix of the name")));
            }
            if p.ty.rank() == 0 {
                return Err(err("a stacked parameter needs a leading stack axis".into()));
            }
        }
    }
    for (i, f) in m.functions.iter().enumerate() {
        if m.functions[..i].iter().any(|g| g.name == f.name) {
            return Err(VerifyError::Function { name: f.name.clone(), msg: "defined twice".into() });
        }
        function(m, f)?;
    }
    Ok(())
}

/// Checks one entry point: its metadata is parallel to its graph, and the graph.
pub fn function(m: &Module, f: &Function) -> Result<(), VerifyError> {
    let err = |msg: String| VerifyError::Function { name: f.name.clone(), msg };
    let g = &f.graph;
    if f.arg_names.len() != g.inputs.len() {
        return Err(err(format!("{} argument names for {} inputs", f.arg_names.len(), g.inputs.len())));
    }
    if f.arg_bounds.len() != g.inputs.len() {
        return Err(err(format!("{} argument bounds for {} inputs", f.arg_bounds.len(), g.inputs.len())));
    }
    if f.arg_ignore.len() != g.inputs.len() {
        return Err(err(format!("{} ignored indices for {} inputs", f.arg_ignore.len(), g.inputs.len())));
    }
    for (i, ((b, t), ig)) in f.arg_bounds.iter().zip(&g.inputs).zip(&f.arg_ignore).enumerate() {
        if b.is_some() && !t.dtype.is_int() {
            return Err(err(format!("argument {i} has an index bound but dtype {}", t.dtype)));
        }
        if ig.is_some() && b.is_none() {
            return Err(err(format!("argument {i} has an ignored index but no bound")));
        }
    }
    if f.output_names.len() != g.outputs.len() {
        return Err(err(format!("{} output names for {} outputs", f.output_names.len(), g.outputs.len())));
    }
    graph(m, g).map_err(|e| VerifyError::InFunction { name: f.name.clone(), inner: Box::new(e) })
}

/// Checks a graph (and, recursively, the bodies of its scans).
pub fn graph(m: &Module, g: &Graph) -> Result<(), VerifyError> {
    for (i, n) in g.nodes.iter().enumerate() {
        let id = ValueId(i as u32);
        check_node(m, g, id, n)?;
    }
    for (index, &value) in g.outputs.iter().enumerate() {
        let msg = match g.nodes.get(value.index()) {
            None => format!("refers to a value past the last node ({} nodes)", g.nodes.len()),
            Some(n) if n.ty.tensor().is_none() => "is a tuple; only `extract` may consume one".into(),
            Some(_) => continue,
        };
        return Err(VerifyError::Output { index, value, msg });
    }
    Ok(())
}

/// Renders a node as `%12 = matmul %3, %4 : f32[2, 3]` for messages.
fn render(id: ValueId, n: &Node) -> String {
    let args: Vec<String> = n.args.iter().map(|a| a.to_string()).collect();
    let sep = if args.is_empty() { "" } else { " " };
    format!("{id} = {}{sep}{} : {}", n.op.name(), args.join(", "), n.ty)
}

/// Returns `Err(format!(...))` from the enclosing function unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn check_node(m: &Module, g: &Graph, id: ValueId, n: &Node) -> Result<(), VerifyError> {
    let err = |msg: String| VerifyError::Node { id, node: render(id, n), msg };
    // Structural rules first, so op rules may index arguments freely.
    for &a in &n.args {
        if a >= id {
            return Err(err(format!("argument {a} does not precede its user")));
        }
        let is_tuple = g.node(a).ty.tensor().is_none();
        if is_tuple != matches!(n.op, Op::Extract { .. }) {
            let msg = if is_tuple { "only `extract` may consume a tuple" } else { "`extract` needs a tuple argument" };
            return Err(err(format!("argument {a}: {msg}")));
        }
    }
    if let Op::Scan { body, .. } = &n.op {
        // The body first: its output types feed the scan's own rule.
        graph(m, body).map_err(|e| VerifyError::Body { node: render(id, n), inner: Box::new(e) })?;
    }
    let result = match (&n.op, &n.ty) {
        (Op::Scan { body, n_carry, n_seq }, Type::Tuple(ts)) => {
            let args = arg_types(g, n);
            check_scan(body, *n_carry as usize, *n_seq as usize, &args, ts)
        }
        (Op::Scan { .. }, Type::Tensor(_)) => Err("`scan` produces a tuple".into()),
        (Op::Extract { index }, Type::Tensor(t)) => check_extract(g, n, *index as usize, t),
        (Op::Attention(a), Type::Tuple(ts)) => check_tuple(ts, a.forward_types(&arg_types(g, n))),
        (Op::AttentionGrad(a), Type::Tuple(ts)) => check_tuple(ts, a.backward_types(&arg_types(g, n))),
        (Op::Attention(_) | Op::AttentionGrad(_), Type::Tensor(_)) => Err("attention produces a tuple".into()),
        (_, Type::Tuple(_)) => Err("only `scan` and attention may produce a tuple".into()),
        (op, Type::Tensor(t)) => check_tensor_op(m, g, op, &arg_types(g, n), t),
    };
    result.map_err(err)
}

/// The tensor types of a node's arguments (tuples, already rejected unless
/// the op is `extract`, are skipped).
fn arg_types<'g>(g: &'g Graph, n: &Node) -> Vec<&'g TensorType> {
    n.args.iter().filter_map(|&a| g.node(a).ty.tensor()).collect()
}

fn check_tuple(ts: &[TensorType], want: Result<Vec<TensorType>, String>) -> Result<(), String> {
    let want = want?;
    ensure!(ts == want.as_slice(), "result types should be ({})", want.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}

fn check_extract(g: &Graph, n: &Node, index: usize, t: &TensorType) -> Result<(), String> {
    ensure!(n.args.len() == 1, "`extract` takes 1 argument, got {}", n.args.len());
    let Type::Tuple(ts) = &g.node(n.args[0]).ty else { unreachable!("checked above") };
    ensure!(index < ts.len(), "index {index} out of range for a tuple of {}", ts.len());
    ensure!(*t == ts[index], "result type should be {}", ts[index]);
    Ok(())
}

/// How many arguments an op takes: exactly `n`, or at least `n`.
enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

fn arity(op: &Op) -> Arity {
    use Arity::*;
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::Iota { .. } => Exactly(0),
        Op::Unary(_)
        | Op::Cast
        | Op::Broadcast
        | Op::Reshape
        | Op::Transpose { .. }
        | Op::Reduce { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Slice { .. }
        | Op::OneHot
        | Op::Extract { .. } => Exactly(1),
        Op::Binary(_) | Op::Compare(_) | Op::MatMul | Op::Gather { .. } | Op::RmsNorm { .. } | Op::Dropout { .. } => {
            Exactly(2)
        }
        Op::Select | Op::LayerNorm { .. } => Exactly(3),
        Op::Concat { .. } => AtLeast(1),
        Op::Scan { n_carry, n_seq, .. } => AtLeast((n_carry + n_seq) as usize),
        Op::Attention(a) => Exactly(a.forward_arity()),
        Op::AttentionGrad(a) => Exactly(a.backward_arity()),
    }
}

fn shape_str(s: &[DimExpr]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn same_type(what: &str, a: &TensorType, b: &TensorType) -> Result<(), String> {
    ensure!(a == b, "{what}: {a} and {b} differ");
    Ok(())
}

fn float_only(op: &Op, t: &TensorType) -> Result<(), String> {
    ensure!(t.dtype.is_float(), "`{}` needs a float dtype, got {}", op.name(), t.dtype);
    Ok(())
}

fn not_bool(op: &Op, t: &TensorType) -> Result<(), String> {
    ensure!(t.dtype != DType::Bool, "`{}` does not apply to bool", op.name());
    Ok(())
}

fn axis_in(axis: u32, rank: usize) -> Result<usize, String> {
    ensure!((axis as usize) < rank, "axis {axis} out of range for rank {rank}");
    Ok(axis as usize)
}

/// The rule of every op whose result is one tensor (all but scan and extract).
fn check_tensor_op(m: &Module, g: &Graph, op: &Op, a: &[&TensorType], t: &TensorType) -> Result<(), String> {
    match arity(op) {
        Arity::Exactly(k) => ensure!(a.len() == k, "`{}` takes {k} argument(s), got {}", op.name(), a.len()),
        Arity::AtLeast(k) => ensure!(a.len() >= k, "`{}` takes at least {k} argument(s), got {}", op.name(), a.len()),
    }
    if let Some(d) = op.fixed_dtype() {
        ensure!(t.dtype == d, "`{}` yields {d}, not {}", op.name(), t.dtype);
    }
    match op {
        Op::Input { index } => {
            let i = *index as usize;
            ensure!(i < g.inputs.len(), "input index {i} out of range ({} inputs)", g.inputs.len());
            same_type("type vs the graph's input", t, &g.inputs[i])
        }
        Op::Param { index } => {
            let i = *index as usize;
            ensure!(i < m.params.len(), "param index {i} out of range ({} params)", m.params.len());
            same_type(&format!("type vs param `{}`", m.params[i].name), t, &m.params[i].ty)
        }
        Op::Const { value } => {
            ensure!(t.rank() == 0, "`const` is a scalar, got rank {}", t.rank());
            let exact = t.dtype.is_float() || t.dtype.round(*value) == *value;
            ensure!(exact, "{value} is not a {} value", t.dtype);
            Ok(())
        }
        Op::Iota { axis } => {
            axis_in(*axis, t.rank())?;
            not_bool(op, t)
        }
        Op::Unary(u) => {
            same_type("argument vs result", a[0], t)?;
            match u {
                UnaryOp::Not => ensure!(t.dtype == DType::Bool, "`not` needs bool, got {}", t.dtype),
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => not_bool(op, t)?,
                _ => float_only(op, t)?,
            }
            Ok(())
        }
        Op::Binary(b) => {
            same_type("arguments", a[0], a[1])?;
            same_type("argument vs result", a[0], t)?;
            match b {
                BinaryOp::And | BinaryOp::Or => {
                    ensure!(t.dtype == DType::Bool, "`{}` needs bool, got {}", op.name(), t.dtype)
                }
                BinaryOp::Max | BinaryOp::Min => {}
                _ => not_bool(op, t)?,
            }
            Ok(())
        }
        Op::Compare(_) => {
            same_type("arguments", a[0], a[1])?;
            ensure!(t.shape == a[0].shape, "result shape {} should be {}", shape_str(&t.shape), shape_str(&a[0].shape));
            Ok(())
        }
        Op::Select => {
            ensure!(a[0].dtype == DType::Bool, "condition must be bool, got {}", a[0].dtype);
            ensure!(a[0].shape == a[1].shape, "condition shape {} differs from {}", shape_str(&a[0].shape), a[1]);
            same_type("branches", a[1], a[2])?;
            same_type("branch vs result", a[1], t)
        }
        Op::Cast => {
            ensure!(
                t.shape == a[0].shape,
                "cast changes the shape {} to {}",
                shape_str(&a[0].shape),
                shape_str(&t.shape)
            );
            Ok(())
        }
        Op::Broadcast => check_broadcast(a[0], t),
        Op::Reshape => {
            ensure!(a[0].dtype == t.dtype, "reshape changes the dtype {} to {}", a[0].dtype, t.dtype);
            let (x, y) = (a[0].numel(), t.numel());
            ensure!(x == y, "element counts differ: {x} vs {y}");
            Ok(())
        }
        Op::Transpose { perm } => check_transpose(perm, a[0], t),
        Op::Reduce { op: r, axes, keepdim } => check_reduce(*r, axes, *keepdim, a[0], t),
        Op::MatMul => check_matmul(a[0], a[1], t),
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            axis_in(*axis, a[0].rank())?;
            float_only(op, t)?;
            same_type("argument vs result", a[0], t)
        }
        Op::LayerNorm { .. } | Op::RmsNorm { .. } => check_norm(op, a, t),
        Op::Concat { axis } => check_concat(*axis, a, t),
        Op::Slice { axis, start, end, step } => check_slice(*axis, start, end, *step, a[0], t),
        Op::Gather { axis } => check_gather(*axis, a[0], a[1], t),
        Op::OneHot => {
            ensure!(a[0].dtype.is_int(), "one_hot indices must be integers, got {}", a[0].dtype);
            let r = a[0].rank();
            ensure!(t.rank() == r + 1, "result rank should be {}, got {}", r + 1, t.rank());
            ensure!(
                t.shape[..r] == a[0].shape[..],
                "result shape {} should start with {}",
                shape_str(&t.shape),
                shape_str(&a[0].shape)
            );
            Ok(())
        }
        Op::Dropout { p } => {
            float_only(op, t)?;
            same_type("argument vs result", a[0], t)?;
            ensure!(a[1].dtype == DType::I64 && a[1].rank() == 0, "the seed must be a rank-0 i64, got {}", a[1]);
            ensure!((0.0..1.0).contains(p), "dropout probability {p} is outside [0, 1)");
            Ok(())
        }
        Op::Scan { .. } | Op::Extract { .. } | Op::Attention(_) | Op::AttentionGrad(_) => {
            unreachable!("handled by check_node")
        }
    }
}

fn check_broadcast(x: &TensorType, t: &TensorType) -> Result<(), String> {
    ensure!(x.dtype == t.dtype, "broadcast changes the dtype {} to {}", x.dtype, t.dtype);
    ensure!(x.rank() <= t.rank(), "cannot broadcast rank {} down to rank {}", x.rank(), t.rank());
    let lead = t.rank() - x.rank();
    for (i, d) in x.shape.iter().enumerate() {
        let o = &t.shape[lead + i];
        ensure!(d.as_const() == Some(1) || d == o, "input axis {i} has size {d}, neither 1 nor {o}");
    }
    Ok(())
}

fn check_transpose(perm: &[u32], x: &TensorType, t: &TensorType) -> Result<(), String> {
    ensure!(x.dtype == t.dtype, "transpose changes the dtype");
    ensure!(perm.len() == x.rank(), "permutation has {} entries for rank {}", perm.len(), x.rank());
    let mut seen = vec![false; perm.len()];
    for &p in perm {
        let p = p as usize;
        ensure!(p < perm.len() && !seen[p], "{perm:?} is not a permutation");
        seen[p] = true;
    }
    let want: Vec<DimExpr> = perm.iter().map(|&p| x.shape[p as usize].clone()).collect();
    ensure!(t.shape == want, "result shape should be {}", shape_str(&want));
    Ok(())
}

fn check_reduce(r: ReduceOp, axes: &[u32], keepdim: bool, x: &TensorType, t: &TensorType) -> Result<(), String> {
    ensure!(axes.windows(2).all(|w| w[0] < w[1]), "axes {axes:?} are not sorted without repeats");
    for &ax in axes {
        axis_in(ax, x.rank())?;
    }
    match r {
        ReduceOp::ArgMax => ensure!(axes.len() == 1, "argmax reduces exactly one axis, got {}", axes.len()),
        ReduceOp::Sum | ReduceOp::Mean => ensure!(x.dtype != DType::Bool, "sum/mean do not apply to bool"),
        ReduceOp::Max | ReduceOp::Min => {}
    }
    if r != ReduceOp::ArgMax {
        ensure!(t.dtype == x.dtype, "reduction changes the dtype {} to {}", x.dtype, t.dtype);
    }
    let mut want = Vec::new();
    for (i, d) in x.shape.iter().enumerate() {
        if !axes.contains(&(i as u32)) {
            want.push(d.clone());
        } else if keepdim {
            want.push(DimExpr::constant(1));
        }
    }
    ensure!(t.shape == want, "result shape should be {}", shape_str(&want));
    Ok(())
}

fn check_matmul(a: &TensorType, b: &TensorType, t: &TensorType) -> Result<(), String> {
    ensure!(a.rank() >= 2 && b.rank() >= 2, "matmul needs rank >= 2, got {a} and {b}");
    ensure!(a.rank() == b.rank(), "ranks differ: {a} and {b}");
    ensure!(a.dtype == b.dtype && a.dtype == t.dtype, "dtypes differ: {a}, {b} -> {t}");
    ensure!(a.dtype != DType::Bool, "`matmul` does not apply to bool");
    let r = a.rank();
    ensure!(a.shape[..r - 2] == b.shape[..r - 2], "batch axes differ: {a} and {b}");
    ensure!(a.shape[r - 1] == b.shape[r - 2], "inner sizes differ: {} vs {}", a.shape[r - 1], b.shape[r - 2]);
    let mut want = a.shape[..r - 1].to_vec();
    want.push(b.shape[r - 1].clone());
    ensure!(t.shape == want, "result shape should be {}", shape_str(&want));
    Ok(())
}

fn check_norm(op: &Op, a: &[&TensorType], t: &TensorType) -> Result<(), String> {
    let x = a[0];
    float_only(op, x)?;
    same_type("argument vs result", x, t)?;
    let last = x.shape.last().ok_or("normalization needs rank >= 1")?;
    for (w, name) in a[1..].iter().zip(["gamma", "beta"]) {
        ensure!(w.dtype == x.dtype, "{name} dtype {} differs from {}", w.dtype, x.dtype);
        ensure!(w.rank() == 1 && &w.shape[0] == last, "{name} should be {}[{last}], got {w}", x.dtype);
    }
    Ok(())
}

fn check_concat(axis: u32, a: &[&TensorType], t: &TensorType) -> Result<(), String> {
    let ax = axis_in(axis, t.rank())?;
    let mut total = DimExpr::constant(0);
    for (i, x) in a.iter().enumerate() {
        ensure!(x.dtype == t.dtype, "argument {i} has dtype {}, result {}", x.dtype, t.dtype);
        ensure!(x.rank() == t.rank(), "argument {i} has rank {}, result {}", x.rank(), t.rank());
        for (j, (d, o)) in x.shape.iter().zip(&t.shape).enumerate() {
            ensure!(j == ax || d == o, "argument {i} axis {j} has size {d}, result {o}");
        }
        total = total.add(&x.shape[ax]);
    }
    ensure!(t.shape[ax] == total, "joined axis should have size {total}, got {}", t.shape[ax]);
    Ok(())
}

fn check_slice(
    axis: u32,
    start: &DimExpr,
    end: &DimExpr,
    step: u32,
    x: &TensorType,
    t: &TensorType,
) -> Result<(), String> {
    let ax = axis_in(axis, x.rank())?;
    ensure!(step >= 1, "step must be at least 1");
    ensure!(x.dtype == t.dtype, "slice changes the dtype");
    ensure!(x.rank() == t.rank(), "slice changes the rank {} to {}", x.rank(), t.rank());
    for (j, (d, o)) in x.shape.iter().zip(&t.shape).enumerate() {
        ensure!(j == ax || d == o, "axis {j} has size {d} in the argument but {o} in the result");
    }
    ensure!(!matches!(start.as_const(), Some(s) if s < 0), "start {start} is negative");
    ensure!(
        !matches!(x.shape[ax].sub(end).as_const(), Some(s) if s < 0),
        "end {end} is past the axis size {}",
        x.shape[ax]
    );
    let len = end.sub(start);
    let out = &t.shape[ax];
    match len.as_const() {
        Some(l) => {
            ensure!(l >= 0, "end {end} precedes start {start}");
            let want = (l + step as i64 - 1) / step as i64;
            ensure!(out.as_const() == Some(want), "sliced axis should have size {want}, got {out}");
        }
        // With unit step the size is exactly end - start, symbolically.
        None if step == 1 => ensure!(*out == len, "sliced axis should have size {len}, got {out}"),
        None => {}
    }
    Ok(())
}

fn check_gather(axis: u32, table: &TensorType, idx: &TensorType, t: &TensorType) -> Result<(), String> {
    let ax = axis_in(axis, table.rank())?;
    ensure!(idx.dtype.is_int(), "gather indices must be integers, got {}", idx.dtype);
    ensure!(t.dtype == table.dtype, "gather changes the dtype {} to {}", table.dtype, t.dtype);
    let mut want = table.shape[..ax].to_vec();
    want.extend(idx.shape.iter().cloned());
    want.extend(table.shape[ax + 1..].iter().cloned());
    ensure!(t.shape == want, "result shape should be {}", shape_str(&want));
    Ok(())
}

fn check_scan(body: &Graph, nc: usize, ns: usize, a: &[&TensorType], ts: &[TensorType]) -> Result<(), String> {
    ensure!(ns >= 1, "`scan` needs at least one sequence");
    ensure!(a.len() >= nc + ns, "`scan` takes at least {} arguments, got {}", nc + ns, a.len());
    ensure!(
        body.inputs.len() == a.len(),
        "body takes {} inputs but the scan passes {} (carries, slices, captures)",
        body.inputs.len(),
        a.len()
    );
    let len = a[nc].shape.first().ok_or("sequence 0 is a scalar")?;
    for (i, &s) in a.iter().enumerate() {
        let expect = if (nc..nc + ns).contains(&i) {
            ensure!(
                s.shape.first() == Some(len),
                "sequence {} has leading size {:?}, sequence 0 has {len}",
                i - nc,
                s.shape.first().map(|d| d.to_string())
            );
            TensorType::new(s.dtype, s.shape[1..].to_vec())
        } else {
            s.clone()
        };
        ensure!(body.inputs[i] == expect, "body input {i} is {} but the scan passes {expect}", body.inputs[i]);
    }
    ensure!(body.outputs.len() >= nc, "body returns {} values for {nc} carries", body.outputs.len());
    let mut want: Vec<TensorType> = Vec::new();
    for (j, &o) in body.outputs.iter().enumerate() {
        let ot = body.tensor_type(o);
        if j < nc {
            ensure!(*ot == body.inputs[j], "body output {j} is {ot} but carry {j} is {}", body.inputs[j]);
            want.push(ot.clone());
        } else {
            let mut shape = vec![len.clone()];
            shape.extend(ot.shape.iter().cloned());
            want.push(TensorType::new(ot.dtype, shape));
        }
    }
    ensure!(ts == want.as_slice(), "result should be {}", Type::Tuple(want));
    Ok(())
}
