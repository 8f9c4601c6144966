//! `Gemm` tiles, the simple correct form: each thread owns output
//! elements (strided over the CTA in uniform code) and runs the k loop
//! with f32 FMA, whatever the storage dtypes.

use super::emit::Emitter;
use super::regs::{Class, Reg};
use super::PtxError;
use kiln_ir::kernel::{Gemm, Operand};
use kiln_ir::DType;

impl Emitter<'_> {
    /// `offset + r * row_stride + c * col_stride` as an i64 register.
    fn element(&mut self, base: Reg, o: &Operand, r: Reg, c: Reg) -> Reg {
        let (x, y) = (self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("mad.lo.s64 {x}, {r}, {}, {base};", o.row_stride));
        self.ins(format!("mad.lo.s64 {y}, {c}, {}, {x};", o.col_stride));
        y
    }

    /// A GEMM tile; `shared` spreads its output elements over the CTA.
    pub fn gemm(&mut self, g: &Gemm, shared: bool) -> Result<(), PtxError> {
        let (ao, bo, co) = (self.expr(&g.a.offset)?, self.expr(&g.b.offset)?, self.expr(&g.c.offset)?);
        let e = self.reg(Class::B64);
        self.counted(e, shared, g.m * g.n, |em| {
            let (i, j) = (em.reg(Class::B64), em.reg(Class::B64));
            em.ins(format!("div.u64 {i}, {e}, {};", g.n));
            em.ins(format!("rem.u64 {j}, {e}, {};", g.n));
            let ci = em.element(co, &g.c, i, j);
            let acc = if g.accumulate {
                let c = em.load(g.c.mem, ci);
                let acc = em.reg(Class::F32);
                em.ins(format!("mov.f32 {acc}, {c};"));
                acc
            } else {
                em.constant(0.0, DType::F32)
            };
            let l = em.reg(Class::B64);
            em.counted(l, false, g.k, |em| {
                let ai = em.element(ao, &g.a, i, l);
                let bi = em.element(bo, &g.b, l, j);
                let (x, y) = (em.load(g.a.mem, ai), em.load(g.b.mem, bi));
                em.ins(format!("fma.rn.f32 {acc}, {x}, {y}, {acc};"));
                Ok(())
            })?;
            em.store(g.c.mem, ci, acc, DType::F32, None);
            Ok(())
        })
    }
}
