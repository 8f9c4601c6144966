//! Scalar expressions: every node computes into a fresh register of its
//! compute dtype's class (ptxas folds and allocates).

use super::emit::Emitter;
use super::regs::{Class, Reg};
use super::PtxError;
use kiln_ir::kernel::Expr;
use kiln_ir::{BinaryOp, CmpOp, DType, UnaryOp};

/// The PTX arithmetic type suffix of a compute dtype.
pub(crate) fn arith(d: DType) -> &'static str {
    match d {
        DType::I32 => "s32",
        DType::I64 => "s64",
        _ => "f32",
    }
}

/// The untyped suffix for moves and selects.
pub(crate) fn bits(d: DType) -> &'static str {
    match d {
        DType::I32 => "b32",
        DType::I64 => "b64",
        _ => "f32",
    }
}

/// An f32 immediate in PTX's exact hex form.
pub(crate) fn f32_imm(v: f32) -> String {
    format!("0f{:08X}", v.to_bits())
}

impl Emitter<'_> {
    /// A constant of a compute dtype in a register.
    pub fn constant(&mut self, v: f64, d: DType) -> Reg {
        let r = self.reg(Class::of(d));
        match d {
            DType::Bool => {
                let t = self.reg(Class::B32);
                self.ins(format!("mov.u32 {t}, {};", (v != 0.0) as u8));
                self.ins(format!("setp.ne.u32 {r}, {t}, 0;"));
            }
            DType::I32 | DType::I64 => self.ins(format!("mov.{} {r}, {};", bits(d), v as i64)),
            _ => self.ins(format!("mov.f32 {r}, {};", f32_imm(v as f32))),
        }
        r
    }

    /// Computes an expression.
    pub fn expr(&mut self, e: &Expr) -> Result<Reg, PtxError> {
        Ok(match e {
            Expr::Const(v, d) => self.constant(*v, kiln_ir::kernel::verify::compute_dtype(*d)),
            Expr::Var(v) => *self.vars.get(v).ok_or_else(|| PtxError::Invalid(format!("kernel `{}`: v{} is unbound", self.k.name, v.0)))?,
            Expr::Tile => self.tile,
            Expr::Load(m, i) => {
                if let Some(r) = self.group.as_ref().and_then(|g| g.get(*m, i)) {
                    return Ok(r);
                }
                let i = self.expr(i)?;
                self.load(*m, i)
            }
            Expr::Unary(op, x) => {
                let d = self.dtype(x)?;
                let x = self.expr(x)?;
                self.unary(*op, d, x)?
            }
            Expr::Binary(op, a, b) => {
                let d = self.dtype(a)?;
                let b_const = match **b {
                    Expr::Const(v, _) => Some(v),
                    _ => None,
                };
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.binary(*op, d, a, b, b_const)
            }
            Expr::Rem(a, b) => {
                let b_const = match **b {
                    Expr::Const(v, _) => Some(v),
                    _ => None,
                };
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.int_div("rem", DType::I64, a, b, b_const)
            }
            Expr::Cmp(op, a, b) => {
                let d = self.dtype(a)?;
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                self.cmp(*op, d, a, b)
            }
            Expr::Select(c, a, b) => {
                let d = self.dtype(a)?;
                let (c, a, b) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                self.select(d, c, a, b)
            }
            Expr::Cast(to, x) => {
                let from = self.dtype(x)?;
                let x = self.expr(x)?;
                self.cast(x, from, *to)
            }
            Expr::Rand(seed, counter) => {
                let (s, c) = (self.expr(seed)?, self.expr(counter)?);
                self.rand(s, c)
            }
            Expr::Checked(c) => self.checked(c)?,
        })
    }

    /// `rng::uniform(seed, counter)`: SplitMix64's `counter`-th output
    /// in 64-bit integer ops, its top 24 bits scaled to `[0, 1)` (exact).
    fn rand(&mut self, seed: Reg, counter: Reg) -> Reg {
        use kiln_ir::rng::{GAMMA, MIX1, MIX2};
        let n = self.reg(Class::B64);
        self.ins(format!("add.u64 {n}, {counter}, 1;"));
        let mut z = self.reg(Class::B64);
        self.ins(format!("mad.lo.u64 {z}, {n}, 0x{GAMMA:016X}U, {seed};"));
        for (shift, mul) in [(30, Some(MIX1)), (27, Some(MIX2)), (31, None)] {
            let (hi, x) = (self.reg(Class::B64), self.reg(Class::B64));
            self.ins(format!("shr.u64 {hi}, {z}, {shift};"));
            self.ins(format!("xor.b64 {x}, {z}, {hi};"));
            z = x;
            if let Some(m) = mul {
                let y = self.reg(Class::B64);
                self.ins(format!("mul.lo.u64 {y}, {z}, 0x{m:016X}U;"));
                z = y;
            }
        }
        let top = self.reg(Class::B64);
        self.ins(format!("shr.u64 {top}, {z}, 40;"));
        let (f, r) = (self.reg(Class::F32), self.reg(Class::F32));
        self.ins(format!("cvt.rn.f32.u64 {f}, {top};"));
        self.ins(format!("mul.f32 {r}, {f}, {};", f32_imm(1.0 / (1u32 << 24) as f32)));
        r
    }

    /// `c ? a : b`.
    pub fn select(&mut self, d: DType, c: Reg, a: Reg, b: Reg) -> Reg {
        let r = self.reg(Class::of(d));
        if d == DType::Bool {
            // selp has no predicate form: (c & a) | (!c & b).
            let (nc, t, u) = (self.reg(Class::Pred), self.reg(Class::Pred), self.reg(Class::Pred));
            self.ins(format!("not.pred {nc}, {c};"));
            self.ins(format!("and.pred {t}, {c}, {a};"));
            self.ins(format!("and.pred {u}, {nc}, {b};"));
            self.ins(format!("or.pred {r}, {t}, {u};"));
        } else {
            self.ins(format!("selp.{} {r}, {a}, {b}, {c};", bits(d)));
        }
        r
    }

    fn cmp(&mut self, op: CmpOp, d: DType, a: Reg, b: Reg) -> Reg {
        let (a, b, d) = if d == DType::Bool { (self.bool_to_u32(a), self.bool_to_u32(b), DType::I32) } else { (a, b, d) };
        let name = match op {
            CmpOp::Eq => "eq",
            // IEEE: NaN != anything holds, so the unordered form for floats.
            CmpOp::Ne if d.is_float() => "neu",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        };
        let r = self.reg(Class::Pred);
        self.ins(format!("setp.{name}.{} {r}, {a}, {b};", arith(d)));
        r
    }

    /// A bool as 0 or 1 in a 32-bit register.
    pub fn bool_to_u32(&mut self, p: Reg) -> Reg {
        let r = self.reg(Class::B32);
        self.ins(format!("selp.u32 {r}, 1, 0, {p};"));
        r
    }

    fn unary(&mut self, op: UnaryOp, d: DType, x: Reg) -> Result<Reg, PtxError> {
        if d == DType::Bool {
            let r = self.reg(Class::Pred);
            self.ins(format!("not.pred {r}, {x};"));
            return Ok(r);
        }
        let r = self.reg(Class::of(d));
        let t = arith(d);
        match op {
            UnaryOp::Neg => self.ins(format!("neg.{t} {r}, {x};")),
            UnaryOp::Abs => self.ins(format!("abs.{t} {r}, {x};")),
            // Integer relu; the float one keeps NaN (`x < 0 ? 0 : x`).
            UnaryOp::Relu if d.is_int() => self.ins(format!("max.{t} {r}, {x}, 0;")),
            UnaryOp::Relu => {
                let p = self.reg(Class::Pred);
                self.ins(format!("setp.lt.f32 {p}, {x}, 0f00000000;"));
                self.ins(format!("selp.f32 {r}, 0f00000000, {x}, {p};"));
            }
            _ if d.is_int() => return Err(PtxError::Invalid(format!("kernel `{}`: {op:?} of {d}", self.k.name))),
            _ => return Ok(self.math(op, x)),
        }
        Ok(r)
    }

    fn binary(&mut self, op: BinaryOp, d: DType, a: Reg, b: Reg, b_const: Option<f64>) -> Reg {
        let r = self.reg(Class::of(d));
        let t = arith(d);
        match op {
            BinaryOp::And => self.ins(format!("and.pred {r}, {a}, {b};")),
            BinaryOp::Or => self.ins(format!("or.pred {r}, {a}, {b};")),
            BinaryOp::Add => self.ins(format!("add.{t} {r}, {a}, {b};")),
            BinaryOp::Sub => self.ins(format!("sub.{t} {r}, {a}, {b};")),
            BinaryOp::Mul if d.is_int() => self.ins(format!("mul.lo.{t} {r}, {a}, {b};")),
            BinaryOp::Mul => self.ins(format!("mul.f32 {r}, {a}, {b};")),
            BinaryOp::Div if d.is_int() => return self.int_div("div", d, a, b, b_const),
            BinaryOp::Div => self.ins(format!("div.rn.f32 {r}, {a}, {b};")),
            // sm_80's `.NaN` forms propagate NaN, as the kernel IR requires.
            BinaryOp::Max if d.is_int() => self.ins(format!("max.{t} {r}, {a}, {b};")),
            BinaryOp::Max => self.ins(format!("max.NaN.f32 {r}, {a}, {b};")),
            BinaryOp::Min if d.is_int() => self.ins(format!("min.{t} {r}, {a}, {b};")),
            BinaryOp::Min => self.ins(format!("min.NaN.f32 {r}, {a}, {b};")),
            BinaryOp::Pow if d.is_int() => return self.int_pow(d, a, b),
            BinaryOp::Pow => return self.pow(a, b),
        }
        r
    }

    /// Integer `div`/`rem`; by zero gives 0 (as on the CPU backend) unless
    /// the divisor is a nonzero constant.
    fn int_div(&mut self, op: &str, d: DType, a: Reg, b: Reg, b_const: Option<f64>) -> Reg {
        let (r, t, bt) = (self.reg(Class::of(d)), arith(d), bits(d));
        if b_const.is_some_and(|v| v != 0.0) {
            self.ins(format!("{op}.{t} {r}, {a}, {b};"));
            return r;
        }
        let (z, safe, q) = (self.reg(Class::Pred), self.reg(Class::of(d)), self.reg(Class::of(d)));
        self.ins(format!("setp.eq.{t} {z}, {b}, 0;"));
        self.ins(format!("selp.{bt} {safe}, 1, {b}, {z};"));
        self.ins(format!("{op}.{t} {q}, {a}, {safe};"));
        self.ins(format!("selp.{bt} {r}, 0, {q}, {z};"));
        r
    }

    /// Integer power by squaring; negative exponents as `kiln_ir::int_pow`
    /// (0 for |a| > 1, ±1 for a = ±1; 0 where the interpreter reports 0⁻ⁿ).
    fn int_pow(&mut self, d: DType, a: Reg, b: Reg) -> Reg {
        let (t, bt, c) = (arith(d), bits(d), Class::of(d));
        let (acc, base, e, bit, p) = (self.reg(c), self.reg(c), self.reg(c), self.reg(c), self.reg(Class::Pred));
        let (head, end) = (self.label(), self.label());
        self.ins(format!("mov.{bt} {acc}, 1;"));
        self.ins(format!("mov.{bt} {base}, {a};"));
        self.ins(format!("max.{t} {e}, {b}, 0;"));
        self.place(&head);
        self.ins(format!("setp.le.{t} {p}, {e}, 0;"));
        self.ins(format!("@{p} bra {end};"));
        let (odd, prod) = (self.reg(Class::Pred), self.reg(c));
        self.ins(format!("and.{bt} {bit}, {e}, 1;"));
        self.ins(format!("setp.ne.{t} {odd}, {bit}, 0;"));
        self.ins(format!("mul.lo.{t} {prod}, {acc}, {base};"));
        self.ins(format!("selp.{bt} {acc}, {prod}, {acc}, {odd};"));
        self.ins(format!("mul.lo.{t} {base}, {base}, {base};"));
        self.ins(format!("shr.{t} {e}, {e}, 1;"));
        self.ins(format!("bra {head};"));
        self.place(&end);
        // b < 0: 1 if a == 1; (-1)^b if a == -1; else 0.
        let (neg, one, mone, ob, sign, small, r) = (self.reg(Class::Pred), self.reg(Class::Pred), self.reg(Class::Pred), self.reg(c), self.reg(c), self.reg(c), self.reg(c));
        self.ins(format!("setp.lt.{t} {neg}, {b}, 0;"));
        self.ins(format!("setp.eq.{t} {one}, {a}, 1;"));
        self.ins(format!("setp.eq.{t} {mone}, {a}, -1;"));
        self.ins(format!("and.{bt} {ob}, {b}, 1;"));
        self.ins(format!("mad.lo.{t} {sign}, {ob}, -2, 1;"));
        self.ins(format!("selp.{bt} {small}, {sign}, 0, {mone};"));
        self.ins(format!("selp.{bt} {small}, 1, {small}, {one};"));
        self.ins(format!("selp.{bt} {r}, {small}, {acc}, {neg};"));
        r
    }

    /// Converts between compute dtypes; a cast to bf16/f16 rounds to the
    /// half type and back (the kernel IR computes halves in f32).
    pub fn cast(&mut self, x: Reg, from: DType, to: DType) -> Reg {
        let cto = kiln_ir::kernel::verify::compute_dtype(to);
        let r = match (from, cto) {
            (f, t) if f == t => x,
            (DType::Bool, t) => {
                let u = self.bool_to_u32(x);
                self.cast(u, DType::I32, t)
            }
            (f, DType::Bool) => {
                let p = self.reg(Class::Pred);
                let ne = if f.is_float() { "neu" } else { "ne" };
                let zero = if f.is_float() { "0f00000000" } else { "0" };
                self.ins(format!("setp.{ne}.{} {p}, {x}, {zero};", arith(f)));
                p
            }
            (DType::F32, t) => {
                // Truncate; NaN gives 0 and out-of-range values saturate in
                // i64, then wrap to i32 (as the CPU backend does).
                let w = self.reg(Class::B64);
                self.ins(format!("cvt.rzi.s64.f32 {w}, {x};"));
                self.cast(w, DType::I64, t)
            }
            (f, DType::F32) => {
                let r = self.reg(Class::F32);
                self.ins(format!("cvt.rn.f32.{} {r}, {x};", arith(f)));
                r
            }
            (DType::I64, _) => {
                let r = self.reg(Class::B32);
                self.ins(format!("cvt.u32.u64 {r}, {x};"));
                r
            }
            _ => {
                let r = self.reg(Class::B64);
                self.ins(format!("cvt.s64.s32 {r}, {x};"));
                r
            }
        };
        match to {
            DType::BF16 | DType::F16 => {
                let h = self.half_bits(r, to);
                self.widen_half(h, to)
            }
            _ => r,
        }
    }

    /// Rounds an f32 to bf16/f16 bits.
    pub fn half_bits(&mut self, x: Reg, d: DType) -> Reg {
        let h = self.reg(Class::B16);
        let t = if d == DType::BF16 { "bf16" } else { "f16" };
        self.ins(format!("cvt.rn.{t}.f32 {h}, {x};"));
        h
    }

    /// Widens bf16/f16 bits to f32 (exact).
    pub fn widen_half(&mut self, h: Reg, d: DType) -> Reg {
        let r = self.reg(Class::F32);
        if d == DType::BF16 {
            // bf16 is the top half of an f32 (cvt.f32.bf16 needs sm_90).
            let (z, w) = (self.reg(Class::B16), self.reg(Class::B32));
            self.ins(format!("mov.b16 {z}, 0;"));
            self.ins(format!("mov.b32 {w}, {{{z}, {h}}};"));
            self.ins(format!("mov.b32 {r}, {w};"));
        } else {
            self.ins(format!("cvt.f32.f16 {r}, {h};"));
        }
        r
    }
}

impl Emitter<'_> {
    /// A checked index ([`kiln_ir::kernel::check`]) without branches: a
    /// miss raises the status words with a predicated atomic max (and,
    /// when it raised them, a store of the index); the result is the
    /// index clamped into range.
    fn checked(&mut self, c: &kiln_ir::kernel::check::Checked) -> Result<Reg, PtxError> {
        use kiln_ir::kernel::check::{code_base, POS_MAX};
        let kiln_ir::kernel::Mem::Arg(s) = c.status else {
            return Err(PtxError::Invalid(format!("kernel `{}`: a status word in scratch memory", self.k.name)));
        };
        let status = self.bases[s as usize];
        let (i, pos) = (self.expr(&c.index)?, self.expr(&c.pos)?);
        let (miss, won) = (self.reg(Class::Pred), self.reg(Class::Pred));
        // Unsigned: a negative index is a huge one.
        self.ins(format!("setp.ge.u64 {miss}, {i}, {};", c.bound));
        let (p, code, old) = (self.reg(Class::B64), self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("min.u64 {p}, {pos}, {POS_MAX};"));
        self.ins(format!("sub.u64 {code}, 0x{:016X}U, {p};", code_base(c.site)));
        self.ins(format!("mov.u64 {old}, 0x{:016X}U;", u64::MAX));
        self.ins(format!("@{miss} atom.global.max.u64 {old}, [{status}], {code};"));
        self.ins(format!("setp.gt.u64 {won}, {code}, {old};"));
        self.ins(format!("@{won} st.global.u64 [{status}+8], {i};"));
        let (t, r) = (self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("max.s64 {t}, {i}, 0;"));
        self.ins(format!("min.s64 {r}, {t}, {};", c.clamp_max()));
        Ok(r)
    }
}
