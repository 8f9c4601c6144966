//! f32 and f32x4 transcendentals: range reduction plus polynomials, all
//! branch-free so one code path serves scalars and vectors.
//!
//! Every function takes and returns values of [`Fx::ty`] (`F32` or
//! `F32X4`). Special values follow IEEE/libm: NaN in, NaN out; `exp(-inf)
//! = 0`, `log(0) = -inf`, `log(x<0) = NaN`, `tanh(±inf) = ±1`.
//!
//! Accuracy, measured against f64 over dense grids in scalar and vector
//! code with and without FMA (`tests/cpu_math.rs` asserts the bounds and
//! holds the table): exp 0.98 ulp, log 0.76, tanh 1.19, sigmoid 2.40,
//! silu 2.90, erf 1.67, gelu 3.88, gelu_tanh 2.95, sin/cos 8.2e-8
//! absolute up to |x| = 4e6. The polynomials are Cephes' (exp, log, tanh,
//! sin, cos) or were fitted for Kiln with a weighted minimax (Lawson) fit
//! against 30-digit values (erf near 0, the normal density and the Mills
//! ratio behind erf and GELU).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use super::consts::{splat32, ConstPool};

/// An f32 or f32x4 arithmetic helper: constants of the right shape, and
/// selects that work on masks of either kind.
pub(crate) struct Fx<'a, 'f> {
    /// The builder.
    pub b: &'a mut FunctionBuilder<'f>,
    /// `F32` or `F32X4`.
    pub ty: Type,
    /// Whether `fma` may be emitted (else multiply, then add).
    pub fma: bool,
    /// Where vector constants are loaded from (else `vconst`s).
    pub pool: Option<&'a mut ConstPool>,
}

/// `1.5 * 2^23`: adding it rounds a float below `2^22` in magnitude to an
/// integer (round-to-nearest-even) and leaves that integer in the low
/// mantissa bits.
const MAGIC: f32 = 12_582_912.0;
const SIGN: i32 = i32::MIN;

impl<'a, 'f> Fx<'a, 'f> {
    /// A helper for values of type `ty`.
    pub fn new(b: &'a mut FunctionBuilder<'f>, ty: Type, fma: bool, pool: Option<&'a mut ConstPool>) -> Self {
        Fx { b, ty, fma, pool }
    }

    fn vector(&self) -> bool {
        self.ty.is_vector()
    }

    /// The integer type of the same shape (`I32` or `I32X4`).
    pub fn ity(&self) -> Type {
        if self.vector() {
            types::I32X4
        } else {
            types::I32
        }
    }

    /// A float constant.
    pub fn c(&mut self, v: f32) -> Value {
        if let Some(x) = self.pooled(self.ty, splat32(v.to_bits())) {
            return x;
        }
        let s = self.b.ins().f32const(v);
        if self.vector() {
            self.b.ins().splat(self.ty, s)
        } else {
            s
        }
    }

    /// An i32 constant of the integer shape.
    pub fn ci(&mut self, v: i32) -> Value {
        if let Some(x) = self.pooled(types::I32X4, splat32(v as u32)) {
            return x;
        }
        let s = self.b.ins().iconst(types::I32, v as i64);
        if self.vector() {
            self.b.ins().splat(types::I32X4, s)
        } else {
            s
        }
    }

    /// A vector constant from the kernel's pool, when there is one.
    fn pooled(&mut self, ty: Type, bits: u128) -> Option<Value> {
        let pool = self.pool.as_deref_mut().filter(|_| self.ty.is_vector())?;
        pool.load(self.b, ty, bits)
    }

    /// `a + b`.
    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    /// `a - b`.
    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    /// `a * b`.
    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    /// `a / b`.
    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }
    /// `a * k`.
    pub fn mulc(&mut self, a: Value, k: f32) -> Value {
        let k = self.c(k);
        self.mul(a, k)
    }
    /// `a + k`.
    pub fn addc(&mut self, a: Value, k: f32) -> Value {
        let k = self.c(k);
        self.add(a, k)
    }
    /// `k - a`.
    pub fn rsubc(&mut self, k: f32, a: Value) -> Value {
        let k = self.c(k);
        self.sub(k, a)
    }

    /// `a * b + c`, fused when the CPU allows.
    pub fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// Horner's scheme; `cs` from the highest power down.
    pub fn poly(&mut self, x: Value, cs: &[f32]) -> Value {
        let mut acc = self.c(cs[0]);
        for &k in &cs[1..] {
            let k = self.c(k);
            acc = self.fma(acc, x, k);
        }
        acc
    }

    /// Estrin's scheme (`cs` from the highest power down, at least two):
    /// pairs `c1 x + c0` joined by `x^2`, then by `x^4`, ...; the dependency
    /// chain grows with the log of the degree instead of the degree. The
    /// constant term is added last, as in Horner's scheme, so the result
    /// rounds once at its own magnitude.
    pub fn estrin(&mut self, x: Value, cs: &[f32]) -> Value {
        let (&c0, cs) = cs.split_last().expect("a constant term");
        let mut terms: Vec<Value> = cs
            .rchunks(2)
            .map(|pair| match *pair {
                [c1, c0] => {
                    let (c1, c0) = (self.c(c1), self.c(c0));
                    self.fma(c1, x, c0)
                }
                _ => self.c(pair[0]),
            })
            .collect();
        let mut p = x;
        while terms.len() > 1 {
            p = self.mul(p, p);
            terms = terms.chunks(2).map(|t| if let [t0, t1] = *t { self.fma(t1, p, t0) } else { t[0] }).collect();
        }
        let c0 = self.c(c0);
        self.fma(terms[0], x, c0)
    }

    /// A float comparison: an `i8` for scalars, an `i32x4` mask for vectors.
    pub fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(cc, a, b)
    }

    /// Compares with a constant.
    pub fn cmpc(&mut self, cc: FloatCC, a: Value, k: f32) -> Value {
        let k = self.c(k);
        self.cmp(cc, a, k)
    }

    /// An integer comparison of the integer shape.
    pub fn icmp(&mut self, cc: IntCC, a: Value, b: Value) -> Value {
        self.b.ins().icmp(cc, a, b)
    }

    /// `m ? a : b` lane by lane, for floats or integers of this shape.
    pub fn sel(&mut self, m: Value, a: Value, b: Value) -> Value {
        if self.vector() {
            let t = self.b.func.dfg.value_type(a);
            let m = if self.b.func.dfg.value_type(m) == t { m } else { self.b.ins().bitcast(t, MemFlagsData::new(), m) };
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(m, a, b)
        }
    }

    /// `m ? k : b`.
    pub fn selc(&mut self, m: Value, k: f32, b: Value) -> Value {
        let k = self.c(k);
        self.sel(m, k, b)
    }

    /// The bits of a float.
    pub fn bits(&mut self, x: Value) -> Value {
        let t = self.ity();
        self.b.ins().bitcast(t, MemFlagsData::new(), x)
    }

    /// The float with these bits.
    pub fn float(&mut self, i: Value) -> Value {
        self.b.ins().bitcast(self.ty, MemFlagsData::new(), i)
    }

    /// `x & k` on the integer shape (the `_imm` forms are scalar only).
    pub fn andi(&mut self, x: Value, k: i32) -> Value {
        let k = self.ci(k);
        self.b.ins().band(x, k)
    }

    /// `x | k` on the integer shape.
    pub fn ori(&mut self, x: Value, k: i32) -> Value {
        let k = self.ci(k);
        self.b.ins().bor(x, k)
    }

    /// `x + k` on the integer shape.
    pub fn addi(&mut self, x: Value, k: i32) -> Value {
        let k = self.ci(k);
        self.b.ins().iadd(x, k)
    }

    /// NaN-propagating `max(a, b)` (`min` when not `max`): the
    /// compare-select shape Cranelift lowers to `maxps`/`minps`, whose NaN
    /// rule (return the second operand) is then fixed up.
    pub fn max_min(&mut self, a: Value, b: Value, max: bool) -> Value {
        let pick_a = if max { self.cmp(FloatCC::LessThan, b, a) } else { self.cmp(FloatCC::LessThan, a, b) };
        let m = self.sel(pick_a, a, b);
        let nan = self.cmp(FloatCC::Unordered, a, b);
        let s = self.add(a, b);
        self.sel(nan, s, m)
    }

    /// `|x|`.
    pub fn abs(&mut self, x: Value) -> Value {
        self.b.ins().fabs(x)
    }

    /// `|m|` with the sign of `s`.
    fn copysign(&mut self, m: Value, s: Value) -> Value {
        let (mb, sb) = (self.bits(m), self.bits(s));
        let sign = self.ci(SIGN);
        let sb = self.b.ins().band(sb, sign);
        let mb = self.b.ins().band_not(mb, sign);
        let r = self.b.ins().bor(mb, sb);
        self.float(r)
    }

    /// `2^k` for an integer `k` in the normal range `-126..=127`.
    fn pow2i(&mut self, k: Value) -> Value {
        let bias = self.ci(127);
        let e = self.b.ins().iadd(k, bias);
        let e = self.b.ins().ishl_imm_u(e, 23);
        self.float(e)
    }

    /// `x` rounded to an integer, as a float and as an i32, for `|x| < 2^22`.
    fn round(&mut self, x: Value) -> (Value, Value) {
        let s = self.addc(x, MAGIC);
        let kf = self.addc(s, -MAGIC);
        let sb = self.bits(s);
        let mb = self.ci(MAGIC.to_bits() as i32);
        let ki = self.b.ins().isub(sb, mb);
        (kf, ki)
    }

    /// `x * x` as an unevaluated sum `hi + lo` (exact).
    pub fn square2(&mut self, x: Value) -> (Value, Value) {
        let hi = self.mul(x, x);
        if self.fma {
            let nhi = self.b.ins().fneg(hi);
            let lo = self.b.ins().fma(x, x, nhi);
            return (hi, lo);
        }
        // Dekker: a 12-bit head squares exactly.
        let xb = self.bits(x);
        let mask = self.ci(-4096);
        let hb = self.b.ins().band(xb, mask);
        let xh = self.float(hb);
        let xl = self.sub(x, xh);
        let hh = self.mul(xh, xh);
        let e = self.sub(hh, hi);
        let hl = self.mul(xh, xl);
        let hl2 = self.add(hl, hl);
        let e = self.add(e, hl2);
        let ll = self.mul(xl, xl);
        let lo = self.add(e, ll);
        (hi, lo)
    }

    /// `f` evaluated in f64 on the lanes of `xs` (widened), returned as
    /// an f32 pair `hi + lo` (the result rounded, and the rounding's
    /// remainder). Vectors go through two f64x2 halves.
    fn in_f64(&mut self, xs: &[Value], f: &dyn Fn(&mut Self, &[Value]) -> Value) -> (Value, Value) {
        if !self.vector() {
            let wide: Vec<Value> = xs.iter().map(|&x| self.b.ins().fpromote(types::F64, x)).collect();
            let u = f(self, &wide);
            let uh = self.b.ins().fdemote(types::F32, u);
            let back = self.b.ins().fpromote(types::F64, uh);
            let rest = self.b.ins().fsub(u, back);
            return (uh, self.b.ins().fdemote(types::F32, rest));
        }
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let mut his = [xs[0]; 2];
        let mut los = [xs[0]; 2];
        for (h, out) in his.iter_mut().zip(los.iter_mut()).enumerate() {
            let wide: Vec<Value> = xs
                .iter()
                .map(|&x| {
                    // Lanes 2 and 3 move down to be widened.
                    let src = if h == 0 {
                        x
                    } else {
                        let q = self.b.ins().bitcast(types::I64X2, le, x);
                        let up = self.b.ins().extractlane(q, 1);
                        let up = self.b.ins().scalar_to_vector(types::I64X2, up);
                        self.b.ins().bitcast(types::F32X4, le, up)
                    };
                    self.b.ins().fvpromote_low(src)
                })
                .collect();
            let u = f(self, &wide);
            let uh = self.b.ins().fvdemote(u);
            let back = self.b.ins().fvpromote_low(uh);
            let rest = self.b.ins().fsub(u, back);
            *out.0 = uh;
            *out.1 = self.b.ins().fvdemote(rest);
        }
        // Lanes 0 and 1 of each half, as one vector.
        let join = |fx: &mut Self, v: [Value; 2]| {
            let a = fx.b.ins().bitcast(types::I64X2, le, v[0]);
            let b = fx.b.ins().bitcast(types::I64X2, le, v[1]);
            let b0 = fx.b.ins().extractlane(b, 0);
            let j = fx.b.ins().insertlane(a, b0, 1);
            fx.b.ins().bitcast(types::F32X4, le, j)
        };
        (join(self, his), join(self, los))
    }

    /// An f64 constant shaped like `like` (f64 or f64x2).
    fn c64(&mut self, like: Value, v: f64) -> Value {
        let ty = self.b.func.dfg.value_type(like);
        let c = self.b.ins().f64const(v);
        if ty.is_vector() {
            self.b.ins().splat(ty, c)
        } else {
            c
        }
    }

    /// `e^x`; under 1 ulp, subnormal results included (Cephes `expf`).
    pub fn exp(&mut self, x: Value) -> Value {
        self.exp2(x, None)
    }

    /// `e^(hi + lo)` where `lo` is far below an ulp of `hi`: the low part
    /// joins the reduced argument, so `hi`'s rounding error does not get
    /// amplified by the exponential.
    fn exp2(&mut self, hi: Value, lo: Option<Value>) -> Value {
        // Clamp (keeping NaN): past 89 the result overflows, below -104 it
        // rounds to zero; in between 2^k stays within two normal factors.
        let big = self.cmpc(FloatCC::GreaterThan, hi, 89.0);
        let x = self.selc(big, 89.0, hi);
        let small = self.cmpc(FloatCC::LessThan, x, -104.0);
        let x = self.selc(small, -104.0, x);
        let t = self.mulc(x, std::f32::consts::LOG2_E);
        let (kf, ki) = self.round(t);
        let mut r = self.reduce_ln2(x, kf);
        if let Some(lo) = lo {
            // A clamped argument drops its low part (which may be infinite).
            let z = self.c(0.0);
            let lo = self.sel(big, z, lo);
            let lo = self.sel(small, z, lo);
            r = self.add(r, lo);
        }
        let z = self.mul(r, r);
        let p = self.poly(r, &[1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5]);
        let y = self.fma(p, z, r);
        let y = self.addc(y, 1.0);
        // 2^k as two factors, each normal, so the one rounding of the
        // second multiply produces correct subnormals.
        let k1 = self.b.ins().sshr_imm_u(ki, 1);
        let k2 = self.b.ins().isub(ki, k1);
        let s1 = self.pow2i(k1);
        let s2 = self.pow2i(k2);
        let y = self.mul(y, s1);
        self.mul(y, s2)
    }

    /// `x - kf ln 2` for an integer `kf` with `|kf| < 2^8` (Cody–Waite):
    /// `kf` times the 9-bit head of ln 2 is exact, so only the tail's
    /// product rounds.
    fn reduce_ln2(&mut self, x: Value, kf: Value) -> Value {
        let c1 = self.c(-0.693_359_4);
        let r = self.fma(kf, c1, x);
        let c2 = self.c(2.121_944_4e-4);
        self.fma(kf, c2, r)
    }

    /// Natural logarithm; under 1 ulp (Cephes `logf`), subnormals included.
    pub fn log(&mut self, x: Value) -> Value {
        // Subnormals (and 0, negatives: fixed up below) are scaled by 2^25.
        let sub = self.cmpc(FloatCC::LessThan, x, f32::MIN_POSITIVE);
        let xs = self.mulc(x, 33_554_432.0);
        let xs = self.sel(sub, xs, x);
        let m25 = self.ci(-25);
        let zero = self.ci(0);
        let eadj = self.sel(sub, m25, zero);
        let ib = self.bits(xs);
        let e = self.b.ins().ushr_imm_u(ib, 23);
        let e = self.andi(e, 0xff);
        let e = self.b.ins().iadd(e, eadj);
        let mant = self.andi(ib, 0x007f_ffff);
        let mant = self.ori(mant, 0x3f00_0000);
        let m = self.float(mant); // in [0.5, 1)
        let lt = self.cmpc(FloatCC::LessThan, m, std::f32::consts::FRAC_1_SQRT_2);
        // e - 126, or e - 127 with m doubled, so m lies in [sqrt(1/2), sqrt(2)).
        let e126 = self.ci(126);
        let e127 = self.ci(127);
        let bias = self.sel(lt, e127, e126);
        let e = self.b.ins().isub(e, bias);
        let m2 = self.add(m, m);
        let a = self.addc(m2, -1.0);
        let bb = self.addc(m, -1.0);
        let f = self.sel(lt, a, bb);
        let z = self.mul(f, f);
        let p = self.poly(
            f,
            &[7.037_683_6e-2, -1.151_461e-1, 1.167_699_9e-1, -1.242_014_1e-1, 1.424_932_3e-1, -1.666_805_8e-1, 2.000_071_4e-1, -2.499_999_4e-1, 3.333_333e-1],
        );
        let pf = self.mul(p, f);
        let mut y = self.mul(pf, z);
        let fe = self.b.ins().fcvt_from_sint(self.ty, e);
        let c2 = self.c(-2.121_944_4e-4);
        y = self.fma(fe, c2, y);
        let hz = self.c(-0.5);
        y = self.fma(hz, z, y);
        let mut r = self.add(f, y);
        let c1 = self.c(0.693_359_4);
        r = self.fma(fe, c1, r);
        // Specials.
        let inf = self.cmpc(FloatCC::Equal, x, f32::INFINITY);
        r = self.selc(inf, f32::INFINITY, r);
        let z0 = self.cmpc(FloatCC::Equal, x, 0.0);
        r = self.selc(z0, f32::NEG_INFINITY, r);
        let neg = self.cmpc(FloatCC::LessThan, x, 0.0);
        r = self.selc(neg, f32::NAN, r);
        let nan = self.cmp(FloatCC::Unordered, x, x);
        self.sel(nan, x, r)
    }

    /// Hyperbolic tangent; 1.2 ulp (Cephes `tanhf`: a polynomial below
    /// 0.625, `1 - 2/(e^2x + 1)` above).
    pub fn tanh(&mut self, x: Value) -> Value {
        let z = self.abs(x);
        let z2 = self.add(z, z);
        let s = self.exp(z2);
        let s1 = self.addc(s, 1.0);
        let two = self.c(2.0);
        let q = self.div(two, s1);
        let big = self.rsubc(1.0, q);
        let w = self.mul(x, x);
        let p = self.poly(w, &[-5.704_988_7e-3, 2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1]);
        let pw = self.mul(p, w);
        let small = self.fma(pw, z, z);
        let ge = self.cmpc(FloatCC::GreaterThanOrEqual, z, 0.625);
        let r = self.sel(ge, big, small);
        self.copysign(r, x)
    }

    /// The logistic function `1 / (1 + e^-x)`, in a form that keeps full
    /// relative accuracy for very negative `x` (`e^x / (1 + e^x)`); 2.4 ulp.
    pub fn sigmoid(&mut self, x: Value) -> Value {
        self.sigmoid2(x, None)
    }

    /// `sigmoid(hi + lo)`, `lo` far below an ulp of `hi`.
    fn sigmoid2(&mut self, hi: Value, lo: Option<Value>) -> Value {
        // e = exp(-|x|): negate the pair when x >= 0.
        let pos = self.cmpc(FloatCC::GreaterThanOrEqual, hi, 0.0);
        let a = self.abs(hi);
        let na = self.b.ins().fneg(a);
        let nlo = lo.map(|lo| {
            let n = self.b.ins().fneg(lo);
            self.sel(pos, n, lo)
        });
        let e = self.exp2(na, nlo);
        let d = self.addc(e, 1.0);
        let one = self.c(1.0);
        let r = self.div(one, d);
        let er = self.mul(e, r);
        self.sel(pos, r, er)
    }

    /// `x * sigmoid(x)`; 2.9 ulp.
    pub fn silu(&mut self, x: Value) -> Value {
        let s = self.sigmoid(x);
        self.mul(x, s)
    }

    /// GPT-2's `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, computed
    /// as `x * sigmoid(2u)` (the same function) so large negative `x` does
    /// not cancel. `2u` is computed in f64 and handed to the exponential as
    /// a hi/lo pair: its f32 rounding error, times `|2u|` (up to ~100 in
    /// the left tail), would otherwise cost tens of ulp. 3 ulp.
    pub fn gelu_tanh(&mut self, x: Value) -> Value {
        // 2 * sqrt(2/pi) and 2 * sqrt(2/pi) * 0.044715.
        const A: f64 = 1.595_769_121_605_730_7;
        const B: f64 = 0.071_354_816_272_487_96;
        let (hi, lo) = self.in_f64(&[x], &|fx, v| {
            let (a, bb) = (fx.c64(v[0], A), fx.c64(v[0], B));
            let x2 = fx.b.ins().fmul(v[0], v[0]);
            let k = fx.b.ins().fmul(x2, bb);
            let k = fx.b.ins().fadd(k, a);
            fx.b.ins().fmul(v[0], k)
        });
        let s = self.sigmoid2(hi, Some(lo));
        self.mul(x, s)
    }

    /// `erf(x) = x P(x^2)` for `|x| < ERF_SPLIT` (fit error 8.5e-9). P's
    /// constant term is split in two f32s: rounded to one, it alone would
    /// be off by half an ulp of P, which lands near the top of the
    /// result's binade as two ulp.
    fn erf_small(&mut self, x: Value) -> Value {
        let s = self.mul(x, x);
        let q = self.poly(s, &[-6.203_236_3e-4, 5.032_177_7e-3, -2.679_146e-2, 1.128_245_5e-1, -3.761_255e-1]);
        let c0l = self.c(5.096_916_5e-8);
        let t = self.fma(s, q, c0l);
        let xt = self.mul(x, t);
        // The f32 just below 2/sqrt(pi): the fitted constant rounds to it.
        let c0h = self.c(f32::from_bits(0x3f90_6eba));
        self.fma(x, c0h, xt)
    }

    /// The standard normal density `e^(-a²/2) / √(2π)` for `0 <= a <=
    /// TAIL_MAX`; 0 once below 2^-126 (from `a` ~ 13.24 on). `a²` is taken
    /// exactly as `hi + lo`: `a²/2` up to ~88 rounded to f32 would cost up
    /// to ~30 ulp once exponentiated. The `1/√(2π)` lives in the
    /// polynomial, fitted for Kiln (relative error 2.3e-9 on the reduced
    /// range).
    fn density(&mut self, a: Value) -> Value {
        let (hi, lo) = self.square2(a);
        let y = self.mulc(hi, -0.5);
        // k = round(y / ln 2), biased by 127 and left in the low bits of s.
        let lk = self.c(-0.5 * std::f32::consts::LOG2_E);
        let bias = self.c(MAGIC + 127.0);
        let s = self.fma(hi, lk, bias);
        let kf = self.sub(s, bias);
        let r = self.reduce_ln2(y, kf);
        let hl = self.c(-0.5);
        let r = self.fma(lo, hl, r);
        let p = self.estrin(r, &[5.519_996_6e-4, 3.341_947_4e-3, 1.662_326_8e-2, 6.648_929e-2, 1.994_711e-1, 3.989_423e-1, 3.989_423e-1]);
        // 2^k from k + 127 shifted into the exponent field; a biased k
        // below 1 (2^k not normal) gives 0 instead.
        let sb = self.bits(s);
        let floor = self.ci(MAGIC.to_bits() as i32);
        let e = self.b.ins().smax(sb, floor);
        let e = self.b.ins().ishl_imm_u(e, 23);
        let scale = self.float(e);
        self.mul(p, scale)
    }

    /// The Mills ratio `Φ(-a) / φ(a)` for `0 <= a <= TAIL_MAX`, as
    /// `Q / (a Q + P)`, fitted for Kiln on `[0, 13.5]` (relative fit error
    /// 9.4e-10): the form tends to `1/a` by construction, and `Q`'s
    /// rounding error mostly cancels where `a Q` dominates the denominator.
    fn mills(&mut self, a: Value) -> Value {
        let q = self.poly(a, &[2.398_220_8e-3, 2.904_713e-2, 1.675_934_3e-1, 5.589_824e-1, 1.078_521_6, 1.0]);
        let p = self.poly(a, &[2.398_512_3e-3, 2.903_298_7e-2, 1.630_971_3e-1, 4.971_555e-1, 7.978_846e-1]);
        let d = self.fma(a, q, p);
        self.div(q, d)
    }

    /// The normal upper tail `Φ(-a) = erfc(a/√2)/2` for `0 <= a <=
    /// TAIL_MAX`, to a few ulp of relative error: `φ(a)` times the Mills
    /// ratio, one evaluation for the whole range.
    fn normal_tail(&mut self, a: Value) -> Value {
        let d = self.density(a);
        let m = self.mills(a);
        self.mul(d, m)
    }

    /// `min(x, k)`, keeping NaN: the shape Cranelift lowers to one `minps`
    /// (which returns `x` when either is NaN).
    fn clamp_hi(&mut self, x: Value, k: f32) -> Value {
        let k = self.c(k);
        let big = self.cmp(FloatCC::LessThan, k, x);
        self.sel(big, k, x)
    }

    /// The error function; 1.5 ulp with FMA, 1.7 without. Near 0 it needs
    /// relative accuracy, which `1 - erfc` cannot give: an odd polynomial
    /// there.
    pub fn erf(&mut self, x: Value) -> Value {
        let ax = self.abs(x);
        let small = self.erf_small(x);
        // erfc(|x|) = 2 Φ(-√2 |x|); the rounding of √2 |x| only shows in
        // erfc's low digits, which 1 - erfc drops.
        let a = self.mulc(ax, std::f32::consts::SQRT_2);
        let a = self.clamp_hi(a, TAIL_MAX);
        let t = self.normal_tail(a);
        let m2 = self.c(-2.0);
        let one = self.c(1.0);
        let big = self.fma(t, m2, one);
        let big = self.copysign(big, x);
        let lt = self.cmpc(FloatCC::LessThan, ax, ERF_SPLIT);
        self.sel(lt, small, big)
    }

    /// `x Φ(x) = max(x, 0) - |x| Φ(-|x|)`: one tail evaluation for both
    /// signs, in relative precision so the left tail keeps its digits, and
    /// with FMA one rounding at the end. 3.6 ulp with FMA, 3.9 without (down
    /// to results of 1e-30).
    pub fn gelu(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        // Past TAIL_MAX the tail is 0; clamping keeps `a Φ(-a)` from
        // being inf * 0.
        let a = self.clamp_hi(a, TAIL_MAX);
        let t = self.normal_tail(a);
        let z = self.c(0.0);
        let neg = self.cmp(FloatCC::LessThan, x, z);
        let relu = self.sel(neg, z, x);
        let na = self.b.ins().fneg(a);
        self.fma(na, t, relu)
    }

    /// `sin(x)` (`cos` when `cos`): absolute error below 1e-7 for
    /// `|x| <= 4e6`, 2e-5 out to 3e9 (the first reduction step's rounding),
    /// NaN from `|x| >= 2^31 * pi/2` (~3.4e9), where the quadrant no longer
    /// fits the integer it is computed in.
    pub fn sincos(&mut self, x: Value, cos: bool) -> Value {
        // k = nearest integer to x * 2/pi (ties away; any neighbour works,
        // the second step below fixes it), through i32 so it holds for
        // |k| < 2^31.
        let t = self.mulc(x, std::f32::consts::FRAC_2_PI);
        let half = self.c(0.5);
        let half = self.copysign(half, t);
        let th = self.add(t, half);
        let ity = self.ity();
        let ki = self.b.ins().fcvt_to_sint_sat(ity, th);
        let kf = self.b.ins().fcvt_from_sint(self.ty, ki);
        let nk = self.b.ins().fneg(kf);
        let r = if self.fma {
            // pi/2 = C1 + C2 + C3; each fused step rounds once.
            let (c1, c2, c3) = (self.c(std::f32::consts::FRAC_PI_2), self.c(-4.371_139e-8), self.c(-1.715_124_5e-15));
            let r = self.fma(nk, c1, x);
            let r = self.fma(nk, c2, r);
            self.fma(nk, c3, r)
        } else {
            // Without FMA the f32 products are inexact: reduce in f64,
            // where k * C1 is exact (C1 has 27 bits) for |k| < 2^26.
            const C1: f64 = 1.570_796_325_802_803;
            const C2: f64 = std::f64::consts::FRAC_PI_2 - C1;
            self.in_f64(&[x, kf], &|fx, v| {
                let (c1, c2) = (fx.c64(v[0], C1), fx.c64(v[0], C2));
                let p = fx.b.ins().fmul(v[1], c1);
                let r = fx.b.ins().fsub(v[0], p);
                let p = fx.b.ins().fmul(v[1], c2);
                fx.b.ins().fsub(r, p)
            })
            .0
        };
        // For large |x| the f32 product x * 2/pi is off by up to half its
        // ulp, so k may be one off and |r| up to ~1.2: reduce once more
        // (k2 in {-1, 0, 1}: exact products, no FMA needed).
        let t2 = self.mulc(r, std::f32::consts::FRAC_2_PI);
        let (k2f, k2i) = self.round(t2);
        let nk2 = self.b.ins().fneg(k2f);
        let (c1, c2, c3) = (self.c(std::f32::consts::FRAC_PI_2), self.c(-4.371_139e-8), self.c(-1.715_124_5e-15));
        let p = self.mul(nk2, c1);
        let r = self.add(r, p);
        let p = self.mul(nk2, c2);
        let r = self.add(r, p);
        let p = self.mul(nk2, c3);
        let r = self.add(r, p);
        let ki = self.b.ins().iadd(ki, k2i);
        let z = self.mul(r, r);
        let ps = self.poly(z, &[-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1]);
        let ps = self.mul(ps, z);
        let s = self.fma(ps, r, r);
        // cos r = 1 - z/2 + z^2 P(z).
        let pc = self.poly(z, &[2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2]);
        let hz = self.c(-0.5);
        let pc = self.fma(pc, z, hz);
        let one = self.c(1.0);
        let c = self.fma(pc, z, one);
        // Quadrant q = k mod 4 (plus one for cos): odd q takes the cosine
        // polynomial, q in {2, 3} negates.
        let q = if cos { self.addi(ki, 1) } else { ki };
        let odd = self.andi(q, 1);
        let zero = self.ci(0);
        let use_c = self.icmp(IntCC::NotEqual, odd, zero);
        let v = self.sel(use_c, c, s);
        let neg = self.andi(q, 2);
        let neg = self.b.ins().ishl_imm_u(neg, 30);
        let vb = self.bits(v);
        let vb = self.b.ins().bxor(vb, neg);
        let v = self.float(vb);
        // Past |k| = 2^31 the quadrant is lost: say so rather than guess.
        let at = self.abs(t);
        let lost = self.cmpc(FloatCC::GreaterThanOrEqual, at, 2_147_483_648.0);
        self.selc(lost, f32::NAN, v)
    }
}

/// Below this `|x|`, erf uses its odd polynomial; from it on, `1 - erfc`.
const ERF_SPLIT: f32 = 0.875;
/// The normal tail is 0 in f32 from ~13.24 on; clamping to this keeps `a²`
/// and the Mills ratio's polynomials finite.
const TAIL_MAX: f32 = 16.0;

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::ir::{AbiParam, Function, Opcode, Signature, UserFuncName};
    use cranelift_codegen::isa::CallConv;
    use cranelift_frontend::FunctionBuilderContext;

    /// The arithmetic `f` emits for one f32x4 argument (FMA on): every
    /// instruction but constants, bitcasts and the return. Divisions are
    /// counted apart, being several times dearer.
    fn cost(f: &dyn Fn(&mut Fx, Value) -> Value) -> (usize, usize) {
        let mut sig = Signature::new(CallConv::SystemV);
        sig.params.push(AbiParam::new(types::F32X4));
        sig.returns.push(AbiParam::new(types::F32X4));
        let mut func = Function::with_name_signature(UserFuncName::default(), sig);
        let mut fctx = FunctionBuilderContext::new();
        let block = {
            let mut b = FunctionBuilder::new(&mut func, &mut fctx);
            let block = b.create_block();
            b.append_block_params_for_function_params(block);
            b.switch_to_block(block);
            let x = b.block_params(block)[0];
            let y = f(&mut Fx::new(&mut b, types::F32X4, true, None), x);
            b.ins().return_(&[y]);
            b.seal_all_blocks();
            block
        };
        let ops: Vec<Opcode> = func.layout.block_insts(block).map(|i| func.dfg.insts[i].opcode()).collect();
        let free = [Opcode::F32const, Opcode::Iconst, Opcode::Splat, Opcode::Bitcast, Opcode::Return];
        let divs = ops.iter().filter(|&&o| o == Opcode::Fdiv).count();
        (ops.iter().filter(|o| !free.contains(o)).count(), divs)
    }

    /// GELU and erf evaluate the normal tail once (density times Mills
    /// ratio, one division) rather than a small-argument and a
    /// large-argument approximation blended by a select: the f32x4 loop
    /// of `gelu(layernorm(x))` is bound by these instructions.
    #[test]
    fn gelu_and_erf_evaluate_one_tail() {
        let (gelu, gelu_divs) = cost(&|fx, x| fx.gelu(x));
        assert!(gelu <= 45 && gelu_divs == 1, "gelu: {gelu} ops, {gelu_divs} divisions");
        // erf adds its odd polynomial near 0 and the blend.
        let (erf, erf_divs) = cost(&|fx, x| fx.erf(x));
        assert!(erf <= 55 && erf_divs == 1, "erf: {erf} ops, {erf_divs} divisions");
    }
}
