//! Visibility of keys to queries for kernels whose lanes own query rows
//! (the forward and the dQ kernel): per-row key limits, the number of K/V
//! tiles a Q block needs (tiles wholly above the causal diagonal are
//! skipped), and masking of one S tile.

use super::asm::{tile_cells, Asm, NEG_INF};
use super::config::{FlashConfig, BLOCK_N};

/// Sets `%lim0`/`%lim1` (the last key lane rows `g` and `g + 8` see, s32)
/// and `%minlim` (the last key every row of the block sees). Needs
/// `%warp`, `%g`, `%q0` (the first row of the 64-row block); clobbers `%z`.
pub fn row_limits(a: &mut Asm, cfg: &FlashConfig) {
    let last_key = cfg.sk as i32 - 1;
    a.lane_row("%z", "%q0");
    let causal = cfg.causal_i32();
    for h in 0..2 {
        match causal {
            Some(c) => {
                a.i(format!("add.s32 %lim{h}, %z, {};", c + 8 * h));
                a.i(format!("min.s32 %lim{h}, %lim{h}, {last_key};"));
            }
            None => a.i(format!("mov.u32 %lim{h}, {last_key};")),
        }
    }
    match causal {
        // the block's first row sees the fewest keys
        Some(c) => {
            a.i(format!("add.s32 %minlim, %q0, {c};"));
            a.i(format!("min.s32 %minlim, %minlim, {last_key};"));
        }
        None => a.i(format!("mov.u32 %minlim, {last_key};")),
    }
}

/// Sets `%nt` to the K/V tiles the `rows` query rows from `first` (a
/// register) need: tiles wholly above the causal diagonal are skipped.
/// Clobbers `%x`.
pub fn tile_count(a: &mut Asm, cfg: &FlashConfig, first: &str, rows: u32) {
    let last_key = cfg.sk as i32 - 1;
    match cfg.causal_i32() {
        // the block's last valid row sees the most keys
        Some(c) => {
            a.i(format!("add.u32 %x, {first}, {};", rows - 1));
            a.i(format!("min.u32 %x, %x, {};", cfg.sq - 1));
            a.i(format!("add.s32 %x, %x, {c};"));
            a.i(format!("min.s32 %x, %x, {last_key};"));
            a.i("max.s32 %x, %x, -1;");
            a.i(format!("add.s32 %x, %x, {BLOCK_N};"));
            a.i(format!("div.u32 %nt, %x, {BLOCK_N};"));
        }
        None => a.i(format!("mov.u32 %nt, {};", cfg.sk.div_ceil(BLOCK_N))),
    }
}

/// Sets hidden entries of the S tile `%{s}..` (K/V tile `%kt`) to `-inf`;
/// a uniform branch skips tiles every row sees in full. Clobbers `%x`,
/// `%y`, `%rl0`, `%rl1`, `%p0`, `%p1`.
pub fn mask_tile(a: &mut Asm, s: &str) {
    let unmasked = a.label("unmasked");
    a.i(format!("mul.lo.u32 %x, %kt, {BLOCK_N};"));
    a.i(format!("add.s32 %y, %x, {};", BLOCK_N - 1));
    a.i("setp.le.s32 %p0, %y, %minlim;");
    a.i(format!("@%p0 bra {unmasked};"));
    a.i("shl.b32 %y, %t, 1;");
    a.i("add.u32 %y, %y, %x;");
    for h in 0..2 {
        a.i(format!("sub.s32 %rl{h}, %lim{h}, %y;"));
    }
    for (r, h, col) in tile_cells(BLOCK_N) {
        a.i(format!("setp.lt.s32 %p1, %rl{h}, {col};"));
        a.i(format!("selp.f32 %{s}{r}, {NEG_INF}, %{s}{r}, %p1;"));
    }
    a.place(&unmasked);
}
