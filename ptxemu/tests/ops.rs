//! Integer and float instruction semantics, one slot per operation, against Rust's arithmetic.

mod common;

use common::{grid1, module, values};
use half::{bf16, f16};
use ptxemu::{Arg, Memory};

/// Runs `kernel(a, b, out)` with one thread per input pair; returns slot k of thread t as `out[k][t]`.
fn run(kernel: &str, a: &[u32], b: &[u32], slots: usize) -> Vec<Vec<u32>> {
    let n = a.len();
    let m = module("ops");
    let mut mem = Memory::new();
    let (da, db, out) = (mem.alloc(4 * n), mem.alloc(4 * n), mem.alloc(4 * n * slots));
    mem.write_u32s(da, a);
    mem.write_u32s(db, b);
    m.launch(
        kernel,
        grid1(1, n as u32),
        &[Arg::U64(da), Arg::U64(db), Arg::U64(out)],
        &mut mem,
    )
    .unwrap();
    let flat = mem.read_u32s(out, n * slots).unwrap();
    flat.chunks(n).map(<[u32]>::to_vec).collect()
}

#[test]
fn integer_instructions_wrap_widen_saturate_and_shift_like_ptx() {
    let mut pairs: Vec<(i32, i32)> = vec![
        (7, 2),
        (-7, 2),
        (7, -2),
        (i32::MIN, -1),
        (i32::MAX, 1),
        (i32::MIN, i32::MIN),
        (-1, 0),
        (5, 0),
        (123_456_789, 987_654),
        (-40_000, 40_000),
        (0x1234_5678, 31),
        (-0x1234_5678, 33),
        (3, 63),
    ];
    let r = values(38, 21);
    pairs.extend(
        r.chunks(2)
            .map(|c| ((c[0] * 2.0e9) as i32, (c[1] * 3.0e4) as i32)),
    );
    let a: Vec<u32> = pairs.iter().map(|p| p.0 as u32).collect();
    let b: Vec<u32> = pairs.iter().map(|p| p.1 as u32).collect();
    let out = run("int_ops", &a, &b, 23);
    for (t, &(x, y)) in pairs.iter().enumerate() {
        let (ux, uy) = (x as u32, y as u32);
        let wide = i64::from(x) * i64::from(y);
        let sh = uy & 63;
        let madw =
            (u64::from(ux) * u64::from(uy)).wrapping_add((u64::from(ux) << 32) | u64::from(uy));
        let sq = (i64::from(x).wrapping_mul(i64::from(x))) >> 20;
        let expected: [u32; 23] = [
            (wide >> 32) as u32,
            ((u64::from(ux) * u64::from(uy)) >> 32) as u32,
            wide as u32,
            (wide >> 32) as u32,
            if y == 0 {
                u32::MAX
            } else {
                x.wrapping_div(y) as u32
            },
            if y == 0 { ux } else { x.wrapping_rem(y) as u32 },
            ux.checked_div(uy).unwrap_or(u32::MAX),
            (x >> sh.min(31)) as u32,
            if sh >= 32 { 0 } else { ux >> sh },
            if sh >= 32 { 0 } else { ux << sh },
            x.min(y) as u32,
            ux.max(uy),
            x.wrapping_mul(y).wrapping_add(7) as u32,
            x.wrapping_abs() as u32,
            x.wrapping_neg() as u32,
            x.saturating_add(y) as u32,
            u32::from(x < y),
            u32::from(ux < uy),
            i32::from(x as i16) as u32,
            !(ux ^ uy),
            madw as u32,
            (madw >> 32) as u32,
            sq as u32,
        ];
        for (k, e) in expected.iter().enumerate() {
            assert_eq!(out[k][t], *e, "slot {k}, a = {x}, b = {y}");
        }
    }
}

fn close(got: f32, want: f64, rel: f64, abs: f64) -> bool {
    (want.is_nan() && got.is_nan())
        || f64::from(got) == want
        || (f64::from(got) - want).abs() <= abs + rel * want.abs()
}

#[test]
fn float_instructions_round_once_and_handle_nan_zero_and_subnormals() {
    let tiny = f32::from_bits(0x0000_0400); // subnormal: .ftz flushes it
    let mut pairs: Vec<(f32, f32)> = vec![
        (1.0, 3.0),
        (-2.5, 0.75),
        (f32::NAN, 1.0),
        (1.0, f32::NAN),
        (0.0, -0.0),
        (f32::INFINITY, 2.0),
        (-1.0, f32::INFINITY),
        (tiny, 3.0),
        (3.0, tiny),
        (0.3, 0.4),
        (0.9, 0.5),
        (-0.9, -0.5),
    ];
    let r = values(40, 22);
    pairs.extend(r.chunks(2).map(|c| (c[0] * 4.0, c[1] * 4.0)));
    let a: Vec<u32> = pairs.iter().map(|p| p.0.to_bits()).collect();
    let b: Vec<u32> = pairs.iter().map(|p| p.1.to_bits()).collect();
    let out = run("float_ops", &a, &b, 21);
    let f = |k: usize, t: usize| f32::from_bits(out[k][t]);
    for (t, &(x, y)) in pairs.iter().enumerate() {
        let ctx = format!("a = {x:e}, b = {y:e}");
        let same = |k: usize, want: f32| {
            let got = f(k, t);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "slot {k}: {got:e} vs {want:e}, {ctx}"
            );
        };
        same(0, x.mul_add(y, 1.5));
        same(1, x / y);
        same(2, x.abs().sqrt());
        // a NaN operand yields the other one; +0 counts as above -0
        let zeros = x == 0.0 && y == 0.0;
        same(3, if zeros { 0.0 } else { x.max(y) });
        same(4, if zeros { -0.0 } else { x.min(y) });
        assert_eq!(
            out[5][t],
            u32::from(x < y || x.is_nan() || y.is_nan()),
            "ltu {ctx}"
        );
        assert_eq!(out[6][t], u32::from(x > y), "gt {ctx}");
        same(7, y.abs().copysign(x));
        same(
            8,
            if (x + y).is_nan() {
                0.0
            } else {
                (x + y).clamp(0.0, 1.0)
            },
        );
        let flush = |v: f32| {
            if v.is_subnormal() {
                0.0f32.copysign(v)
            } else {
                v
            }
        };
        same(9, flush(flush(x) * flush(y)));
        assert_eq!(out[20][t], u32::from(flush(x) == 0.0), "setp.eq.ftz {ctx}");
        same(11, 1.0 / y);
        same(12, -x);
        // .approx: PTX promises 2 ulp for ex2 and rsqrt, 2^-11 for tanh (relative), 2^-20.5 absolute
        // for sin in [-100π, 100π], 2^-22 absolute for lg2 near 1
        let xd = f64::from(x);
        assert!(
            close(f(10, t), xd.exp2(), 2.0 * 2f64.powi(-23), 0.0),
            "ex2 {ctx}"
        );
        assert!(
            close(f(13, t), 1.0 / xd.abs().sqrt(), 2.0 * 2f64.powi(-23), 0.0),
            "rsqrt {ctx}"
        );
        assert!(
            close(f(14, t), xd.tanh(), 2f64.powi(-11), 0.0),
            "tanh {ctx}"
        );
        if x.is_finite() {
            assert!(close(f(15, t), xd.sin(), 0.0, 2f64.powi(-20)), "sin {ctx}");
        }
        assert!(
            close(f(16, t), xd.abs().log2(), 2f64.powi(-22), 2f64.powi(-22)),
            "lg2 {ctx}"
        );
        // f16x2 fma of h = (a upper, b lower) with itself: one rounding per lane
        let h = |v: f32| f64::from(f16::from_f32(v).to_f32());
        let fma16 = |v: f64| u32::from(f16::from_f64(v * v + v).to_bits());
        if !x.is_nan() && !y.is_nan() {
            assert_eq!(
                out[17][t],
                (fma16(h(x)) << 16) | fma16(h(y)),
                "fma.f16x2 {ctx}"
            );
        }
        let rz = {
            let exact = xd * f64::from(y) + xd;
            let n = exact as f32; // nearest; step toward zero if that rounded away
            if f64::from(n).abs() > exact.abs() {
                f32::from_bits(n.to_bits() - 1)
            } else {
                n
            }
        };
        same(18, rz);
        let (bx, by) = (bf16::from_f32(x), bf16::from_f32(y));
        if !x.is_nan() && !y.is_nan() {
            let m = if x == 0.0 && y == 0.0 {
                0
            } else {
                u32::from(bx.max(by).to_bits())
            };
            assert_eq!(out[19][t], (m << 16) | m, "max.bf16x2 {ctx}");
        }
    }
}

#[test]
fn min_max_nan_propagate_nan_where_plain_min_max_drop_it() {
    let ptx = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 p)\n{\n.reg .b64 %rd<2>;\n.reg .f32 %f<7>;\n\
               ld.param.u64 %rd0, [p];\ncvta.to.global.u64 %rd1, %rd0;\nld.global.f32 %f0, [%rd1];\nld.global.f32 %f1, [%rd1+4];\n\
               max.NaN.f32 %f2, %f0, %f1;\nmin.NaN.f32 %f3, %f0, %f1;\nmax.f32 %f4, %f0, %f1;\nmax.NaN.f32 %f5, %f1, %f1;\n\
               st.global.f32 [%rd1+8], %f2;\nst.global.f32 [%rd1+12], %f3;\nst.global.f32 [%rd1+16], %f4;\nst.global.f32 [%rd1+20], %f5;\nret;\n}\n";
    let m = ptxemu::Module::parse(ptx).unwrap();
    for (a, b, want) in [(f32::NAN, 2.0, [f32::NAN, f32::NAN, 2.0]), (1.0, 2.0, [2.0, 1.0, 2.0]), (3.0, f32::NAN, [f32::NAN, f32::NAN, 3.0])] {
        let mut mem = Memory::new();
        let p = mem.alloc(24);
        mem.write_f32s(p, &[a, b, 0.0, 0.0, 0.0, 0.0]);
        m.launch("k", grid1(1, 1), &[Arg::U64(p)], &mut mem).unwrap();
        let got = mem.read_f32s(p, 6).unwrap();
        for (g, w) in got[2..5].iter().zip(want) {
            assert!(g == &w || (g.is_nan() && w.is_nan()), "{a} {b}: {got:?}");
        }
        assert_eq!(got[5].is_nan(), b.is_nan());
    }
}
