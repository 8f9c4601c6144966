//! PTX text for the flash kernels: an instruction buffer, fresh labels and
//! the warp-level fragment idioms (`mma.sync`, `ldmatrix`, quad reductions,
//! half packing, `cp.async` tile copies) written once.

use super::config::{FlashConfig, Half, BLOCK_N, THREADS};
use std::fmt::Write;

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

    /// Declarations of the scratch registers [`Asm::copy_tile`] uses.
    pub fn copy_regs() -> &'static str {
        "    .reg .b32 %c<5>;\n    .reg .pred %cp<1>;\n    .reg .b64 %cd<2>;\n"
    }
}

/// Four consecutive registers `prefix{4i} ..`.
pub fn quad(prefix: &str, i: u32) -> [String; 4] {
    std::array::from_fn(|j| format!("%{prefix}{}", 4 * i + j as u32))
}
