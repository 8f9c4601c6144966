//! bf16 and f16 ↔ f32 with integer operations, for scalars (`I32` holding
//! the 16 bits) and vectors (`I32X4`, one half float per lane).
//!
//! Narrowing rounds to nearest, ties to even; NaN stays NaN (quieted),
//! infinities stay infinite, f16 overflow becomes infinity and f16
//! subnormals are produced and read exactly.

use super::math::Fx;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};

impl Fx<'_, '_> {
    /// bf16 bits (low 16 bits of each lane, high bits zero) to f32.
    pub fn bf16_to_f32(&mut self, h: Value) -> Value {
        let b = self.b.ins().ishl_imm_u(h, 16);
        self.float(b)
    }

    /// f32 to bf16 bits (in the low 16 bits of each lane).
    pub fn f32_to_bf16(&mut self, x: Value) -> Value {
        let f = self.bits(x);
        // Round to nearest even: add 0x7fff plus the lowest kept bit.
        let odd = self.b.ins().ushr_imm_u(f, 16);
        let odd = self.andi(odd, 1);
        let r = self.addi(f, 0x7fff);
        let r = self.b.ins().iadd(r, odd);
        let r = self.b.ins().ushr_imm_u(r, 16);
        // NaN: keep the sign and top payload bits, force quiet.
        let q = self.b.ins().ushr_imm_u(f, 16);
        let q = self.ori(q, 0x40);
        let abs = self.andi(f, 0x7fff_ffff);
        let inf = self.ci(0x7f80_0000);
        let nan = self.icmp(IntCC::SignedGreaterThan, abs, inf);
        self.sel(nan, q, r)
    }

    /// f16 bits (low 16 bits of each lane, high bits zero) to f32: exact,
    /// subnormals, infinities and NaN included.
    pub fn f16_to_f32(&mut self, h: Value) -> Value {
        let mag = self.andi(h, 0x7fff);
        let o = self.b.ins().ishl_imm_u(mag, 13);
        let exp = self.andi(o, 0x7c00 << 13);
        // Rebias the exponent (15 -> 127).
        let o = self.addi(o, (127 - 15) << 23);
        // Inf/NaN: one more rebias moves the exponent to 255.
        let infnan = self.ci(0x7c00 << 13);
        let is_in = self.icmp(IntCC::Equal, exp, infnan);
        let o2 = self.addi(o, (128 - 16) << 23);
        let o = self.sel(is_in, o2, o);
        // Zero/subnormal: let the FPU normalize (2^-14 * (1 + m) - 2^-14).
        let zero = self.ci(0);
        let is_sub = self.icmp(IntCC::Equal, exp, zero);
        let o3 = self.addi(o, 1 << 23);
        let f3 = self.float(o3);
        let magic = self.c(f32::from_bits(113 << 23));
        let f3 = self.sub(f3, magic);
        let o3 = self.bits(f3);
        let o = self.sel(is_sub, o3, o);
        let sign = self.andi(h, 0x8000);
        let sign = self.b.ins().ishl_imm_u(sign, 16);
        let o = self.b.ins().bor(o, sign);
        self.float(o)
    }

    /// f32 to f16 bits (in the low 16 bits of each lane).
    pub fn f32_to_f16(&mut self, x: Value) -> Value {
        let f0 = self.bits(x);
        let sign = self.andi(f0, i32::MIN);
        let f = self.b.ins().bxor(f0, sign);
        // Overflow to infinity; NaN to a quiet NaN.
        let inf = self.ci(0x7f80_0000);
        let is_nan = self.icmp(IntCC::SignedGreaterThan, f, inf);
        let qnan = self.ci(0x7e00);
        let infh = self.ci(0x7c00);
        let big_v = self.sel(is_nan, qnan, infh);
        let f16max = self.ci((127 + 16) << 23);
        let is_big = self.icmp(IntCC::SignedGreaterThanOrEqual, f, f16max);
        // Subnormal results: adding 0.5 aligns the mantissa so the FPU's
        // round-to-nearest-even does the rounding.
        let denorm_magic = ((127 - 15) + (23 - 10) + 1) << 23;
        let ff = self.float(f);
        let dm = self.c(f32::from_bits(denorm_magic as u32));
        let fs = self.add(ff, dm);
        let fsb = self.bits(fs);
        let dmi = self.ci(denorm_magic);
        let sub_v = self.b.ins().isub(fsb, dmi);
        let min_normal = self.ci(113 << 23);
        let is_sub = self.icmp(IntCC::SignedLessThan, f, min_normal);
        // Normal results: rebias, round to nearest even on bit 13.
        let odd = self.b.ins().ushr_imm_u(f, 13);
        let odd = self.andi(odd, 1);
        let n = self.addi(f, ((15 - 127) << 23) + 0xfff);
        let n = self.b.ins().iadd(n, odd);
        let norm_v = self.b.ins().ushr_imm_u(n, 13);
        let o = self.sel(is_sub, sub_v, norm_v);
        let o = self.sel(is_big, big_v, o);
        let s16 = self.b.ins().ushr_imm_u(sign, 16);
        self.b.ins().bor(o, s16)
    }

    /// Rounds an f32 through bf16 and back (a cast to bf16).
    pub fn round_bf16(&mut self, x: Value) -> Value {
        let h = self.f32_to_bf16(x);
        self.bf16_to_f32(h)
    }

    /// Rounds an f32 through f16 and back (a cast to f16).
    pub fn round_f16(&mut self, x: Value) -> Value {
        let h = self.f32_to_f16(x);
        self.f16_to_f32(h)
    }
}

/// An f64 constant rounded to bf16 (`bf16`) or f16, returned as the f32
/// that holds it exactly: one correct rounding straight from f64.
pub(crate) fn round_const(v: f64, bf16: bool) -> f32 {
    if !v.is_finite() || v == 0.0 {
        return v as f32;
    }
    let (mant_bits, min_exp, max) = if bf16 { (8, -126, f64::from(f32::MAX)) } else { (11, -14, 65504.0) };
    // The binary exponent, read from the bits (log2 can round up).
    let e = ((v.abs().to_bits() >> 52) as i32) - 1023;
    // Spacing of representable values at this magnitude (subnormals fixed).
    let q = 2f64.powi(e.max(min_exp) - (mant_bits - 1));
    let r = (v / q).round_ties_even() * q;
    if r.abs() > max {
        return if r > 0.0 { f32::INFINITY } else { f32::NEG_INFINITY };
    }
    r as f32
}
