//! f32 mode against ideal f64 mode on random graphs, and the verifier on
//! the same graphs and on deliberately broken ones.
//!
//! The tolerance is an a-priori error bound, not a guess: every op's result
//! is rounded once (relative error at most `u`, the dtype's unit roundoff,
//! plus half a subnormal step), and an error already in an argument is
//! carried forward by the op's Lipschitz constant in the max norm (first
//! order). Inputs are drawn representable, so they carry no error.

use kiln_ir::interp::{self, Precision, Tensor};
use kiln_ir::{
    verify, BinaryOp, DType, DimExpr, Function, Graph, Init, Module, Op, Param, ReduceOp, TensorType, Type, UnaryOp,
    ValueId,
};
use proptest::prelude::*;

/// Epsilon of the random graphs' layernorms.
const LN_EPS: f64 = 1e-5;

/// One step of a random chain; each maps the current `[m, n]` value to a new one.
#[derive(Clone, Debug)]
enum Step {
    Unary(UnaryOp),
    /// With the second input `y[m, n]`.
    Binary(BinaryOp),
    /// `cur @ w` with `w[n, n]`.
    MatMul,
    Softmax(u32),
    LogSoftmax(u32),
    /// With `gamma[n]`, `beta[n]`.
    LayerNorm,
    /// Reduces one axis with keepdim, then broadcasts back to `[m, n]`.
    Reduce(ReduceOp, u32),
}

fn step() -> impl Strategy<Value = Step> {
    use UnaryOp::*;
    let unary = prop::sample::select(vec![Neg, Abs, Tanh, Sigmoid, Relu, Gelu, GeluTanh, Silu, Erf, Sin, Cos]);
    let binary = prop::sample::select(vec![BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Min]);
    let reduce = prop::sample::select(vec![ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min]);
    prop_oneof![
        3 => unary.prop_map(Step::Unary),
        2 => binary.prop_map(Step::Binary),
        2 => Just(Step::MatMul),
        1 => (0..2u32).prop_map(Step::Softmax),
        1 => (0..2u32).prop_map(Step::LogSoftmax),
        1 => Just(Step::LayerNorm),
        1 => (reduce, 0..2u32).prop_map(|(r, a)| Step::Reduce(r, a)),
    ]
}

fn ty(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, shape.iter().map(|&n| DimExpr::constant(n as i64)).collect())
}

/// The chain as a graph with inputs `x[m,n], y[m,n], w[n,n], gamma[n],
/// beta[n]`; it returns `x` and the value after every step.
fn build(m: usize, n: usize, steps: &[Step], dtype: DType) -> Graph {
    let mn = ty(dtype, &[m, n]);
    let inputs = vec![mn.clone(), mn.clone(), ty(dtype, &[n, n]), ty(dtype, &[n]), ty(dtype, &[n])];
    let mut g = Graph { inputs: inputs.clone(), ..Graph::default() };
    let ins: Vec<ValueId> =
        inputs.into_iter().enumerate().map(|(i, t)| g.push_tensor(Op::Input { index: i as u32 }, vec![], t)).collect();
    let (y, w, gamma, beta) = (ins[1], ins[2], ins[3], ins[4]);
    let mut cur = ins[0];
    let mut outputs = vec![cur];
    for s in steps {
        let mut push = |op: Op, args: Vec<ValueId>| g.push_tensor(op, args, mn.clone());
        cur = match s {
            Step::Unary(u) => push(Op::Unary(*u), vec![cur]),
            Step::Binary(b) => push(Op::Binary(*b), vec![cur, y]),
            Step::MatMul => push(Op::MatMul, vec![cur, w]),
            Step::Softmax(axis) => push(Op::Softmax { axis: *axis }, vec![cur]),
            Step::LogSoftmax(axis) => push(Op::LogSoftmax { axis: *axis }, vec![cur]),
            Step::LayerNorm => push(Op::LayerNorm { eps: LN_EPS }, vec![cur, gamma, beta]),
            Step::Reduce(op, axis) => {
                let mut kept = [m, n];
                kept[*axis as usize] = 1;
                let r = Op::Reduce { op: *op, axes: vec![*axis], keepdim: true };
                let r = g.push_tensor(r, vec![cur], ty(dtype, &kept));
                g.push_tensor(Op::Broadcast, vec![r], mn.clone())
            }
        };
        outputs.push(cur);
    }
    g.outputs = outputs;
    g
}

/// Deterministic inputs in [-2, 2) (`w` in [-0.5, 0.5), so matmuls grow
/// values at most n/2-fold), each representable in `dtype`.
fn inputs(m: usize, n: usize, dtype: DType, seed: u64) -> Vec<Tensor> {
    let mut state = seed;
    let mut next = move |scale: f64| {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        dtype.round(((z >> 40) as f64 / (1u64 << 24) as f64 * 4.0 - 2.0) * scale)
    };
    let mut make = |shape: Vec<usize>, scale: f64| {
        let data = (0..shape.iter().product::<usize>()).map(|_| next(scale)).collect();
        Tensor::new(dtype, shape, data)
    };
    vec![make(vec![m, n], 1.0), make(vec![m, n], 1.0), make(vec![n, n], 0.25), make(vec![n], 1.0), make(vec![n], 1.0)]
}

/// Unit roundoff and half the smallest subnormal of a float dtype.
fn roundoff(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (2f64.powi(-24), 2f64.powi(-150)),
        DType::F16 => (2f64.powi(-11), 2f64.powi(-25)),
        DType::BF16 => (2f64.powi(-8), 2f64.powi(-134)),
        _ => unreachable!("float dtypes only"),
    }
}

/// A bound on `|rounded - ideal|` for each output of [`build`], from the
/// ideal values `outs` (first-order error propagation, see the file docs).
fn error_bounds(n: usize, steps: &[Step], ins: &[Tensor], outs: &[Tensor], dtype: DType) -> Vec<f64> {
    let (u, tiny) = roundoff(dtype);
    let (m_y, m_w, m_gamma) = (ins[1].max_abs(), ins[2].max_abs(), ins[3].max_abs());
    let mut e = 0.0;
    let mut bounds = vec![e];
    for (k, s) in steps.iter().enumerate() {
        let carried = match s {
            // Every unary op here has |f'| <= 1.13 (gelu's maximum slope).
            Step::Unary(_) => 1.2 * e,
            Step::Binary(BinaryOp::Mul) => m_y * e,
            Step::Binary(_) => e,
            Step::MatMul => n as f64 * m_w * e,
            // softmax: p' / p lies in [exp(-2e), exp(2e)]; log_softmax moves by at most 2e.
            Step::Softmax(_) | Step::LogSoftmax(_) => 2.0 * e,
            // (x - mean) moves by 2e, sigma by 2e, and |x - mean| / sigma <= sqrt(n),
            // so (x - mean) / sigma moves by 2e (1 + sqrt n) / sigma, sigma >= sqrt(eps).
            Step::LayerNorm => m_gamma * 2.0 * e * (1.0 + (n as f64).sqrt()) / LN_EPS.sqrt(),
            Step::Reduce(ReduceOp::Sum, axis) => outs[k].shape[*axis as usize] as f64 * e,
            Step::Reduce(..) => e,
        };
        // Plus this step's own rounding (the reduce and its broadcast round once:
        // broadcasting copies already rounded values).
        e = carried + u * outs[k + 1].max_abs() + tiny;
        bounds.push(e);
    }
    bounds
}

/// Runs the chain in both precisions and checks agreement and representability.
fn check_chain(m: usize, n: usize, steps: &[Step], dtype: DType, seed: u64) -> Result<(), TestCaseError> {
    let g = build(m, n, steps, dtype);
    let module = Module::default();
    prop_assert!(verify::graph(&module, &g).is_ok(), "{:?}", verify::graph(&module, &g));
    let ins = inputs(m, n, dtype, seed);
    let ideal = interp::run(&module, &g, &|_| None, &[], &ins, Precision::F64).unwrap();
    let rounded = interp::run(&module, &g, &|_| None, &[], &ins, Precision::F32).unwrap();
    let bounds = error_bounds(n, steps, &ins, &ideal, dtype);
    for (k, ((r, i), b)) in rounded.iter().zip(&ideal).zip(&bounds).enumerate() {
        for &x in &r.data {
            prop_assert!(x.is_nan() || dtype.round(x) == x, "output {k}: {x} is not a {dtype} value");
        }
        // Twice the first-order bound, plus room for f64's own rounding.
        let tol = 2.0 * b + 1e-10 * (1.0 + i.max_abs());
        let diff = r.max_abs_diff(i);
        prop_assert!(diff <= tol, "output {k} after {:?}: |diff| {diff:e} > {tol:e}\nf32: {r}\nf64: {i}", &steps[..k]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn f32_mode_tracks_f64_mode(m in 1..=4usize, n in 1..=5usize, steps in prop::collection::vec(step(), 1..=6), seed: u64) {
        check_chain(m, n, &steps, DType::F32, seed)?;
    }

    #[test]
    fn half_precision_modes_track_f64_mode(
        m in 1..=4usize,
        n in 1..=5usize,
        steps in prop::collection::vec(step(), 1..=4),
        seed: u64,
        bf16: bool,
    ) {
        check_chain(m, n, &steps, if bf16 { DType::BF16 } else { DType::F16 }, seed)?;
    }
}

#[test]
fn f32_bound_is_tight_for_a_plain_chain() {
    // Not vacuous: without layernorm, the bound stays near f32 precision.
    let steps = [Step::MatMul, Step::Unary(UnaryOp::Tanh), Step::Softmax(1), Step::Reduce(ReduceOp::Sum, 0)];
    let ins = inputs(3, 4, DType::F32, 7);
    let g = build(3, 4, &steps, DType::F32);
    let ideal = interp::run(&Module::default(), &g, &|_| None, &[], &ins, Precision::F64).unwrap();
    let bounds = error_bounds(4, &steps, &ins, &ideal, DType::F32);
    assert!(bounds.iter().all(|&b| b < 1e-5), "{bounds:?}");
    check_chain(3, 4, &steps, DType::F32, 7).unwrap();
}

// ---- the verifier ----

fn f32t(shape: &[usize]) -> TensorType {
    ty(DType::F32, shape)
}

/// A graph with the given inputs and `nodes` pushed after the input nodes.
fn graph_with(inputs: &[TensorType], nodes: Vec<(Op, Vec<u32>, Type)>, outputs: Vec<u32>) -> Graph {
    let mut g = Graph { inputs: inputs.to_vec(), ..Graph::default() };
    for (i, t) in inputs.iter().enumerate() {
        g.push_tensor(Op::Input { index: i as u32 }, vec![], t.clone());
    }
    for (op, args, t) in nodes {
        g.push(op, args.into_iter().map(ValueId).collect(), t);
    }
    g.outputs = outputs.into_iter().map(ValueId).collect();
    g
}

/// Plain attention: scale 1, no mask, no causality, no groups.
fn attention() -> kiln_ir::Attention {
    kiln_ir::Attention { scale: 1.0, causal: None, mask: kiln_ir::AttnMask::None, group: 1, dropout: 0.0, variant: kiln_ir::AttnVariant::Fa2 }
}

fn tensor(t: TensorType) -> Type {
    Type::Tensor(t)
}

/// Verifies and returns the error message.
fn rejected(m: &Module, g: &Graph) -> String {
    match verify::graph(m, g) {
        Ok(()) => panic!("graph should be rejected:\n{}", kiln_ir::print::function(m, &as_function(g))),
        Err(e) => e.to_string(),
    }
}

fn as_function(g: &Graph) -> Function {
    Function {
        name: "f".into(),
        arg_names: (0..g.inputs.len()).map(|i| format!("a{i}")).collect(),
        arg_bounds: vec![None; g.inputs.len()],
        arg_ignore: vec![None; g.inputs.len()],
        output_names: (0..g.outputs.len()).map(|i| format!("o{i}")).collect(),
        dim_vars: vec![],
        constraints: vec![],
        graph: g.clone(),
    }
}

/// Inputs, nodes after the input nodes, outputs, and fragments the
/// verifier's message must contain.
type BrokenCase = (Vec<TensorType>, Vec<(Op, Vec<u32>, Type)>, Vec<u32>, Vec<&'static str>);

#[test]
fn broken_graphs_are_rejected_naming_the_node() {
    let m = Module::default();
    let x23 = f32t(&[2, 3]);
    let x32 = f32t(&[3, 2]);
    let cases: Vec<BrokenCase> = vec![
        (
            vec![x23.clone(), x23.clone()],
            vec![(Op::MatMul, vec![0, 1], tensor(f32t(&[2, 3])))],
            vec![2],
            vec!["%2 = matmul %0, %1 : f32[2, 3]: ", "inner sizes differ: 3 vs 2"],
        ),
        (
            vec![x23.clone()],
            vec![
                (Op::Unary(UnaryOp::Neg), vec![2], tensor(x23.clone())),
                (Op::Unary(UnaryOp::Neg), vec![0], tensor(x23.clone())),
            ],
            vec![1],
            vec!["%1 = neg %2", "argument %2 does not precede its user"],
        ),
        (
            vec![x23.clone(), ty(DType::I32, &[2, 3])],
            vec![(Op::Binary(BinaryOp::Add), vec![0, 1], tensor(x23.clone()))],
            vec![2],
            vec!["%2 = add %0, %1", "f32[2, 3] and i32[2, 3] differ"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Input { index: 3 }, vec![], tensor(x23.clone()))],
            vec![1],
            vec!["%1 = input", "input index 3 out of range (1 inputs)"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Reduce { op: ReduceOp::Sum, axes: vec![1, 0], keepdim: false }, vec![0], tensor(f32t(&[])))],
            vec![1],
            vec!["%1 = reduce_sum %0", "not sorted"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Reduce { op: ReduceOp::Sum, axes: vec![1], keepdim: true }, vec![0], tensor(f32t(&[2])))],
            vec![1],
            vec!["%1 = reduce_sum", "result shape should be [2, 1]"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Reduce { op: ReduceOp::ArgMax, axes: vec![1], keepdim: false }, vec![0], tensor(f32t(&[2])))],
            vec![1],
            vec!["%1 = reduce_argmax", "yields i64"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Broadcast, vec![0], tensor(f32t(&[4, 2, 4])))],
            vec![1],
            vec!["%1 = broadcast", "input axis 1 has size 3, neither 1 nor 4"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Reshape, vec![0], tensor(f32t(&[5])))],
            vec![1],
            vec!["%1 = reshape", "element counts differ: 6 vs 5"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Transpose { perm: vec![0, 0] }, vec![0], tensor(x23.clone()))],
            vec![1],
            vec!["%1 = transpose", "is not a permutation"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Transpose { perm: vec![1, 0] }, vec![0], tensor(x23.clone()))],
            vec![1],
            vec!["%1 = transpose", "result shape should be [3, 2]"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Softmax { axis: 2 }, vec![0], tensor(x23.clone()))],
            vec![1],
            vec!["%1 = softmax", "axis 2 out of range for rank 2"],
        ),
        (
            vec![x23.clone(), f32t(&[2]), f32t(&[3])],
            vec![(Op::LayerNorm { eps: 1e-5 }, vec![0, 1, 2], tensor(x23.clone()))],
            vec![3],
            vec!["%3 = layernorm", "gamma should be f32[3]"],
        ),
        (
            vec![x23.clone(), x32.clone()],
            vec![(Op::Concat { axis: 1 }, vec![0, 1], tensor(f32t(&[2, 5])))],
            vec![2],
            vec!["%2 = concat", "argument 1 axis 0 has size 3"],
        ),
        (
            vec![x23.clone()],
            vec![(
                Op::Slice { axis: 1, start: DimExpr::constant(0), end: DimExpr::constant(3), step: 2 },
                vec![0],
                tensor(f32t(&[2, 1])),
            )],
            vec![1],
            vec!["%1 = slice", "sliced axis should have size 2"],
        ),
        (
            vec![x23.clone(), f32t(&[4])],
            vec![(Op::Gather { axis: 0 }, vec![0, 1], tensor(f32t(&[4, 3])))],
            vec![2],
            vec!["%2 = gather", "indices must be integers"],
        ),
        (
            vec![f32t(&[2])],
            vec![(Op::OneHot, vec![0], tensor(f32t(&[2, 4])))],
            vec![1],
            vec!["%1 = one_hot", "indices must be integers"],
        ),
        (
            vec![x23.clone(), x23.clone()],
            vec![(Op::Select, vec![0, 1, 1], tensor(x23.clone()))],
            vec![2],
            vec!["%2 = select", "condition must be bool"],
        ),
        (
            vec![],
            vec![(Op::Const { value: 0.5 }, vec![], tensor(ty(DType::I32, &[])))],
            vec![0],
            vec!["%0 = const", "0.5 is not a i32 value"],
        ),
        (
            vec![],
            vec![(Op::Iota { axis: 1 }, vec![], tensor(ty(DType::I32, &[3])))],
            vec![0],
            vec!["%0 = iota", "axis 1 out of range for rank 1"],
        ),
        (
            vec![x23.clone()],
            vec![(Op::Unary(UnaryOp::Exp), vec![0], Type::Tuple(vec![x23.clone()]))],
            vec![],
            vec!["%1 = exp", "only `scan` and attention may produce a tuple"],
        ),
        (
            vec![x23.clone(), ty(DType::F32, &[3, 4])],
            vec![(Op::Attention(Box::new(attention())), vec![0, 0, 1], Type::Tuple(vec![x23.clone(), ty(DType::F32, &[2])]))],
            vec![],
            vec!["%2 = attention", "batch axes or key lengths disagree"],
        ),
        (vec![x23.clone()], vec![], vec![5], vec!["output 0 (%5)", "past the last node"]),
    ];
    for (inputs, nodes, outputs, fragments) in cases {
        let g = graph_with(&inputs, nodes, outputs);
        let msg = rejected(&m, &g);
        for f in fragments {
            assert!(msg.contains(f), "message {msg:?} lacks {f:?}");
        }
    }
}

/// A scan summing the rows of `xs[3, 2]`; `break_body` makes the body's
/// carry output the wrong type.
fn row_sum_scan(break_body: bool) -> Graph {
    let v = f32t(&[2]);
    let mut body = Graph { inputs: vec![v.clone(), v.clone()], ..Graph::default() };
    let acc = body.push_tensor(Op::Input { index: 0 }, vec![], v.clone());
    let row = body.push_tensor(Op::Input { index: 1 }, vec![], v.clone());
    let out_ty = if break_body { f32t(&[3]) } else { v.clone() };
    let next = body.push_tensor(Op::Binary(BinaryOp::Add), vec![acc, row], out_ty);
    body.outputs = vec![next];
    let tuple = Type::Tuple(vec![v.clone()]);
    graph_with(
        &[v.clone(), f32t(&[3, 2])],
        vec![
            (Op::Scan { body: Box::new(body), n_carry: 1, n_seq: 1 }, vec![0, 1], tuple),
            (Op::Extract { index: 0 }, vec![2], tensor(v)),
        ],
        vec![3],
    )
}

#[test]
fn scans_and_tuples_are_checked() {
    let m = Module::default();
    verify::graph(&m, &row_sum_scan(false)).unwrap();
    let msg = rejected(&m, &row_sum_scan(true));
    assert!(msg.starts_with("in the body of %2 = scan %0, %1 : (f32[2]): %2 = add %0, %1 : f32[3]: "), "{msg}");
    // A tuple used directly as an output, and as an elementwise argument.
    let mut g = row_sum_scan(false);
    g.outputs = vec![ValueId(2)];
    assert!(rejected(&m, &g).contains("output 0 (%2): is a tuple"));
    let mut g = row_sum_scan(false);
    g.nodes[3].op = Op::Unary(UnaryOp::Neg);
    assert!(rejected(&m, &g).contains("%3 = neg %2 : f32[2]: argument %2: only `extract` may consume a tuple"));
    // Extract past the end of the tuple.
    let mut g = row_sum_scan(false);
    g.nodes[3].op = Op::Extract { index: 1 };
    assert!(rejected(&m, &g).contains("index 1 out of range for a tuple of 1"));
    // The scan's declared result disagrees with the body.
    let mut g = row_sum_scan(false);
    g.nodes[2].ty = Type::Tuple(vec![f32t(&[3])]);
    assert!(rejected(&m, &g).contains("result should be (f32[2])"));
}

#[test]
fn modules_and_functions_are_checked() {
    let w = Param { name: "w".into(), ty: f32t(&[2]), init: Init::Constant(1.0), stack: None };
    let g = graph_with(
        &[f32t(&[2])],
        vec![
            (Op::Param { index: 0 }, vec![], tensor(f32t(&[2]))),
            (Op::Binary(BinaryOp::Mul), vec![0, 1], tensor(f32t(&[2]))),
        ],
        vec![2],
    );
    let mut m = Module { params: vec![w], functions: vec![as_function(&g)] };
    verify::module(&m).unwrap();
    m.params[0].ty = f32t(&[3]);
    let msg = verify::module(&m).unwrap_err().to_string();
    assert_eq!(msg, "in function `f`: %1 = param : f32[2]: type vs param `w`: f32[2] and f32[3] differ");
    m.params[0].ty = f32t(&[2]);
    m.functions[0].arg_names.clear();
    assert_eq!(verify::module(&m).unwrap_err().to_string(), "function `f`: 0 argument names for 1 inputs");
    m.functions[0].arg_names = vec!["x".into()];
    m.functions.push(m.functions[0].clone());
    assert_eq!(verify::module(&m).unwrap_err().to_string(), "function `f`: defined twice");
}
