//! PTX text for the flash kernels: an instruction buffer, fresh labels and
//! the warp-level fragment idioms (`mma.sync`, `ldmatrix`, quad reductions,
//! half packing, `cp.async` tile copies) written once.

use super::config::{FlashConfig, Half, BLOCK_N, THREADS};
use crate::ptx::Arch;
use std::fmt::Write;

/// `-inf` as a PTX f32 immediate.
pub const NEG_INF: &str = "0fFF800000";

/// A kernel body being written.
#[derive(Default)]
pub struct Asm {
    out: String,
    labels: u32,
}

impl Asm {
    /// One instruction (or directive) line.
    pub fn i(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.out, "    {}", s.as_ref());
    }

    /// A fresh label name.
    pub fn label(&mut self, what: &str) -> String {
        self.labels += 1;
        format!("L_{what}_{}", self.labels)
    }

    /// Places a label.
    pub fn place(&mut self, l: &str) {
        let _ = writeln!(self.out, "{l}:");
    }

    /// The finished body.
    pub fn finish(self) -> String {
        self.out
    }

    /// `d = a · b + c` on one m16n8k16 tile with f32 accumulators.
    pub fn mma(&mut self, dt: Half, d: &[String; 4], a: &[String; 4], b: [&str; 2], c: &[String; 4]) {
        let t = dt.ptx();
        self.i(format!(
            "mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32 {{{}}}, {{{}}}, {{{}}}, {{{}}};",
            d.join(", "),
            a.join(", "),
            b.join(", "),
            c.join(", ")
        ));
    }

    /// Four 8x8 matrices from shared memory (`trans`: transposed).
    pub fn ldmatrix_x4(&mut self, dst: &[String; 4], addr: &str, offset: u32, trans: bool) {
        let tr = if trans { ".trans" } else { "" };
        self.i(format!("ldmatrix.sync.aligned.m8n8.x4{tr}.shared.b16 {{{}}}, [{addr}+{offset}];", dst.join(", ")));
    }

    /// Combines `r` across the 4 lanes of a quad (the lanes sharing an mma row).
    pub fn quad_reduce(&mut self, r: &str, op: &str, tmp: &str) {
        for m in [1, 2] {
            self.i(format!("shfl.sync.bfly.b32 {tmp}, {r}, {m}, 31, -1;"));
            self.i(format!("{op}.f32 {r}, {r}, {tmp};"));
        }
    }

    /// Two f32 values rounded into one register of halves, `lo` in the low half.
    pub fn pack(&mut self, dt: Half, dst: &str, lo: &str, hi: &str) {
        self.i(format!("cvt.rn.{}x2.f32 {dst}, {hi}, {lo};", dt.ptx()));
    }

    /// Issues `cp.async` copies of one [`BLOCK_N`]-row tile `width` halves
    /// wide: global rows `row0 + r` (each `gpitch` bytes from `gbase`) to
    /// shared rows `r` at `sbase` (pitch from [`FlashConfig::pitch`]). Rows
    /// at or past `limit` are zero-filled, so padding keys contribute exact
    /// zeros (not stale NaNs) to `P · V`. Uses `%tx` (the thread index) and the registers of
    /// [`Asm::copy_regs`].
    pub fn copy_tile(&mut self, sbase: &str, gbase: &str, row0: &str, width: u32, gpitch: u32, limit: u32) {
        let chunks = width / 8; // 16-byte chunks per row
        let spitch = FlashConfig::pitch(width);
        // width is a multiple of 16, so the chunks split evenly over the CTA
        let total = BLOCK_N * chunks;
        for start in (0..total).step_by(THREADS as usize) {
            self.i(format!("add.u32 %c0, %tx, {start};"));
            self.i(format!("div.u32 %c1, %c0, {chunks};"));
            self.i(format!("rem.u32 %c2, %c0, {chunks};"));
            self.i(format!("mad.lo.u32 %c3, %c1, {spitch}, {sbase};"));
            self.i("mad.lo.u32 %c3, %c2, 16, %c3;");
            self.i(format!("add.u32 %c1, %c1, {row0};"));
            self.i(format!("setp.lt.u32 %cp0, %c1, {limit};"));
            self.i("selp.u32 %c1, %c1, 0, %cp0;");
            self.i("selp.u32 %c4, 16, 0, %cp0;");
            self.i(format!("mul.wide.u32 %cd0, %c1, {gpitch};"));
            self.i("mul.wide.u32 %cd1, %c2, 16;");
            self.i("add.s64 %cd0, %cd0, %cd1;");
            self.i(format!("add.s64 %cd0, %cd0, {gbase};"));
            self.i("cp.async.cg.shared.global [%c3], [%cd0], 16, %c4;");
        }
    }

    /// [`Asm::copy_tile`] for tiles `(shared base, global base, width)` of
    /// one row range, committed as one `cp.async` group.
    pub fn copy_group(&mut self, tiles: &[(&str, &str, u32)], row0: &str, limit: u32) {
        for &(sbase, gbase, width) in tiles {
            self.copy_tile(sbase, gbase, row0, width, width * 2, limit);
        }
        self.i("cp.async.commit_group;");
    }

    /// Declarations of the registers every flash kernel uses: lane
    /// coordinates, [`Asm::copy_tile`] and [`Asm::warp_gemm`] scratch.
    pub fn common_regs() -> &'static str {
        "    .reg .b32 %tx, %lane, %warp, %g, %t, %lo, %bf<4>, %c<5>;\n    .reg .pred %cp<1>;\n    .reg .b64 %cd<2>;\n    .reg .f32 %zero;\n"
    }

    /// Thread coordinates: `%tx`, `%lane`, `%warp`, and the mma fragment
    /// coordinates `%g` (lane / 4, the row) and `%t` (lane % 4); `%zero`.
    pub fn lanes(&mut self) {
        self.i("mov.u32 %tx, %tid.x;");
        self.i("and.b32 %lane, %tx, 31;");
        self.i("shr.u32 %warp, %tx, 5;");
        self.i("shr.u32 %g, %lane, 2;");
        self.i("and.b32 %t, %lane, 3;");
        self.i("mov.f32 %zero, 0f00000000;");
    }

    /// The coordinates of a CTA that owns a query block: `%head`
    /// (`%ctaid.y`), its kv head `%kvh` and first query `%q0`.
    pub fn q_block(&mut self, group: u32) {
        self.i("mov.u32 %head, %ctaid.y;");
        self.i(format!("div.u32 %kvh, %head, {group};"));
        self.i("mov.u32 %q0, %ctaid.x;");
        self.i(format!("mul.lo.u32 %q0, %q0, {};", super::config::BLOCK_M));
    }

    /// `dst` = `first + 16·warp + g`: the block row of this lane's fragment row `g`.
    pub fn lane_row(&mut self, dst: &str, first: &str) {
        self.i(format!("shl.b32 {dst}, %warp, 4;"));
        self.i(format!("add.u32 {dst}, {dst}, %g;"));
        self.i(format!("add.u32 {dst}, {dst}, {first};"));
    }

    /// Loads pointer parameter `param` into `reg` as a global address,
    /// advanced by `bytes` per unit of `head` (a head index register).
    pub fn global_param(&mut self, reg: &str, param: &str, head: &str, bytes: u32) {
        self.i(format!("ld.param.u64 {reg}, [{param}];"));
        self.i(format!("cvta.to.global.u64 {reg}, {reg};"));
        self.i(format!("mad.wide.u32 {reg}, {head}, {bytes}, {reg};"));
    }

    /// Stores lane row `h` (0: `g`, 1: `g + 8`) of the accumulators
    /// `%{acc}..` (16 x `width`) as halves to row `row` (a register; the
    /// caller checks bounds) of a row-major `[.., width]` array at `gbase`.
    /// Clobbers `%c0`, `%c1`, `%cd0`, `%lo`.
    pub fn store_row(&mut self, dt: Half, acc: &str, h: u32, width: u32, row: &str, gbase: &str) {
        self.i("shl.b32 %lo, %t, 1;");
        self.i(format!("mad.lo.u32 %c0, {row}, {width}, %lo;"));
        self.i("mul.wide.u32 %cd0, %c0, 2;");
        self.i(format!("add.s64 %cd0, %cd0, {gbase};"));
        for n in 0..width / 8 {
            let r = 4 * n + 2 * h;
            self.pack(dt, "%c1", &format!("%{acc}{r}"), &format!("%{acc}{}", r + 1));
            self.i(format!("st.global.b32 [%cd0+{}], %c1;", n * 16));
        }
    }

    /// Multiplies accumulator lane row `h` of `%{acc}..` (`width` columns) by `f`.
    pub fn scale_row(&mut self, acc: &str, h: u32, width: u32, f: &str) {
        for r in row_regs(acc, h, width) {
            self.i(format!("mul.f32 {r}, {r}, {f};"));
        }
    }
}

/// The registers of accumulator lane row `h` (0: `g`, 1: `g + 8`) of a
/// 16 x `width` tile `%{acc}..`: columns `8n + 2t + e` for `e` in 0..2.
pub fn row_regs(acc: &str, h: u32, width: u32) -> Vec<String> {
    (0..width / 8).flat_map(|n| [4 * n + 2 * h, 4 * n + 2 * h + 1]).map(|r| format!("%{acc}{r}")).collect()
}

/// Every accumulator register of a 16 x `width` tile as `(r, h, col)`:
/// register `r` holds lane row `h` (0: `g`, 1: `g + 8`) at column
/// `col + 2t` (the same layout as [`row_regs`]).
pub fn tile_cells(width: u32) -> impl Iterator<Item = (u32, u32, u32)> {
    (0..width / 8).flat_map(|n| (0..2).flat_map(move |h| (0..2).map(move |e| (4 * n + 2 * h + e, h, 8 * n + e))))
}

/// PTX's exact spelling of an f32 immediate.
pub fn f32_imm(x: f32) -> String {
    format!("0f{:08X}", x.to_bits())
}

/// A whole module: one `.entry` with u64 pointer `params`, dynamic shared
/// memory `smem`, and 128 threads per CTA.
pub fn module(what: &str, arch: Arch, name: &str, params: &[&str], decls: &str, body: String) -> String {
    let entry = Entry { what, arch, name, params, tensor_maps: &[], threads: THREADS };
    entry.module(decls, body)
}

/// The head of a kernel module.
pub struct Entry<'a> {
    /// What the kernel is, for the header comment.
    pub what: &'a str,
    /// The target.
    pub arch: Arch,
    /// The `.entry` name.
    pub name: &'a str,
    /// Every parameter in order: u64 pointers, except those in `tensor_maps`.
    pub params: &'a [&'a str],
    /// The parameters that are 128-byte tensor maps (`.param .align 64 .b8 name[128]`).
    pub tensor_maps: &'a [&'a str],
    /// Threads per CTA (`.maxntid`).
    pub threads: u32,
}

impl Entry<'_> {
    /// The module text with this head, register declarations `decls` and
    /// `body`. Dynamic shared memory `smem` is 1024-byte aligned when the
    /// kernel uses TMA (128-byte swizzle atoms), else 16.
    pub fn module(&self, decls: &str, body: String) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| if self.tensor_maps.contains(p) { format!("    .param .align 64 .b8 {p}[128]") } else { format!("    .param .u64 {p}") })
            .collect();
        let align = if self.tensor_maps.is_empty() { 16 } else { 1024 };
        format!(
            "// {}, generated by Kiln.\n.version 8.0\n.target {}\n.address_size 64\n\n.extern .shared .align {align} .b8 smem[];\n\n.visible .entry {}(\n{}\n)\n.maxntid {}, 1, 1\n{{\n{}{decls}{body}}}\n",
            self.what,
            self.arch.name(),
            self.name,
            params.join(",\n"),
            self.threads,
            Asm::common_regs()
        )
    }
}

/// How an mma B operand (`k × n`) lies in shared memory.
#[derive(Clone, Copy)]
pub enum BLayout {
    /// Rows are `n`, `k` contiguous (K for `Q Kᵀ`): plain `ldmatrix`.
    RowsN,
    /// Rows are `k`, `n` contiguous (V for `P V`): `ldmatrix.trans`.
    RowsK,
}

impl Asm {
    /// `dst` = this lane's byte offset in a tile of `pitch`-byte rows for
    /// `ldmatrix.x4` in `layout` (lanes 8m..8m+7 address the rows of matrix
    /// m). `RowsK` is also the pattern of a 16x16 A fragment.
    pub fn lane_offset(&mut self, dst: &str, layout: BLayout, pitch: u32) {
        let (rows, log) = match layout {
            BLayout::RowsN => (7, 3),
            BLayout::RowsK => (15, 4),
        };
        self.i(format!("and.b32 {dst}, %lane, {rows};"));
        self.i(format!("mul.lo.u32 {dst}, {dst}, {pitch};"));
        self.i(format!("shr.u32 %lo, %lane, {log};"));
        self.i("shl.b32 %lo, %lo, 4;");
        self.i(format!("add.u32 {dst}, {dst}, %lo;"));
    }

    /// A fragments `%{a}{4s..4s+3}` for `k / 16` steps of a 16-row block at
    /// `addr` (which holds the [`BLayout::RowsK`] lane offset).
    pub fn load_a(&mut self, a: &str, addr: &str, k: u32) {
        for s in 0..k / 16 {
            self.ldmatrix_x4(&quad(a, s), addr, s * 32, false);
        }
    }

    /// One warp's `acc (+)= A · B` for a 16-row block: `A` in fragments
    /// `%{a}..` (16 x `k`), `B` (`k` x `n`) in shared memory at `b` (with the
    /// lane offset for `layout` added) with `pitch`-byte rows, `acc` the
    /// `n / 8` accumulator quads `%{acc}..`; `init` starts from zero.
    /// Uses `%bf0..3` and `%zero`.
    #[allow(clippy::too_many_arguments)]
    pub fn warp_gemm(&mut self, dt: Half, acc: &str, init: bool, a: &str, b: &str, pitch: u32, n: u32, k: u32, layout: BLayout) {
        let zeros: [String; 4] = std::array::from_fn(|_| "%zero".to_string());
        let bf = quad("bf", 0);
        match layout {
            BLayout::RowsN => {
                for nt in 0..n / 8 {
                    let d = quad(acc, nt);
                    for kk in 0..k / 32 {
                        self.ldmatrix_x4(&bf, b, nt * 8 * pitch + kk * 64, false);
                        let c = if init && kk == 0 { &zeros } else { &d };
                        self.mma(dt, &d, &quad(a, 2 * kk), ["%bf0", "%bf1"], c);
                        self.mma(dt, &d, &quad(a, 2 * kk + 1), ["%bf2", "%bf3"], &d);
                    }
                }
            }
            BLayout::RowsK => {
                for s in 0..k / 16 {
                    for nn in 0..n / 16 {
                        self.ldmatrix_x4(&bf, b, s * 16 * pitch + nn * 32, true);
                        for (h, pair) in [["%bf0", "%bf1"], ["%bf2", "%bf3"]].into_iter().enumerate() {
                            let d = quad(acc, 2 * nn + h as u32);
                            let c = if init && s == 0 { &zeros } else { &d };
                            self.mma(dt, &d, &quad(a, s), pair, c);
                        }
                    }
                }
            }
        }
    }

    /// Re-packs `n / 8` accumulator quads `%{acc}..` (16 x `n`, f32) as A
    /// fragments `%{a}..` of the same 16 x `n` matrix in halves: k-step `s`
    /// takes accumulator tiles `2s` (columns 0-7) and `2s + 1` (8-15).
    pub fn acc_to_a(&mut self, dt: Half, a: &str, acc: &str, n: u32) {
        for s in 0..n / 16 {
            for (k, (tile, h)) in [(2 * s, 0), (2 * s, 1), (2 * s + 1, 0), (2 * s + 1, 1)].into_iter().enumerate() {
                let r = 4 * tile + 2 * h;
                self.pack(dt, &format!("%{a}{}", 4 * s + k as u32), &format!("%{acc}{r}"), &format!("%{acc}{}", r + 1));
            }
        }
    }
}

/// Four consecutive registers `prefix{4i} ..`.
pub fn quad(prefix: &str, i: u32) -> [String; 4] {
    std::array::from_fn(|j| format!("%{prefix}{}", 4 * i + j as u32))
}
