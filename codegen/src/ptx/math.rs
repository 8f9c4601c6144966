//! f32 transcendentals on the special function unit plus range reduction.
//!
//! Error bounds (f32 inputs, against exact math; from the PTX ISA's bounds
//! for `ex2/lg2/sin/cos.approx` and the polynomials' truncation errors):
//! - exp: Cody–Waite reduction to |r| ≤ ln2/2, then `ex2.approx` (2^-22.5
//!   relative) and an exact power-of-two scale: ≤ 3 ulp.
//! - log: `lg2.approx` × ln2: 2^-22 relative, 2^-22.6·ln2 absolute for x
//!   in [0.5, 2] (so relative error grows as log x → 0 near x = 1).
//! - tanh: Cephes' odd polynomial below 0.625, else 1 − 2/(e^{2|x|}+1):
//!   ≤ 4 ulp.  sigmoid = 1/(1+e^{−x}), silu = x·sigmoid: ≤ 4 ulp.
//! - erf: Taylor series below 0.5 (≤ 2e-8 relative), Abramowitz–Stegun
//!   7.1.26 above (≤ 1.5e-7 absolute); gelu = x/2·(1+erf(x/√2)), so its
//!   absolute error is ≤ 1e-7·|x| (relative error is large only where
//!   gelu(x) is tiny, for x < −4).  gelu_tanh via tanh: ≤ 8 ulp.
//! - sin/cos: reduction by 2π (two-constant Cody–Waite), then
//!   `sin/cos.approx` (2^-20.9 absolute on [−π, π]): ≤ 1e-6 absolute for
//!   |x| ≤ 1e4, growing with |x| beyond.
//! - sqrt is correctly rounded; rsqrt = 1/sqrt with two roundings.
//! - pow (float): 2^(y·log2|x|) with the sign of odd integer powers of
//!   negative x, NaN for other negative bases, and pow(x, 0) = 1; relative
//!   error about 2^-22·|y·log2 x|.

use super::emit::Emitter;
use super::expr::f32_imm;
use super::regs::{Class, Reg};
use kiln_ir::UnaryOp;

const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const TWO_PI_HI: f32 = 6.283_185_5;
const TWO_PI_LO: f32 = -1.748_455_6e-7;

impl Emitter<'_> {
    fn f(&mut self) -> Reg {
        self.reg(Class::F32)
    }

    /// `op(x)` for a float unary op that is not simple arithmetic.
    pub fn math(&mut self, op: UnaryOp, x: Reg) -> Reg {
        match op {
            UnaryOp::Exp => self.exp(x),
            UnaryOp::Log => {
                let (l, r) = (self.f(), self.f());
                self.ins(format!("lg2.approx.f32 {l}, {x};"));
                self.ins(format!("mul.f32 {r}, {l}, {};", f32_imm(std::f32::consts::LN_2)));
                r
            }
            UnaryOp::Sqrt => self.op1("sqrt.rn.f32", x),
            UnaryOp::Rsqrt => {
                let s = self.op1("sqrt.rn.f32", x);
                let r = self.f();
                self.ins(format!("rcp.rn.f32 {r}, {s};"));
                r
            }
            UnaryOp::Tanh => self.tanh(x),
            UnaryOp::Sigmoid => self.sigmoid(x),
            UnaryOp::Silu => {
                let s = self.sigmoid(x);
                self.bin("mul.f32", x, s)
            }
            UnaryOp::Erf => self.erf(x),
            UnaryOp::Gelu => {
                let z = self.mulc(x, std::f32::consts::FRAC_1_SQRT_2);
                let e = self.erf(z);
                let h = self.mulc(x, 0.5);
                let r = self.f();
                self.ins(format!("fma.rn.f32 {r}, {h}, {e}, {h};"));
                r
            }
            UnaryOp::GeluTanh => {
                // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
                let x2 = self.bin("mul.f32", x, x);
                let inner = self.f();
                self.ins(format!("fma.rn.f32 {inner}, {x2}, {}, 0f3F800000;", f32_imm(0.044715)));
                let u = self.bin("mul.f32", x, inner);
                let u = self.mulc(u, 0.797_884_6);
                let t = self.tanh(u);
                let h = self.mulc(x, 0.5);
                let r = self.f();
                self.ins(format!("fma.rn.f32 {r}, {h}, {t}, {h};"));
                r
            }
            UnaryOp::Sin | UnaryOp::Cos => {
                let (k, r1, r2, out) = (self.f(), self.f(), self.f(), self.f());
                let q = self.mulc(x, 1.0 / TWO_PI_HI);
                self.ins(format!("cvt.rni.f32.f32 {k}, {q};"));
                self.ins(format!("fma.rn.f32 {r1}, {k}, {}, {x};", f32_imm(-TWO_PI_HI)));
                self.ins(format!("fma.rn.f32 {r2}, {k}, {}, {r1};", f32_imm(-TWO_PI_LO)));
                let name = if op == UnaryOp::Sin { "sin" } else { "cos" };
                self.ins(format!("{name}.approx.f32 {out}, {r2};"));
                out
            }
            // Arithmetic ops (neg, abs, relu, not) are rendered by `unary`.
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Not => unreachable!("`unary` renders {op:?}"),
        }
    }

    fn op1(&mut self, ins: &str, x: Reg) -> Reg {
        let r = self.f();
        self.ins(format!("{ins} {r}, {x};"));
        r
    }

    fn bin(&mut self, ins: &str, a: Reg, b: Reg) -> Reg {
        let r = self.f();
        self.ins(format!("{ins} {r}, {a}, {b};"));
        r
    }

    fn mulc(&mut self, x: Reg, k: f32) -> Reg {
        let r = self.f();
        self.ins(format!("mul.f32 {r}, {x}, {};", f32_imm(k)));
        r
    }

    /// Horner: `cs[0] + x·(cs[1] + x·(...))`.
    fn poly(&mut self, x: Reg, cs: &[f32]) -> Reg {
        let mut acc = self.f();
        self.ins(format!("mov.f32 {acc}, {};", f32_imm(cs[cs.len() - 1])));
        for c in cs.iter().rev().skip(1) {
            let r = self.f();
            self.ins(format!("fma.rn.f32 {r}, {acc}, {x}, {};", f32_imm(*c)));
            acc = r;
        }
        acc
    }

    /// `p · 2^n` for an integral f32 `n` in [-150, 130], exactly (two
    /// scale factors, each a normal power of two).
    fn scale2(&mut self, p: Reg, n: Reg) -> Reg {
        let (ni, n1, n2, b1, b2, s1, s2) = (self.reg(Class::B32), self.reg(Class::B32), self.reg(Class::B32), self.reg(Class::B32), self.reg(Class::B32), self.f(), self.f());
        self.ins(format!("cvt.rzi.s32.f32 {ni}, {n};"));
        self.ins(format!("shr.s32 {n1}, {ni}, 1;"));
        self.ins(format!("sub.s32 {n2}, {ni}, {n1};"));
        for (bits, k, s) in [(b1, n1, s1), (b2, n2, s2)] {
            self.ins(format!("add.s32 {bits}, {k}, 127;"));
            self.ins(format!("shl.b32 {bits}, {bits}, 23;"));
            self.ins(format!("mov.b32 {s}, {bits};"));
        }
        let a = self.bin("mul.f32", p, s1);
        self.bin("mul.f32", a, s2)
    }

    /// `e^x`.
    pub fn exp(&mut self, x: Reg) -> Reg {
        // Past these bounds e^x is 0 or ∞ in f32; clamping keeps 2^n
        // representable, and the `.NaN` forms let NaN through.
        let (c, n, r1, r2, p) = (self.f(), self.f(), self.f(), self.f(), self.f());
        self.ins(format!("max.NaN.f32 {c}, {x}, {};", f32_imm(-104.0)));
        self.ins(format!("min.NaN.f32 {c}, {c}, {};", f32_imm(89.0)));
        let q = self.mulc(c, std::f32::consts::LOG2_E);
        self.ins(format!("cvt.rni.f32.f32 {n}, {q};"));
        self.ins(format!("fma.rn.f32 {r1}, {n}, {}, {c};", f32_imm(-LN2_HI)));
        self.ins(format!("fma.rn.f32 {r2}, {n}, {}, {r1};", f32_imm(-LN2_LO)));
        let t = self.mulc(r2, std::f32::consts::LOG2_E);
        self.ins(format!("ex2.approx.f32 {p}, {t};"));
        self.scale2(p, n)
    }

    fn tanh(&mut self, x: Reg) -> Reg {
        let (a, small) = (self.f(), self.reg(Class::Pred));
        self.ins(format!("abs.f32 {a}, {x};"));
        self.ins(format!("setp.lt.f32 {small}, {a}, {};", f32_imm(0.625)));
        // Small: x + x³·P(x²) (Cephes tanhf).
        let x2 = self.bin("mul.f32", x, x);
        let p = self.poly(x2, &[-3.333_328e-1, 1.333_144_2e-1, -5.373_971_6e-2, 2.063_909e-2, -5.704_988_7e-3]);
        let x3 = self.bin("mul.f32", x2, x);
        let lo = self.f();
        self.ins(format!("fma.rn.f32 {lo}, {x3}, {p}, {x};"));
        // Large: 1 − 2/(e^{2|x|} + 1), with x's sign.
        let a2 = self.bin("add.f32", a, a);
        let e = self.exp(a2);
        let (d, q, hi, sgn, r) = (self.f(), self.f(), self.f(), self.f(), self.f());
        self.ins(format!("add.f32 {d}, {e}, 0f3F800000;"));
        self.ins(format!("div.rn.f32 {q}, 0f40000000, {d};"));
        self.ins(format!("sub.f32 {hi}, 0f3F800000, {q};"));
        self.ins(format!("copysign.f32 {sgn}, {x}, {hi};"));
        self.ins(format!("selp.f32 {r}, {lo}, {sgn}, {small};"));
        r
    }

    fn sigmoid(&mut self, x: Reg) -> Reg {
        let (n, d, r) = (self.f(), self.f(), self.f());
        self.ins(format!("neg.f32 {n}, {x};"));
        let e = self.exp(n);
        self.ins(format!("add.f32 {d}, {e}, 0f3F800000;"));
        self.ins(format!("rcp.rn.f32 {r}, {d};"));
        r
    }

    fn erf(&mut self, x: Reg) -> Reg {
        let (a, small) = (self.f(), self.reg(Class::Pred));
        self.ins(format!("abs.f32 {a}, {x};"));
        self.ins(format!("setp.lt.f32 {small}, {a}, 0f3F000000;"));
        // Small: 2/√π · (x − x³/3 + x⁵/10 − x⁷/42 + x⁹/216 − x¹¹/1320).
        let k = std::f32::consts::FRAC_2_SQRT_PI;
        let x2 = self.bin("mul.f32", x, x);
        let p = self.poly(x2, &[k, -k / 3.0, k / 10.0, -k / 42.0, k / 216.0, -k / 1320.0]);
        let lo = self.bin("mul.f32", x, p);
        // Large: 1 − t·P(t)·e^{−x²}, t = 1/(1 + 0.3275911·|x|).
        let (den, t, nx2) = (self.f(), self.f(), self.f());
        self.ins(format!("fma.rn.f32 {den}, {a}, {}, 0f3F800000;", f32_imm(0.327_591_1)));
        self.ins(format!("rcp.rn.f32 {t}, {den};"));
        let q = self.poly(t, &[0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4]);
        let tq = self.bin("mul.f32", t, q);
        self.ins(format!("neg.f32 {nx2}, {x2};"));
        let e = self.exp(nx2);
        let (hi, sgn, r) = (self.f(), self.f(), self.f());
        let tqe = self.bin("mul.f32", tq, e);
        self.ins(format!("sub.f32 {hi}, 0f3F800000, {tqe};"));
        self.ins(format!("copysign.f32 {sgn}, {x}, {hi};"));
        self.ins(format!("selp.f32 {r}, {lo}, {sgn}, {small};"));
        r
    }

    /// Float `x^y`.
    pub fn pow(&mut self, x: Reg, y: Reg) -> Reg {
        let (ax, l, t, n, f, p) = (self.f(), self.f(), self.f(), self.f(), self.f(), self.f());
        self.ins(format!("abs.f32 {ax}, {x};"));
        self.ins(format!("lg2.approx.f32 {l}, {ax};"));
        self.ins(format!("mul.f32 {t}, {y}, {l};"));
        self.ins(format!("max.NaN.f32 {t}, {t}, {};", f32_imm(-150.0)));
        self.ins(format!("min.NaN.f32 {t}, {t}, {};", f32_imm(130.0)));
        self.ins(format!("cvt.rni.f32.f32 {n}, {t};"));
        self.ins(format!("sub.f32 {f}, {t}, {n};"));
        self.ins(format!("ex2.approx.f32 {p}, {f};"));
        let m = self.scale2(p, n);
        // Negative bases: odd integer y flips the sign, other non-integers give NaN.
        let (yi, h, hi, int, odd, neg, negm, r, y0) = (self.f(), self.f(), self.f(), self.reg(Class::Pred), self.reg(Class::Pred), self.reg(Class::Pred), self.f(), self.f(), self.reg(Class::Pred));
        self.ins(format!("cvt.rzi.f32.f32 {yi}, {y};"));
        self.ins(format!("setp.eq.f32 {int}, {yi}, {y};"));
        self.ins(format!("mul.f32 {h}, {y}, 0f3F000000;"));
        self.ins(format!("cvt.rzi.f32.f32 {hi}, {h};"));
        self.ins(format!("setp.neu.f32 {odd}, {hi}, {h};"));
        self.ins(format!("neg.f32 {negm}, {m};"));
        self.ins(format!("selp.f32 {negm}, {negm}, {m}, {odd};"));
        self.ins(format!("selp.f32 {negm}, {negm}, 0f7FFFFFFF, {int};"));
        self.ins(format!("setp.lt.f32 {neg}, {x}, 0f00000000;"));
        self.ins(format!("selp.f32 {r}, {negm}, {m}, {neg};"));
        self.ins(format!("setp.eq.f32 {y0}, {y}, 0f00000000;"));
        self.ins(format!("selp.f32 {r}, 0f3F800000, {r}, {y0};"));
        r
    }
}
