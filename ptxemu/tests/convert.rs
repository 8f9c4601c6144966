//! `cvt` rounding against the `half` crate and Rust's own float→int rules.

mod common;

use common::{grid1, module, values};
use half::{bf16, f16};
use ptxemu::{Arg, Memory};

/// Inputs that hit every rounding corner, then ordinary values.
fn inputs() -> Vec<f32> {
    let mut x = vec![
        1.0,
        -2.5,
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        3.0e9,
        -3.0e9,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0e-6,                      // f16 subnormal (16.8 × 2^-24 rounds to 17 × 2^-24)
        2.0f32.powi(-24),            // smallest f16 subnormal
        2.0f32.powi(-25),            // half of it: ties to even, i.e. to zero
        1.5 * 2.0f32.powi(-25),      // above the tie: rounds up to the smallest subnormal
        65504.0,                     // largest f16
        65520.0,                     // halfway to the next binade: overflows to infinity
        1.0 + 2.0f32.powi(-8),       // bf16 tie, even neighbour below
        1.0 + 3.0 * 2.0f32.powi(-8), // bf16 tie, even neighbour above
        -(1.0 + 2.0f32.powi(-8) + 2.0f32.powi(-20)), // just above a tie: away from zero
        -0.0,
        200.7,
        -130.2,
    ];
    x.extend(values(40, 9).iter().map(|v| v * 300.0));
    x
}

fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn cvt_rounds_like_the_reference_implementations() {
    let x = inputs();
    let n = x.len();
    let m = module("convert");
    let mut mem = Memory::new();
    let (dx, out) = (mem.alloc(4 * n), mem.alloc(4 * 13 * n));
    mem.write_f32s(dx, &x);
    m.launch(
        "convert",
        grid1(1, n as u32),
        &[Arg::U64(dx), Arg::U64(out)],
        &mut mem,
    )
    .unwrap();
    let got = mem.read_u32s(out, 13 * n).unwrap();
    let slot = |k: usize, t: usize| got[k * n + t];
    for (t, &v) in x.iter().enumerate() {
        let ctx = format!("x[{t}] = {v:e}");
        let bf_rn = bf16::from_f32(v);
        if v.is_nan() {
            assert!(bf16::from_bits(slot(0, t) as u16).is_nan(), "{ctx}");
            assert!(bf16::from_bits(slot(1, t) as u16).is_nan(), "{ctx}");
            assert!(f16::from_bits(slot(2, t) as u16).is_nan(), "{ctx}");
        } else {
            assert_eq!(slot(0, t), u32::from(bf_rn.to_bits()), "rn.bf16 {ctx}");
            assert_eq!(slot(1, t), v.to_bits() >> 16, "rz.bf16 truncates {ctx}");
            assert_eq!(
                slot(2, t),
                u32::from(f16::from_f32(v).to_bits()),
                "rn.f16 {ctx}"
            );
        }
        let back = f16::from_bits(slot(2, t) as u16).to_f32();
        assert!(same_f32(f32::from_bits(slot(3, t)), back), "f32.f16 {ctx}");
        // float → int saturates and maps NaN to 0, exactly like Rust's `as`
        assert_eq!(slot(4, t) as i32, v.trunc() as i32, "rzi {ctx}");
        assert_eq!(slot(5, t) as i32, v.round_ties_even() as i32, "rni {ctx}");
        assert_eq!(slot(6, t) as i32, v.floor() as i32, "rmi {ctx}");
        assert_eq!(slot(7, t), v.ceil() as u32, "rpi.u32 {ctx}");
        let pair = slot(8, t);
        if !v.is_nan() {
            assert_eq!(
                pair >> 16,
                u32::from(bf_rn.to_bits()),
                "bf16x2 upper = first source {ctx}"
            );
            assert_eq!(
                pair & 0xffff,
                u32::from(bf16::from_f32(-v).to_bits()),
                "bf16x2 lower {ctx}"
            );
        }
        assert!(
            same_f32(f32::from_bits(slot(9, t)), v.trunc()),
            "rzi.f32.f32 {ctx}"
        );
        let sat = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        assert!(same_f32(f32::from_bits(slot(10, t)), sat), "sat {ctx}");
        assert_eq!(
            slot(11, t) as i32,
            (v.trunc() as i32).clamp(-128, 127),
            "sat.s8 {ctx}"
        );
        assert_eq!(
            f32::from_bits(slot(12, t)),
            v.trunc() as i32 as f32,
            "rn.f32.s32 {ctx}"
        );
    }
    // spot checks by hand, independent of any library
    assert_eq!(slot(2, 12), 17, "1e-6 is 17 f16 subnormal quanta");
    assert_eq!(slot(2, 14), 0, "2^-25 ties to zero");
    assert_eq!(slot(2, 15), 1);
    assert_eq!(slot(2, 17), 0x7c00, "65520 overflows to +inf");
    assert_eq!(slot(0, 18), 0x3f80);
    assert_eq!(slot(0, 19), 0x3f82);
    assert_eq!(slot(5, 4), 2, "2.5 rounds to even");
}
