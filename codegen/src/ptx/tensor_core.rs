//! Staged tensor-core GEMM tiles (bf16/f16 operands, f32 accumulators,
//! uniform code). The output is cut into CTA tiles of `bm × bn`; for each,
//! k runs in steps of `bk` through two shared-memory buffers per operand
//! (`tile.rs` fills one while the tensor cores read the other), and the
//! accumulators are written back at the end, each store bounds-checked,
//! so any m, n and k work (the staged tiles are zero past the edges).
//!
//! - `mma.sync` (sm_80; sm_90a when an operand is contiguous along m or n
//!   only): four warps in 2 × 2, each owning `16·mi × 8·ni` of the CTA
//!   tile; `ldmatrix` (`.trans` where a tile is stored m- or n-major, that
//!   is, the operand's contiguous dimension is not k) feeds
//!   `mma.sync.m16n8k16`.
//! - `wgmma` (sm_90a otherwise): the CTA is one warpgroup running
//!   `wgmma.mma_async.m64nNk16` (N = bn) with both operands read through
//!   shared-memory descriptors from K-major core-matrix tiles.
//!
//! Pipeline: every iteration commits one `cp.async` group (empty after
//! the last step), so `wait_group 1` always means "all but the newest".
//! Iteration kt stages step kt into buffer kt % 2, then waits for step
//! kt − 1 and multiplies it; the barrier after the multiply keeps the next
//! iteration from overwriting a buffer still being read.

use super::emit::Emitter;
use super::regs::{Class, Reg};
use super::tile::{Layout, Staged, Tile};
use super::{Arch, PtxError};
use kiln_ir::kernel::{Gemm, Mem};
use kiln_ir::DType;

/// The tensor-core instruction a staged GEMM runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `ldmatrix` + `mma.sync.m16n8k16` (sm_80, and sm_90a for tiles
    /// wgmma would need transposed).
    Mma,
    /// `wgmma.mma_async.m64nNk16` from K-major tiles (sm_90a).
    Wgmma,
}

/// The CTA tile and the two operand tiles of one staged GEMM.
struct Plan {
    kind: Kind,
    bm: u64,
    bn: u64,
    bk: u64,
    /// `Mma`: 16-row and 8-column mma blocks per warp.
    mi: u64,
    ni: u64,
    a: Tile,
    b: Tile,
    /// Whether a tile's columns run along k (else its rows do).
    a_k_cols: bool,
    b_k_cols: bool,
}

/// One operand's tile; `mn` and `k` are (stride, extent, tile size) along
/// the operand's m (or n) and k dimensions.
fn tile(mem: Mem, mn: (u64, u64, u64), k: (u64, u64, u64), k_cols: bool, layout: Layout) -> Tile {
    let (r, c) = if k_cols { (mn, k) } else { (k, mn) };
    Tile { mem, row_stride: r.0, col_stride: c.0, row_len: r.1, col_len: c.1, rows: r.2, cols: c.2, layout }
}

/// The staged form of `g` on `arch`. Each tile keeps its operand's
/// contiguous dimension along shared memory rows, so 16-byte copies apply
/// (`ldmatrix.trans` reads the m- or n-major ones). wgmma reads K-major
/// tiles only here, so an operand contiguous along m or n alone, which it
/// would have to transpose element by element, takes `mma.sync` on
/// sm_90a too.
fn plan(g: &Gemm, arch: Arch) -> Plan {
    let bk = if g.k <= 16 { 16 } else { 32 };
    let a_mn_major = g.a.row_stride == 1 && g.a.col_stride != 1;
    let b_mn_major = g.b.col_stride == 1 && g.b.row_stride != 1;
    let kind = if arch == Arch::Sm90a && !a_mn_major && !b_mn_major { Kind::Wgmma } else { Kind::Mma };
    let (bm, bn, mi, ni, layout) = match kind {
        Kind::Mma => {
            // Up to 64 × 32 per warp: each ldmatrix feeds up to four mmas.
            let mi = match g.m {
                0..=32 => 1,
                33..=64 => 2,
                _ => 4,
            };
            let ni = match g.n {
                0..=16 => 1,
                17..=32 => 2,
                _ => 4,
            };
            (32 * mi, 16 * ni, mi, ni, Layout::Padded)
        }
        Kind::Wgmma => (64, g.n.next_multiple_of(8).min(128), 0, 0, Layout::Core),
    };
    let (a_k_cols, b_k_cols) = match kind {
        Kind::Mma => (!a_mn_major, g.b.row_stride == 1 && g.b.col_stride != 1),
        Kind::Wgmma => (true, true),
    };
    Plan {
        kind,
        bm,
        bn,
        bk,
        mi,
        ni,
        a: tile(g.a.mem, (g.a.row_stride, g.m, bm), (g.a.col_stride, g.k, bk), a_k_cols, layout),
        b: tile(g.b.mem, (g.b.col_stride, g.n, bn), (g.b.row_stride, g.k, bk), b_k_cols, layout),
        a_k_cols,
        b_k_cols,
    }
}

/// Per-thread values of a staged GEMM: the thread's first accumulator
/// row and column in the CTA tile, and (`Mma`) its `ldmatrix` row
/// addresses' byte offsets within the a and b tiles.
struct Lanes {
    row: Reg,
    col: Reg,
    a_off: Option<Reg>,
    b_off: Option<Reg>,
    /// `Wgmma`: a true predicate (wgmma's scale-d operand).
    yes: Option<Reg>,
}

impl Emitter<'_> {
    /// The staged form of a bf16/f16 GEMM in uniform code; `[ao, bo, co]`
    /// are the operands' offsets. False (nothing emitted) when its shared
    /// memory would not fit in `budget` bytes.
    pub fn gemm_staged(&mut self, g: &Gemm, half: DType, [ao, bo, co]: [Reg; 3], budget: u64) -> Result<bool, PtxError> {
        let p = plan(g, self.arch);
        let bytes = 2 * (p.a.bytes() + p.b.bytes());
        if bytes > budget {
            return Ok(false);
        }
        self.gemm_shared = self.gemm_shared.max(bytes);
        let ty = if half == DType::BF16 { "bf16" } else { "f16" };
        let (sa, sb) = (self.staged(p.a, ao), self.staged(p.b, bo));
        let gst = self.reg(Class::B64);
        self.ins(format!("mov.u64 {gst}, gst;"));
        let lanes = self.lanes(&p);
        let consts = self.acc_layout(&p);
        let tiles_n = g.n.div_ceil(p.bn);
        let t = self.reg(Class::B64);
        self.counted_by(t, None, 1, g.m.div_ceil(p.bm) * tiles_n, |em| {
            let (m0, n0) = (em.reg(Class::B64), em.reg(Class::B64));
            em.ins(format!("div.u64 {m0}, {t}, {tiles_n};"));
            em.ins(format!("rem.u64 {n0}, {t}, {tiles_n};"));
            em.ins(format!("mul.lo.s64 {m0}, {m0}, {};", p.bm));
            em.ins(format!("mul.lo.s64 {n0}, {n0}, {};", p.bn));
            let mut acc = Vec::new();
            for &(dr, dc) in &consts {
                let a = em.reg(Class::F32);
                if g.accumulate {
                    let (idx, _) = em.acc_target(g, co, [m0, n0], &lanes, (dr, dc));
                    let v = em.load(g.c.mem, idx);
                    em.ins(format!("mov.f32 {a}, {v};"));
                } else {
                    em.ins(format!("mov.f32 {a}, 0f00000000;"));
                }
                acc.push(a);
            }
            em.k_steps(g, &p, [&sa, &sb], gst, [m0, n0], &lanes, &acc, ty)?;
            for (a, &(dr, dc)) in acc.iter().zip(&consts) {
                let (idx, ok) = em.acc_target(g, co, [m0, n0], &lanes, (dr, dc));
                em.store(g.c.mem, idx, *a, DType::F32, Some(ok));
            }
            Ok(())
        })?;
        Ok(true)
    }

    /// The output element of the accumulator at constant offset `(dr, dc)`
    /// from this thread's first one: its index (c's origin when outside
    /// the output) and whether it is inside.
    fn acc_target(&mut self, g: &Gemm, co: Reg, [m0, n0]: [Reg; 2], l: &Lanes, (dr, dc): (u64, u64)) -> (Reg, Reg) {
        let (r, c) = (self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("add.s64 {r}, {m0}, {};", l.row));
        self.ins(format!("add.s64 {r}, {r}, {dr};"));
        self.ins(format!("add.s64 {c}, {n0}, {};", l.col));
        self.ins(format!("add.s64 {c}, {c}, {dc};"));
        let (pr, pc, ok) = (self.reg(Class::Pred), self.reg(Class::Pred), self.reg(Class::Pred));
        self.ins(format!("setp.lt.s64 {pr}, {r}, {};", g.m));
        self.ins(format!("setp.lt.s64 {pc}, {c}, {};", g.n));
        self.ins(format!("and.pred {ok}, {pr}, {pc};"));
        let i = self.strided(co, r, g.c.row_stride, c, g.c.col_stride);
        let idx = self.reg(Class::B64);
        self.ins(format!("selp.b64 {idx}, {i}, {co}, {ok};"));
        (idx, ok)
    }

    /// Each accumulator register's (row, column) offset from the thread's
    /// first, in the order the MMA instructions list them.
    fn acc_layout(&self, p: &Plan) -> Vec<(u64, u64)> {
        match p.kind {
            // Per 16×8 block (i, j): rows g, g + 8; columns 2t, 2t + 1.
            Kind::Mma => (0..p.mi)
                .flat_map(|i| (0..p.ni).flat_map(move |j| (0..4).map(move |e| (16 * i + 8 * (e / 2), 8 * j + e % 2))))
                .collect(),
            Kind::Wgmma => (0..p.bn / 2).map(|e| (8 * ((e / 2) % 2), 8 * (e / 4) + e % 2)).collect(),
        }
    }

    /// The per-thread values; see [`Lanes`].
    fn lanes(&mut self, p: &Plan) -> Lanes {
        let (lane, warp) = (self.lane, self.warp);
        let g = self.op32(|r| format!("shr.u32 {r}, {lane}, 2;"));
        let t = self.op32(|r| format!("and.b32 {r}, {lane}, 3;"));
        let wide = |em: &mut Self, x: Reg| {
            let r = em.reg(Class::B64);
            em.ins(format!("cvt.u64.u32 {r}, {x};"));
            r
        };
        match p.kind {
            Kind::Mma => {
                let wm = self.op32(|r| format!("shr.u32 {r}, {warp}, 1;"));
                let wn = self.op32(|r| format!("and.b32 {r}, {warp}, 1;"));
                // ldmatrix lane l gives row l % 8 of matrix l / 8:
                // x0 = l & 7, x1 = (l >> 3) & 1, x2 = l >> 4.
                let x0 = self.op32(|r| format!("and.b32 {r}, {lane}, 7;"));
                let x1 = self.op32(|r| format!("shr.u32 {r}, {lane}, 3;"));
                self.ins(format!("and.b32 {x1}, {x1}, 1;"));
                let x2 = self.op32(|r| format!("shr.u32 {r}, {lane}, 4;"));
                let (a, b) = (&p.a, &p.b);
                let (ra, rb) = (a.row_bytes(), b.row_bytes());
                // Byte offsets per unit of x0, x1, x2 and the warp's position.
                let ac = if p.a_k_cols {
                    [ra, 8 * ra, 16, 16 * p.mi * ra]
                } else {
                    [ra, 16, 8 * ra, 32 * p.mi]
                };
                // With one n block per warp, ldmatrix.x2 reads lanes 0..15 only.
                let x2b = if p.ni == 1 { 0 } else { 1 };
                let bc = if p.b_k_cols {
                    [rb, 16, 8 * rb * x2b, 8 * p.ni * rb]
                } else {
                    [rb, 8 * rb, 16 * x2b, 16 * p.ni]
                };
                let a_off = self.lane_offset(ac, [x0, x1, x2, wm]);
                let b_off = self.lane_offset(bc, [x0, x1, x2, wn]);
                let row = self.op32(|r| format!("mad.lo.u32 {r}, {wm}, {}, {g};", 16 * p.mi));
                let col = self.op32(|r| format!("shl.b32 {r}, {t}, 1;"));
                self.ins(format!("mad.lo.u32 {col}, {wn}, {}, {col};", 8 * p.ni));
                Lanes { row: wide(self, row), col: wide(self, col), a_off: Some(a_off), b_off: Some(b_off), yes: None }
            }
            Kind::Wgmma => {
                let row = self.op32(|r| format!("mad.lo.u32 {r}, {warp}, 16, {g};"));
                let col = self.op32(|r| format!("shl.b32 {r}, {t}, 1;"));
                let yes = self.reg(Class::Pred);
                self.ins(format!("setp.eq.u32 {yes}, {lane}, {lane};"));
                Lanes { row: wide(self, row), col: wide(self, col), a_off: None, b_off: None, yes: Some(yes) }
            }
        }
    }

    /// A fresh 32-bit register set by the instruction `f` writes to it.
    fn op32(&mut self, f: impl FnOnce(Reg) -> String) -> Reg {
        let r = self.reg(Class::B32);
        self.ins(f(r));
        r
    }

    /// `Σ coef[i] · x[i]` (u32 registers) as a u64 register.
    fn lane_offset(&mut self, coef: [u64; 4], x: [Reg; 4]) -> Reg {
        let s = self.reg(Class::B32);
        self.ins(format!("mov.u32 {s}, 0;"));
        for (c, x) in coef.iter().zip(x) {
            self.ins(format!("mad.lo.u32 {s}, {x}, {c}, {s};"));
        }
        let r = self.reg(Class::B64);
        self.ins(format!("cvt.u64.u32 {r}, {s};"));
        r
    }

    /// The shared addresses of the a and b buffers `sel` (0 or 1).
    fn buffers(&mut self, p: &Plan, gst: Reg, sel: Reg) -> (Reg, Reg) {
        let (a, b) = (self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("mad.lo.s64 {a}, {sel}, {}, {gst};", p.a.bytes()));
        self.ins(format!("mad.lo.s64 {b}, {sel}, {}, {gst};", p.b.bytes()));
        self.ins(format!("add.s64 {b}, {b}, {};", 2 * p.a.bytes()));
        (a, b)
    }

    /// The double-buffered k loop of one CTA tile at `(m0, n0)`.
    #[allow(clippy::too_many_arguments)]
    fn k_steps(&mut self, g: &Gemm, p: &Plan, [sa, sb]: [&Staged; 2], gst: Reg, [m0, n0]: [Reg; 2], l: &Lanes, acc: &[Reg], ty: &str) -> Result<(), PtxError> {
        let steps = g.k.div_ceil(p.bk);
        let (head, filled, next) = (self.label(), self.label(), self.label());
        let (kt, sel, k0) = (self.reg(Class::B64), self.reg(Class::B64), self.reg(Class::B64));
        let (done, first, again) = (self.reg(Class::Pred), self.reg(Class::Pred), self.reg(Class::Pred));
        self.ins(format!("mov.u64 {kt}, 0;"));
        self.place(&head);
        self.ins(format!("setp.ge.s64 {done}, {kt}, {steps};"));
        self.ins(format!("@{done} bra {filled};"));
        self.ins(format!("and.b64 {sel}, {kt}, 1;"));
        self.ins(format!("mul.lo.s64 {k0}, {kt}, {};", p.bk));
        let (ad, bd) = self.buffers(p, gst, sel);
        let (ar, ac) = if p.a_k_cols { (m0, k0) } else { (k0, m0) };
        self.stage(sa, ad, ar, ac)?;
        let (br, bc) = if p.b_k_cols { (n0, k0) } else { (k0, n0) };
        self.stage(sb, bd, br, bc)?;
        self.place(&filled);
        self.ins("cp.async.commit_group;");
        self.ins(format!("setp.eq.s64 {first}, {kt}, 0;"));
        self.ins(format!("@{first} bra {next};"));
        self.ins("cp.async.wait_group 1;");
        if p.kind == Kind::Wgmma {
            // wgmma reads shared memory through the async proxy.
            self.ins("fence.proxy.async.shared::cta;");
        }
        self.bar();
        let prev = self.reg(Class::B64);
        self.ins(format!("add.s64 {prev}, {kt}, -1;"));
        self.ins(format!("and.b64 {prev}, {prev}, 1;"));
        let (ab, bb) = self.buffers(p, gst, prev);
        match p.kind {
            Kind::Mma => self.mma_step(p, ab, bb, l, acc, ty),
            Kind::Wgmma => self.wgmma_step(p, ab, bb, l, acc, ty),
        }
        self.bar();
        self.place(&next);
        self.ins(format!("add.s64 {kt}, {kt}, 1;"));
        self.ins(format!("setp.le.s64 {again}, {kt}, {steps};"));
        self.ins(format!("@{again} bra {head};"));
        Ok(())
    }

    /// The `mma.sync` blocks of one k step from buffers `ab`, `bb`.
    fn mma_step(&mut self, p: &Plan, ab: Reg, bb: Reg, l: &Lanes, acc: &[Reg], ty: &str) {
        let (xa, xb) = (self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("add.s64 {xa}, {ab}, {};", l.a_off.expect("mma lanes")));
        self.ins(format!("add.s64 {xb}, {bb}, {};", l.b_off.expect("mma lanes")));
        let list = |v: &[Reg]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        let (ta, tb) = (if p.a_k_cols { "" } else { ".trans" }, if p.b_k_cols { "" } else { ".trans" });
        for ks in 0..p.bk / 16 {
            let mut af = Vec::new();
            for i in 0..p.mi {
                let (r, c) = if p.a_k_cols { (16 * i, 16 * ks) } else { (16 * ks, 16 * i) };
                let f: Vec<Reg> = (0..4).map(|_| self.reg(Class::B32)).collect();
                self.ins(format!("ldmatrix.sync.aligned.m8n8.x4{ta}.shared.b16 {{{}}}, [{xa}+{}];", list(&f), p.a.padded_offset(r, c)));
                af.push(f);
            }
            let mut bf = Vec::new();
            for j in (0..p.ni).step_by(2) {
                let (r, c) = if p.b_k_cols { (8 * j, 16 * ks) } else { (16 * ks, 8 * j) };
                let count = if p.ni == 1 { 2 } else { 4 };
                let f: Vec<Reg> = (0..count).map(|_| self.reg(Class::B32)).collect();
                self.ins(format!("ldmatrix.sync.aligned.m8n8.x{count}{tb}.shared.b16 {{{}}}, [{xb}+{}];", list(&f), p.b.padded_offset(r, c)));
                bf.extend(f.chunks(2).map(|c| c.to_vec()));
            }
            for (i, a) in af.iter().enumerate() {
                for (j, b) in bf.iter().enumerate() {
                    let d = list(&acc[4 * (i * p.ni as usize + j)..][..4]);
                    self.ins(format!("mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{{d}}}, {{{}}}, {{{}}}, {{{d}}};", list(a), list(b)));
                }
            }
        }
    }

    /// The `wgmma`s of one k step from buffers `ab`, `bb`.
    fn wgmma_step(&mut self, p: &Plan, ab: Reg, bb: Reg, l: &Lanes, acc: &[Reg], ty: &str) {
        let d = acc.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        let yes = l.yes.expect("wgmma lanes");
        self.ins("wgmma.fence.sync.aligned;");
        for ks in 0..p.bk / 16 {
            // 16 more k columns are two core matrices (2 · 128 bytes) on.
            let (da, db) = (self.descriptor(&p.a, ab, 256 * ks), self.descriptor(&p.b, bb, 256 * ks));
            self.ins(format!("wgmma.mma_async.sync.aligned.m64n{}k16.f32.{ty}.{ty} {{{d}}}, {da}, {db}, {yes}, 1, 1, 0, 0;", p.bn));
        }
        self.ins("wgmma.commit_group.sync.aligned;");
        self.ins("wgmma.wait_group.sync.aligned 0;");
    }

    /// The shared-memory matrix descriptor of core-matrix tile `t` at
    /// `base + offset`: start address, LBO (128) and SBO in 16-byte units,
    /// no swizzle.
    fn descriptor(&mut self, t: &Tile, base: Reg, offset: u64) -> Reg {
        let (x, d) = (self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("add.s64 {x}, {base}, {offset};"));
        self.ins(format!("shr.u64 {x}, {x}, 4;"));
        self.ins(format!("and.b64 {x}, {x}, 16383;"));
        self.ins(format!("or.b64 {d}, {x}, {};", ((128u64 >> 4) << 16) | ((t.sbo() >> 4) << 32)));
        d
    }
}
