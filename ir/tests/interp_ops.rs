//! Every interpreter op against independently computed values: numbers
//! worked out by hand (in comments) or printed by `oracle/gen_values.py`
//! (numpy and libm; pasted into `numpy` at the end of this file).

use kiln_ir::interp::{self, InterpError, Precision, Tensor};
use kiln_ir::{
    verify, BinaryOp, CmpOp, DType, DimExpr, Graph, Init, Module, Op, Param, ReduceOp, TensorType, Type, UnaryOp,
    ValueId,
};
use numpy::*;

fn d(n: i64) -> DimExpr {
    DimExpr::constant(n)
}

fn ty(dtype: DType, shape: &[i64]) -> TensorType {
    TensorType::new(dtype, shape.iter().map(|&n| d(n)).collect())
}

fn f32t(shape: &[i64]) -> TensorType {
    ty(DType::F32, shape)
}

fn t(dtype: DType, shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::new(dtype, shape.to_vec(), data.to_vec())
}

fn ft(shape: &[usize], data: &[f64]) -> Tensor {
    t(DType::F32, shape, data)
}

/// A graph whose inputs have the given types; `body` adds nodes to the
/// input values and returns the outputs.
fn graph(inputs: &[TensorType], body: impl FnOnce(&mut Graph, &[ValueId]) -> Vec<ValueId>) -> Graph {
    let mut g = Graph { inputs: inputs.to_vec(), ..Graph::default() };
    let ins: Vec<ValueId> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| g.push_tensor(Op::Input { index: i as u32 }, vec![], t.clone()))
        .collect();
    g.outputs = body(&mut g, &ins);
    g
}

/// Verifies, then runs in ideal (f64) precision without params or dims.
fn try_eval(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let m = Module::default();
    verify::graph(&m, g).expect("test graph verifies");
    interp::run(&m, g, &|_| None, &[], inputs, Precision::F64)
}

fn eval(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    try_eval(g, inputs).expect("graph runs")
}

/// One op applied to one input.
fn op1(op: Op, x: Tensor, out: TensorType) -> Tensor {
    let xt = TensorType::new(x.dtype, x.shape.iter().map(|&n| d(n as i64)).collect());
    let g = graph(&[xt], |g, a| vec![g.push_tensor(op, vec![a[0]], out)]);
    eval(&g, &[x]).remove(0)
}

/// One op applied to two inputs.
fn op2(op: Op, x: Tensor, y: Tensor, out: TensorType) -> Result<Tensor, InterpError> {
    let tt = |x: &Tensor| TensorType::new(x.dtype, x.shape.iter().map(|&n| d(n as i64)).collect());
    let g = graph(&[tt(&x), tt(&y)], |g, a| vec![g.push_tensor(op, vec![a[0], a[1]], out)]);
    try_eval(&g, &[x, y]).map(|mut v| v.remove(0))
}

/// Same shape, and each element within `rel * |want|` (plus a tiny floor for zeros).
fn assert_close(got: &Tensor, shape: &[usize], want: &[f64], rel: f64) {
    assert_eq!(got.shape, shape, "shape of {got}");
    assert_eq!(got.data.len(), want.len());
    for (i, (&g, &w)) in got.data.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rel * w.abs() + 1e-300, "element {i}: got {g:e}, want {w:e}\n{got}");
    }
}

/// Same shape and exactly these elements.
fn assert_exact(got: &Tensor, shape: &[usize], want: &[f64]) {
    assert_eq!(got.shape, shape, "shape of {got}");
    assert_eq!(got.data, want, "{got}");
}

// ---- elementwise functions ----

#[test]
fn transcendental_unary_ops_match_numpy() {
    let cases: [(UnaryOp, &[f64], &[f64]); 12] = [
        (UnaryOp::Erf, &XS, &ERF),
        (UnaryOp::Gelu, &XS, &GELU),
        (UnaryOp::GeluTanh, &XS, &GELU_TANH),
        (UnaryOp::Sigmoid, &XS, &SIGMOID),
        (UnaryOp::Silu, &XS, &SILU),
        (UnaryOp::Tanh, &XS, &TANH),
        (UnaryOp::Sin, &XS, &SIN),
        (UnaryOp::Cos, &XS, &COS),
        (UnaryOp::Exp, &XS, &EXP),
        (UnaryOp::Log, &POS, &LOG),
        (UnaryOp::Sqrt, &POS, &SQRT),
        (UnaryOp::Rsqrt, &POS, &RSQRT),
    ];
    for (u, xs, want) in cases {
        let n = xs.len();
        let got = op1(Op::Unary(u), ft(&[n], xs), f32t(&[n as i64]));
        // A few ulp: libm and numpy may round differently in the last bit.
        assert_close(&got, &[n], want, 1e-14);
    }
}

#[test]
fn erf_and_erfc_match_libm_to_a_few_ulp() {
    for (&x, &want) in ERF_X.iter().zip(&ERF_AT) {
        let got = interp::erf(x);
        assert!((got - want).abs() <= 2e-15 * want.abs(), "erf({x}) = {got:e}, want {want:e}");
        assert_eq!(interp::erf(-x), -got, "erf is odd");
    }
    for (&x, &want) in ERFC_X.iter().zip(&ERFC_AT) {
        let got = interp::erfc(x);
        assert!((got - want).abs() <= 5e-15 * want.abs(), "erfc({x}) = {got:e}, want {want:e}");
    }
    assert_eq!(interp::erf(0.0), 0.0);
    assert_eq!(interp::erf(40.0), 1.0);
    assert_eq!(interp::erfc(40.0), 0.0);
    assert!(interp::erf(f64::NAN).is_nan());
}

#[test]
fn neg_abs_relu_by_hand() {
    let x = ft(&[4], &[-2.0, -0.5, 0.0, 1.5]);
    assert_exact(&op1(Op::Unary(UnaryOp::Neg), x.clone(), f32t(&[4])), &[4], &[2.0, 0.5, -0.0, -1.5]);
    assert_exact(&op1(Op::Unary(UnaryOp::Abs), x.clone(), f32t(&[4])), &[4], &[2.0, 0.5, 0.0, 1.5]);
    assert_exact(&op1(Op::Unary(UnaryOp::Relu), x, f32t(&[4])), &[4], &[0.0, 0.0, 0.0, 1.5]);
}

#[test]
fn float_binary_ops_by_hand() {
    let x = ft(&[4], &[1.0, -2.0, 3.0, 0.5]);
    let y = ft(&[4], &[4.0, 2.0, -1.5, 2.0]);
    let run = |b| op2(Op::Binary(b), x.clone(), y.clone(), f32t(&[4])).unwrap();
    assert_exact(&run(BinaryOp::Add), &[4], &[5.0, 0.0, 1.5, 2.5]);
    assert_exact(&run(BinaryOp::Sub), &[4], &[-3.0, -4.0, 4.5, -1.5]);
    assert_exact(&run(BinaryOp::Mul), &[4], &[4.0, -4.0, -4.5, 1.0]);
    assert_exact(&run(BinaryOp::Div), &[4], &[0.25, -1.0, -2.0, 0.25]);
    // 1^4, (-2)^2, 3^-1.5 = 1/(3*sqrt 3) = 0.19245008972987526, 0.5^2.
    assert_close(&run(BinaryOp::Pow), &[4], &[1.0, 4.0, 0.19245008972987526, 0.25], 1e-15);
    assert_exact(&run(BinaryOp::Max), &[4], &[4.0, 2.0, 3.0, 2.0]);
    assert_exact(&run(BinaryOp::Min), &[4], &[1.0, -2.0, -1.5, 0.5]);
}

#[test]
fn integer_ops_are_exact_and_truncate() {
    let i32s = |v: &[f64]| t(DType::I32, &[v.len()], v);
    let run = |b, x: &[f64], y: &[f64]| op2(Op::Binary(b), i32s(x), i32s(y), ty(DType::I32, &[x.len() as i64]));
    // Division truncates toward zero: -7/2 = -3.5 -> -3, 7/-2 -> -3, -7/-2 -> 3.
    let q = run(BinaryOp::Div, &[-7.0, 7.0, -7.0, 7.0], &[2.0, -2.0, -2.0, 2.0]).unwrap();
    assert_exact(&q, &[4], &[-3.0, -3.0, 3.0, 3.0]);
    // i32 wraps: 2147483647 + 1 = -2147483648.
    let s = run(BinaryOp::Add, &[2147483647.0, -5.0], &[1.0, 3.0]).unwrap();
    assert_exact(&s, &[2], &[-2147483648.0, -2.0]);
    // 65536 * 65536 = 2^32 wraps to 0 in i32.
    assert_exact(&run(BinaryOp::Mul, &[65536.0, -3.0], &[65536.0, 4.0]).unwrap(), &[2], &[0.0, -12.0]);
    // 2^10, 3^0, (-2)^3, 2^-1 = 1/2 truncated to 0, (-1)^-3 = -1.
    let p = run(BinaryOp::Pow, &[2.0, 3.0, -2.0, 2.0, -1.0], &[10.0, 0.0, 3.0, -1.0, -3.0]).unwrap();
    assert_exact(&p, &[5], &[1024.0, 1.0, -8.0, 0.0, -1.0]);
    assert_exact(&run(BinaryOp::Max, &[-1.0, 5.0], &[2.0, 4.0]).unwrap(), &[2], &[2.0, 5.0]);
    assert_exact(&run(BinaryOp::Min, &[-1.0, 5.0], &[2.0, 4.0]).unwrap(), &[2], &[-1.0, 4.0]);
    let x = i32s(&[-3.0, 0.0, 4.0, -2147483648.0]);
    let it = ty(DType::I32, &[4]);
    // -(-2^31) wraps to itself in i32.
    assert_exact(&op1(Op::Unary(UnaryOp::Neg), x.clone(), it.clone()), &[4], &[3.0, 0.0, -4.0, -2147483648.0]);
    assert_exact(&op1(Op::Unary(UnaryOp::Abs), x.clone(), it.clone()), &[4], &[3.0, 0.0, 4.0, -2147483648.0]);
    assert_exact(&op1(Op::Unary(UnaryOp::Relu), x, it), &[4], &[0.0, 0.0, 4.0, 0.0]);
    // Division by zero is an error naming the node, not a panic.
    let e = run(BinaryOp::Div, &[1.0, 2.0], &[1.0, 0.0]).unwrap_err();
    assert!(matches!(&e, InterpError::DivisionByZero { node } if node == "%2 = div"), "{e}");
    let e = run(BinaryOp::Pow, &[0.0], &[-1.0]).unwrap_err();
    assert!(matches!(e, InterpError::DivisionByZero { .. }), "{e}");
}

#[test]
fn compare_select_and_logic() {
    let x = ft(&[4], &[1.0, 2.0, 3.0, f64::NAN]);
    let y = ft(&[4], &[2.0, 2.0, 2.0, 2.0]);
    let b4 = ty(DType::Bool, &[4]);
    let cmp = |c| op2(Op::Compare(c), x.clone(), y.clone(), b4.clone()).unwrap();
    assert_exact(&cmp(CmpOp::Lt), &[4], &[1.0, 0.0, 0.0, 0.0]);
    assert_exact(&cmp(CmpOp::Le), &[4], &[1.0, 1.0, 0.0, 0.0]);
    assert_exact(&cmp(CmpOp::Eq), &[4], &[0.0, 1.0, 0.0, 0.0]);
    assert_exact(&cmp(CmpOp::Ne), &[4], &[1.0, 0.0, 1.0, 1.0]);
    assert_exact(&cmp(CmpOp::Gt), &[4], &[0.0, 0.0, 1.0, 0.0]);
    assert_exact(&cmp(CmpOp::Ge), &[4], &[0.0, 1.0, 1.0, 0.0]);
    assert_eq!(cmp(CmpOp::Lt).dtype, DType::Bool);

    let p = t(DType::Bool, &[4], &[1.0, 1.0, 0.0, 0.0]);
    let q = t(DType::Bool, &[4], &[1.0, 0.0, 1.0, 0.0]);
    let and = op2(Op::Binary(BinaryOp::And), p.clone(), q.clone(), b4.clone()).unwrap();
    assert_exact(&and, &[4], &[1.0, 0.0, 0.0, 0.0]);
    let or = op2(Op::Binary(BinaryOp::Or), p.clone(), q.clone(), b4.clone()).unwrap();
    assert_exact(&or, &[4], &[1.0, 1.0, 1.0, 0.0]);
    assert_exact(&op1(Op::Unary(UnaryOp::Not), p.clone(), b4.clone()), &[4], &[0.0, 0.0, 1.0, 1.0]);

    let g = graph(&[b4.clone(), f32t(&[4]), f32t(&[4])], |g, a| {
        vec![g.push_tensor(Op::Select, vec![a[0], a[1], a[2]], f32t(&[4]))]
    });
    let out = eval(&g, &[p, ft(&[4], &[1.0, 2.0, 3.0, 4.0]), ft(&[4], &[-1.0, -2.0, -3.0, -4.0])]);
    assert_exact(&out[0], &[4], &[1.0, 2.0, -3.0, -4.0]);
}

#[test]
fn casts_truncate_toward_zero_and_test_nonzero() {
    let x = ft(&[6], &[-2.7, -0.5, 0.0, 1.9, 3.0, f64::NAN]);
    assert_exact(&op1(Op::Cast, x.clone(), ty(DType::I32, &[6])), &[6], &[-2.0, 0.0, 0.0, 1.0, 3.0, 0.0]);
    assert_exact(&op1(Op::Cast, x, ty(DType::Bool, &[6])), &[6], &[1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
    let i = t(DType::I64, &[3], &[-4.0, 0.0, 7.0]);
    let f = op1(Op::Cast, i, f32t(&[3]));
    assert_eq!(f.dtype, DType::F32);
    assert_exact(&f, &[3], &[-4.0, 0.0, 7.0]);
    // i64 -> i32 wraps like a two's complement cast: 2^32 + 5 -> 5.
    let big = t(DType::I64, &[1], &[4294967301.0]);
    assert_exact(&op1(Op::Cast, big, ty(DType::I32, &[1])), &[1], &[5.0]);
    let b = t(DType::Bool, &[2], &[1.0, 0.0]);
    assert_exact(&op1(Op::Cast, b, ty(DType::I32, &[2])), &[2], &[1.0, 0.0]);
}

// ---- broadcasting ----

#[test]
fn broadcast_column_plus_row() {
    // [3,1] + [1,4]: out[i][j] = a[i] + b[j].
    let g = graph(&[f32t(&[3, 1]), f32t(&[1, 4])], |g, a| {
        let x = g.push_tensor(Op::Broadcast, vec![a[0]], f32t(&[3, 4]));
        let y = g.push_tensor(Op::Broadcast, vec![a[1]], f32t(&[3, 4]));
        vec![g.push_tensor(Op::Binary(BinaryOp::Add), vec![x, y], f32t(&[3, 4]))]
    });
    let out = eval(&g, &[ft(&[3, 1], &[1.0, 2.0, 3.0]), ft(&[1, 4], &[10.0, 20.0, 30.0, 40.0])]);
    #[rustfmt::skip]
    let want = [11.0, 21.0, 31.0, 41.0,
                12.0, 22.0, 32.0, 42.0,
                13.0, 23.0, 33.0, 43.0];
    assert_exact(&out[0], &[3, 4], &want);
}

#[test]
fn broadcast_vector_over_rows() {
    // [2,3] + [3]: the vector is added to each row.
    let g = graph(&[f32t(&[2, 3]), f32t(&[3])], |g, a| {
        let y = g.push_tensor(Op::Broadcast, vec![a[1]], f32t(&[2, 3]));
        vec![g.push_tensor(Op::Binary(BinaryOp::Add), vec![a[0], y], f32t(&[2, 3]))]
    });
    let out = eval(&g, &[ft(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), ft(&[3], &[10.0, 20.0, 30.0])]);
    assert_exact(&out[0], &[2, 3], &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
}

#[test]
fn broadcast_scalar_const() {
    // 2.5 * x, the scalar broadcast from rank 0.
    let g = graph(&[f32t(&[2, 2])], |g, a| {
        let c = g.push_tensor(Op::Const { value: 2.5 }, vec![], f32t(&[]));
        let c = g.push_tensor(Op::Broadcast, vec![c], f32t(&[2, 2]));
        vec![g.push_tensor(Op::Binary(BinaryOp::Mul), vec![c, a[0]], f32t(&[2, 2]))]
    });
    let out = eval(&g, &[ft(&[2, 2], &[1.0, -2.0, 0.0, 4.0])]);
    assert_exact(&out[0], &[2, 2], &[2.5, -5.0, 0.0, 10.0]);
}

#[test]
fn broadcast_inner_size_one_axes() {
    // [1,3,1] -> [2,3,2]: out[i][j][k] = x[j].
    let out = op1(Op::Broadcast, ft(&[1, 3, 1], &[1.0, 2.0, 3.0]), f32t(&[2, 3, 2]));
    assert_exact(&out, &[2, 3, 2], &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    // An equal-size axis is kept: [2,1] -> [3,2,2].
    let out = op1(Op::Broadcast, ft(&[2, 1], &[7.0, 8.0]), f32t(&[3, 2, 2]));
    assert_exact(&out, &[3, 2, 2], &[7.0, 7.0, 8.0, 8.0, 7.0, 7.0, 8.0, 8.0, 7.0, 7.0, 8.0, 8.0]);
}

// ---- matmul ----

#[test]
fn matmul_2d_by_hand() {
    // [[1,2],[3,4]] @ [[5,6],[7,8]] = [[1*5+2*7, 1*6+2*8], [3*5+4*7, 3*6+4*8]].
    let a = ft(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = ft(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
    assert_exact(&op2(Op::MatMul, a, b, f32t(&[2, 2])).unwrap(), &[2, 2], &[19.0, 22.0, 43.0, 50.0]);
    // Non-square: [1,3] @ [3,2] = [1*1+2*3+3*5, 1*2+2*4+3*6].
    let a = ft(&[1, 3], &[1.0, 2.0, 3.0]);
    let b = ft(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_exact(&op2(Op::MatMul, a, b, f32t(&[1, 2])).unwrap(), &[1, 2], &[22.0, 28.0]);
    // Integers stay integers.
    let a = t(DType::I32, &[1, 2], &[3.0, -4.0]);
    let b = t(DType::I32, &[2, 1], &[5.0, 6.0]);
    assert_exact(&op2(Op::MatMul, a, b, ty(DType::I32, &[1, 1])).unwrap(), &[1, 1], &[-9.0]);
}

#[test]
fn matmul_with_batch_axes() {
    let out = op2(Op::MatMul, ft(&[2, 2, 3], &MM_A), ft(&[2, 3, 2], &MM_B), f32t(&[2, 2, 2])).unwrap();
    assert_exact(&out, &[2, 2, 2], &MM_C);
}

// ---- normalizations ----

#[test]
fn softmax_and_log_softmax_along_each_axis() {
    let x = || ft(&[2, 3], &SM_X);
    let cases: [(u32, &[f64], &[f64]); 2] = [(0, &SOFTMAX_0, &LOG_SOFTMAX_0), (1, &SOFTMAX_1, &LOG_SOFTMAX_1)];
    for (axis, sm, lsm) in cases {
        assert_close(&op1(Op::Softmax { axis }, x(), f32t(&[2, 3])), &[2, 3], sm, 1e-15);
        assert_close(&op1(Op::LogSoftmax { axis }, x(), f32t(&[2, 3])), &[2, 3], lsm, 1e-15);
    }
    // Max-subtraction keeps huge logits finite: softmax([1000, 1000]) = [0.5, 0.5].
    assert_exact(&op1(Op::Softmax { axis: 0 }, ft(&[2], &[1000.0, 1000.0]), f32t(&[2])), &[2], &[0.5, 0.5]);
}

#[test]
fn layernorm_and_rmsnorm_over_last_axis() {
    let g = graph(&[f32t(&[2, 4]), f32t(&[4]), f32t(&[4])], |g, a| {
        let ln = g.push_tensor(Op::LayerNorm { eps: 1e-5 }, vec![a[0], a[1], a[2]], f32t(&[2, 4]));
        let rms = g.push_tensor(Op::RmsNorm { eps: 1e-5 }, vec![a[0], a[1]], f32t(&[2, 4]));
        vec![ln, rms]
    });
    let out = eval(&g, &[ft(&[2, 4], &LN_X), ft(&[4], &LN_G), ft(&[4], &LN_B)]);
    assert_close(&out[0], &[2, 4], &LAYERNORM, 1e-14);
    assert_close(&out[1], &[2, 4], &RMSNORM, 1e-14);
}

// ---- reductions ----

/// x[2,3,4] = arange(24) - 7, as in gen_values.py.
fn red_x() -> Tensor {
    ft(&[2, 3, 4], &(0..24).map(|i| i as f64 - 7.0).collect::<Vec<_>>())
}

fn reduce(op: ReduceOp, axes: &[u32], keepdim: bool, x: Tensor, out: TensorType) -> Tensor {
    op1(Op::Reduce { op, axes: axes.to_vec(), keepdim }, x, out)
}

#[test]
fn reductions_over_several_axes_with_keepdim() {
    let s = reduce(ReduceOp::Sum, &[0, 2], true, red_x(), f32t(&[1, 3, 1]));
    assert_exact(&s, &[1, 3, 1], &RED_SUM_02_KEEP);
    assert_exact(&reduce(ReduceOp::Mean, &[1, 2], false, red_x(), f32t(&[2])), &[2], &RED_MEAN_12);
    assert_exact(&reduce(ReduceOp::Max, &[1], false, red_x(), f32t(&[2, 4])), &[2, 4], &RED_MAX_1);
    assert_exact(&reduce(ReduceOp::Min, &[0], true, red_x(), f32t(&[1, 3, 4])), &[1, 3, 4], &RED_MIN_0_KEEP);
    // All axes: sum of arange(24) - 7*24 = 276 - 168 = 108.
    assert_exact(&reduce(ReduceOp::Sum, &[0, 1, 2], false, red_x(), f32t(&[])), &[], &[108.0]);
}

#[test]
fn argmax_takes_the_first_maximum() {
    // Rows [1,3,3] and [5,5,2]: ties resolve to the first index.
    let x = ft(&[2, 3], &[1.0, 3.0, 3.0, 5.0, 5.0, 2.0]);
    let a = reduce(ReduceOp::ArgMax, &[1], false, x.clone(), ty(DType::I64, &[2]));
    assert_eq!(a.dtype, DType::I64);
    assert_exact(&a, &[2], &[1.0, 0.0]);
    // Columns (1,5), (3,5), (3,2).
    let a = reduce(ReduceOp::ArgMax, &[0], true, x, ty(DType::I64, &[1, 3]));
    assert_exact(&a, &[1, 3], &[1.0, 1.0, 0.0]);
    // All equal: index 0.
    let a = reduce(ReduceOp::ArgMax, &[0], false, ft(&[3], &[-1.0, -1.0, -1.0]), ty(DType::I64, &[]));
    assert_exact(&a, &[], &[0.0]);
}

#[test]
fn integer_reductions_are_exact() {
    let x = t(DType::I32, &[2, 2], &[-7.0, 2.0, 3.0, 4.0]);
    // Row sums -5 and 7; row means -5/2 -> -2 and 7/2 -> 3 (truncated toward zero).
    assert_exact(&reduce(ReduceOp::Sum, &[1], false, x.clone(), ty(DType::I32, &[2])), &[2], &[-5.0, 7.0]);
    assert_exact(&reduce(ReduceOp::Mean, &[1], false, x, ty(DType::I32, &[2])), &[2], &[-2.0, 3.0]);
}

#[test]
fn reductions_over_an_empty_axis() {
    // The identities: sum 0, max -inf, min +inf (integers: the dtype's extremes).
    let empty = || ft(&[2, 0], &[]);
    assert_exact(&reduce(ReduceOp::Sum, &[1], false, empty(), f32t(&[2])), &[2], &[0.0, 0.0]);
    assert_exact(&reduce(ReduceOp::Max, &[1], false, empty(), f32t(&[2])), &[2], &[f64::NEG_INFINITY; 2]);
    assert_exact(&reduce(ReduceOp::Min, &[1], false, empty(), f32t(&[2])), &[2], &[f64::INFINITY; 2]);
    let ints = t(DType::I32, &[2, 0], &[]);
    assert_exact(&reduce(ReduceOp::Max, &[1], false, ints, ty(DType::I32, &[2])), &[2], &[i32::MIN as f64; 2]);
    // A float mean is 0 / 0.
    let mean = reduce(ReduceOp::Mean, &[1], false, empty(), f32t(&[2]));
    assert!(mean.data.iter().all(|x| x.is_nan()), "{mean:?}");
    // No index to return, even for an empty result.
    let g = graph(&[f32t(&[0, 0])], |g, a| {
        vec![g.push_tensor(Op::Reduce { op: ReduceOp::ArgMax, axes: vec![1], keepdim: false }, vec![a[0]], ty(DType::I64, &[0]))]
    });
    let e = try_eval(&g, &[ft(&[0, 0], &[])]).unwrap_err();
    assert_eq!(e.to_string(), "%1 = reduce_argmax: argmax over an empty axis");
}

// ---- data movement ----

#[test]
fn transpose_moves_axes() {
    let out = op1(Op::Transpose { perm: vec![2, 0, 1] }, red_x(), f32t(&[4, 2, 3]));
    assert_exact(&out, &[4, 2, 3], &TRANSPOSE_201);
    // 2-d transpose by hand.
    let out = op1(Op::Transpose { perm: vec![1, 0] }, ft(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), f32t(&[3, 2]));
    assert_exact(&out, &[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
}

#[test]
fn reshape_keeps_row_major_order() {
    let out = op1(Op::Reshape, ft(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), f32t(&[3, 1, 2]));
    assert_exact(&out, &[3, 1, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn concat_along_an_inner_axis() {
    // [[1],[2]] ++ [[3,4],[5,6]] along axis 1 = [[1,3,4],[2,5,6]].
    let g = graph(&[f32t(&[2, 1]), f32t(&[2, 2])], |g, a| {
        vec![g.push_tensor(Op::Concat { axis: 1 }, vec![a[0], a[1]], f32t(&[2, 3]))]
    });
    let out = eval(&g, &[ft(&[2, 1], &[1.0, 2.0]), ft(&[2, 2], &[3.0, 4.0, 5.0, 6.0])]);
    assert_exact(&out[0], &[2, 3], &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    // Along axis 0, three pieces.
    let g = graph(&[f32t(&[1, 2]), f32t(&[2, 2])], |g, a| {
        vec![g.push_tensor(Op::Concat { axis: 0 }, vec![a[1], a[0], a[1]], f32t(&[5, 2]))]
    });
    let out = eval(&g, &[ft(&[1, 2], &[0.0, 1.0]), ft(&[2, 2], &[2.0, 3.0, 4.0, 5.0])]);
    assert_exact(&out[0], &[5, 2], &[2.0, 3.0, 4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

fn slice(axis: u32, start: i64, end: i64, step: u32) -> Op {
    Op::Slice { axis, start: d(start), end: d(end), step }
}

#[test]
fn slice_with_step() {
    let x: Vec<f64> = (0..10).map(f64::from).collect();
    // 1, 4, 7: ceil((8 - 1) / 3) = 3 elements.
    assert_exact(&op1(slice(0, 1, 8, 3), ft(&[10], &x), f32t(&[3])), &[3], &[1.0, 4.0, 7.0]);
    // End 10: ceil(9 / 3) = 3, still 1, 4, 7 (the next, 10, is not below the end).
    assert_exact(&op1(slice(0, 1, 10, 3), ft(&[10], &x), f32t(&[3])), &[3], &[1.0, 4.0, 7.0]);
    assert_exact(&op1(slice(0, 0, 10, 3), ft(&[10], &x), f32t(&[4])), &[4], &[0.0, 3.0, 6.0, 9.0]);
    // x[3,4] = 0..12, columns 1..4 step 2 -> columns 1 and 3.
    let m = ft(&[3, 4], &(0..12).map(f64::from).collect::<Vec<_>>());
    assert_exact(&op1(slice(1, 1, 4, 2), m.clone(), f32t(&[3, 2])), &[3, 2], &[1.0, 3.0, 5.0, 7.0, 9.0, 11.0]);
    // Rows 1..3.
    assert_exact(
        &op1(slice(0, 1, 3, 1), m.clone(), f32t(&[2, 4])),
        &[2, 4],
        &[4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0],
    );
    // An empty slice.
    assert_exact(&op1(slice(0, 2, 2, 1), m, f32t(&[0, 4])), &[0, 4], &[]);
}

#[test]
fn slice_with_symbolic_bounds() {
    // The last row of x[T, 2]: T-1..T.
    let tv = DimExpr::var("T");
    let xt = TensorType::new(DType::F32, vec![tv.clone(), d(2)]);
    let g = graph(&[xt], |g, a| {
        let op = Op::Slice { axis: 0, start: tv.sub(&d(1)), end: tv.clone(), step: 1 };
        vec![g.push_tensor(op, vec![a[0]], f32t(&[1, 2]))]
    });
    let m = Module::default();
    verify::graph(&m, &g).unwrap();
    let dims = |v: &str| (v == "T").then_some(3);
    let out = interp::run(&m, &g, &dims, &[], &[ft(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])], Precision::F64).unwrap();
    assert_exact(&out[0], &[1, 2], &[5.0, 6.0]);
}

// ---- indexing ----

#[test]
fn gather_with_a_2d_index() {
    // table[i][j] = 10 i + j, shape [4, 3]; idx [[0,3],[2,2]] picks rows.
    let table = ft(&[4, 3], &[0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 20.0, 21.0, 22.0, 30.0, 31.0, 32.0]);
    let idx = t(DType::I32, &[2, 2], &[0.0, 3.0, 2.0, 2.0]);
    let out = op2(Op::Gather { axis: 0 }, table.clone(), idx, f32t(&[2, 2, 3])).unwrap();
    #[rustfmt::skip]
    let want = [0.0, 1.0, 2.0,   30.0, 31.0, 32.0,
                20.0, 21.0, 22.0, 20.0, 21.0, 22.0];
    assert_exact(&out, &[2, 2, 3], &want);
    // Along axis 1: out[i][k] = table[i][idx[k]], idx = [2, 0]; shape [4] ++ [2].
    let idx = t(DType::I64, &[2], &[2.0, 0.0]);
    let out = op2(Op::Gather { axis: 1 }, table, idx, f32t(&[4, 2])).unwrap();
    assert_exact(&out, &[4, 2], &[2.0, 0.0, 12.0, 10.0, 22.0, 20.0, 32.0, 30.0]);
}

#[test]
fn gather_rejects_out_of_range_indices() {
    let table = ft(&[4, 1], &[0.0, 1.0, 2.0, 3.0]);
    for bad in [4.0, -1.0] {
        let idx = t(DType::I32, &[2], &[1.0, bad]);
        let e = op2(Op::Gather { axis: 0 }, table.clone(), idx, f32t(&[2, 1])).unwrap_err();
        assert_eq!(e, InterpError::IndexOutOfRange { node: "%2 = gather".into(), value: bad, bound: 4 });
        assert!(e.to_string().contains(&format!("index {bad} out of range 0..4")), "{e}");
    }
}

#[test]
fn one_hot_encodes_along_a_new_axis() {
    // [[1, 0], [2, 1]] with 3 classes.
    let idx = t(DType::I32, &[2, 2], &[1.0, 0.0, 2.0, 1.0]);
    let out = op1(Op::OneHot, idx, f32t(&[2, 2, 3]));
    #[rustfmt::skip]
    let want = [0.0, 1.0, 0.0,  1.0, 0.0, 0.0,
                0.0, 0.0, 1.0,  0.0, 1.0, 0.0];
    assert_exact(&out, &[2, 2, 3], &want);
    let g = graph(&[ty(DType::I32, &[1])], |g, a| vec![g.push_tensor(Op::OneHot, vec![a[0]], f32t(&[1, 3]))]);
    let e = try_eval(&g, &[t(DType::I32, &[1], &[3.0])]).unwrap_err();
    assert_eq!(e, InterpError::IndexOutOfRange { node: "%1 = one_hot".into(), value: 3.0, bound: 3 });
}

#[test]
fn iota_counts_along_its_axis() {
    let run = |axis| {
        let g = graph(&[], |g, _| vec![g.push_tensor(Op::Iota { axis }, vec![], ty(DType::I32, &[2, 3]))]);
        eval(&g, &[]).remove(0)
    };
    assert_exact(&run(1), &[2, 3], &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
    assert_exact(&run(0), &[2, 3], &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
}

// ---- scan ----

/// Body graph inputs become `input` nodes; the closure adds the rest.
fn body(inputs: &[TensorType], f: impl FnOnce(&mut Graph, &[ValueId]) -> Vec<ValueId>) -> Box<Graph> {
    Box::new(graph(inputs, f))
}

#[test]
fn scan_running_sum() {
    // acc' = acc + x; emits acc' each step: [1, 3, 6, 10], final 10.
    let s = f32t(&[]);
    let b = body(&[s.clone(), s.clone()], |g, a| {
        let acc = g.push_tensor(Op::Binary(BinaryOp::Add), vec![a[0], a[1]], s.clone());
        vec![acc, acc]
    });
    let g = graph(&[f32t(&[4])], |g, a| {
        let zero = g.push_tensor(Op::Const { value: 0.0 }, vec![], s.clone());
        let tuple = Type::Tuple(vec![s.clone(), f32t(&[4])]);
        let scan = g.push(Op::Scan { body: b, n_carry: 1, n_seq: 1 }, vec![zero, a[0]], tuple);
        let total = g.push_tensor(Op::Extract { index: 0 }, vec![scan], s.clone());
        let partial = g.push_tensor(Op::Extract { index: 1 }, vec![scan], f32t(&[4]));
        vec![total, partial]
    });
    let out = eval(&g, &[ft(&[4], &[1.0, 2.0, 3.0, 4.0])]);
    assert_exact(&out[0], &[], &[10.0]);
    assert_exact(&out[1], &[4], &[1.0, 3.0, 6.0, 10.0]);
}

#[test]
fn scan_with_a_capture_over_rows() {
    // acc'[2] = acc + w * row; rows [1,2], [3,4], [5,6]; w = 2.
    // acc: [2,4] -> [8,12] -> [18,24]; the emit is acc' summed: 6, 20, 42.
    let v = f32t(&[2]);
    let s = f32t(&[]);
    let b = body(&[v.clone(), v.clone(), v.clone()], |g, a| {
        let scaled = g.push_tensor(Op::Binary(BinaryOp::Mul), vec![a[2], a[1]], v.clone());
        let acc = g.push_tensor(Op::Binary(BinaryOp::Add), vec![a[0], scaled], v.clone());
        let total =
            g.push_tensor(Op::Reduce { op: ReduceOp::Sum, axes: vec![0], keepdim: false }, vec![acc], s.clone());
        vec![acc, total]
    });
    let g = graph(&[v.clone(), f32t(&[3, 2]), v.clone()], |g, a| {
        let tuple = Type::Tuple(vec![v.clone(), f32t(&[3])]);
        let scan = g.push(Op::Scan { body: b, n_carry: 1, n_seq: 1 }, vec![a[0], a[1], a[2]], tuple);
        let last = g.push_tensor(Op::Extract { index: 0 }, vec![scan], v.clone());
        let sums = g.push_tensor(Op::Extract { index: 1 }, vec![scan], f32t(&[3]));
        vec![last, sums]
    });
    let out = eval(&g, &[ft(&[2], &[0.0, 0.0]), ft(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), ft(&[2], &[2.0, 2.0])]);
    assert_exact(&out[0], &[2], &[18.0, 24.0]);
    assert_exact(&out[1], &[3], &[6.0, 20.0, 42.0]);
}

#[test]
fn scan_two_carry_recurrence() {
    // (a, b) -> (b, a + b*t), emitting the old a; a = 0, b = 1, t = [1,2,1,2,1,2].
    // step: a  b  t | emit  a'  b'
    //   0:  0  1  1 |   0    1  0+1*1 = 1
    //   1:  1  1  2 |   1    1  1+1*2 = 3
    //   2:  1  3  1 |   1    3  1+3*1 = 4
    //   3:  3  4  2 |   3    4  3+4*2 = 11
    //   4:  4 11  1 |   4   11  4+11*1 = 15
    //   5: 11 15  2 |  11   15  11+15*2 = 41
    let s = ty(DType::I64, &[]);
    let b = body(&[s.clone(), s.clone(), s.clone()], |g, a| {
        let bt = g.push_tensor(Op::Binary(BinaryOp::Mul), vec![a[1], a[2]], s.clone());
        let nb = g.push_tensor(Op::Binary(BinaryOp::Add), vec![a[0], bt], s.clone());
        vec![a[1], nb, a[0]]
    });
    let g = graph(&[ty(DType::I64, &[6])], |g, a| {
        let zero = g.push_tensor(Op::Const { value: 0.0 }, vec![], s.clone());
        let one = g.push_tensor(Op::Const { value: 1.0 }, vec![], s.clone());
        let tuple = Type::Tuple(vec![s.clone(), s.clone(), ty(DType::I64, &[6])]);
        let scan = g.push(Op::Scan { body: b, n_carry: 2, n_seq: 1 }, vec![zero, one, a[0]], tuple);
        (0..3u32)
            .map(|i| {
                let t = if i < 2 { s.clone() } else { ty(DType::I64, &[6]) };
                g.push_tensor(Op::Extract { index: i }, vec![scan], t)
            })
            .collect()
    });
    let out = eval(&g, &[t(DType::I64, &[6], &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0])]);
    assert_exact(&out[0], &[], &[15.0]);
    assert_exact(&out[1], &[], &[41.0]);
    assert_exact(&out[2], &[6], &[0.0, 1.0, 1.0, 3.0, 4.0, 11.0]);
}

#[test]
fn scan_over_an_empty_sequence() {
    // No steps: the carry is unchanged and the emits have shape [0, 2].
    let v = f32t(&[2]);
    let b = body(&[v.clone(), v.clone()], |g, a| {
        let acc = g.push_tensor(Op::Binary(BinaryOp::Add), vec![a[0], a[1]], v.clone());
        vec![acc, acc]
    });
    let g = graph(&[v.clone(), f32t(&[0, 2])], |g, a| {
        let tuple = Type::Tuple(vec![v.clone(), f32t(&[0, 2])]);
        let scan = g.push(Op::Scan { body: b, n_carry: 1, n_seq: 1 }, vec![a[0], a[1]], tuple);
        let last = g.push_tensor(Op::Extract { index: 0 }, vec![scan], v.clone());
        let all = g.push_tensor(Op::Extract { index: 1 }, vec![scan], f32t(&[0, 2]));
        vec![last, all]
    });
    let out = eval(&g, &[ft(&[2], &[7.0, 8.0]), ft(&[0, 2], &[])]);
    assert_exact(&out[0], &[2], &[7.0, 8.0]);
    assert_exact(&out[1], &[0, 2], &[]);
}

#[test]
fn errors_inside_a_scan_name_the_step() {
    // Integer division by a sequence element that is 0 at step 2.
    let s = ty(DType::I32, &[]);
    let b = body(&[s.clone(), s.clone()], |g, a| {
        let q = g.push_tensor(Op::Binary(BinaryOp::Div), vec![a[0], a[1]], s.clone());
        vec![q]
    });
    let g = graph(&[s.clone(), ty(DType::I32, &[3])], |g, a| {
        let tuple = Type::Tuple(vec![s.clone()]);
        let scan = g.push(Op::Scan { body: b, n_carry: 1, n_seq: 1 }, vec![a[0], a[1]], tuple);
        vec![g.push_tensor(Op::Extract { index: 0 }, vec![scan], s.clone())]
    });
    let e = try_eval(&g, &[t(DType::I32, &[], &[100.0]), t(DType::I32, &[3], &[2.0, 5.0, 0.0])]).unwrap_err();
    assert_eq!(e.to_string(), "%2 = scan, step 2: %2 = div: integer division by zero");
    // Without the zero: 100 / 2 / 5 / 3 = 50 / 5 / 3 = 10 / 3 = 3.
    let out = eval(&g, &[t(DType::I32, &[], &[100.0]), t(DType::I32, &[3], &[2.0, 5.0, 3.0])]);
    assert_exact(&out[0], &[], &[3.0]);
}

// ---- bindings, inputs, params and precision ----

#[test]
fn symbolic_dims_are_bound_by_the_caller() {
    let xt = TensorType::new(DType::F32, vec![DimExpr::var("B"), d(3)]);
    let g = graph(&[xt], |g, a| {
        let out = TensorType::new(DType::F32, vec![DimExpr::var("B")]);
        vec![g.push_tensor(Op::Reduce { op: ReduceOp::Sum, axes: vec![1], keepdim: false }, vec![a[0]], out)]
    });
    let m = Module::default();
    let x = ft(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = interp::run(&m, &g, &|v| (v == "B").then_some(2), &[], std::slice::from_ref(&x), Precision::F64).unwrap();
    assert_exact(&out[0], &[2], &[6.0, 15.0]);
    let e = interp::run(&m, &g, &|_| None, &[], std::slice::from_ref(&x), Precision::F64).unwrap_err();
    assert_eq!(e, InterpError::Dim(kiln_ir::DimError::Unbound("B".into())));
    // B = 3 makes the input's shape wrong.
    let e = interp::run(&m, &g, &|_| Some(3), &[], &[x], Precision::F64).unwrap_err();
    assert_eq!(e.to_string(), "input 0: expected f32[3, 3], got f32[2, 3]");
}

#[test]
fn inputs_are_checked_against_the_graph() {
    let g = graph(&[f32t(&[2]), ty(DType::I32, &[2])], |_, a| vec![a[0], a[1]]);
    let m = Module::default();
    let run = |ins: &[Tensor]| interp::run(&m, &g, &|_| None, &[], ins, Precision::F64);
    let good = [ft(&[2], &[1.0, 2.0]), t(DType::I32, &[2], &[3.0, 4.0])];
    assert_eq!(run(&good).unwrap(), good.to_vec());
    let e = run(&good[..1]).unwrap_err();
    assert_eq!(e, InterpError::InputCount { expected: 2, got: 1 });
    let e = run(&[good[0].clone(), ft(&[2], &[3.0, 4.0])]).unwrap_err();
    assert_eq!(e.to_string(), "input 1: expected i32[2], got f32[2]");
    let e = run(&[good[0].clone(), t(DType::I32, &[2], &[3.5, 4.0])]).unwrap_err();
    assert!(
        matches!(&e, InterpError::NotRepresentable { what, pos: 0, value, .. } if what == "input 1" && *value == 3.5),
        "{e}"
    );
}

fn module_with_param(shape: &[i64]) -> Module {
    let p = Param { name: "w".into(), ty: f32t(shape), init: Init::Constant(0.0), stack: None };
    Module { params: vec![p], functions: vec![] }
}

#[test]
fn params_are_read_by_index_and_checked() {
    let m = module_with_param(&[2]);
    let g = graph(&[f32t(&[2])], |g, a| {
        let w = g.push_tensor(Op::Param { index: 0 }, vec![], f32t(&[2]));
        vec![g.push_tensor(Op::Binary(BinaryOp::Mul), vec![a[0], w], f32t(&[2]))]
    });
    verify::graph(&m, &g).unwrap();
    let x = [ft(&[2], &[3.0, 4.0])];
    let out = interp::run(&m, &g, &|_| None, &[ft(&[2], &[0.5, -1.0])], &x, Precision::F64).unwrap();
    assert_exact(&out[0], &[2], &[1.5, -4.0]);
    let e = interp::run(&m, &g, &|_| None, &[], &x, Precision::F64).unwrap_err();
    assert_eq!(e.to_string(), "param 0 `w` is missing: 0 params given");
    let e = interp::run(&m, &g, &|_| None, &[ft(&[3], &[0.0; 3])], &x, Precision::F64).unwrap_err();
    assert_eq!(e.to_string(), "param 0 `w`: expected f32[2], got f32[3]");
}

#[test]
fn f32_precision_rounds_every_float_result() {
    // 1 / 3: ideal in f64 mode, the nearest f32 in f32 mode.
    let g = graph(&[f32t(&[])], |g, a| {
        let three = g.push_tensor(Op::Const { value: 3.0 }, vec![], f32t(&[]));
        vec![g.push_tensor(Op::Binary(BinaryOp::Div), vec![a[0], three], f32t(&[]))]
    });
    let m = Module::default();
    let one = [ft(&[], &[1.0])];
    let f64_out = interp::run(&m, &g, &|_| None, &[], &one, Precision::F64).unwrap();
    let f32_out = interp::run(&m, &g, &|_| None, &[], &one, Precision::F32).unwrap();
    assert_eq!(f64_out[0].data, [1.0 / 3.0]);
    assert_eq!(f32_out[0].data, [(1.0f32 / 3.0f32) as f64]);
    // In f16, 1 + 2^-12 rounds back to 1 (f16 has 10 mantissa bits);
    // inputs are rounded too: 0.1 is stored as the nearest f16.
    let h = ty(DType::F16, &[2]);
    let g = graph(&[h.clone(), h.clone()], |g, a| {
        vec![g.push_tensor(Op::Binary(BinaryOp::Add), vec![a[0], a[1]], h.clone())]
    });
    let ins = [t(DType::F16, &[2], &[1.0, 0.1]), t(DType::F16, &[2], &[1.0 / 4096.0, 0.0])];
    let out = interp::run(&m, &g, &|_| None, &[], &ins, Precision::F32).unwrap();
    assert_eq!(out[0].data, [1.0, half::f16::from_f64(0.1).to_f64()]);
    let out = interp::run(&m, &g, &|_| None, &[], &ins, Precision::F64).unwrap();
    assert_eq!(out[0].data, [1.0 + 1.0 / 4096.0, 0.1]);
}

#[test]
fn tensor_helpers() {
    let x = Tensor::new(DType::F32, vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(x.numel(), 6);
    assert_eq!(x.get(&[1, 0]), 4.0);
    assert_eq!(x.get(&[0, 2]), 3.0);
    assert_eq!(Tensor::zeros(DType::I32, vec![2, 0]).numel(), 0);
    assert_eq!(Tensor::scalar(DType::F32, 2.0).shape, Vec::<usize>::new());
    let mut y = x.clone();
    y.data[4] = 5.25;
    assert_eq!(x.max_abs_diff(&y), 0.25);
    assert_eq!(x.max_abs_diff(&Tensor::zeros(DType::F32, vec![6])), f64::INFINITY);
    let nan = Tensor::scalar(DType::F32, f64::NAN);
    assert_eq!(nan.max_abs_diff(&nan), 0.0);
    assert_eq!(nan.max_abs_diff(&Tensor::scalar(DType::F32, 0.0)), f64::INFINITY);
    assert_eq!(x.max_abs(), 6.0);
}

/// Values printed by `oracle/gen_values.py` (numpy 2.4, libm).
#[rustfmt::skip]
#[allow(clippy::excessive_precision, clippy::approx_constant)]
mod numpy {
    // Points for the unary tests.
    pub const XS: [f64; 8] = [-10.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
    pub const ERF: [f64; 8] = [-1.0, -0.9999779095030014, -0.8427007929497149, -0.5204998778130465, 0.0, 0.5204998778130465, 0.8427007929497149, 0.9999779095030014];
    pub const GELU: [f64; 8] = [-7.619853024160593e-23, -0.004049694094890287, -0.15865525393145707, -0.15426876936299344, 0.0, 0.34573123063700656, 0.8413447460685429, 2.99595030590511];
    pub const GELU_TANH: [f64; 8] = [-0.0, -0.0036373920817729943, -0.1588080093917233, -0.15428599017485606, 0.0, 0.34571400982514394, 0.8411919906082768, 2.996362607918227];
    pub const SIGMOID: [f64; 8] = [4.5397868702434395e-05, 0.04742587317756678, 0.2689414213699951, 0.3775406687981454, 0.5, 0.6224593312018546, 0.7310585786300049, 0.9525741268224334];
    pub const SILU: [f64; 8] = [-0.0004539786870243439, -0.14227761953270035, -0.2689414213699951, -0.1887703343990727, 0.0, 0.3112296656009273, 0.7310585786300049, 2.8577223804672998];
    pub const TANH: [f64; 8] = [-0.9999999958776927, -0.9950547536867305, -0.7615941559557649, -0.46211715726000974, 0.0, 0.46211715726000974, 0.7615941559557649, 0.9950547536867305];
    pub const SIN: [f64; 8] = [0.5440211108893698, -0.1411200080598672, -0.8414709848078965, -0.479425538604203, 0.0, 0.479425538604203, 0.8414709848078965, 0.1411200080598672];
    pub const COS: [f64; 8] = [-0.8390715290764524, -0.9899924966004454, 0.5403023058681398, 0.8775825618903728, 1.0, 0.8775825618903728, 0.5403023058681398, -0.9899924966004454];
    pub const EXP: [f64; 8] = [4.5399929762484854e-05, 0.049787068367863944, 0.36787944117144233, 0.6065306597126334, 1.0, 1.6487212707001282, 2.718281828459045, 20.085536923187668];
    pub const POS: [f64; 4] = [0.25, 1.0, 2.0, 9.0];
    pub const LOG: [f64; 4] = [-1.3862943611198906, 0.0, 0.6931471805599453, 2.1972245773362196];
    pub const SQRT: [f64; 4] = [0.5, 1.0, 1.4142135623730951, 3.0];
    pub const RSQRT: [f64; 4] = [2.0, 1.0, 0.7071067811865475, 0.3333333333333333];
    pub const MM_A: [f64; 12] = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5];
    pub const MM_B: [f64; 12] = [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75];
    pub const MM_C: [f64; 8] = [-6.25, -7.375, 0.5, 0.5, 14.0, 15.125, 27.5, 29.75];
    pub const SM_X: [f64; 6] = [1.0, 2.0, 3.0, -1.0, 0.0, 5.0];
    pub const SOFTMAX_0: [f64; 6] = [0.8807970779778823, 0.8807970779778823, 0.11920292202211755, 0.11920292202211755, 0.11920292202211755, 0.8807970779778823];
    pub const LOG_SOFTMAX_0: [f64; 6] = [-0.1269280110429726, -0.1269280110429726, -2.1269280110429727, -2.1269280110429727, -2.1269280110429727, -0.1269280110429726];
    pub const SOFTMAX_1: [f64; 6] = [0.09003057317038046, 0.24472847105479764, 0.6652409557748218, 0.0024561149044509535, 0.006676412513376451, 0.9908674725821726];
    pub const LOG_SOFTMAX_1: [f64; 6] = [-2.4076059644443806, -1.4076059644443804, -0.4076059644443804, -6.0091744845917345, -5.0091744845917345, -0.009174484591734727];
    pub const LN_X: [f64; 8] = [1.0, 2.0, 4.0, 7.0, -3.0, 0.5, 0.5, 2.0];
    pub const LN_G: [f64; 4] = [1.0, 0.5, -1.0, 2.0];
    pub const LN_B: [f64; 4] = [0.0, 0.1, 0.2, -0.3];
    pub const LAYERNORM: [f64; 8] = [-1.0910884120486357, -0.22732652361459074, -0.018217682409727126, 2.7550475537361803, -1.6329907426116994, 0.2360825618843083, -0.07216512376861656, 1.8773209901489325];
    pub const RMSNORM: [f64; 8] = [0.2390456535681303, 0.2390456535681303, -0.9561826142725212, 3.346639149953824, -1.6329907426116994, 0.13608256188430828, -0.27216512376861657, 2.1773209901489325];
    pub const RED_SUM_02_KEEP: [f64; 3] = [4.0, 36.0, 68.0];
    pub const RED_MEAN_12: [f64; 2] = [-1.5, 10.5];
    pub const RED_MAX_1: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 13.0, 14.0, 15.0, 16.0];
    pub const RED_MIN_0_KEEP: [f64; 12] = [-7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0];
    pub const TRANSPOSE_201: [f64; 24] = [-7.0, -3.0, 1.0, 5.0, 9.0, 13.0, -6.0, -2.0, 2.0, 6.0, 10.0, 14.0, -5.0, -1.0, 3.0, 7.0, 11.0, 15.0, -4.0, 0.0, 4.0, 8.0, 12.0, 16.0];
    pub const ERF_X: [f64; 8] = [1e-10, 0.1, 0.3, 0.9, 1.5, 1.99, 2.5, 4.0];
    pub const ERF_AT: [f64; 8] = [1.1283791670955126e-10, 0.1124629160182849, 0.3286267594591274, 0.7969082124228322, 0.9661051464753108, 0.995111413199617, 0.999593047982555, 0.9999999845827421];
    pub const ERFC_X: [f64; 9] = [-1.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 26.0];
    pub const ERFC_AT: [f64; 9] = [1.842700792949715, 0.4795001221869535, 0.15729920705028513, 0.033894853524689274, 0.004677734981047265, 2.2090496998585438e-05, 1.5374597944280351e-12, 2.088487583762545e-45, 5.663192408856143e-296];
}

// ---- dropout ----

/// `dropout(x, p)` with `x` of `shape`, seeded with `seed`.
fn dropout(x: Tensor, seed: u64, p: f64) -> Tensor {
    let xt = TensorType::new(x.dtype, x.shape.iter().map(|&n| d(n as i64)).collect());
    let out = xt.clone();
    let g = graph(&[xt, ty(DType::I64, &[])], |g, a| vec![g.push_tensor(Op::Dropout { p }, vec![a[0], a[1]], out)]);
    eval(&g, &[x, Tensor::scalar(DType::I64, seed as f64)]).remove(0)
}

#[test]
fn dropout_zeroes_what_the_rng_drops_and_scales_the_rest() {
    let (seed, p) = (12345, 0.25);
    let x = ft(&[2, 3, 4], &(1..=24).map(f64::from).collect::<Vec<_>>());
    // Element i (row-major) survives iff its draw is at least p.
    let want: Vec<f64> =
        (0..24).map(|i| if kiln_ir::rng::uniform(seed, i) as f64 >= p { (i + 1) as f64 * (1.0 / 0.75) } else { 0.0 }).collect();
    let kept = want.iter().filter(|&&v| v != 0.0).count();
    assert!(kept > 0 && kept < 24, "the case should keep some and drop some, kept {kept}");
    assert_exact(&dropout(x, seed, p), &[2, 3, 4], &want);
}

#[test]
fn dropout_keeps_one_minus_p_of_the_elements() {
    let n = 100_000;
    for (seed, p) in [(1u64, 0.1), (2, 0.3), (3, 0.5), (4, 0.9)] {
        let got = dropout(ft(&[n], &vec![1.0; n]), seed, p);
        let kept = got.data.iter().filter(|&&v| v != 0.0).count();
        // Exactly the rng's count, which for these fixed seeds lies within
        // 0.01 of 1 - p (about 7 standard deviations at this n).
        let want = (0..n as u64).filter(|&i| kiln_ir::rng::uniform(seed, i) as f64 >= p).count();
        assert_eq!(kept, want, "seed {seed} p {p}");
        let frac = kept as f64 / n as f64;
        assert!((frac - (1.0 - p)).abs() < 0.01, "seed {seed} p {p}: kept {frac}");
        assert!(got.data.iter().all(|&v| v == 0.0 || v == 1.0 / (1.0 - p)));
    }
}

#[test]
fn dropout_rejects_bad_probabilities_and_seeds() {
    let check = |p: f64, seed: TensorType| {
        let g = graph(&[f32t(&[3]), seed], |g, a| vec![g.push_tensor(Op::Dropout { p }, vec![a[0], a[1]], f32t(&[3]))]);
        verify::graph(&Module::default(), &g).map_err(|e| e.to_string())
    };
    assert!(check(0.5, ty(DType::I64, &[])).is_ok());
    assert!(check(1.0, ty(DType::I64, &[])).unwrap_err().contains("outside [0, 1)"));
    assert!(check(0.5, ty(DType::I32, &[])).unwrap_err().contains("rank-0 i64"));
    assert!(check(0.5, ty(DType::I64, &[1])).unwrap_err().contains("rank-0 i64"));
}
