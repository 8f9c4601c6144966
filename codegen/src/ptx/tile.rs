//! Operand tiles copied into shared memory for the staged tensor-core
//! GEMMs (`tensor_core.rs`). A tile is `rows × cols` bf16/f16 elements of
//! an operand, `cols` (a multiple of 8) running along shared memory;
//! elements past the operand's edge are written as zero, so a partial
//! tile multiplies like a whole one.
//!
//! Two copy forms, one layout:
//! - 16-byte `cp.async` chunks when the tile's columns are contiguous in
//!   global memory and every chunk is 16-byte aligned (the row stride a
//!   multiple of 8 statically, the operand's origin checked at run time);
//!   a chunk crossing the operand's edge copies only its inside bytes and
//!   zero-fills the rest (`cp.async`'s source size);
//! - otherwise element by element with ordinary loads and shared stores:
//!   any strides, scratch operands, and tiles stored transposed relative
//!   to memory. The barrier before a tile's use orders these stores just
//!   as it orders the asynchronous copies after their wait.

use super::emit::Emitter;
use super::regs::{Class, Reg};
use super::PtxError;
use kiln_ir::kernel::Mem;

/// Where element (r, c) of a tile sits in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Rows of `cols + 8` elements: the 16-byte pad puts the eight rows an
    /// `ldmatrix` reads in distinct banks.
    Padded,
    /// `wgmma`'s unswizzled K-major layout: core matrices of 8 rows × 16
    /// bytes, 128 bytes apart along a row (LBO), `16 · cols` bytes apart
    /// down the rows (SBO).
    Core,
}

/// One operand's tile: its memory, strides and extent, and its shape and
/// layout in shared memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    /// The operand's memory.
    pub mem: Mem,
    /// Elements between tile rows in memory.
    pub row_stride: u64,
    /// Elements between tile columns in memory.
    pub col_stride: u64,
    /// The operand's extent along tile rows and columns.
    pub row_len: u64,
    pub col_len: u64,
    /// The tile's shape.
    pub rows: u64,
    pub cols: u64,
    pub layout: Layout,
}

impl Tile {
    /// Bytes between rows of a padded tile.
    pub fn row_bytes(&self) -> u64 {
        2 * (self.cols + 8)
    }

    /// Bytes between groups of 8 rows of a core-matrix tile (its SBO).
    pub fn sbo(&self) -> u64 {
        16 * self.cols
    }

    /// Shared memory bytes of one copy of the tile.
    pub fn bytes(&self) -> u64 {
        match self.layout {
            Layout::Padded => self.rows * self.row_bytes(),
            Layout::Core => 2 * self.rows * self.cols,
        }
    }

    /// The byte offset of element (r, c) in a padded tile (linear in both,
    /// so per-lane and constant parts add up).
    pub fn padded_offset(&self, r: u64, c: u64) -> u64 {
        r * self.row_bytes() + 2 * c
    }
}

/// A tile as one GEMM stages it: the operand's origin (an i64 element
/// index) and, when the 16-byte form may apply, the run-time predicate
/// that says it does.
pub(crate) struct Staged {
    pub tile: Tile,
    origin: Reg,
    chunks: Option<Reg>,
}

impl Emitter<'_> {
    /// Prepares the staging of `tile` of the operand whose element (0, 0)
    /// is `origin`.
    pub fn staged(&mut self, tile: Tile, origin: Reg) -> Staged {
        let chunks = match tile.mem {
            Mem::Arg(_) if tile.col_stride == 1 && tile.row_stride.is_multiple_of(8) => {
                let (_, a) = self.address(tile.mem, origin);
                let (low, p) = (self.reg(Class::B64), self.reg(Class::Pred));
                self.ins(format!("and.b64 {low}, {a}, 15;"));
                self.ins(format!("setp.eq.u64 {p}, {low}, 0;"));
                Some(p)
            }
            _ => None,
        };
        Staged { tile, origin, chunks }
    }

    /// Copies the tile whose element (0, 0) is operand element (r0, c0)
    /// (i64 registers) to the shared address `dst`; uniform code.
    pub fn stage(&mut self, s: &Staged, dst: Reg, r0: Reg, c0: Reg) -> Result<(), PtxError> {
        let Some(p) = s.chunks else {
            return self.stage_elements(s, dst, r0, c0);
        };
        let (scalar, done) = (self.label(), self.label());
        self.ins(format!("@!{p} bra {scalar};"));
        self.stage_chunks(s, dst, r0, c0);
        self.ins(format!("bra {done};"));
        self.place(&scalar);
        self.stage_elements(s, dst, r0, c0)?;
        self.place(&done);
        Ok(())
    }

    /// Tile element (r, c) in shared memory: its byte address from `dst`.
    fn tile_address(&mut self, t: &Tile, dst: Reg, r: Reg, c: Reg) -> Reg {
        let a = self.reg(Class::B64);
        match t.layout {
            Layout::Padded => {
                self.ins(format!("mad.lo.s64 {a}, {r}, {}, {dst};", t.row_bytes()));
                self.ins(format!("mad.lo.s64 {a}, {c}, 2, {a};"));
            }
            Layout::Core => {
                let (hi, lo) = (self.reg(Class::B64), self.reg(Class::B64));
                self.ins(format!("shr.u64 {hi}, {r}, 3;"));
                self.ins(format!("and.b64 {lo}, {r}, 7;"));
                self.ins(format!("mad.lo.s64 {a}, {hi}, {}, {dst};", t.sbo()));
                self.ins(format!("mad.lo.s64 {a}, {lo}, 16, {a};"));
                self.ins(format!("shr.u64 {hi}, {c}, 3;"));
                self.ins(format!("and.b64 {lo}, {c}, 7;"));
                self.ins(format!("mad.lo.s64 {a}, {hi}, 128, {a};"));
                self.ins(format!("mad.lo.s64 {a}, {lo}, 2, {a};"));
            }
        }
        a
    }

    /// For tile element (r, c): the operand element's index (the origin
    /// when it lies outside, so that an address can still be formed),
    /// whether it lies inside, and its operand column.
    fn tile_source(&mut self, s: &Staged, r0: Reg, c0: Reg, r: Reg, c: Reg) -> (Reg, Reg, Reg) {
        let t = &s.tile;
        let (gr, gc) = (self.reg(Class::B64), self.reg(Class::B64));
        self.ins(format!("add.s64 {gr}, {r0}, {r};"));
        self.ins(format!("add.s64 {gc}, {c0}, {c};"));
        let (pr, pc, ok) = (self.reg(Class::Pred), self.reg(Class::Pred), self.reg(Class::Pred));
        self.ins(format!("setp.lt.s64 {pr}, {gr}, {};", t.row_len));
        self.ins(format!("setp.lt.s64 {pc}, {gc}, {};", t.col_len));
        self.ins(format!("and.pred {ok}, {pr}, {pc};"));
        let i = self.strided(s.origin, gr, t.row_stride, gc, t.col_stride);
        let idx = self.reg(Class::B64);
        self.ins(format!("selp.b64 {idx}, {i}, {}, {ok};", s.origin));
        (idx, ok, gc)
    }

    /// The 16-byte form: chunk `tid + 128 i` of the tile for each i.
    fn stage_chunks(&mut self, s: &Staged, dst: Reg, r0: Reg, c0: Reg) {
        let t = s.tile;
        let per_row = t.cols / 8;
        let total = t.rows * per_row;
        let threads = super::BLOCK_THREADS as u64;
        let tid = self.tid;
        for i in 0..total.div_ceil(threads) {
            let (ch, r, c) = (self.reg(Class::B64), self.reg(Class::B64), self.reg(Class::B64));
            self.ins(format!("add.s64 {ch}, {tid}, {};", threads * i));
            self.ins(format!("div.u64 {r}, {ch}, {per_row};"));
            self.ins(format!("rem.u64 {c}, {ch}, {per_row};"));
            self.ins(format!("shl.b64 {c}, {c}, 3;"));
            let (idx, ok, gc) = self.tile_source(s, r0, c0, r, c);
            // Bytes inside the operand: 2 · min(col_len − gc, 8), or none.
            let (left, n) = (self.reg(Class::B64), self.reg(Class::B32));
            self.ins(format!("sub.s64 {left}, {}, {gc};", t.col_len));
            self.ins(format!("min.s64 {left}, {left}, 8;"));
            self.ins(format!("cvt.u32.u64 {n}, {left};"));
            self.ins(format!("shl.b32 {n}, {n}, 1;"));
            self.ins(format!("selp.b32 {n}, {n}, 0, {ok};"));
            let (_, src) = self.address(t.mem, idx);
            let d = self.tile_address(&t, dst, r, c);
            let guard = if (i + 1) * threads > total {
                let p = self.reg(Class::Pred);
                self.ins(format!("setp.lt.s64 {p}, {ch}, {total};"));
                format!("@{p} ")
            } else {
                String::new()
            };
            self.ins(format!("{guard}cp.async.cg.shared.global [{d}], [{src}], 16, {n};"));
        }
    }

    /// The element form: element `tid + 128 i` of the tile for each i.
    fn stage_elements(&mut self, s: &Staged, dst: Reg, r0: Reg, c0: Reg) -> Result<(), PtxError> {
        let t = s.tile;
        let e = self.reg(Class::B64);
        self.counted(e, true, t.rows * t.cols, |em| {
            let (r, c) = (em.reg(Class::B64), em.reg(Class::B64));
            em.ins(format!("div.u64 {r}, {e}, {};", t.cols));
            em.ins(format!("rem.u64 {c}, {e}, {};", t.cols));
            let (idx, ok, _) = em.tile_source(s, r0, c0, r, c);
            let (space, a) = em.address(t.mem, idx);
            let h = em.reg(Class::B16);
            em.ins(format!("mov.b16 {h}, 0;"));
            em.ins(format!("@{ok} ld.{space}.b16 {h}, [{a}];"));
            let d = em.tile_address(&t, dst, r, c);
            em.ins(format!("st.shared.b16 [{d}], {h};"));
            Ok(())
        })
    }
}
