//! The online softmax of the forward kernels, whose lanes hold S and O
//! accumulator rows (`mma.sync` and `wgmma` share the per-warp layout: lane
//! rows `g` and `g + 8`, see [`row_regs`]), and the epilogue that
//! normalizes O and writes it with `lse`.

use super::asm::{f32_imm, row_regs, Asm, NEG_INF};
use super::config::{FlashConfig, BLOCK_N};

const LN2: f32 = std::f32::consts::LN_2;

/// Multiplies the S tile `%{s}..` by `scale · log2 e` (log2 units for `ex2`).
pub fn scale_scores(a: &mut Asm, s: &str, cfg: &FlashConfig) {
    let sl2 = f32_imm(cfg.scale * std::f32::consts::LOG2_E);
    for r in 0..BLOCK_N / 2 {
        a.i(format!("mul.f32 %{s}{r}, %{s}{r}, {sl2};"));
    }
}

/// One online-softmax step for lane row `h` of the S tile `%{s}..` (in
/// log2 units, hidden entries `-inf`): updates the running max `%m{h}` and
/// partial sum `%l{h}`, replaces S by `exp2(S - max)` and leaves in `alpha`
/// the factor the row's O accumulators must be multiplied by. Uses `%mx`,
/// `%base`, `%rs`, `%ft`, `%p1`.
pub fn update_row(a: &mut Asm, s: &str, h: u32, alpha: &str) {
    let row = row_regs(s, h, BLOCK_N);
    a.i(format!("max.f32 %mx, {}, {};", row[0], row[1]));
    for r in &row[2..] {
        a.i(format!("max.f32 %mx, %mx, {r};"));
    }
    a.quad_reduce("%mx", "max", "%ft");
    a.i(format!("max.f32 %mx, %mx, %m{h};"));
    // a row with nothing visible yet subtracts 0, not -inf (no NaN)
    a.i(format!("setp.eq.f32 %p1, %mx, {NEG_INF};"));
    a.i("selp.f32 %base, 0f00000000, %mx, %p1;");
    a.i(format!("sub.f32 {alpha}, %m{h}, %base;"));
    a.i(format!("ex2.approx.ftz.f32 {alpha}, {alpha};"));
    a.i(format!("mov.f32 %m{h}, %mx;"));
    for r in &row {
        a.i(format!("sub.f32 {r}, {r}, %base;"));
        a.i(format!("ex2.approx.ftz.f32 {r}, {r};"));
    }
    a.i(format!("add.f32 %rs, {}, {};", row[0], row[1]));
    for r in &row[2..] {
        a.i(format!("add.f32 %rs, %rs, {r};"));
    }
    a.i(format!("fma.rn.f32 %l{h}, %l{h}, {alpha}, %rs;"));
}

/// The epilogue: sums `%l{h}` over the quad, normalizes O (`%o..`, `dv`
/// columns) and stores it as halves to `%go` and `lse = [m, log l]`
/// (natural log, f32 pairs; kept apart, see `kiln_ir::attention`) to
/// `%gl`, for lane rows below `sq` (rows from `lane_row(%q0)`). Uses
/// `%z`, `%x`, `%al`, `%ft`, `%p0`, `%p1`.
pub fn finish(a: &mut Asm, cfg: &FlashConfig) {
    let dv = cfg.dv;
    a.lane_row("%z", "%q0");
    for h in 0..2 {
        a.quad_reduce(&format!("%l{h}"), "add", "%ft");
        a.i(format!("rcp.rn.f32 %al, %l{h};"));
        a.scale_row("o", h, dv, "%al");
        let skip = a.label("row_out");
        a.i(format!("add.u32 %x, %z, {};", 8 * h));
        a.i(format!("setp.ge.u32 %p0, %x, {};", cfg.sq));
        a.i(format!("@%p0 bra {skip};"));
        a.store_row(cfg.dtype, "o", h, dv, "%x", "%go");
        a.i("setp.ne.u32 %p0, %t, 0;");
        a.i(format!("@%p0 bra {skip};"));
        a.i("mul.wide.u32 %cd0, %x, 8;");
        a.i("add.s64 %cd0, %cd0, %gl;");
        a.i(format!("mul.f32 %ft, %m{h}, {};", f32_imm(LN2)));
        a.i("st.global.f32 [%cd0], %ft;");
        a.i(format!("lg2.approx.ftz.f32 %ft, %l{h};"));
        a.i(format!("mul.f32 %ft, %ft, {};", f32_imm(LN2)));
        // l = 0 only when every key is hidden: NaN, as log Σ exp over nothing max-subtracted
        a.i(format!("setp.eq.f32 %p1, %l{h}, 0f00000000;"));
        a.i("selp.f32 %ft, 0f7FC00000, %ft, %p1;");
        a.i("st.global.f32 [%cd0+4], %ft;");
        a.place(&skip);
    }
}
