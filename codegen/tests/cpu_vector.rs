//! Vectorized loops and reductions: awkward extents (tails), index
//! strides 0/1/other, gathers and scatters, half-float lanes, reductions
//! with NaN and ties, and a property test that `vector: true` and `false`
//! agree.

mod cpu_util;
use cpu_util::*;
use kiln_codegen::cpu::Options;
use kiln_ir::kernel::{Expr, RedOp};
use kiln_ir::{BinaryOp, CmpOp, DType, UnaryOp};
use proptest::prelude::*;

const EXTENTS: [u64; 7] = [1, 3, 4, 5, 17, 127, 257];

/// How a loop over `j in 0..n` (tile t) indexes its input (of `len`).
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// `a[t]`: one element for all j.
    Broadcast,
    /// `a[t*n + j]`.
    Contiguous,
    /// `a[3j + 1]`.
    Strided,
    /// `a[n - 1 - j]`.
    Reversed,
    /// `a[j / 2]`, `a[j % 5]` summed.
    DivRem,
    /// `a[idx[j]]` with idx an i64 argument.
    Gather,
}

impl Pattern {
    const ALL: [Pattern; 6] = [Pattern::Broadcast, Pattern::Contiguous, Pattern::Strided, Pattern::Reversed, Pattern::DivRem, Pattern::Gather];

    fn index(self, n: u64) -> Expr {
        let n = n as i64;
        match self {
            Pattern::Broadcast => tile(),
            Pattern::Contiguous => add(mul(tile(), i(n)), v(0)),
            Pattern::Strided => add(mul(v(0), i(3)), i(1)),
            Pattern::Reversed => sub(i(n - 1), v(0)),
            Pattern::DivRem => div(v(0), i(2)),
            Pattern::Gather => ld(2, v(0)),
        }
    }

    /// The element read at `(t, j)` (oracle side).
    fn at(self, n: u64, t: u64, j: u64, idx: &[f64]) -> usize {
        (match self {
            Pattern::Broadcast => t,
            Pattern::Contiguous => t * n + j,
            Pattern::Strided => 3 * j + 1,
            Pattern::Reversed => n - 1 - j,
            Pattern::DivRem => j / 2,
            Pattern::Gather => idx[j as usize] as u64,
        }) as usize
    }
}

#[test]
fn loops_at_awkward_extents_and_strides() {
    let grid = 2u64;
    for n in EXTENTS {
        for p in Pattern::ALL {
            for (din, dout) in [(DType::F32, DType::F32), (DType::F16, DType::BF16), (DType::BF16, DType::F16), (DType::F32, DType::F16)] {
                for opts in all_options() {
                    let len = 3 * n * grid + 2;
                    let x = ld(0, p.index(n));
                    // A DivRem pattern also reads a[j % 5].
                    let x = if let Pattern::DivRem = p { add(x, ld(0, rem(v(0), i(5)))) } else { x };
                    let value = add(mul(x, f(1.5)), cast(DType::F32, v(0)));
                    let out_idx = add(mul(tile(), i(n as i64)), v(0));
                    let body = vec![lp(0, n, true, vec![store(1, out_idx, value)])];
                    let kk = kernel(&[(din, len), (dout, n * grid), (DType::I64, n)], grid, body);
                    let input: Vec<f64> = (0..len).map(|x| (x as f64) * 0.25 - 3.0).collect();
                    let idx: Vec<f64> = (0..n).map(|j| ((j * 7 + 3) % len) as f64).collect();
                    let mut a = Buf::new(din, &input);
                    let mut o = Buf::zeros(dout, (n * grid) as usize);
                    let mut ib = Buf::new(DType::I64, &idx);
                    run_opts(&kk, &opts, &mut [&mut a, &mut o, &mut ib], 0..grid);
                    let stored = a.get();
                    let got = o.get();
                    for t in 0..grid {
                        for j in 0..n {
                            let mut xv = stored[p.at(n, t, j, &idx)];
                            if let Pattern::DivRem = p {
                                xv += stored[(j % 5) as usize];
                            }
                            let exact = (xv as f32 * 1.5f32) as f64 + j as f64;
                            let want = if dout == DType::F32 { exact as f32 as f64 } else if dout == DType::F16 { round_f16(exact as f32 as f64) } else { round_bf16(exact as f32 as f64) };
                            let g = got[(t * n + j) as usize];
                            assert_eq!(g, want, "n={n} {p:?} {din}->{dout} {opts:?}: ({t},{j})");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn scatter_and_uniform_stores() {
    for n in EXTENTS {
        for opts in all_options() {
            // out[2j] = a[j]; last[0] = a[j] (every iteration: the last wins).
            let body = vec![lp(0, n, true, vec![store(1, mul(v(0), i(2)), ld(0, v(0))), store(2, i(0), ld(0, v(0)))])];
            let kk = kernel(&[(DType::F32, n), (DType::F32, 2 * n), (DType::F32, 1)], 1, body);
            let input: Vec<f64> = (0..n).map(|x| x as f64 + 0.5).collect();
            let (mut a, mut o, mut l) = (Buf::new(DType::F32, &input), Buf::new(DType::F32, &vec![-1.0; 2 * n as usize]), Buf::zeros(DType::F32, 1));
            run_opts(&kk, &opts, &mut [&mut a, &mut o, &mut l], 0..1);
            for j in 0..2 * n as usize {
                assert_eq!(o.get()[j], if j % 2 == 0 { input[j / 2] } else { -1.0 }, "n={n} {opts:?}");
            }
            assert_eq!(l.get()[0], input[n as usize - 1]);
        }
    }
}

#[test]
fn vector_loops_with_lets_ints_and_bools() {
    // A let chain, an integer store, a bool store and a select, in one
    // vectorized body; the loop var escapes into a later loop: that one
    // stays scalar-correct too.
    for n in EXTENTS {
        for opts in all_options() {
            let body = vec![lp(
                0,
                n,
                true,
                vec![
                    let_(1, mul(ld(0, v(0)), f(2.0))),
                    let_(2, cmp(CmpOp::Gt, v(1), f(3.0))),
                    store(1, v(0), sel(v(2), un(UnaryOp::Exp, v(1)), un(UnaryOp::Neg, v(1)))),
                    store(2, v(0), add(mul(v(0), v(0)), cast(DType::I64, v(1)))),
                    store(3, v(0), v(2)),
                ],
            )];
            let kk = kernel(&[(DType::F32, n), (DType::F32, n), (DType::I64, n), (DType::Bool, n)], 1, body);
            let input: Vec<f64> = (0..n).map(|x| (x % 50) as f64 * 0.3).collect();
            let (mut a, mut o, mut q, mut b) = (Buf::new(DType::F32, &input), Buf::zeros(DType::F32, n as usize), Buf::zeros(DType::I64, n as usize), Buf::zeros(DType::Bool, n as usize));
            run_opts(&kk, &opts, &mut [&mut a, &mut o, &mut q, &mut b], 0..1);
            for (j, xin) in input.iter().enumerate() {
                let x = (*xin as f32 * 2.0) as f64;
                let want = if x > 3.0 { x.exp() } else { -x };
                assert!((o.get()[j] - want).abs() <= 1e-6 * want.abs().max(1.0), "n={n} j={j}");
                assert_eq!(q.get()[j], (j * j) as f64 + x.trunc());
                assert_eq!(b.get()[j], (x > 3.0) as u8 as f64);
            }
        }
    }
}

#[test]
fn index_comparisons_stay_exact_in_vector_lanes() {
    // `s·j + 2 op t + 5` (an index affine in the loop variable against one
    // uniform per tile, either side) selecting 1 or 0, for every
    // comparison, strides 1, -1, 3 and one too large for i32 lanes, at an
    // extent that leaves a tail; the oracle is integer arithmetic.
    let n = 17u64;
    for op in [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge] {
        for s in [1i64, -1, 3, 1 << 40] {
            for flip in [false, true] {
                let (x, y) = (add(mul(v(0), i(s)), i(2)), add(tile(), i(5)));
                let c = if flip { cmp(op, y, x) } else { cmp(op, x, y) };
                let body = vec![lp(0, n, true, vec![store(0, add(mul(tile(), i(n as i64)), v(0)), sel(c, f(1.0), f(0.0)))])];
                let kk = kernel(&[(DType::F32, 8 * n)], 8, body);
                for opts in all_options() {
                    let mut o = Buf::zeros(DType::F32, 8 * n as usize);
                    run_opts(&kk, &opts, &mut [&mut o], 0..8);
                    for t in 0..8 {
                        for j in 0..n {
                            let (xv, yv) = ((s * j as i64 + 2) as f64, (t + 5) as f64);
                            let want = if flip { op.holds(yv, xv) } else { op.holds(xv, yv) };
                            assert_eq!(o.get()[(t * n + j) as usize], want as u8 as f64, "{op:?} s={s} flip={flip} t={t} j={j}");
                        }
                    }
                }
            }
        }
    }
}

/// Runs a reduction of `value(a[j])` over `a` (f32, or `d`) and returns
/// the result (stored as f32 or i64).
fn reduce_run(op: RedOp, d: DType, vals: &[f64], vector: bool, opts: &Options, value: &dyn Fn(Expr) -> Expr) -> f64 {
    let n = vals.len() as u64;
    let out_d = if op == RedOp::ArgMax { DType::I64 } else { kiln_ir::kernel::verify::compute_dtype(d) };
    let body = vec![reduce(1, op, 0, n, vector, value(ld(0, v(0)))), store(1, i(0), v(1))];
    let kk = kernel(&[(d, n), (out_d, 1)], 1, body);
    let (mut a, mut o) = (Buf::new(d, vals), Buf::zeros(out_d, 1));
    run_opts(&kk, opts, &mut [&mut a, &mut o], 0..1);
    o.get()[0]
}

#[test]
fn reductions_sum_max_min_argmax() {
    for n in EXTENTS.iter().copied().chain([64, 1000]) {
        let vals: Vec<f64> = (0..n).map(|j| ((j * 37 % 101) as f64 - 50.0) * 0.125).collect();
        for opts in all_options() {
            for vector in [true, false] {
                let s = reduce_run(RedOp::Sum, DType::F32, &vals, vector, &opts, &|x| x);
                let want: f64 = vals.iter().sum();
                assert!((s - want).abs() <= 1e-5 * (1.0 + vals.iter().map(|x| x.abs()).sum::<f64>()), "sum n={n}");
                let mx = reduce_run(RedOp::Max, DType::F32, &vals, vector, &opts, &|x| x);
                assert_eq!(mx, vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max), "max n={n}");
                let mn = reduce_run(RedOp::Min, DType::F32, &vals, vector, &opts, &|x| x);
                assert_eq!(mn, vals.iter().cloned().fold(f64::INFINITY, f64::min), "min n={n}");
                // Ties: the first maximum.
                let am = reduce_run(RedOp::ArgMax, DType::F32, &vals, vector, &opts, &|x| x);
                let first = vals.iter().position(|&x| x == mx).unwrap();
                assert_eq!(am, first as f64, "argmax n={n}");
                // exp inside a sum (softmax denominators).
                let se = reduce_run(RedOp::Sum, DType::F32, &vals, vector, &opts, &|x| un(UnaryOp::Exp, sub(x, f(6.25))));
                let want: f64 = vals.iter().map(|x| (x - 6.25).exp()).sum();
                assert!((se - want).abs() <= 1e-5 * want, "sum exp n={n}: {se} vs {want}");
            }
        }
    }
}

#[test]
fn reductions_propagate_nan() {
    for n in [1u64, 4, 5, 17, 127] {
        for pos in [0, n / 2, n - 1] {
            let mut vals: Vec<f64> = (0..n).map(|j| j as f64).collect();
            vals[pos as usize] = f64::NAN;
            // A second NaN later: argmax takes the first.
            if pos + 2 < n {
                vals[(pos + 2) as usize] = f64::NAN;
            }
            for opts in all_options() {
                for vector in [true, false] {
                    for op in [RedOp::Sum, RedOp::Max, RedOp::Min] {
                        assert!(reduce_run(op, DType::F32, &vals, vector, &opts, &|x| x).is_nan(), "{op:?} n={n} pos={pos}");
                    }
                    assert_eq!(reduce_run(RedOp::ArgMax, DType::F32, &vals, vector, &opts, &|x| x), pos as f64);
                }
            }
        }
    }
    // All -inf: max is -inf, argmax 0; empty-like edge: a single element.
    let vals = vec![f64::NEG_INFINITY; 6];
    assert_eq!(reduce_run(RedOp::Max, DType::F32, &vals, true, &Options::default(), &|x| x), f64::NEG_INFINITY);
    assert_eq!(reduce_run(RedOp::ArgMax, DType::F32, &vals, true, &Options::default(), &|x| x), 0.0);
}

#[test]
fn integer_and_half_reductions() {
    for n in [1u64, 5, 17, 127] {
        // i32 sums wrap.
        let vals: Vec<f64> = (0..n).map(|j| if j % 2 == 0 { 2e9 } else { -7.0 }).collect();
        let want = vals.iter().fold(0i32, |a, &x| a.wrapping_add(x as i32)) as f64;
        for vector in [true, false] {
            assert_eq!(reduce_run(RedOp::Sum, DType::I32, &vals, vector, &Options::default(), &|x| x), want, "i32 sum n={n}");
            let mx = reduce_run(RedOp::Max, DType::I64, &vals, vector, &Options::default(), &|x| x);
            assert_eq!(mx, vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
            let am = reduce_run(RedOp::ArgMax, DType::I64, &vals, vector, &Options::default(), &|x| x);
            assert_eq!(am, 0.0);
            // bf16 values sum in f32.
            let hv: Vec<f64> = (0..n).map(|j| j as f64 * 0.5).collect();
            let s = reduce_run(RedOp::Sum, DType::BF16, &hv, vector, &Options::default(), &|x| x);
            assert_eq!(s, hv.iter().map(|x| round_bf16(*x)).sum::<f64>());
        }
    }
}

// ------------------------------------------------------------ proptest

/// `e` with variable 0 renamed to 5 (a reduction's own index).
fn rename(e: &Expr) -> Expr {
    let r = |x: &Expr| Box::new(rename(x));
    match e {
        Expr::Var(kiln_ir::kernel::Var(0)) => v(5),
        Expr::Const(..) | Expr::Var(_) | Expr::Tile => e.clone(),
        Expr::Load(m, x) => Expr::Load(*m, r(x)),
        Expr::Unary(op, x) => Expr::Unary(*op, r(x)),
        Expr::Cast(d, x) => Expr::Cast(*d, r(x)),
        Expr::Binary(op, a, b) => Expr::Binary(*op, r(a), r(b)),
        Expr::Rem(a, b) => Expr::Rem(r(a), r(b)),
        Expr::Cmp(op, a, b) => Expr::Cmp(*op, r(a), r(b)),
        Expr::Select(c, a, b) => Expr::Select(r(c), r(a), r(b)),
        Expr::Rand(s, c) => Expr::Rand(r(s), r(c)),
        Expr::Checked(c) => Expr::Checked(Box::new(kiln_ir::kernel::check::Checked { index: rename(&c.index), pos: rename(&c.pos), ..(**c).clone() })),
    }
}

/// A random f32 expression over `a[...]` loads with different index
/// shapes in loop variable v0 (extent `n`, input length `3n + 8`).
fn arb_expr(depth: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        (0i64..4).prop_map(|o| ld(0, add(v(0), i(o)))),
        (0i64..3).prop_map(|o| ld(0, add(mul(v(0), i(3)), i(o)))),
        Just(ld(0, i(2))),
        Just(ld(1, v(0))),
        Just(ld(0, div(v(0), i(3)))),
        (-4.0f64..4.0).prop_map(f),
        Just(cast(DType::F32, v(0))),
        // Random draws at lane-varying counters (one scalar draw per lane).
        (0i64..1000).prop_map(|s| Expr::Rand(Box::new(i(s)), Box::new(add(mul(v(0), i(7)), i(s))))),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let sub_e = arb_expr(depth - 1);
    prop_oneof![
        leaf,
        (sub_e.clone(), sub_e.clone(), prop::sample::select(vec![BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max, BinaryOp::Min]))
            .prop_map(|(a, b, op)| bin(op, a, b)),
        (sub_e.clone(), prop::sample::select(vec![UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Relu, UnaryOp::Sin, UnaryOp::Gelu]))
            .prop_map(|(a, op)| un(op, a)),
        (sub_e.clone(), sub_e.clone(), sub_e.clone()).prop_map(|(c, a, b)| sel(cmp(CmpOp::Lt, c, f(0.5)), a, b)),
        sub_e.prop_map(|a| cast(DType::F32, cast(DType::BF16, a))),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The same loop and reduction, vector on and off: equal up to
    /// reassociation of the sum.
    #[test]
    fn vector_matches_scalar(e in arb_expr(3), n in prop::sample::select(vec![1u64, 3, 4, 7, 16, 33, 70]), half in any::<bool>()) {
        let len = 3 * n + 8;
        let dt = if half { DType::F16 } else { DType::F32 };
        let mut body = vec![
            lp(0, n, true, vec![store(2, v(0), e.clone())]),
            reduce(1, RedOp::Sum, 5, n, true, rename(&e)),
            store(3, i(0), v(1)),
        ];
        let input: Vec<f64> = (0..len).map(|x| ((x * 29 % 17) as f64 - 8.0) * 0.375).collect();
        let second: Vec<f64> = (0..n).map(|x| (x as f64) * 0.5 - 1.0).collect();
        let mut results = Vec::new();
        for vector in [true, false] {
            set_vector(&mut body, vector);
            let kk = kernel(&[(dt, len), (DType::F32, n), (dt, n), (DType::F32, 1)], 1, body.clone());
            let (mut a, mut b, mut o, mut s) = (Buf::new(dt, &input), Buf::new(DType::F32, &second), Buf::zeros(dt, n as usize), Buf::zeros(DType::F32, 1));
            run_opts(&kk, &Options::default(), &mut [&mut a, &mut b, &mut o, &mut s], 0..1);
            results.push((o.get(), s.get()[0]));
        }
        let (vo, vs) = &results[0];
        let (so, ss) = &results[1];
        for (x, y) in vo.iter().zip(so) {
            prop_assert!(x == y || (x.is_nan() && y.is_nan()), "loop: {x} vs {y}");
        }
        let scale: f64 = so.iter().map(|x| x.abs()).sum::<f64>() + 1.0;
        prop_assert!((vs - ss).abs() <= 1e-5 * scale || (vs.is_nan() && ss.is_nan()), "sum: {vs} vs {ss}");
    }
}

#[test]
fn softmax_rows_end_to_end() {
    // The scheduler's softmax shape: max, sum of exp, scale; bf16 in, f16 out.
    for n in [3u64, 64, 257] {
        let rows = 3u64;
        let row = |j| add(mul(tile(), i(n as i64)), j);
        let body = vec![
            reduce(1, RedOp::Max, 0, n, true, ld(0, row(v(0)))),
            reduce(3, RedOp::Sum, 2, n, true, un(UnaryOp::Exp, sub(ld(0, row(v(2))), v(1)))),
            let_(4, div(f(1.0), v(3))),
            lp(5, n, true, vec![store(1, row(v(5)), mul(un(UnaryOp::Exp, sub(ld(0, row(v(5))), v(1))), v(4)))]),
        ];
        let kk = kernel(&[(DType::BF16, n * rows), (DType::F16, n * rows)], rows, body);
        let input: Vec<f64> = (0..n * rows).map(|x| ((x * 13 % 29) as f64 - 14.0) * 0.3).collect();
        for opts in all_options() {
            let (mut a, mut o) = (Buf::new(DType::BF16, &input), Buf::zeros(DType::F16, (n * rows) as usize));
            run_opts(&kk, &opts, &mut [&mut a, &mut o], 0..rows);
            let x = a.get();
            for r in 0..rows as usize {
                let xs = &x[r * n as usize..(r + 1) * n as usize];
                let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = xs.iter().map(|v| (v - m).exp()).sum();
                for (j, v) in xs.iter().enumerate() {
                    let want = (v - m).exp() / s;
                    let g = o.get()[r * n as usize + j];
                    assert!((g - want).abs() <= want / 1024.0 + 1e-7, "n={n} row {r} col {j}: {g} vs {want}");
                }
            }
        }
    }
}

#[test]
fn empty_reductions_and_escaping_lets() {
    for vector in [true, false] {
        // Extent 0: the identities (argmax 0).
        let body = vec![
            reduce(1, RedOp::Sum, 0, 0, vector, ld(0, v(0))),
            reduce(3, RedOp::Max, 2, 0, vector, ld(0, v(2))),
            reduce(5, RedOp::Min, 4, 0, vector, ld(0, v(4))),
            reduce(7, RedOp::ArgMax, 6, 0, vector, ld(0, v(6))),
            store(1, i(0), v(1)),
            store(1, i(1), v(3)),
            store(1, i(2), v(5)),
            store(1, i(3), cast(DType::F32, v(7))),
            // A let defined in a vector loop and read after it: the last
            // iteration's value (so this loop stays scalar).
            lp(8, 6, vector, vec![let_(9, mul(ld(0, v(8)), f(2.0))), store(1, add(v(8), i(4)), v(9))]),
            store(1, i(10), v(9)),
        ];
        let kk = kernel(&[(DType::F32, 6), (DType::F32, 11)], 1, body);
        let (mut a, mut o) = (Buf::new(DType::F32, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), Buf::zeros(DType::F32, 11));
        run(&kk, &mut [&mut a, &mut o]);
        let g = o.get();
        assert_eq!(&g[..4], &[0.0, f64::NEG_INFINITY, f64::INFINITY, 0.0]);
        assert_eq!(&g[4..], &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 12.0]);
    }
}

#[test]
fn large_scratch_on_a_small_thread_stack() {
    // 200 KiB of scratch, on a 512 KiB thread: probed, not overflowing.
    let n = 50_000u64;
    let body = vec![
        lp(0, n, true, vec![stores(0, v(0), cast(DType::F32, v(0)))]),
        reduce(1, RedOp::Sum, 2, n, true, lds(0, v(2))),
        store(0, i(0), v(1)),
    ];
    let kk = with_scratch(kernel(&[(DType::F32, 1)], 1, body), &[(DType::F32, n)]);
    let h = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let mut o = Buf::zeros(DType::F32, 1);
            run(&kk, &mut [&mut o]);
            o.get()[0]
        })
        .expect("thread");
    let s = h.join().expect("no crash");
    let want = (n * (n - 1) / 2) as f64;
    assert!((s - want).abs() <= want * 1e-6);
}

/// Vector constants come from a per-kernel table whose address each loop
/// carries (`consts.rs`): transcendentals in a reduction and in a vector
/// loop, nested in a scalar loop, in several tiles, at awkward extents,
/// give the scalar code's bits (which never reads the table).
#[test]
fn pooled_constants_in_nested_loops_match_scalar_code() {
    let grid = 3u64;
    for n in EXTENTS {
        let len = grid * 2 * n;
        // Element (t, r, j) of the input and output.
        let at = |j: u32| add(mul(add(mul(tile(), i(2)), v(1)), i(n as i64)), v(j));
        let x = |j: u32| ld(0, at(j));
        let s = reduce(2, RedOp::Sum, 3, n, true, add(un(UnaryOp::Exp, x(3)), un(UnaryOp::Tanh, x(3))));
        let chain = add(add(un(UnaryOp::Gelu, x(4)), un(UnaryOp::Erf, x(4))), mul(un(UnaryOp::Log, add(un(UnaryOp::Abs, x(4)), f(1.0))), v(2)));
        let inner = lp(4, n, true, vec![store(1, at(4), add(chain, un(UnaryOp::Sigmoid, x(4))))]);
        let body = vec![lp(1, 2, false, vec![s, inner])];
        let k = kernel(&[(DType::F32, len), (DType::F32, len)], grid, body);
        let input: Vec<f64> = (0..len).map(|e| ((e * 37 % 101) as f64) / 12.0 - 4.0).collect();
        let mut outs = Vec::new();
        for vectorize in [true, false] {
            let mut a = Buf::new(DType::F32, &input);
            let mut o = Buf::zeros(DType::F32, len as usize);
            run_opts(&k, &Options { vectorize, ..Options::default() }, &mut [&mut a, &mut o], 0..grid);
            outs.push(o.f32s());
        }
        for (e, (vec, sc)) in outs[0].iter().zip(&outs[1]).enumerate() {
            // The reduction's order differs, so its term may differ by an ulp.
            assert!((vec - sc).abs() <= 1e-5 * sc.abs().max(1.0), "n={n} element {e}: vector {vec}, scalar {sc}");
        }
    }
}
