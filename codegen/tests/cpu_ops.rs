//! Every scalar operation of the kernel IR through the CPU backend, in
//! every storage dtype, against values computed here in f64 / i64.
//! Each case runs scalar and vectorized, with and without FMA.
// Tables of (op, reference function) read best spelled out inline.
#![allow(clippy::type_complexity)]

mod cpu_util;
use cpu_util::*;
use kiln_codegen::cpu::{compile, CodegenError, Options};
use kiln_ir::kernel::{Access, Arg, Gemm, Kernel, Mem, Operand, RedOp, Stmt};
use kiln_ir::{BinaryOp, CmpOp, DType, UnaryOp};

/// `out[j] = e(in0[j], in1[j])` over `n` elements, every option set and
/// vector flag; returns each run's output.
fn elementwise(
    d_in: DType,
    d_out: DType,
    xs: &[f64],
    ys: &[f64],
    e: &dyn Fn(kiln_ir::kernel::Expr, kiln_ir::kernel::Expr) -> kiln_ir::kernel::Expr,
) -> Vec<Vec<f64>> {
    let n = xs.len() as u64;
    let mut outs = Vec::new();
    for opts in all_options() {
        for vector in [true, false] {
            let body = vec![lp(0, n, vector, vec![store(2, v(0), e(ld(0, v(0)), ld(1, v(0))))])];
            let k = kernel(&[(d_in, n), (d_in, n), (d_out, n)], 1, body);
            let (mut a, mut b, mut o) = (Buf::new(d_in, xs), Buf::new(d_in, ys), Buf::zeros(d_out, xs.len()));
            run_opts(&k, &opts, &mut [&mut a, &mut b, &mut o], 0..1);
            outs.push(o.get());
        }
    }
    outs
}

/// Equal as f32 values (NaN equals NaN, -0 equals 0 unless `signed_zero`).
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

fn float_inputs() -> Vec<f64> {
    let mut v = vec![0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-3, -7.25, 100.0, 1e30, -1e30, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-40];
    v.extend((0..23).map(|i| (i as f64 * 0.37 - 4.0) * 1.5));
    v
}

#[test]
fn float_unary_exact_ops() {
    let xs = float_inputs();
    let cases: [(UnaryOp, fn(f64) -> f64); 5] = [
        (UnaryOp::Neg, |x| -x),
        (UnaryOp::Abs, |x| x.abs()),
        (UnaryOp::Sqrt, |x| (x as f32).sqrt() as f64),
        (UnaryOp::Relu, |x| if x < 0.0 { 0.0 } else { x }),
        (UnaryOp::Rsqrt, |x| 1.0 / (x as f32 as f64).sqrt()),
    ];
    for (op, r) in cases {
        for out in elementwise(DType::F32, DType::F32, &xs, &xs, &|x, _| un(op, x)) {
            for (x, g) in xs.iter().zip(&out) {
                let want = r(*x as f32 as f64);
                let ok = same(*g, want as f32 as f64) || ulps(*g as f32, want) <= 1.0;
                assert!(ok, "{op:?}({x}) = {g}, want {want}");
            }
        }
    }
}

#[test]
fn float_unary_transcendentals() {
    // Accuracy lives in cpu_math.rs; this checks wiring on ordinary values.
    let xs: Vec<f64> = (0..37).map(|i| i as f64 * 0.25 - 4.5).collect();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let cases: [(UnaryOp, &dyn Fn(f64) -> f64); 10] = [
        (UnaryOp::Exp, &|x: f64| x.exp()),
        (UnaryOp::Log, &|x: f64| x.abs().ln()),
        (UnaryOp::Tanh, &|x: f64| x.tanh()),
        (UnaryOp::Sigmoid, &sig),
        (UnaryOp::Silu, &|x: f64| x * sig(x)),
        (UnaryOp::Erf, &|x: f64| kiln_ir::interp::erf(x)),
        (UnaryOp::Gelu, &|x: f64| 0.5 * x * (1.0 + kiln_ir::interp::erf(x / std::f64::consts::SQRT_2))),
        (UnaryOp::GeluTanh, &|x: f64| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())),
        (UnaryOp::Sin, &|x: f64| x.sin()),
        (UnaryOp::Cos, &|x: f64| x.cos()),
    ];
    for (op, r) in cases {
        let arg = |x| if op == UnaryOp::Log { un(UnaryOp::Abs, x) } else { x };
        for out in elementwise(DType::F32, DType::F32, &xs, &xs, &|x, _| un(op, arg(x))) {
            for (x, g) in xs.iter().zip(&out) {
                let want = r(*x);
                assert!(same(*g, want) || (g - want).abs() <= 1e-6 * want.abs().max(1.0), "{op:?}({x}) = {g}, want {want}");
            }
        }
    }
}

#[test]
fn float_binary_ops() {
    let base = float_inputs();
    // All pairs of a small set, as two flat arrays.
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for &x in &base {
        for &y in &[0.0, -0.0, 1.5, -3.0, f64::NAN, f64::INFINITY, 2.0, 0.5] {
            xs.push(x);
            ys.push(y);
        }
    }
    let f32r = |x: f64| x as f32 as f64;
    let cases: [(BinaryOp, fn(f64, f64) -> f64); 6] = [
        (BinaryOp::Add, |a, b| a + b),
        (BinaryOp::Sub, |a, b| a - b),
        (BinaryOp::Mul, |a, b| a * b),
        (BinaryOp::Div, |a, b| a / b),
        (BinaryOp::Max, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }),
        (BinaryOp::Min, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }),
    ];
    for (op, r) in cases {
        for out in elementwise(DType::F32, DType::F32, &xs, &ys, &|x, y| bin(op, x, y)) {
            for ((x, y), g) in xs.iter().zip(&ys).zip(&out) {
                let want = f32r(r(f32r(*x), f32r(*y)));
                // max/min of +-0 may return either zero.
                assert!(same(*g, want), "{op:?}({x}, {y}) = {g}, want {want}");
            }
        }
    }
    // pow: general exponents call powf (computed in f64, then rounded).
    for out in elementwise(DType::F32, DType::F32, &xs, &ys, &|x, y| bin(BinaryOp::Pow, x, y)) {
        for ((x, y), g) in xs.iter().zip(&ys).zip(&out) {
            let want = f32r(f32r(*x).powf(f32r(*y)));
            assert!(same(*g, want), "pow({x}, {y}) = {g}, want {want}");
        }
    }
}

#[test]
fn pow_by_constants() {
    let xs = float_inputs();
    for c in [0.0, 1.0, 2.0, 3.0, 4.0, -1.0, 0.5, -2.5] {
        for out in elementwise(DType::F32, DType::F32, &xs, &xs, &|x, _| bin(BinaryOp::Pow, x, f(c))) {
            for (x, g) in xs.iter().zip(&out) {
                let want = (*x as f32 as f64).powf(c);
                let ok = same(*g, want as f32 as f64) || ulps(*g as f32, want) <= 1.5;
                assert!(ok, "pow({x}, {c}) = {g}, want {want}");
            }
        }
    }
}

#[test]
fn comparisons_and_select() {
    let vals = [0.0, -0.0, 1.0, -1.0, 2.5, f64::NAN, f64::INFINITY];
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for &x in &vals {
        for &y in &vals {
            xs.push(x);
            ys.push(y);
        }
    }
    let ops: [(CmpOp, fn(f64, f64) -> bool); 6] = [
        (CmpOp::Eq, |a, b| a == b),
        (CmpOp::Ne, |a, b| a != b),
        (CmpOp::Lt, |a, b| a < b),
        (CmpOp::Le, |a, b| a <= b),
        (CmpOp::Gt, |a, b| a > b),
        (CmpOp::Ge, |a, b| a >= b),
    ];
    for (op, r) in ops {
        // Floats: IEEE (NaN compares false except !=); as a bool store and
        // as a select.
        for out in elementwise(DType::F32, DType::Bool, &xs, &ys, &|x, y| cmp(op, x, y)) {
            for ((x, y), g) in xs.iter().zip(&ys).zip(&out) {
                assert_eq!(*g, r(*x, *y) as u8 as f64, "{x} {op:?} {y}");
            }
        }
        for out in elementwise(DType::F32, DType::F32, &xs, &ys, &|x, y| sel(cmp(op, x.clone(), y.clone()), x, f(7.0))) {
            for ((x, y), g) in xs.iter().zip(&ys).zip(&out) {
                let want = if r(*x, *y) { *x } else { 7.0 };
                assert!(same(*g, want), "select({x} {op:?} {y})");
            }
        }
        // Integers and bools.
        let ints: Vec<f64> = xs.iter().map(|x| if x.is_finite() { *x * 2.0 } else { -5.0 }).collect();
        let intys: Vec<f64> = ys.iter().map(|x| if x.is_finite() { *x * 2.0 } else { -5.0 }).collect();
        for d in [DType::I32, DType::I64] {
            for out in elementwise(d, DType::I64, &ints, &intys, &|x, y| sel(cmp(op, x.clone(), y.clone()), cast(DType::I64, x), k(-9.0, DType::I64))) {
                for ((x, y), g) in ints.iter().zip(&intys).zip(&out) {
                    let want = if r(x.trunc(), y.trunc()) { x.trunc() } else { -9.0 };
                    assert_eq!(*g, want, "{d}: {x} {op:?} {y}");
                }
            }
        }
        let bx: Vec<f64> = (0..8).map(|i| (i & 1) as f64).collect();
        let by: Vec<f64> = (0..8).map(|i| (i >> 1 & 1) as f64).collect();
        for out in elementwise(DType::Bool, DType::Bool, &bx, &by, &|x, y| cmp(op, x, y)) {
            for ((x, y), g) in bx.iter().zip(&by).zip(&out) {
                assert_eq!(*g, r(*x, *y) as u8 as f64, "bool {x} {op:?} {y}");
            }
        }
    }
}

#[test]
fn integer_ops() {
    for d in [DType::I32, DType::I64] {
        let (lo, hi) = if d == DType::I32 { (i32::MIN as i64, i32::MAX as i64) } else { (i64::MIN, i64::MAX) };
        let vals = [0, 1, -1, 2, -7, 7, 13, -13, 1000, lo, hi, lo + 1];
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for &x in &vals {
            for &y in &vals {
                xs.push(x);
                ys.push(y);
            }
        }
        // Exact i64 values do not survive f64 buffers: write raw i64s.
        let wrap = |x: i64| if d == DType::I32 { x as i32 as i64 } else { x };
        let ops: [(BinaryOp, fn(i64, i64) -> i64); 7] = [
            (BinaryOp::Add, |a, b| a.wrapping_add(b)),
            (BinaryOp::Sub, |a, b| a.wrapping_sub(b)),
            (BinaryOp::Mul, |a, b| a.wrapping_mul(b)),
            (BinaryOp::Div, |a, b| if b == 0 { 0 } else { a.wrapping_div(b) }),
            (BinaryOp::Max, |a, b| a.max(b)),
            (BinaryOp::Min, |a, b| a.min(b)),
            (BinaryOp::Pow, |a, b| {
                if b < 0 {
                    return match a {
                        1 => 1,
                        -1 => 1 - 2 * (b & 1),
                        _ => 0,
                    };
                }
                // b = hi * 2^32 + lo: a^b = (a^(2^32))^hi * a^lo, wrapping.
                let (hi, lo) = ((b as u64 >> 32) as u32, b as u32);
                a.wrapping_pow(1 << 31).wrapping_pow(2).wrapping_pow(hi).wrapping_mul(a.wrapping_pow(lo))
            }),
        ];
        for (op, r) in ops {
            let got = run_ints(d, &xs, &ys, &|x, y| bin(op, x, y));
            for ((x, y), g) in xs.iter().zip(&ys).zip(&got) {
                let want = if d == DType::I32 { r(*x, *y) as i32 as i64 } else { r(*x, *y) };
                // i32 arithmetic wraps in i32 (the same as wrapping i64 then i32).
                assert_eq!(*g, wrap(want), "{d}: {op:?}({x}, {y})");
            }
        }
        if d == DType::I64 {
            let got = run_ints(d, &xs, &ys, &|x, y| rem(x, y));
            for ((x, y), g) in xs.iter().zip(&ys).zip(&got) {
                let want = if *y == 0 { 0 } else { x.wrapping_rem(*y) };
                assert_eq!(*g, want, "rem({x}, {y})");
            }
        }
        let unary: [(UnaryOp, fn(i64) -> i64); 3] = [(UnaryOp::Neg, |a| a.wrapping_neg()), (UnaryOp::Abs, |a| a.wrapping_abs()), (UnaryOp::Relu, |a| a.max(0))];
        for (op, r) in unary {
            let got = run_ints(d, &xs, &ys, &|x, _| un(op, x));
            for (x, g) in xs.iter().zip(&got) {
                let want = if d == DType::I32 { r(*x as i32 as i64) as i32 as i64 } else { r(*x) };
                assert_eq!(*g, want, "{d}: {op:?}({x})");
            }
        }
    }
}

/// `out[j] = e(a[j], b[j])` on raw integers of dtype `d` (all options).
fn run_ints(d: DType, xs: &[i64], ys: &[i64], e: &dyn Fn(kiln_ir::kernel::Expr, kiln_ir::kernel::Expr) -> kiln_ir::kernel::Expr) -> Vec<i64> {
    let n = xs.len() as u64;
    let mut first: Option<Vec<i64>> = None;
    for opts in all_options() {
        for vector in [true, false] {
            // A float store in the body lets the vector path take the loop.
            let body = vec![lp(0, n, vector, vec![store(2, v(0), e(ld(0, v(0)), ld(1, v(0)))), store(3, v(0), f(1.0))])];
            let k = kernel(&[(d, n), (d, n), (d, n), (DType::F32, n)], 1, body);
            let mut a = raw_ints(d, xs);
            let mut b = raw_ints(d, ys);
            let mut o = Buf::zeros(d, xs.len());
            let mut z = Buf::zeros(DType::F32, xs.len());
            run_opts(&k, &opts, &mut [&mut a, &mut b, &mut o, &mut z], 0..1);
            let got = read_ints(&o);
            if let Some(f) = &first {
                assert_eq!(f, &got, "{opts:?} vector={vector} disagrees");
            }
            first = Some(got);
        }
    }
    first.unwrap_or_default()
}

fn raw_ints(d: DType, xs: &[i64]) -> Buf {
    if d == DType::I32 {
        let u: Vec<f64> = xs.iter().map(|x| *x as i32 as f64).collect();
        return Buf::new(d, &u);
    }
    // Through two i32 halves so every i64 survives exactly.
    let mut b = Buf::zeros(DType::I64, xs.len());
    b.set_i64(xs);
    b
}

fn read_ints(b: &Buf) -> Vec<i64> {
    if b.dtype == DType::I32 {
        b.get().into_iter().map(|x| x as i64).collect()
    } else {
        b.i64s()
    }
}

#[test]
fn bool_ops() {
    let xs: Vec<f64> = (0..4).map(|i| (i & 1) as f64).collect();
    let ys: Vec<f64> = (0..4).map(|i| (i >> 1) as f64).collect();
    let ops: [(BinaryOp, fn(bool, bool) -> bool); 2] = [(BinaryOp::And, |a, b| a & b), (BinaryOp::Or, |a, b| a | b)];
    for (op, r) in ops {
        for out in elementwise(DType::Bool, DType::Bool, &xs, &ys, &|x, y| bin(op, x, y)) {
            for ((x, y), g) in xs.iter().zip(&ys).zip(&out) {
                assert_eq!(*g, r(*x != 0.0, *y != 0.0) as u8 as f64, "{op:?}");
            }
        }
    }
    for out in elementwise(DType::Bool, DType::Bool, &xs, &ys, &|x, _| un(UnaryOp::Not, x)) {
        for (x, g) in xs.iter().zip(&out) {
            assert_eq!(*g, (*x == 0.0) as u8 as f64);
        }
    }
    // A float comparison combined with a loaded bool, vectorized (mask and
    // lanes mixed), selecting floats.
    let fx: Vec<f64> = (0..11).map(|i| i as f64 - 5.0).collect();
    let n = fx.len() as u64;
    for opts in all_options() {
        let body = vec![lp(
            0,
            n,
            true,
            vec![store(2, v(0), sel(bin(BinaryOp::And, cmp(CmpOp::Gt, ld(0, v(0)), f(0.0)), ld(1, v(0))), ld(0, v(0)), f(-1.0)))],
        )];
        let k = kernel(&[(DType::F32, n), (DType::Bool, n), (DType::F32, n)], 1, body);
        let bools: Vec<f64> = (0..11).map(|i| (i % 3 != 0) as u8 as f64).collect();
        let (mut a, mut b, mut o) = (Buf::new(DType::F32, &fx), Buf::new(DType::Bool, &bools), Buf::zeros(DType::F32, 11));
        run_opts(&k, &opts, &mut [&mut a, &mut b, &mut o], 0..1);
        for i in 0..11 {
            let want = if fx[i] > 0.0 && bools[i] != 0.0 { fx[i] } else { -1.0 };
            assert_eq!(o.get()[i], want);
        }
    }
}

#[test]
fn casts_between_all_dtypes() {
    let xs = [0.0, 1.0, -1.0, 2.5, -2.5, 0.1, 65504.0, 70000.0, -3.9, 1e10, -1e10, 3e9, f64::NAN, 1e-6, 255.0, 2.0f64.powi(24) + 1.0];
    for from in DType::ALL {
        for to in DType::ALL {
            let input: Vec<f64> = xs.iter().map(|&x| if from.is_float() { x } else if x.is_nan() { 0.0 } else { from.round(x) }).collect();
            // The values as stored (and loaded) in `from`.
            let srcs = Buf::new(from, &input).get();
            // Stored through an f32 buffer so the cast's own rounding shows.
            for out in elementwise(from, DType::F32, &input, &input, &|x, _| cast(DType::F32, cast(to, x))) {
                for (src, g) in srcs.iter().zip(&out) {
                    let src = *src;
                    let want = match to {
                        DType::F32 => src as f32 as f64,
                        DType::F16 => round_f16(src as f32 as f64),
                        DType::BF16 => round_bf16(src as f32 as f64),
                        // Truncation, NaN to 0, saturating to i64 (`as`), then wrapping.
                        DType::I32 => (src as i64) as i32 as f64,
                        DType::I64 => src as i64 as f64,
                        DType::Bool => (src != 0.0) as u8 as f64,
                    };
                    // The outer cast to f32 rounds integers.
                    let want = want as f32 as f64;
                    assert!(same(*g, want), "cast {from} -> {to} of {src}: {g}, want {want}");
                }
            }
        }
    }
}

#[test]
fn half_loads_exhaustive() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let n = all.len() as u64;
    for d in [DType::F16, DType::BF16] {
        for vector in [true, false] {
            let k = kernel(&[(d, n), (DType::F32, n)], 1, vec![lp(0, n, vector, vec![store(1, v(0), ld(0, v(0)))])]);
            let mut a = Buf::from_u16(d, &all);
            let mut o = Buf::zeros(DType::F32, all.len());
            run_opts(&k, &Options::default(), &mut [&mut a, &mut o], 0..1);
            for (h, g) in all.iter().zip(o.f32s()) {
                let want = if d == DType::F16 { f16_value(*h) } else { bf16_value(*h) };
                assert!(same(g as f64, want), "{d} {h:#06x} -> {g}, want {want}");
                if !want.is_nan() {
                    assert_eq!(g.is_sign_negative(), want.is_sign_negative(), "{d} {h:#06x} sign");
                }
            }
        }
    }
}

#[test]
fn half_stores_round_to_nearest_even() {
    // Every f16/bf16 value, the midpoints between neighbours (ties), points
    // just either side, overflow and underflow, plus pseudo-random bits.
    let mut xs: Vec<f32> = Vec::new();
    for h in 0..0x7c00u16 {
        let a = f16_value(h);
        let b = f16_value(h + 1);
        let m = (a + b) / 2.0;
        xs.extend([a as f32, m as f32, (m as f32).next_up(), (m as f32).next_down(), -(m as f32)]);
    }
    for h in (0..0x7f80u16).step_by(7) {
        let a = bf16_value(h);
        let b = bf16_value(h + 1);
        let m = (a + b) / 2.0;
        xs.extend([a as f32, m as f32, (m as f32).next_up(), (m as f32).next_down(), -(m as f32)]);
    }
    let mut s = 0x1234_5678u32;
    for _ in 0..50_000 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        xs.push(f32::from_bits(s));
    }
    xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 65504.0, 65519.99, 65520.0, 1e-8, 2.98e-8, 2.99e-8, f32::MAX, -0.0]);
    let n = xs.len() as u64;
    for d in [DType::F16, DType::BF16] {
        for vector in [true, false] {
            let k = kernel(&[(DType::F32, n), (d, n)], 1, vec![lp(0, n, vector, vec![store(1, v(0), ld(0, v(0)))])]);
            let mut a = Buf::from_f32(&xs);
            let mut o = Buf::zeros(d, xs.len());
            run_opts(&k, &Options::default(), &mut [&mut a, &mut o], 0..1);
            for (x, h) in xs.iter().zip(o.u16s()) {
                let want = if d == DType::F16 { f16_bits(*x as f64) } else { bf16_bits(*x as f64) };
                if x.is_nan() {
                    let v = if d == DType::F16 { f16_value(h) } else { bf16_value(h) };
                    assert!(v.is_nan(), "{d}: NaN stored as {h:#06x}");
                } else {
                    assert_eq!(h, want, "{d}: {x:e} ({:#010x}) stored as {h:#06x}, want {want:#06x}", x.to_bits());
                }
            }
        }
    }
}

#[test]
fn half_constants_and_int_wrap() {
    // Constants of a dtype are that dtype's nearest value.
    let body = vec![
        store(0, i(0), k(0.1, DType::F16)),
        store(0, i(1), k(0.1, DType::BF16)),
        store(0, i(2), k(70000.0, DType::F16)),
        store(0, i(3), cast(DType::F32, k(3e9, DType::I32))),
        store(0, i(4), cast(DType::F32, k(-2.0, DType::Bool))),
    ];
    let kk = kernel(&[(DType::F32, 5)], 1, body);
    let mut o = Buf::zeros(DType::F32, 5);
    run(&kk, &mut [&mut o]);
    assert_eq!(o.get(), vec![round_f16(0.1), round_bf16(0.1), f64::INFINITY, (3e9 as i64 as i32) as f64, 1.0]);
}

#[test]
fn scratch_is_per_tile() {
    // Each tile writes its row reversed into scratch, then copies it out
    // plus the tile index; tiles reuse the same stack slot.
    let n = 13u64;
    let grid = 5u64;
    let row = |j| add(mul(tile(), i(n as i64)), j);
    let body = vec![
        lp(0, n, true, vec![stores(0, sub(i(n as i64 - 1), v(0)), ld(0, row(v(0))))]),
        lp(1, n, true, vec![store(1, row(v(1)), add(lds(0, v(1)), cast(DType::F32, tile())))]),
        // An i64 scratch, scalar.
        lp(2, n, false, vec![stores(1, v(2), mul(v(2), tile()))]),
        lp(3, n, false, vec![store(2, row(v(3)), lds(1, v(3)))]),
    ];
    let kk = with_scratch(kernel(&[(DType::F32, n * grid), (DType::F32, n * grid), (DType::I64, n * grid)], grid, body), &[(DType::F32, n), (DType::I64, n)]);
    let input: Vec<f64> = (0..n * grid).map(|x| x as f64).collect();
    for opts in all_options() {
        let (mut a, mut o, mut q) = (Buf::new(DType::F32, &input), Buf::zeros(DType::F32, input.len()), Buf::zeros(DType::I64, input.len()));
        run_opts(&kk, &opts, &mut [&mut a, &mut o, &mut q], 0..grid);
        for t in 0..grid {
            for j in 0..n {
                assert_eq!(o.get()[(t * n + j) as usize], (t * n + (n - 1 - j)) as f64 + t as f64);
                assert_eq!(q.get()[(t * n + j) as usize], (j * t) as f64);
            }
        }
    }
}

#[test]
fn tile_subranges_are_independent() {
    let n = 6u64;
    let grid = 10u64;
    let idx = || add(mul(tile(), i(n as i64)), v(0));
    let body = vec![lp(0, n, true, vec![store(1, idx(), add(mul(ld(0, idx()), f(3.0)), cast(DType::F32, tile())))])];
    let kk = kernel(&[(DType::F32, n * grid), (DType::F32, n * grid)], grid, body);
    let input: Vec<f64> = (0..n * grid).map(|x| x as f64 * 0.5).collect();
    let want: Vec<f64> = (0..n * grid).map(|x| x as f64 * 1.5 + (x / n) as f64).collect();
    let c = compile(std::slice::from_ref(&kk)).expect("compiles");
    let f = c.get(kiln_ir::kernel::KernelId(0));
    let mut a = Buf::new(DType::F32, &input);
    let mut o = Buf::new(DType::F32, &vec![-1.0; input.len()]);
    let ptrs = [a.as_ptr(), o.as_ptr()];
    let mut done = vec![false; grid as usize];
    for (lo, hi) in [(0, 3), (7, 10), (3, 3), (3, 7)] {
        // SAFETY: buffers match the arguments; tiles in range.
        unsafe { f(ptrs.as_ptr(), lo, hi) };
        for t in lo..hi {
            done[t as usize] = true;
        }
        let got = o.get();
        for t in 0..grid {
            for j in 0..n {
                let x = (t * n + j) as usize;
                assert_eq!(got[x], if done[t as usize] { want[x] } else { -1.0 }, "after {lo}..{hi}, tile {t}");
            }
        }
    }
    a.check_guards();
    o.check_guards();
}

#[test]
fn lets_nested_loops_and_reductions_in_loops() {
    // out[r] = sum_j (a[r, j] * 2)  via a let, a nested loop and a
    // reduction inside a loop (r over 3 rows of 5).
    let body = vec![lp(
        0,
        3,
        true,
        vec![
            let_(1, mul(v(0), i(5))),
            reduce(2, RedOp::Sum, 3, 5, true, mul(ld(0, add(v(1), v(3))), f(2.0))),
            lp(4, 2, false, vec![store(1, add(mul(v(0), i(2)), v(4)), add(v(2), cast(DType::F32, v(4))))]),
        ],
    )];
    let kk = kernel(&[(DType::F32, 15), (DType::F32, 6)], 1, body);
    let input: Vec<f64> = (0..15).map(|x| x as f64).collect();
    for opts in all_options() {
        let (mut a, mut o) = (Buf::new(DType::F32, &input), Buf::zeros(DType::F32, 6));
        run_opts(&kk, &opts, &mut [&mut a, &mut o], 0..1);
        for r in 0..3 {
            let s: f64 = (0..5).map(|j| input[r * 5 + j] * 2.0).sum();
            assert_eq!(o.get()[2 * r], s);
            assert_eq!(o.get()[2 * r + 1], s + 1.0);
        }
    }
}

#[test]
fn invalid_kernels_are_errors() {
    // A variable used before definition: the verifier's message, not a panic.
    let kk = kernel(&[(DType::F32, 1)], 1, vec![store(0, i(0), v(9))]);
    assert!(matches!(compile(&[kk]), Err(CodegenError::Invalid(_))));
    // exp of an integer passes the verifier but has no meaning here.
    let kk = kernel(&[(DType::I64, 1)], 1, vec![store(0, i(0), un(UnaryOp::Exp, i(3)))]);
    assert!(matches!(compile(&[kk]), Err(CodegenError::Unsupported { .. })));
    // Too much scratch.
    let kk = with_scratch(kernel(&[(DType::F32, 1)], 1, vec![]), &[(DType::F32, 1 << 20)]);
    assert!(matches!(compile(&[kk]), Err(CodegenError::Unsupported { .. })));
}

#[test]
fn many_kernels_in_one_module() {
    let ks: Vec<Kernel> = (0..4).map(|c| kernel(&[(DType::F32, 4)], 1, vec![lp(0, 4, true, vec![store(0, v(0), f(c as f64))])])).collect();
    let c = compile(&ks).expect("compiles");
    assert_eq!(c.len(), 4);
    for (n, _) in ks.iter().enumerate() {
        let mut o = Buf::zeros(DType::F32, 4);
        let p = [o.as_ptr()];
        // SAFETY: one f32[4] argument.
        unsafe { c.get(kiln_ir::kernel::KernelId(n as u32))(p.as_ptr(), 0, 1) };
        assert_eq!(o.get(), vec![n as f64; 4]);
    }
}

#[test]
fn gemm_statement() {
    // c[m x n] = a[m x k] @ b[k x n] with a stored transposed (k x m),
    // through whichever gemm.rs is present; f32 and half operands.
    for &(m, n, kk) in &[(1u64, 1u64, 1u64), (3, 17, 1), (17, 3, 64), (64, 17, 3), (3, 64, 17), (17, 17, 17)] {
        for (da, db, dc) in [(DType::F32, DType::F32, DType::F32), (DType::F16, DType::BF16, DType::F32), (DType::F32, DType::F32, DType::BF16)] {
            for accumulate in [false, true] {
                // Two tiles: tile t computes rows t*m.. of a 2m-row problem.
                let a = Operand { mem: Mem::Arg(0), offset: mul(tile(), i(m as i64)), row_stride: 1, col_stride: 2 * m };
                let b = Operand { mem: Mem::Arg(1), offset: i(0), row_stride: n, col_stride: 1 };
                let c = Operand { mem: Mem::Arg(2), offset: mul(tile(), i((m * n) as i64)), row_stride: n, col_stride: 1 };
                let g = Gemm { m, n, k: kk, a, b, c, accumulate };
                let kern = Kernel {
                    name: "gemm".into(),
                    args: vec![
                        Arg { dtype: da, len: 2 * m * kk, access: Access::Read },
                        Arg { dtype: db, len: kk * n, access: Access::Read },
                        Arg { dtype: dc, len: 2 * m * n, access: Access::ReadWrite },
                    ],
                    scratch: vec![],
                    grid: 2,
                    body: vec![Stmt::Gemm(g)],
                };
                let av: Vec<f64> = (0..2 * m * kk).map(|x| ((x * 7 % 11) as f64 - 5.0) * 0.25).collect();
                let bv: Vec<f64> = (0..kk * n).map(|x| ((x * 5 % 13) as f64 - 6.0) * 0.125).collect();
                let cv: Vec<f64> = (0..2 * m * n).map(|x| (x % 3) as f64).collect();
                let (mut ab, mut bb, mut cb) = (Buf::new(da, &av), Buf::new(db, &bv), Buf::new(dc, &cv));
                let (aq, bq, cq) = (ab.get(), bb.get(), cb.get());
                run(&kern, &mut [&mut ab, &mut bb, &mut cb]);
                let got = cb.get();
                for r in 0..2 * m {
                    for col in 0..n {
                        // a is k x 2m: element (r, p) at p * 2m + r.
                        let mut s: f64 = (0..kk).map(|p| aq[(p * 2 * m + r) as usize] * bq[(p * n + col) as usize]).sum();
                        if accumulate {
                            s += cq[(r * n + col) as usize];
                        }
                        let want = match dc {
                            DType::BF16 => round_bf16(s),
                            _ => s as f32 as f64,
                        };
                        let g = got[(r * n + col) as usize];
                        let tol = if dc == DType::BF16 { want.abs() / 128.0 } else { 1e-5 * (1.0 + want.abs()) };
                        assert!((g - want).abs() <= tol, "{m}x{n}x{kk} {da}/{db}/{dc} acc={accumulate}: ({r},{col}) = {g}, want {want}");
                    }
                }
            }
        }
    }
}

#[test]
fn conditional_blocks() {
    // out[t*4 + j] = 2 * in[t*4 + j] for tiles with t % 3 != 0, inside a
    // loop and with a `let` local to the branch; other tiles stay 0.
    let idx = add(mul(tile(), i(4)), v(0));
    let body = vec![lp(
        0,
        4,
        false,
        vec![Stmt::If {
            cond: cmp(CmpOp::Ne, rem(tile(), i(3)), i(0)),
            body: vec![let_(1, mul(ld(1, idx.clone()), f(2.0))), store(0, idx, v(1))],
        }],
    )];
    let k = kernel(&[(DType::F32, 32), (DType::F32, 32)], 8, body);
    let input: Vec<f64> = (0..32).map(|x| x as f64 + 0.5).collect();
    for opts in all_options() {
        let (mut out, mut inp) = (Buf::zeros(DType::F32, 32), Buf::new(DType::F32, &input));
        run_opts(&k, &opts, &mut [&mut out, &mut inp], 0..8);
        let want: Vec<f64> = (0..32).map(|x| if (x / 4) % 3 != 0 { 2.0 * input[x] } else { 0.0 }).collect();
        assert_eq!(out.get(), want);
    }
}
