//! Vectorization of `vector: true` loops and reductions, four f32 lanes
//! (`f32x4`) at a time, with a scalar tail for `extent % 4`.
//!
//! Each expression of the vectorized body gets one of these shapes
//! ([`VV`]): uniform across lanes (computed once, as a scalar), affine in
//! the loop variable (`base + stride * lane`, i64 indices), an `f32x4`,
//! an `i32x4` lane mask (bool from a float comparison, or from an integer
//! one of an affine index against a uniform value), or four separate
//! scalars (anything else: integer and bool lanes, gathers). Loads and
//! stores whose index is affine with stride 1 are 128-bit (f32) or 64-bit
//! (f16/bf16, converted in vector registers) accesses, and bool ones a
//! 32-bit load widened to a lane mask; stride 0 (a
//! uniform index) is a scalar load and a splat; other indices are gathers
//! and scatters of four scalar accesses.
//!
//! A loop qualifies when its body is only `let`s and stores, at least one
//! store writes float memory, and no variable it defines is used after it.
//! A reduction qualifies when it is a sum, max or min of an f32 value; sums
//! (and max/min) keep up to four independent vector accumulators, combined
//! and reduced horizontally at the end. Everything else runs scalar.

use super::lower::{clty, data_flags, float_cc, int_cc, Lowerer, R};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;
use kiln_ir::kernel::{verify, Expr, Mem, RedOp, Stmt, Var};
use kiln_ir::{BinaryOp, CmpOp, DType, UnaryOp};
use std::collections::HashMap;

/// Lanes per vector.
const W: u64 = 4;

/// The lanes of one vectorized expression.
#[derive(Clone, Copy, Debug)]
pub(crate) enum VV {
    /// The same scalar in every lane.
    Uni(Value),
    /// i64 `base + stride * lane`, stride not 0.
    Aff(Value, i64),
    /// An `f32x4`.
    F(Value),
    /// A bool as an `i32x4` mask (all ones or zero per lane).
    M(Value),
    /// One scalar per lane (of the expression's type; bool is i8 0/1).
    L([Value; 4]),
}

/// The vector values of the variables the vectorized body defines (and of
/// its loop index), with their compute dtypes.
pub(crate) type VEnv = HashMap<Var, (VV, DType)>;

fn is_float_storage(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16)
}

impl<'f, 'k> Lowerer<'f, 'k> {
    /// Emits a `vector: true` loop with f32x4 lanes if it qualifies;
    /// `false` leaves it to the scalar path.
    pub(crate) fn vector_loop(&mut self, var: Var, extent: u64, body: &'k [Stmt]) -> R<bool> {
        if extent < W || !self.loop_qualifies(var, body)? {
            return Ok(false);
        }
        let groups = extent / W;
        self.venv = Some(HashMap::new());
        let res = self.repeat(0, groups, W as i64, &mut |l, i| {
            l.set_lane(var, VV::Aff(i, 1), DType::I64);
            for s in body {
                l.vstmt(s)?;
            }
            Ok(())
        });
        self.venv = None;
        res?;
        let v = self.var(var, DType::I64);
        for t in groups * W..extent {
            let i = self.iconst(types::I64, t as i64);
            self.b.def_var(v, i);
            self.block(body)?;
        }
        Ok(true)
    }

    fn loop_qualifies(&mut self, var: Var, body: &'k [Stmt]) -> R<bool> {
        let mut defs = vec![var];
        let mut float_store = false;
        for s in body {
            match s {
                Stmt::Let { var, .. } => defs.push(*var),
                Stmt::Store { mem, .. } => float_store |= is_float_storage(self.storage(*mem)?),
                _ => return Ok(false),
            }
        }
        if !float_store {
            return Ok(false);
        }
        let mut outside = Vec::new();
        uses_outside(&self.k.body, body, &mut outside);
        Ok(!defs.iter().any(|d| outside.contains(d)))
    }

    /// Emits a `vector: true` reduction with f32x4 accumulators if it
    /// qualifies; `false` leaves it to the scalar path.
    ///
    /// Max/min accumulate with `maxps`/`minps` (which drop a NaN in the new
    /// term) and keep a separate mask of lanes that saw a NaN, applied at
    /// the end: three instructions a step instead of Cranelift's
    /// NaN-exact eight.
    pub(crate) fn vector_reduce(&mut self, var: Var, op: RedOp, index: Var, extent: u64, value: &'k Expr) -> R<bool> {
        self.var(index, DType::I64);
        if op == RedOp::ArgMax || extent < W || self.dtype_of(value)? != DType::F32 {
            return Ok(false);
        }
        let groups = extent / W;
        // Independent accumulators hide the add/max latency; a body that is
        // already long (exp in a softmax sum) needs fewer.
        let unroll = match (groups, expr_size(value)) {
            (g, s) if g >= 16 && s <= 24 => 4,
            (g, _) if g >= 4 => 2,
            _ => 1,
        };
        let init = self.red_init(op, DType::F32)?;
        let init = self.b.ins().splat(types::F32X4, init);
        let no_nan = self.b.ins().iconst(types::I32, 0);
        let no_nan = self.b.ins().splat(types::I32X4, no_nan);
        let mut accs = Vec::new();
        for _ in 0..unroll {
            let a = self.b.declare_var(types::F32X4);
            self.b.def_var(a, init);
            let n = self.b.declare_var(types::I32X4);
            self.b.def_var(n, no_nan);
            accs.push((a, n));
        }
        let main = groups / unroll;
        self.venv = Some(HashMap::new());
        let step = (W * unroll) as i64;
        let mut res = self.repeat(0, main, step, &mut |l, i| {
            for (u, &acc) in accs.iter().enumerate() {
                let base = if u == 0 { i } else { l.b.ins().iadd_imm_s(i, (u as u64 * W) as i64) };
                l.vreduce_step(op, index, base, value, acc)?;
            }
            Ok(())
        });
        for g in main * unroll..groups {
            if res.is_err() {
                break;
            }
            let base = self.iconst(types::I64, (g * W) as i64);
            res = self.vreduce_step(op, index, base, value, accs[(g - main * unroll) as usize]);
        }
        self.venv = None;
        res?;
        // Combine the accumulators (NaN lanes become NaN), then the lanes.
        let mut acc = None;
        for &(a, n) in &accs {
            let mut x = self.b.use_var(a);
            if op != RedOp::Sum {
                let nan = self.b.use_var(n);
                let mut fx = self.fx(types::F32X4);
                x = fx.selc(nan, f32::NAN, x);
            }
            acc = Some(match acc {
                None => x,
                Some(y) => self.red_step(op, DType::F32, y, x)?,
            });
        }
        let acc = acc.ok_or_else(|| self.unsupported("a reduction without accumulators"))?;
        let l: Vec<Value> = (0..4u8).map(|i| self.b.ins().extractlane(acc, i)).collect();
        let a = self.red_step(op, DType::F32, l[0], l[1])?;
        let c = self.red_step(op, DType::F32, l[2], l[3])?;
        let mut s = self.red_step(op, DType::F32, a, c)?;
        let iv = self.var(index, DType::I64);
        for t in groups * W..extent {
            let i = self.iconst(types::I64, t as i64);
            self.b.def_var(iv, i);
            let (x, _) = self.expr(value)?;
            s = self.red_step(op, DType::F32, s, x)?;
        }
        let v = self.var(var, DType::F32);
        self.b.def_var(v, s);
        Ok(true)
    }

    /// Adds the four terms at `base..base+4` into vector accumulator `acc`
    /// (and, for max/min, its NaN mask).
    fn vreduce_step(&mut self, op: RedOp, index: Var, base: Value, value: &'k Expr, acc: (Variable, Variable)) -> R<()> {
        self.set_lane(index, VV::Aff(base, 1), DType::I64);
        let (vv, _) = self.vexpr(value)?;
        let x = self.vf(vv)?;
        let a = self.b.use_var(acc.0);
        let n = match op {
            RedOp::Sum => self.b.ins().fadd(a, x),
            _ => {
                let nan = self.b.use_var(acc.1);
                let mut fx = self.fx(types::F32X4);
                let isnan = fx.cmp(FloatCC::Unordered, x, x);
                let nan = fx.b.ins().bor(nan, isnan);
                fx.b.def_var(acc.1, nan);
                // x > a ? x : a (maxps x, a) and x < a ? x : a (minps x, a).
                let better = if op == RedOp::Max { fx.cmp(FloatCC::LessThan, a, x) } else { fx.cmp(FloatCC::LessThan, x, a) };
                fx.sel(better, x, a)
            }
        };
        self.b.def_var(acc.0, n);
        Ok(())
    }

    fn set_lane(&mut self, v: Var, vv: VV, d: DType) {
        self.dtypes.insert(v, d);
        if let Some(env) = self.venv.as_mut() {
            env.insert(v, (vv, d));
        }
    }

    fn vstmt(&mut self, s: &'k Stmt) -> R<()> {
        match s {
            Stmt::Let { var, value } => {
                let (vv, d) = self.vexpr(value)?;
                self.set_lane(*var, vv, d);
                Ok(())
            }
            Stmt::Store { mem, index, value } => self.vstore(*mem, index, value),
            _ => Err(self.unsupported("a nested statement in a vectorized loop")),
        }
    }

    /// Whether `e` is the same in every lane (reads no lane variable).
    fn uniform(&self, e: &Expr) -> bool {
        let env = match &self.venv {
            Some(env) => env,
            None => return true,
        };
        fn go(env: &VEnv, e: &Expr) -> bool {
            match e {
                Expr::Const(..) | Expr::Tile => true,
                Expr::Var(v) => !env.contains_key(v),
                Expr::Load(_, i) | Expr::Unary(_, i) | Expr::Cast(_, i) => go(env, i),
                Expr::Binary(_, a, b) | Expr::Rem(a, b) | Expr::Cmp(_, a, b) | Expr::Rand(a, b) => go(env, a) && go(env, b),
                Expr::Select(c, a, b) => go(env, c) && go(env, a) && go(env, b),
                Expr::Checked(c) => go(env, &c.index) && go(env, &c.pos),
            }
        }
        go(env, e)
    }

    /// The lanes of an expression.
    fn vexpr(&mut self, e: &'k Expr) -> R<(VV, DType)> {
        if self.uniform(e) {
            let (v, d) = self.expr(e)?;
            return Ok((VV::Uni(v), d));
        }
        Ok(match e {
            Expr::Const(..) | Expr::Tile => unreachable!("constants are uniform"),
            Expr::Var(v) => self.venv.as_ref().and_then(|env| env.get(v).copied()).ok_or_else(|| self.unsupported("a lost lane variable"))?,
            Expr::Load(m, i) => {
                let (ix, _) = self.vexpr(i)?;
                self.vload(*m, ix)?
            }
            Expr::Unary(op, x) => {
                let (vx, d) = self.vexpr(x)?;
                (self.vunary(*op, d, vx)?, d)
            }
            Expr::Binary(op, a, b) => {
                let (va, d) = self.vexpr(a)?;
                if let (BinaryOp::Pow, DType::F32, Expr::Const(c, _)) = (op, d, &**b) {
                    let x = self.vf(va)?;
                    if let Some(v) = self.pow_const(x, *c, types::F32X4) {
                        return Ok((VV::F(v), d));
                    }
                }
                let (vb, _) = self.vexpr(b)?;
                (self.vbinary(*op, d, va, vb)?, d)
            }
            Expr::Rem(a, b) => {
                let (va, d) = self.vexpr(a)?;
                let (vb, _) = self.vexpr(b)?;
                let (la, lb) = (self.lanes(va, d)?, self.lanes(vb, d)?);
                (VV::L(std::array::from_fn(|i| self.int_divrem(true, la[i], lb[i]))), d)
            }
            Expr::Cmp(op, a, b) => {
                let (va, d) = self.vexpr(a)?;
                let (vb, _) = self.vexpr(b)?;
                let r = if d == DType::F32 {
                    let (x, y) = (self.vf(va)?, self.vf(vb)?);
                    VV::M(self.b.ins().fcmp(float_cc(*op), x, y))
                } else if let Some(m) = self.affine_cmp(*op, d, va, vb) {
                    VV::M(m)
                } else {
                    let (la, lb) = (self.lanes(va, d)?, self.lanes(vb, d)?);
                    VV::L(std::array::from_fn(|i| self.cmp(*op, d, la[i], lb[i])))
                };
                (r, DType::Bool)
            }
            Expr::Select(c, a, b) => {
                let (vc, _) = self.vexpr(c)?;
                let (va, d) = self.vexpr(a)?;
                let (vb, _) = self.vexpr(b)?;
                (self.vselect(d, vc, va, vb)?, d)
            }
            Expr::Cast(to, x) => {
                let (vx, from) = self.vexpr(x)?;
                (self.vcast(from, *to, vx)?, verify::compute_dtype(*to))
            }
            // 64-bit multiplies have no f32x4 form: one scalar draw per lane.
            Expr::Rand(seed, counter) => {
                let (vs, _) = self.vexpr(seed)?;
                let (vc, _) = self.vexpr(counter)?;
                let (ls, lc) = (self.lanes(vs, DType::I64)?, self.lanes(vc, DType::I64)?);
                (VV::L(std::array::from_fn(|i| self.rand(ls[i], lc[i]))), DType::F32)
            }
            // One scalar check per lane (the index path of a gather).
            Expr::Checked(c) => {
                let (vi, _) = self.vexpr(&c.index)?;
                let (vp, _) = self.vexpr(&c.pos)?;
                let (li, lp) = (self.lanes(vi, DType::I64)?, self.lanes(vp, DType::I64)?);
                let mut out = li;
                for (o, (&i, &p)) in out.iter_mut().zip(li.iter().zip(&lp)) {
                    *o = self.checked(c, i, &mut |_| Ok(p))?;
                }
                (VV::L(out), DType::I64)
            }
        })
    }

    /// `x op y` for an i64 `x` affine in the loop index and a uniform `y`
    /// (on either side) as a lane mask, without splitting the lanes (a
    /// causal mask's `key > query` in attention): lane `i` holds iff
    /// `s·i op y − base`, compared in i32 lanes after clamping `y − base`
    /// to i32, which is exact while `|3s| < 2^30` (the clamp only moves
    /// values beyond every lane's `s·i`). `None` for other operands.
    fn affine_cmp(&mut self, op: CmpOp, d: DType, a: VV, b: VV) -> Option<Value> {
        let (base, s, y, op) = match (d, a, b) {
            (DType::I64, VV::Aff(x, s), VV::Uni(y)) => (x, s, y, op),
            (DType::I64, VV::Uni(y), VV::Aff(x, s)) => {
                let swapped = match op {
                    CmpOp::Lt => CmpOp::Gt,
                    CmpOp::Le => CmpOp::Ge,
                    CmpOp::Gt => CmpOp::Lt,
                    CmpOp::Ge => CmpOp::Le,
                    o => o,
                };
                (x, s, y, swapped)
            }
            _ => return None,
        };
        if s.unsigned_abs() >= 1 << 28 {
            return None;
        }
        let t = self.b.ins().isub(y, base);
        let hi = self.b.ins().iconst(types::I64, i32::MAX as i64);
        let lo = self.b.ins().iconst(types::I64, i32::MIN as i64);
        let t = self.b.ins().smin(t, hi);
        let t = self.b.ins().smax(t, lo);
        let t = self.b.ins().ireduce(types::I32, t);
        let t = self.b.ins().splat(types::I32X4, t);
        let lanes: Vec<u8> = (0..4).flat_map(|i| ((s * i) as i32).to_le_bytes()).collect();
        let c = self.b.func.dfg.constants.insert(lanes.into());
        let l = self.b.ins().vconst(types::I32X4, c);
        Some(self.b.ins().icmp(int_cc(op), l, t))
    }

    fn vunary(&mut self, op: UnaryOp, d: DType, vx: VV) -> R<VV> {
        Ok(match (d, vx) {
            (DType::F32, _) => {
                let x = self.vf(vx)?;
                VV::F(self.funary(op, x, types::F32X4)?)
            }
            (DType::I64, VV::Aff(b, s)) if op == UnaryOp::Neg => VV::Aff(self.b.ins().ineg(b), -s),
            (DType::Bool, VV::M(m)) if op == UnaryOp::Not => VV::M(self.b.ins().bnot(m)),
            _ => {
                let l = self.lanes(vx, d)?;
                let mut out = l;
                for (o, x) in out.iter_mut().zip(l) {
                    *o = self.unary(op, d, x)?;
                }
                VV::L(out)
            }
        })
    }

    fn vbinary(&mut self, op: BinaryOp, d: DType, va: VV, vb: VV) -> R<VV> {
        use VV::{Aff, Uni};
        if d == DType::F32 {
            let (x, y) = (self.vf(va)?, self.vf(vb)?);
            return Ok(VV::F(self.fbinary(op, x, y, types::F32X4)?));
        }
        if d == DType::I64 {
            // A stride that cancels to 0 leaves a uniform value.
            let aff = |b: Value, s: i64| if s == 0 { Uni(b) } else { Aff(b, s) };
            let r = match (op, va, vb) {
                (BinaryOp::Add, Aff(b, s), Uni(u)) | (BinaryOp::Add, Uni(u), Aff(b, s)) => Some(Aff(self.b.ins().iadd(b, u), s)),
                (BinaryOp::Add, Aff(b1, s1), Aff(b2, s2)) => {
                    let b = self.b.ins().iadd(b1, b2);
                    Some(aff(b, s1 + s2))
                }
                (BinaryOp::Sub, Aff(b, s), Uni(u)) => Some(Aff(self.b.ins().isub(b, u), s)),
                (BinaryOp::Sub, Uni(u), Aff(b, s)) => Some(Aff(self.b.ins().isub(u, b), -s)),
                (BinaryOp::Sub, Aff(b1, s1), Aff(b2, s2)) => {
                    let b = self.b.ins().isub(b1, b2);
                    Some(aff(b, s1 - s2))
                }
                (BinaryOp::Mul, Aff(b, s), Uni(u)) | (BinaryOp::Mul, Uni(u), Aff(b, s)) => match self.const_of(u) {
                    Some(c) => {
                        let b = self.b.ins().imul(b, u);
                        Some(aff(b, s.wrapping_mul(c)))
                    }
                    None => None,
                },
                _ => None,
            };
            if let Some(r) = r {
                return Ok(r);
            }
        }
        if d == DType::Bool && (matches!(va, VV::M(_)) || matches!(vb, VV::M(_))) {
            let (x, y) = (self.vmask(va)?, self.vmask(vb)?);
            return Ok(VV::M(match op {
                BinaryOp::And | BinaryOp::Min => self.b.ins().band(x, y),
                BinaryOp::Or | BinaryOp::Max => self.b.ins().bor(x, y),
                _ => return Err(self.unsupported(format!("{op:?} on bool"))),
            }));
        }
        let (la, lb) = (self.lanes(va, d)?, self.lanes(vb, d)?);
        let mut out = la;
        for i in 0..4 {
            out[i] = self.binary(op, d, la[i], lb[i])?;
        }
        Ok(VV::L(out))
    }

    fn vselect(&mut self, d: DType, vc: VV, va: VV, vb: VV) -> R<VV> {
        Ok(match d {
            DType::F32 => {
                let (x, y) = (self.vf(va)?, self.vf(vb)?);
                match vc {
                    VV::Uni(c) => VV::F(self.b.ins().select(c, x, y)),
                    _ => {
                        let m = self.vmask(vc)?;
                        let m = self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), m);
                        VV::F(self.b.ins().bitselect(m, x, y))
                    }
                }
            }
            DType::Bool if [vc, va, vb].iter().any(|v| matches!(v, VV::M(_))) => {
                let (c, x, y) = (self.vmask(vc)?, self.vmask(va)?, self.vmask(vb)?);
                VV::M(self.b.ins().bitselect(c, x, y))
            }
            _ => {
                let (lc, la, lb) = (self.lanes(vc, DType::Bool)?, self.lanes(va, d)?, self.lanes(vb, d)?);
                VV::L(std::array::from_fn(|i| self.b.ins().select(lc[i], la[i], lb[i])))
            }
        })
    }

    fn vcast(&mut self, from: DType, to: DType, vx: VV) -> R<VV> {
        let to_c = verify::compute_dtype(to);
        match (from, to_c) {
            (DType::F32, DType::F32) => {
                let x = self.vf(vx)?;
                let mut fx = self.fx(types::F32X4);
                return Ok(VV::F(match to {
                    DType::F16 => fx.round_f16(x),
                    DType::BF16 => fx.round_bf16(x),
                    _ => x,
                }));
            }
            (DType::F32, DType::Bool) => {
                let x = self.vf(vx)?;
                let z = self.fx(types::F32X4).c(0.0);
                return Ok(VV::M(self.b.ins().fcmp(FloatCC::NotEqual, x, z)));
            }
            (DType::Bool, DType::F32) if matches!(vx, VV::M(_)) => {
                // Mask & bits(1.0) is 1.0 or +0.0.
                let m = self.vmask(vx)?;
                let one = self.fx(types::F32X4).ci(1.0f32.to_bits() as i32);
                let r = self.b.ins().band(m, one);
                return Ok(VV::F(self.b.ins().bitcast(types::F32X4, MemFlagsData::new(), r)));
            }
            (a, b) if a == b => return Ok(vx),
            _ => {}
        }
        let l = self.lanes(vx, from)?;
        let mut out = l;
        for i in 0..4 {
            out[i] = self.cast(from, to, l[i])?;
        }
        Ok(if to_c == DType::F32 { VV::F(self.pack(types::F32X4, out)) } else { VV::L(out) })
    }

    fn vload(&mut self, m: Mem, ix: VV) -> R<(VV, DType)> {
        let st = self.storage(m)?;
        let d = verify::compute_dtype(st);
        match ix {
            VV::Uni(i) => {
                let (v, d) = self.load(m, i)?;
                return Ok((VV::Uni(v), d));
            }
            VV::Aff(base, 1) if is_float_storage(st) => {
                let a = self.addr(m, base)?;
                let fl = data_flags();
                let v = match st {
                    DType::F32 => self.b.ins().load(types::F32X4, fl, a, 0),
                    _ => {
                        let h = self.b.ins().uload16x4(fl, a, 0);
                        let mut fx = self.fx(types::F32X4);
                        if st == DType::F16 {
                            fx.f16_to_f32(h)
                        } else {
                            fx.bf16_to_f32(h)
                        }
                    }
                };
                return Ok((VV::F(v), d));
            }
            VV::Aff(base, 1) if st == DType::Bool => {
                // Four bytes in one load, widened to i32 lanes and compared
                // (a key-padding mask in attention: a byte gather is ~25
                // instructions per four scores, this is five).
                let a = self.addr(m, base)?;
                let w = self.b.ins().load(types::I32, data_flags(), a, 0);
                let v = self.b.ins().scalar_to_vector(types::I32X4, w);
                let v = self.b.ins().bitcast(types::I8X16, MemFlagsData::new().with_endianness(Endianness::Little), v);
                let v = self.b.ins().uwiden_low(v);
                let v = self.b.ins().uwiden_low(v);
                let zero = self.fx(types::F32X4).ci(0);
                return Ok((VV::M(self.b.ins().icmp(IntCC::NotEqual, v, zero)), DType::Bool));
            }
            _ => {}
        }
        // A gather.
        let il = self.lanes(ix, DType::I64)?;
        let mut out = il;
        for i in 0..4 {
            out[i] = self.load(m, il[i])?.0;
        }
        Ok((if d == DType::F32 { VV::F(self.pack(types::F32X4, out)) } else { VV::L(out) }, d))
    }

    fn vstore(&mut self, m: Mem, index: &'k Expr, value: &'k Expr) -> R<()> {
        let (ix, _) = self.vexpr(index)?;
        let (vv, d) = self.vexpr(value)?;
        let st = self.storage(m)?;
        match ix {
            VV::Aff(base, 1) if is_float_storage(st) && d == DType::F32 => {
                let x = self.vf(vv)?;
                let a = self.addr(m, base)?;
                let fl = data_flags();
                if st == DType::F32 {
                    self.b.ins().store(fl, x, a, 0);
                } else {
                    let mut fx = self.fx(types::F32X4);
                    let h = if st == DType::F16 { fx.f32_to_f16(x) } else { fx.f32_to_bf16(x) };
                    // Lanes hold values below 2^16: the saturating narrow is exact.
                    let n = self.b.ins().unarrow(h, h);
                    let q = self.b.ins().bitcast(types::I64X2, MemFlagsData::new().with_endianness(Endianness::Little), n);
                    let lo = self.b.ins().extractlane(q, 0);
                    self.b.ins().store(fl, lo, a, 0);
                }
            }
            VV::Uni(i) => {
                // Every lane writes the same element: the last iteration wins.
                let x = match vv {
                    VV::Uni(x) => x,
                    _ => self.lanes(vv, d)?[3],
                };
                self.store(m, i, x, d)?;
            }
            _ => {
                let il = self.lanes(ix, DType::I64)?;
                let xl = self.lanes(vv, d)?;
                for i in 0..4 {
                    self.store(m, il[i], xl[i], d)?;
                }
            }
        }
        Ok(())
    }

    /// An f32 expression's lanes as one `f32x4`.
    pub(crate) fn vf(&mut self, vv: VV) -> R<Value> {
        Ok(match vv {
            VV::Uni(v) => self.b.ins().splat(types::F32X4, v),
            VV::F(v) => v,
            VV::L(l) => self.pack(types::F32X4, l),
            VV::Aff(..) | VV::M(_) => return Err(self.unsupported("a non-float lane value used as f32")),
        })
    }

    /// A bool's lanes as an `i32x4` mask.
    fn vmask(&mut self, vv: VV) -> R<Value> {
        let mask = |l: &mut Self, b: Value| {
            let w = l.b.ins().uextend(types::I32, b);
            l.b.ins().ineg(w)
        };
        Ok(match vv {
            VV::M(m) => m,
            VV::Uni(b) => {
                let m = mask(self, b);
                self.b.ins().splat(types::I32X4, m)
            }
            VV::L(l) => {
                let ms = l.map(|b| mask(self, b));
                self.pack(types::I32X4, ms)
            }
            VV::Aff(..) | VV::F(_) => return Err(self.unsupported("a non-bool lane value used as bool")),
        })
    }

    /// Four scalars in one vector.
    fn pack(&mut self, ty: types::Type, l: [Value; 4]) -> Value {
        let mut v = self.b.ins().splat(ty, l[0]);
        for (i, &x) in l.iter().enumerate().skip(1) {
            v = self.b.ins().insertlane(v, x, i as u8);
        }
        v
    }

    /// The four lanes as scalars of compute dtype `d`'s type.
    fn lanes(&mut self, vv: VV, d: DType) -> R<[Value; 4]> {
        Ok(match vv {
            VV::Uni(v) => [v; 4],
            VV::Aff(b, s) => [b, self.b.ins().iadd_imm_s(b, s), self.b.ins().iadd_imm_s(b, 2 * s), self.b.ins().iadd_imm_s(b, 3 * s)],
            VV::F(v) => std::array::from_fn(|i| self.b.ins().extractlane(v, i as u8)),
            VV::M(m) => std::array::from_fn(|i| {
                let x = self.b.ins().extractlane(m, i as u8);
                self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
            }),
            VV::L(l) => {
                debug_assert!(l.iter().all(|x| self.b.func.dfg.value_type(*x) == clty(d)));
                l
            }
        })
    }
}

/// Every variable read in `body` outside the statement list `skip`.
fn uses_outside(body: &[Stmt], skip: &[Stmt], out: &mut Vec<Var>) {
    if std::ptr::eq(body, skip) {
        return;
    }
    for s in body {
        match s {
            Stmt::Loop { body, .. } => uses_outside(body, skip, out),
            Stmt::If { cond, body } => {
                expr_vars(cond, out);
                uses_outside(body, skip, out);
            }
            Stmt::Let { value, .. } => expr_vars(value, out),
            Stmt::Reduce { value, .. } => expr_vars(value, out),
            Stmt::Store { index, value, .. } => {
                expr_vars(index, out);
                expr_vars(value, out);
            }
            Stmt::Gemm(g) => {
                for o in [&g.a, &g.b, &g.c] {
                    expr_vars(&o.offset, out);
                }
            }
        }
    }
}

fn expr_vars(e: &Expr, out: &mut Vec<Var>) {
    match e {
        Expr::Const(..) | Expr::Tile => {}
        Expr::Var(v) => out.push(*v),
        Expr::Load(_, i) | Expr::Unary(_, i) | Expr::Cast(_, i) => expr_vars(i, out),
        Expr::Binary(_, a, b) | Expr::Rem(a, b) | Expr::Cmp(_, a, b) | Expr::Rand(a, b) => {
            expr_vars(a, out);
            expr_vars(b, out);
        }
        Expr::Select(c, a, b) => {
            expr_vars(c, out);
            expr_vars(a, out);
            expr_vars(b, out);
        }
        Expr::Checked(c) => {
            expr_vars(&c.index, out);
            expr_vars(&c.pos, out);
        }
    }
}

/// Nodes in an expression, weighting transcendentals by their cost.
fn expr_size(e: &Expr) -> usize {
    match e {
        Expr::Const(..) | Expr::Tile | Expr::Var(_) => 1,
        Expr::Load(_, i) | Expr::Cast(_, i) => 1 + expr_size(i),
        Expr::Unary(op, i) => {
            let w = match op {
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Not => 1,
                _ => 20,
            };
            w + expr_size(i)
        }
        Expr::Binary(_, a, b) | Expr::Rem(a, b) | Expr::Cmp(_, a, b) => 1 + expr_size(a) + expr_size(b),
        Expr::Rand(a, b) => 12 + expr_size(a) + expr_size(b),
        Expr::Select(c, a, b) => 1 + expr_size(c) + expr_size(a) + expr_size(b),
        Expr::Checked(c) => 2 + expr_size(&c.index),
    }
}
