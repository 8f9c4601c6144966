//! Reductions. Sequential ones run in each thread. A `vector` reduction in
//! uniform code is shared by the CTA: each thread folds a strided slice,
//! warps combine with `shfl.sync.bfly`, warp leaders meet in the shared
//! `red` array, and every thread folds the warps' partials in the same
//! order, so all threads hold the same result.

use super::emit::Emitter;
use super::expr::{arith, bits, f32_imm};
use super::regs::{Class, Reg};
use super::{PtxError, BLOCK_THREADS};
use kiln_ir::kernel::{Expr, RedOp, Var};
use kiln_ir::DType;

/// Bytes per warp in `red`: a value and an i64 index.
pub(crate) const RED_SLOT: u32 = 16;

/// Warps per CTA.
pub(crate) const WARPS: u32 = BLOCK_THREADS / 32;

impl Emitter<'_> {
    /// `var = op over index in 0..extent of value`; `shared` spreads it
    /// over the CTA.
    pub fn reduce(&mut self, var: Var, op: RedOp, index: Var, extent: u64, shared: bool, value: &Expr) -> Result<(), PtxError> {
        let i = self.index_var(index);
        let d = self.dtype(value)?;
        let (acc, arg) = (self.reg(Class::of(d)), self.reg(Class::B64));
        let init = match (op, d.is_float()) {
            (RedOp::Sum, true) => f32_imm(0.0),
            (RedOp::Sum, false) => "0".into(),
            (RedOp::Max | RedOp::ArgMax, true) => f32_imm(f32::NEG_INFINITY),
            (RedOp::Min, true) => f32_imm(f32::INFINITY),
            (RedOp::Max | RedOp::ArgMax, false) => if d == DType::I32 { i32::MIN as i64 } else { i64::MIN }.to_string(),
            (RedOp::Min, false) => if d == DType::I32 { i32::MAX as i64 } else { i64::MAX }.to_string(),
        };
        self.ins(format!("mov.{} {acc}, {init};", bits(d)));
        self.ins(format!("mov.u64 {arg}, 0;"));
        // Sums, maxima and minima over contiguous memory read it 16 bytes
        // at a time (any grouping of the iterations is allowed).
        let grouped = shared && op != RedOp::ArgMax && self.vector_reduce(index, extent, value, &|e, x| e.fold(op, d, acc, x))?;
        let scalar = |e: &mut Self| -> Result<(), PtxError> {
            let x = e.expr(value)?;
            if op == RedOp::ArgMax {
                // The first maximum; the first NaN wins.
                let take = e.reg(Class::Pred);
                if d.is_float() {
                    let (ok, gt) = (e.reg(Class::Pred), e.reg(Class::Pred));
                    e.ins(format!("setp.num.f32 {ok}, {acc}, {acc};"));
                    e.ins(format!("setp.gtu.f32 {gt}, {x}, {acc};"));
                    e.ins(format!("and.pred {take}, {ok}, {gt};"));
                } else {
                    e.ins(format!("setp.gt.{} {take}, {x}, {acc};", arith(d)));
                }
                e.ins(format!("selp.{} {acc}, {x}, {acc}, {take};", bits(d)));
                e.ins(format!("selp.b64 {arg}, {i}, {arg}, {take};"));
            } else {
                e.fold(op, d, acc, x);
            }
            Ok(())
        };
        if !grouped {
            self.counted(i, shared, extent, scalar)?;
        }
        if shared {
            self.cta_reduce(op, d, acc, arg);
        }
        let (r, rd) = if op == RedOp::ArgMax { (arg, DType::I64) } else { (acc, d) };
        self.define(var, rd, r);
        Ok(())
    }

    /// `acc = op(acc, x)` for sum, max and min.
    fn fold(&mut self, op: RedOp, d: DType, acc: Reg, x: Reg) {
        let t = arith(d);
        let nan = if d.is_float() { ".NaN" } else { "" };
        match op {
            RedOp::Sum => self.ins(format!("add.{t} {acc}, {acc}, {x};")),
            RedOp::Max => self.ins(format!("max{nan}.{t} {acc}, {acc}, {x};")),
            RedOp::Min => self.ins(format!("min{nan}.{t} {acc}, {acc}, {x};")),
            RedOp::ArgMax => unreachable!("argmax folds pairs in `fold_pair`"),
        }
    }

    /// Folds a partial `(v, i)` into `(acc, arg)`: sum/max/min fold the
    /// value; argmax keeps the larger, the NaN, or on a tie the lower index.
    fn fold_pair(&mut self, op: RedOp, d: DType, acc: Reg, arg: Reg, v: Reg, i: Reg) {
        if op != RedOp::ArgMax {
            return self.fold(op, d, acc, v);
        }
        let t = arith(d);
        let p = |e: &mut Self| e.reg(Class::Pred);
        let (gt, eq, lt, tie, take) = (p(self), p(self), p(self), p(self), p(self));
        self.ins(format!("setp.gt.{t} {gt}, {v}, {acc};"));
        self.ins(format!("setp.eq.{t} {eq}, {v}, {acc};"));
        self.ins(format!("setp.lt.s64 {lt}, {i}, {arg};"));
        self.ins(format!("and.pred {tie}, {eq}, {lt};"));
        self.ins(format!("or.pred {take}, {gt}, {tie};"));
        if d.is_float() {
            // Ordered compares are false on NaN; a NaN partial wins over a
            // number, and between NaNs the lower index.
            let (n1, n2, ok1, w, u) = (p(self), p(self), p(self), p(self), p(self));
            self.ins(format!("setp.nan.f32 {n1}, {acc}, {acc};"));
            self.ins(format!("setp.nan.f32 {n2}, {v}, {v};"));
            self.ins(format!("not.pred {ok1}, {n1};"));
            self.ins(format!("or.pred {w}, {ok1}, {lt};"));
            self.ins(format!("and.pred {u}, {n2}, {w};"));
            self.ins(format!("or.pred {take}, {take}, {u};"));
        }
        self.ins(format!("selp.{} {acc}, {v}, {acc}, {take};", bits(d)));
        self.ins(format!("selp.b64 {arg}, {i}, {arg}, {take};"));
    }

    /// A register's value from the lane `lane ^ offset`.
    fn shuffle(&mut self, x: Reg, offset: u32) -> Reg {
        let r = self.reg(x.class);
        if x.class == Class::B64 {
            let (lo, hi, a, b) = (self.reg(Class::B32), self.reg(Class::B32), self.reg(Class::B32), self.reg(Class::B32));
            self.ins(format!("mov.b64 {{{lo}, {hi}}}, {x};"));
            self.ins(format!("shfl.sync.bfly.b32 {a}, {lo}, {offset}, 31, -1;"));
            self.ins(format!("shfl.sync.bfly.b32 {b}, {hi}, {offset}, 31, -1;"));
            self.ins(format!("mov.b64 {r}, {{{a}, {b}}};"));
        } else {
            self.ins(format!("shfl.sync.bfly.b32 {r}, {x}, {offset}, 31, -1;"));
        }
        r
    }

    /// Combines every thread's `(acc, arg)` so that all hold the CTA's result.
    fn cta_reduce(&mut self, op: RedOp, d: DType, acc: Reg, arg: Reg) {
        for off in [16, 8, 4, 2, 1] {
            let v = self.shuffle(acc, off);
            let i = if op == RedOp::ArgMax { self.shuffle(arg, off) } else { arg };
            self.fold_pair(op, d, acc, arg, v, i);
        }
        self.uses_red = true;
        let (base, slot, w64, lead) = (self.reg(Class::B64), self.reg(Class::B64), self.reg(Class::B64), self.reg(Class::Pred));
        let warp = self.warp;
        let lane = self.lane;
        let size = d.size_bytes();
        let vt = if d.is_float() { "f32".to_string() } else { format!("b{}", size * 8) };
        self.ins(format!("mov.u64 {base}, red;"));
        self.ins(format!("cvt.u64.u32 {w64}, {warp};"));
        self.ins(format!("mad.lo.s64 {slot}, {w64}, {RED_SLOT}, {base};"));
        self.ins(format!("setp.eq.u32 {lead}, {lane}, 0;"));
        // The previous reduction's readers are done with `red`.
        self.bar();
        self.ins(format!("@{lead} st.shared.{vt} [{slot}], {acc};"));
        if op == RedOp::ArgMax {
            self.ins(format!("@{lead} st.shared.b64 [{slot}+8], {arg};"));
        }
        self.bar();
        self.ins(format!("ld.shared.{vt} {acc}, [{base}];"));
        if op == RedOp::ArgMax {
            self.ins(format!("ld.shared.b64 {arg}, [{base}+8];"));
        }
        for w in 1..WARPS {
            let (v, i) = (self.reg(acc.class), self.reg(Class::B64));
            let at = w * RED_SLOT;
            self.ins(format!("ld.shared.{vt} {v}, [{base}+{at}];"));
            if op == RedOp::ArgMax {
                self.ins(format!("ld.shared.b64 {i}, [{base}+{}];", at + 8));
            }
            self.fold_pair(op, d, acc, arg, v, i);
        }
    }
}
