//! `Gemm` tiles. Three forms:
//!
//! - staged tensor cores (`tensor_core.rs`): when a and b are both bf16
//!   or both f16, in uniform code, and the shared buffers fit next to the
//!   kernel's scratch: any sizes and strides;
//! - direct tensor cores: the same when the buffers do not fit and the
//!   tile is a whole number of 16×8×16 blocks: each warp takes 16×8
//!   output blocks in turn and runs `mma.sync.m16n8k16` (f32
//!   accumulators) over k, its fragments loaded straight from memory in
//!   the PTX ISA's per-lane layout (so any strides work);
//! - otherwise the simple form: each thread owns output elements (strided
//!   over the CTA in uniform code) and runs the k loop with f32 FMA.

use super::emit::Emitter;
use super::reduce::WARPS;
use super::regs::{Class, Reg};
use super::PtxError;
use kiln_ir::kernel::{Gemm, Operand};
use kiln_ir::DType;

impl Emitter<'_> {
    /// `base + r * row_stride + c * col_stride` as an i64 register.
    pub fn strided(&mut self, base: Reg, r: Reg, row_stride: u64, c: Reg, col_stride: u64) -> Reg {
        let (x, y) = (self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("mad.lo.s64 {x}, {r}, {row_stride}, {base};"));
        self.ins(format!("mad.lo.s64 {y}, {c}, {col_stride}, {x};"));
        y
    }

    /// Element (r, c) of operand `o` whose element (0, 0) is `base`.
    fn element(&mut self, base: Reg, o: &Operand, r: Reg, c: Reg) -> Reg {
        self.strided(base, r, o.row_stride, c, o.col_stride)
    }

    /// `x + k` in a fresh i64 register.
    fn plus(&mut self, x: Reg, k: u64) -> Reg {
        let r = self.reg(Class::B64);
        self.ins(format!("add.s64 {r}, {x}, {k};"));
        r
    }

    /// A fresh f32 accumulator for output element `ci`: its value when
    /// the GEMM accumulates, else 0.
    fn accumulator(&mut self, g: &Gemm, ci: Reg) -> Reg {
        let acc = self.reg(Class::F32);
        if g.accumulate {
            let c = self.load(g.c.mem, ci);
            self.ins(format!("mov.f32 {acc}, {c};"));
        } else {
            self.ins(format!("mov.f32 {acc}, 0f00000000;"));
        }
        acc
    }

    /// A GEMM tile; `shared` spreads its output over the CTA.
    pub fn gemm(&mut self, g: &Gemm, shared: bool) -> Result<(), PtxError> {
        let (ao, bo, co) = (self.expr(&g.a.offset)?, self.expr(&g.b.offset)?, self.expr(&g.c.offset)?);
        let (da, db) = (self.storage(g.a.mem), self.storage(g.b.mem));
        let half = da == db && matches!(da, DType::BF16 | DType::F16);
        if shared && half && self.gemm_staged(g, da, [ao, bo, co], super::gemm_budget(self.k))? {
            return Ok(());
        }
        if shared && half && g.m.is_multiple_of(16) && g.n.is_multiple_of(8) && g.k.is_multiple_of(16) {
            return self.gemm_mma(g, da, [ao, bo, co]);
        }
        let e = self.reg(Class::B64);
        self.counted(e, shared, g.m * g.n, |em| {
            let (i, j) = (em.reg(Class::B64), em.reg(Class::B64));
            em.ins(format!("div.u64 {i}, {e}, {};", g.n));
            em.ins(format!("rem.u64 {j}, {e}, {};", g.n));
            let ci = em.element(co, &g.c, i, j);
            let acc = em.accumulator(g, ci);
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

    /// The tensor-core form; `[ao, bo, co]` are the operands' offsets.
    fn gemm_mma(&mut self, g: &Gemm, half: DType, [ao, bo, co]: [Reg; 3]) -> Result<(), PtxError> {
        let ty = if half == DType::BF16 { "bf16" } else { "f16" };
        // Lane roles in the fragment layouts: group = lane / 4, pair = lane % 4.
        let (lane, warp) = (self.lane, self.warp);
        let (g32, p32, grp, pair, w) = (self.reg(Class::B32), self.reg(Class::B32), self.reg(Class::B64), self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("shr.u32 {g32}, {lane}, 2;"));
        self.ins(format!("and.b32 {p32}, {lane}, 3;"));
        self.ins(format!("cvt.u64.u32 {grp}, {g32};"));
        self.ins(format!("cvt.u64.u32 {pair}, {p32};"));
        self.ins(format!("cvt.u64.u32 {w}, {warp};"));
        let blocks_n = g.n / 8;
        let t = self.reg(Class::B64);
        self.counted_by(t, Some(w), WARPS as u64, (g.m / 16) * blocks_n, |em| {
            // This block's rows r0 and r0 + 8, columns c0 and c0 + 1 of the
            // accumulators, and column bc of b.
            let (bm, bn, r0, c0, bc) = (em.reg(Class::B64), em.reg(Class::B64), em.reg(Class::B64), em.reg(Class::B64), em.reg(Class::B64));
            em.ins(format!("div.u64 {bm}, {t}, {blocks_n};"));
            em.ins(format!("rem.u64 {bn}, {t}, {blocks_n};"));
            em.ins(format!("mad.lo.s64 {r0}, {bm}, 16, {grp};"));
            em.ins(format!("shl.b64 {c0}, {pair}, 1;"));
            em.ins(format!("mad.lo.s64 {c0}, {bn}, 8, {c0};"));
            em.ins(format!("mad.lo.s64 {bc}, {bn}, 8, {grp};"));
            let (r1, c1) = (em.plus(r0, 8), em.plus(c0, 1));
            let cs = [(r0, c0), (r0, c1), (r1, c0), (r1, c1)].map(|(r, c)| em.element(co, &g.c, r, c));
            let acc: Vec<Reg> = cs.iter().map(|ci| em.accumulator(g, *ci)).collect();
            let kb = em.reg(Class::B64);
            em.counted_by(kb, None, 16, g.k, |em| {
                // k columns ka, ka + 1, ka + 8, ka + 9 of this lane.
                let ka = em.reg(Class::B64);
                em.ins(format!("mad.lo.s64 {ka}, {pair}, 2, {kb};"));
                let ks = [ka, em.plus(ka, 1), em.plus(ka, 8), em.plus(ka, 9)];
                let mut a = Vec::new();
                for (r, k0, k1) in [(r0, ks[0], ks[1]), (r1, ks[0], ks[1]), (r0, ks[2], ks[3]), (r1, ks[2], ks[3])] {
                    let (i, j) = (em.element(ao, &g.a, r, k0), em.element(ao, &g.a, r, k1));
                    a.push(em.load_pair(g.a.mem, i, j));
                }
                let mut b = Vec::new();
                for (k0, k1) in [(ks[0], ks[1]), (ks[2], ks[3])] {
                    let (i, j) = (em.element(bo, &g.b, k0, bc), em.element(bo, &g.b, k1, bc));
                    b.push(em.load_pair(g.b.mem, i, j));
                }
                let list = |v: &[Reg]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
                let (d, a, b) = (list(&acc), list(&a), list(&b));
                em.ins(format!("mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{{d}}}, {{{a}}}, {{{b}}}, {{{d}}};"));
                Ok(())
            })?;
            for (ci, a) in cs.iter().zip(&acc) {
                em.store(g.c.mem, *ci, *a, DType::F32, None);
            }
            Ok(())
        })
    }
}
