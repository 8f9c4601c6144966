//! Gradient checks of every op's VJP against central finite differences in
//! the f64 reference interpreter, over random shapes (sizes 1 to 4) and
//! values. Each loss is a random projection `Σ op(x) ⊙ w` of the op's
//! result, so every output element's adjoint is exercised.

#[path = "autodiff_util.rs"]
mod util;

use kiln_ir::autodiff::Wrt;
use kiln_ir::{BinaryOp, CmpOp, DType, DimExpr, Module, Op, ReduceOp, TensorType, UnaryOp};
use proptest::prelude::*;
use util::*;

/// Shapes of rank `lo..=hi` with sizes 1 to 4.
fn shapes(lo: usize, hi: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=4, lo..=hi)
}

/// A one-op problem: `build` makes the op's result from the inputs made by
/// `inputs`; the loss projects it onto a random tensor.
fn one_op(
    rng: &mut Gen,
    m: Module,
    params: Vec<kiln_ir::interp::Tensor>,
    inputs: impl FnOnce(&mut Gb, &mut Gen) -> Vec<kiln_ir::ValueId>,
    build: impl FnOnce(&mut Gb, &[kiln_ir::ValueId]) -> kiln_ir::ValueId,
    out_shape: &[usize],
) -> Problem {
    let mut b = Gb::new();
    let xs = inputs(&mut b, rng);
    let y = build(&mut b, &xs);
    let l = b.project(y, rng, out_shape);
    let (f, values) = b.finish("f", l);
    Problem::new(m, f, params, values)
}

const UNARY: [UnaryOp; 15] = [
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Relu,
    UnaryOp::Gelu,
    UnaryOp::GeluTanh,
    UnaryOp::Silu,
    UnaryOp::Erf,
    UnaryOp::Sin,
    UnaryOp::Cos,
];

fn unary_case(op: UnaryOp, shape: &[usize], seed: u64) -> Result<(), String> {
    let mut rng = Gen::new(seed);
    let x = match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => rng.f32s(shape, 0.3, 2.0),
        UnaryOp::Abs | UnaryOp::Relu => rng.tensor(DType::F32, shape, |r| r.away(0.1, 2.0)),
        _ => rng.f32s(shape, -2.5, 2.5),
    };
    let p = one_op(
        &mut rng,
        Module::default(),
        vec![],
        |b, _| vec![b.input("x", f32t(&dims(shape)), x)],
        |b, a| b.unary(op, a[0]),
        shape,
    );
    check_inputs(&p, &[0]).map(|_| ()).map_err(|e| format!("{op:?}: {e}"))
}

const BINARY: [BinaryOp; 7] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Max, BinaryOp::Min];

fn binary_case(op: BinaryOp, shape: &[usize], seed: u64) -> Result<(), String> {
    let mut rng = Gen::new(seed);
    let (a, c) = match op {
        BinaryOp::Div => (rng.f32s(shape, -2.0, 2.0), rng.tensor(DType::F32, shape, |r| r.away(0.5, 2.0))),
        BinaryOp::Pow => (rng.f32s(shape, 0.5, 2.0), rng.f32s(shape, -1.5, 1.5)),
        BinaryOp::Max | BinaryOp::Min => {
            // Operands at least 0.1 apart: away from the tie.
            let a = rng.f32s(shape, -2.0, 2.0);
            let mut c = a.clone();
            for v in &mut c.data {
                *v += rng.away(0.1, 1.0);
            }
            (a, c)
        }
        _ => (rng.f32s(shape, -2.0, 2.0), rng.f32s(shape, -2.0, 2.0)),
    };
    let t = f32t(&dims(shape));
    let p = one_op(
        &mut rng,
        Module::default(),
        vec![],
        |b, _| vec![b.input("a", t.clone(), a), b.input("b", t.clone(), c)],
        |b, x| b.binary(op, x[0], x[1]),
        shape,
    );
    check_inputs(&p, &[0, 1]).map(|_| ()).map_err(|e| format!("{op:?}: {e}"))
}

/// Random sorted subset of `0..rank`.
fn subset(rng: &mut Gen, rank: usize) -> Vec<u32> {
    (0..rank as u32).filter(|_| rng.below(2) == 0).collect()
}

fn reduce_case(op: ReduceOp, shape: &[usize], seed: u64) -> Result<(), String> {
    let mut rng = Gen::new(seed);
    let axes = subset(&mut rng, shape.len());
    let keepdim = rng.below(2) == 0;
    let x = rng.distinct(shape);
    let out: Vec<usize> = (0..shape.len())
        .filter_map(|i| match (axes.contains(&(i as u32)), keepdim) {
            (false, _) => Some(shape[i]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    let p = one_op(
        &mut rng,
        Module::default(),
        vec![],
        |b, _| vec![b.input("x", f32t(&dims(shape)), x)],
        |b, a| b.reduce(op, a[0], &axes, keepdim),
        &out,
    );
    check_inputs(&p, &[0]).map(|_| ()).map_err(|e| format!("{op:?} axes {axes:?} keepdim {keepdim}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn unary_ops(shape in shapes(0, 3), seed in any::<u64>()) {
        for op in UNARY {
            prop_assert_eq!(unary_case(op, &shape, seed), Ok(()));
        }
    }

    #[test]
    fn binary_ops(shape in shapes(0, 3), seed in any::<u64>()) {
        for op in BINARY {
            prop_assert_eq!(binary_case(op, &shape, seed), Ok(()));
        }
    }

    #[test]
    fn reductions(shape in shapes(1, 3), seed in any::<u64>()) {
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min] {
            prop_assert_eq!(reduce_case(op, &shape, seed), Ok(()));
        }
    }

    /// Finite differences move `x` with the seed, hence the mask, fixed;
    /// `exp` first so the cotangent reaching dropout is not constant.
    #[test]
    fn dropout_reuses_its_mask(shape in shapes(0, 3), seed in any::<u64>(), p in 0.0f64..0.9) {
        let mut rng = Gen::new(seed);
        let x = rng.f32s(&shape, -1.0, 1.0);
        let s = kiln_ir::interp::Tensor::scalar(DType::I64, (seed % kiln_ir::rng::SEED_LIMIT) as f64);
        let p = one_op(&mut rng, Module::default(), vec![], |b, _| {
            vec![b.input("x", f32t(&dims(&shape)), x), b.input("seed", tyc(DType::I64, &[]), s)]
        }, |b, a| {
            let t = b.ty(a[0]);
            let e = b.unary(UnaryOp::Exp, a[0]);
            b.push(Op::Dropout { p }, vec![e, a[1]], t)
        }, &shape);
        prop_assert_eq!(check_inputs(&p, &[0]).map(|_| ()), Ok(()));
    }

    #[test]
    fn select_routes_to_the_chosen_branch(shape in shapes(0, 3), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let t = f32t(&dims(&shape));
        let cond = rng.tensor(DType::Bool, &shape, |r| r.below(2) as f64);
        let (a, c) = (rng.f32s(&shape, -1.0, 1.0), rng.f32s(&shape, -1.0, 1.0));
        let p = one_op(&mut rng, Module::default(), vec![], |b, _| {
            vec![b.input("c", t.with_dtype(DType::Bool), cond), b.input("a", t.clone(), a), b.input("b", t.clone(), c)]
        }, |b, x| {
            let ta = b.ty(x[1]);
            let ea = b.unary(UnaryOp::Exp, x[1]);
            b.push(Op::Select, vec![x[0], ea, x[2]], ta)
        }, &shape);
        prop_assert_eq!(check_inputs(&p, &[1, 2]).map(|_| ()), Ok(()));
    }

    /// f32 -> f16 -> f32 passes the adjoint through; an int -> float cast
    /// (of an integer argument) carries none.
    #[test]
    fn casts(shape in shapes(0, 3), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let (x, n) = (rng.f32s(&shape, -1.0, 1.0), rng.ints(DType::I32, &shape, 5));
        let sh = dims(&shape);
        let p = one_op(&mut rng, Module::default(), vec![], |b, _| {
            vec![b.input("x", f32t(&sh), x), b.input("n", tyc(DType::I32, &sh), n)]
        }, |b, a| {
            let h = b.push(Op::Cast, vec![a[0]], tyc(DType::F16, &sh));
            let h = b.unary(UnaryOp::Tanh, h);
            let back = b.push(Op::Cast, vec![h], f32t(&sh));
            let nf = b.push(Op::Cast, vec![a[1]], f32t(&sh));
            let nx = b.mul(nf, a[0]);
            b.add(back, nx)
        }, &shape);
        prop_assert_eq!(check_inputs(&p, &[0]).map(|_| ()), Ok(()));
    }

    #[test]
    fn broadcasts(out in shapes(1, 4), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let lead = rng.below(out.len() + 1);
        let src: Vec<usize> = out[lead..].iter().map(|&n| if rng.below(2) == 0 { 1 } else { n }).collect();
        let x = rng.f32s(&src, -1.0, 1.0);
        let od: Vec<DimExpr> = out.iter().map(|&n| d(n as i64)).collect();
        let p = one_op(&mut rng, Module::default(), vec![],
            |b, _| vec![b.input("x", f32t(&dims(&src)), x)],
            |b, a| b.broadcast(a[0], &od), &out);
        prop_assert_eq!(check_inputs(&p, &[0]).map(|_| ()), Ok(()), "{:?} -> {:?}", src, out);
    }

    #[test]
    fn reshapes(shape in shapes(0, 3), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let n: usize = shape.iter().product();
        let target: Vec<usize> = match rng.below(3) {
            0 => shape.iter().rev().copied().collect(),
            1 => vec![n],
            _ => vec![1, n, 1],
        };
        let x = rng.f32s(&shape, -1.0, 1.0);
        let td: Vec<DimExpr> = target.iter().map(|&k| d(k as i64)).collect();
        let p = one_op(&mut rng, Module::default(), vec![],
            |b, _| vec![b.input("x", f32t(&dims(&shape)), x)],
            |b, a| {
                let t = b.unary(UnaryOp::Sin, a[0]);
                b.reshape(t, &td)
            }, &target);
        prop_assert_eq!(check_inputs(&p, &[0]).map(|_| ()), Ok(()));
    }

    #[test]
    fn transposes(shape in shapes(1, 4), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let mut perm: Vec<u32> = (0..shape.len() as u32).collect();
        for i in (1..perm.len()).rev() {
            let j = rng.below(i + 1);
            perm.swap(i, j);
        }
        let out: Vec<usize> = perm.iter().map(|&p| shape[p as usize]).collect();
        let x = rng.f32s(&shape, -1.0, 1.0);
        let p = one_op(&mut rng, Module::default(), vec![],
            |b, _| vec![b.input("x", f32t(&dims(&shape)), x)],
            |b, a| b.transpose(a[0], &perm), &out);
        prop_assert_eq!(check_inputs(&p, &[0]).map(|_| ()), Ok(()));
    }

    /// Batched matmul, the operands as a parameter and an argument.
    #[test]
    fn matmuls(batch in shapes(0, 2), m in 1usize..=3, k in 1usize..=3, n in 1usize..=3, seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let mut sa = batch.clone(); sa.extend([m, k]);
        let mut sb = batch.clone(); sb.extend([k, n]);
        let mut so = batch.clone(); so.extend([m, n]);
        let md = module(&[("w", f32t(&dims(&sb)))]);
        let w = rng.f32s(&sb, -1.0, 1.0);
        let a = rng.f32s(&sa, -1.0, 1.0);
        let mm = md.clone();
        let p = one_op(&mut rng, md, vec![w],
            |b, _| vec![b.input("a", f32t(&dims(&sa)), a)],
            |b, x| {
                let w = b.param(&mm, 0);
                b.matmul(x[0], w)
            }, &so);
        prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0])).map(|_| ()), Ok(()));
    }

    #[test]
    fn softmaxes(shape in shapes(1, 3), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let axis = rng.below(shape.len()) as u32;
        for log in [false, true] {
            let x = rng.f32s(&shape, -2.0, 2.0);
            let op = if log { Op::LogSoftmax { axis } } else { Op::Softmax { axis } };
            let p = one_op(&mut rng, Module::default(), vec![],
                |b, _| vec![b.input("x", f32t(&dims(&shape)), x)],
                |b, a| { let t = b.ty(a[0]); b.push(op, vec![a[0]], t) }, &shape);
            prop_assert_eq!(check_inputs(&p, &[0]).map(|_| ()), Ok(()), "log {}", log);
        }
    }

    /// Layernorm and rmsnorm; gamma and beta are parameters, so their
    /// gradients (summed over all leading axes) are checked too.
    #[test]
    fn norms(shape in shapes(1, 3), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let n = *shape.last().unwrap();
        let eps = [1e-5, 0.1][rng.below(2)];
        for rms in [false, true] {
            let md = module(&[("g", f32t(&[n as i64])), ("b", f32t(&[n as i64]))]);
            let params = vec![rng.f32s(&[n], 0.5, 1.5), rng.f32s(&[n], -1.0, 1.0)];
            let x = rng.distinct(&shape);
            let mm = md.clone();
            let p = one_op(&mut rng, md, params,
                |b, _| vec![b.input("x", f32t(&dims(&shape)), x)],
                |b, a| {
                    let (g, be) = (b.param(&mm, 0), b.param(&mm, 1));
                    let t = b.ty(a[0]);
                    if rms {
                        let y = b.push(Op::RmsNorm { eps }, vec![a[0], g], t);
                        let bb = b.broadcast(be, &b.shape(y));
                        b.add(y, bb)
                    } else {
                        b.push(Op::LayerNorm { eps }, vec![a[0], g, be], t)
                    }
                }, &shape);
            prop_assert_eq!(check(&p, &Wrt::all_params().with_inputs([0])).map(|_| ()), Ok(()), "rms {}", rms);
        }
    }

    #[test]
    fn concats(base in shapes(1, 3), pieces in 1usize..=3, seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let axis = rng.below(base.len());
        let sizes: Vec<usize> = (0..pieces).map(|_| 1 + rng.below(3)).collect();
        let mut out = base.clone();
        out[axis] = sizes.iter().sum();
        let xs: Vec<_> = sizes.iter().map(|&s| { let mut sh = base.clone(); sh[axis] = s; (sh.clone(), rng.f32s(&sh, -1.0, 1.0)) }).collect();
        let od = dims(&out);
        let p = one_op(&mut rng, Module::default(), vec![],
            |b, _| xs.into_iter().enumerate().map(|(i, (sh, t))| b.input(&format!("x{i}"), f32t(&dims(&sh)), t)).collect(),
            |b, a| b.push(Op::Concat { axis: axis as u32 }, a.to_vec(), f32t(&od)), &out);
        let all: Vec<u32> = (0..pieces as u32).collect();
        prop_assert_eq!(check_inputs(&p, &all).map(|_| ()), Ok(()));
    }

    /// Slices with steps 1 to 3, including empty ones and ones that end
    /// before the axis does.
    #[test]
    fn slices(shape in shapes(1, 3), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let axis = rng.below(shape.len());
        let size = shape[axis];
        let start = rng.below(size + 1);
        let end = start + rng.below(size - start + 1);
        let step = 1 + rng.below(3);
        let mut out = shape.clone();
        out[axis] = (end - start).div_ceil(step);
        let x = rng.f32s(&shape, -1.0, 1.0);
        let o = out[axis] as i64;
        let p = one_op(&mut rng, Module::default(), vec![],
            |b, _| vec![b.input("x", f32t(&dims(&shape)), x)],
            |b, a| b.slice(a[0], axis as u32, d(start as i64), d(end as i64), step as u32, d(o)), &out);
        prop_assert_eq!(check_inputs(&p, &[0]).map(|_| ()), Ok(()), "axis {} {}..{} step {}", axis, start, end, step);
    }

    /// Gather along any table axis with indices of rank 0 to 2 (repeats
    /// included, so the scatter-add must sum).
    #[test]
    fn gathers(table in shapes(1, 3), idx in shapes(0, 2), seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let axis = rng.below(table.len());
        let rows = table[axis];
        let mut out = table[..axis].to_vec();
        out.extend(&idx);
        out.extend(&table[axis + 1..]);
        let md = module(&[("table", f32t(&dims(&table)))]);
        let tv = rng.f32s(&table, -1.0, 1.0);
        let iv = rng.ints(DType::I64, &idx, rows);
        let mm = md.clone();
        let p = one_op(&mut rng, md, vec![tv],
            |b, _| vec![b.index_input("idx", tyc(DType::I64, &dims(&idx)), d(rows as i64), iv)],
            |b, a| {
                let t = b.param(&mm, 0);
                b.push(Op::Gather { axis: axis as u32 }, vec![t, a[0]], f32t(&dims(&out)))
            }, &out);
        prop_assert_eq!(check(&p, &Wrt::all_params()).map(|_| ()), Ok(()));
    }

    /// one_hot, iota, const, compare and argmax carry no gradient: the
    /// values they feed are constants of the differentiated input.
    #[test]
    fn non_differentiable_ops(n in 1usize..=4, c in 1usize..=4, seed in any::<u64>()) {
        let mut rng = Gen::new(seed);
        let x = rng.distinct(&[n, c]);
        let labels = rng.ints(DType::I32, &[n], c);
        let (ni, ci) = (n as i64, c as i64);
        let p = one_op(&mut rng, Module::default(), vec![], |b, _| {
            vec![b.input("x", f32t(&[ni, ci]), x), b.index_input("y", tyc(DType::I32, &[ni]), d(ci), labels)]
        }, |b, a| {
            let oh = b.push(Op::OneHot, vec![a[1]], f32t(&[ni, ci]));
            let io = b.push(Op::Iota { axis: 1 }, vec![], tyc(DType::I64, &[ni, ci]));
            let iof = b.push(Op::Cast, vec![io], f32t(&[ni, ci]));
            let zero = b.konst(0.0, DType::F32);
            let zb = b.broadcast(zero, &[d(ni), d(ci)]);
            let pos = b.push(Op::Compare(CmpOp::Gt), vec![a[0], zb], tyc(DType::Bool, &[ni, ci]));
            let posf = b.push(Op::Cast, vec![pos], f32t(&[ni, ci]));
            let am = b.reduce(ReduceOp::ArgMax, a[0], &[1], true);
            let amf = b.push(Op::Cast, vec![am], f32t(&[ni, 1]));
            let amb = b.broadcast(amf, &[d(ni), d(ci)]);
            let s = b.add(oh, iof);
            let s = b.add(s, posf);
            let s = b.add(s, amb);
            b.mul(s, a[0])
        }, &[n, c]);
        prop_assert_eq!(check_inputs(&p, &[0]).map(|_| ()), Ok(()));
    }
}

/// Runs a problem's gradient and returns its outputs (no finite differences).
fn grads(p: &Problem, wrt: &Wrt) -> Vec<kiln_ir::interp::Tensor> {
    check(p, wrt).expect("gradient check")
}

/// Binary max/min split the gradient evenly at ties; relu and abs have
/// zero derivative at 0 (JAX's conventions). Exact ties defeat finite
/// differences, so the values are checked directly.
#[test]
fn tie_and_kink_conventions() {
    let t = f32t(&[3]);
    let mut b = Gb::new();
    let a = b.input("a", t.clone(), kiln_ir::interp::Tensor::new(DType::F32, vec![3], vec![1.0, 2.0, 3.0]));
    let c = b.input("c", t.clone(), kiln_ir::interp::Tensor::new(DType::F32, vec![3], vec![1.0, 0.0, 5.0]));
    let mx = b.binary(BinaryOp::Max, a, c);
    let mn = b.binary(BinaryOp::Min, a, c);
    let two = b.konst(2.0, DType::F32);
    let two = b.broadcast(two, &[d(3)]);
    let mn2 = b.mul(mn, two);
    let s = b.add(mx, mn2);
    let l = b.sum_all(s);
    let (f, inputs) = b.finish("f", l);
    let gf = kiln_ir::autodiff::grad(&Module::default(), &f, &Wrt::no_params().with_inputs([0, 1])).unwrap();
    let out =
        kiln_ir::interp::run(&Module::default(), &gf.graph, &|_| None, &[], &inputs, kiln_ir::interp::Precision::F64)
            .unwrap();
    // Element 0 ties: max gives 0.5 to each, min gives 2 * 0.5 to each.
    assert_eq!(out[1].data, vec![1.5, 1.0, 2.0]);
    assert_eq!(out[2].data, vec![1.5, 2.0, 1.0]);

    let mut b = Gb::new();
    let x = b.input("x", t.clone(), kiln_ir::interp::Tensor::new(DType::F32, vec![3], vec![0.0, -1.0, 2.0]));
    let r = b.unary(UnaryOp::Relu, x);
    let ab = b.unary(UnaryOp::Abs, x);
    let s = b.add(r, ab);
    let l = b.sum_all(s);
    let (f, inputs) = b.finish("f", l);
    let p = Problem::new(Module::default(), f, vec![], inputs);
    let gf = kiln_ir::autodiff::grad(&p.m, &p.f, &Wrt::no_params().with_inputs([0])).unwrap();
    let out =
        kiln_ir::interp::run(&p.m, &gf.graph, &|_| None, &[], &p.inputs, kiln_ir::interp::Precision::F64).unwrap();
    assert_eq!(out[1].data, vec![0.0, -1.0, 2.0]);
}

/// reduce_max divides the gradient evenly among tied maxima.
#[test]
fn reduce_max_divides_among_ties() {
    let mut b = Gb::new();
    let x = b.input(
        "x",
        f32t(&[2, 4]),
        kiln_ir::interp::Tensor::new(DType::F32, vec![2, 4], vec![3.0, 1.0, 3.0, 3.0, -1.0, 0.0, 2.0, -4.0]),
    );
    let m = b.reduce(ReduceOp::Max, x, &[1], false);
    let l = b.sum_all(m);
    let (f, inputs) = b.finish("f", l);
    let p = Problem::new(Module::default(), f, vec![], inputs);
    let gf = kiln_ir::autodiff::grad(&p.m, &p.f, &Wrt::no_params().with_inputs([0])).unwrap();
    let out =
        kiln_ir::interp::run(&p.m, &gf.graph, &|_| None, &[], &p.inputs, kiln_ir::interp::Precision::F64).unwrap();
    let third = 1.0 / 3.0;
    assert_eq!(out[1].data, vec![third, 0.0, third, third, 0.0, 0.0, 1.0, 0.0]);
}

/// Symbolic shapes stay symbolic in the gradient: slices with bounds in
/// `M` (including a step-2 slice that is empty when `M = 1`), a mean over
/// a symbolic axis, a broadcast and a concat over symbolic sizes. The same
/// gradient function is checked at several sizes.
#[test]
fn symbolic_shapes() {
    let (n, m) = (var("N"), var("M"));
    for (nv, mv) in [(2, 5), (3, 6), (1, 1), (2, 2)] {
        let mut rng = Gen::new(nv as u64 * 31 + mv as u64);
        let mut b = Gb::new();
        let x = b.input("x", TensorType::new(DType::F32, vec![n.clone(), m.clone()]), rng.f32s(&[nv, mv], -1.0, 1.0));
        let r = b.input("r", TensorType::new(DType::F32, vec![d(1), m.clone()]), rng.f32s(&[1, mv], -1.0, 1.0));
        let last = b.slice(x, 1, m.sub(&d(1)), m.clone(), 1, d(1));
        let odd = b.slice(x, 1, d(1), m.clone(), 2, m.floor_div(2));
        let head = b.slice(x, 1, d(0), m.sub(&d(1)), 1, m.sub(&d(1)));
        let joined =
            b.push(Op::Concat { axis: 1 }, vec![last, head], TensorType::new(DType::F32, vec![n.clone(), m.clone()]));
        let rb = b.broadcast(r, &[n.clone(), m.clone()]);
        let prod = b.mul(joined, rb);
        let t = b.unary(UnaryOp::Tanh, prod);
        let mean = b.reduce(ReduceOp::Mean, t, &[0], false);
        let wm = b.input("wm", TensorType::new(DType::F32, vec![m.clone()]), rng.f32s(&[mv], -1.0, 1.0));
        let pm = b.mul(mean, wm);
        let s1 = b.sum_all(pm);
        let sq = b.mul(odd, odd);
        let s2 = b.sum_all(sq);
        let l = b.add(s1, s2);
        let (f, inputs) = b.finish("f", l);
        let p = Problem::new(Module::default(), f, vec![], inputs).with_dims(&[("N", nv as i64), ("M", mv as i64)]);
        check_inputs(&p, &[0, 1]).unwrap_or_else(|e| panic!("N={nv} M={mv}: {e}"));
    }
}

/// Sanity: the gradient of `Σ x²` is `2x`.
#[test]
fn simple_square() {
    let mut b = Gb::new();
    let x = b.input("x", f32t(&[3]), kiln_ir::interp::Tensor::new(DType::F32, vec![3], vec![1.0, -2.0, 0.5]));
    let sq = b.mul(x, x);
    let l = b.sum_all(sq);
    let (f, inputs) = b.finish("f", l);
    let out = grads(&Problem::new(Module::default(), f, vec![], inputs), &Wrt::no_params().with_inputs([0]));
    assert_eq!(out[1].data, vec![2.0, -4.0, 1.0]);
}
