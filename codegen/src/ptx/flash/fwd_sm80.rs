//! FlashAttention-2 forward for sm_80 (runs unchanged on sm_90a).
//!
//! One CTA per (64-query block, head); 4 warps, each owning 16 query rows.
//! Q is copied once and kept as mma A fragments in registers. K/V tiles of
//! 64 keys are double-buffered in shared memory with `cp.async` (tile
//! `t + 1` streams in while tile `t` is used). Per tile and warp:
//! `S = Q Kᵀ` (ldmatrix of K rows gives B fragments directly), scaled into
//! log2 units, masked only on tiles that cross `sk` or the causal diagonal,
//! online softmax with the row max/sum combined across the 4 lanes of a
//! quad, P re-packed from the S accumulators into A fragments (no shared
//! memory round trip) and `O += P V` with `ldmatrix.trans` of V. Tiles
//! entirely above the causal diagonal are never loaded. The row sum `l`
//! stays a per-lane partial until the end; O is normalized once, and
//! `lse = [ln 2 · m, ln 2 · log2 l]` is written in natural-log units.

use super::asm::{module, Asm, BLayout, NEG_INF};
use super::{mask, pipeline, softmax};
use super::config::{FlashConfig, BLOCK_M, BLOCK_N, THREADS};
use super::FlashKernel;
use crate::ptx::Arch;

/// The pointer parameters, in order.
const PARAMS: [&str; 5] = ["q", "k", "v", "o", "lse"];

/// The kernel for `cfg` (already validated).
pub fn generate(cfg: &FlashConfig, arch: Arch) -> FlashKernel {
    let dt = cfg.dtype;
    let (d, dv) = (cfg.d, cfg.dv);
    let (pq, pv) = (FlashConfig::pitch(d), FlashConfig::pitch(dv));
    let (q_bytes, k_bytes, v_bytes) = (BLOCK_M * pq, BLOCK_N * pq, BLOCK_N * pv);
    let shared = q_bytes + 2 * k_bytes + 2 * v_bytes;
    let s_tiles = BLOCK_N / 8;

    let mut a = Asm::default();
    let name = kernel_name(cfg, arch);
    // ---- indices and base addresses
    a.lanes();
    a.q_block(cfg.group);
    a.global_param("%gq", "q", "%head", cfg.sq * d * 2);
    a.global_param("%gk", "k", "%kvh", cfg.sk * d * 2);
    a.global_param("%gv", "v", "%kvh", cfg.sk * dv * 2);
    a.global_param("%go", "o", "%head", cfg.sq * dv * 2);
    a.global_param("%gl", "lse", "%head", cfg.sq * 8);
    a.i("mov.u64 %cd0, smem;");
    a.i("cvt.u32.u64 %sq, %cd0;");
    a.i(format!("add.u32 %sk0, %sq, {q_bytes};"));
    a.i(format!("add.u32 %sv0, %sk0, {};", 2 * k_bytes));
    // ldmatrix lane offsets; the Q block of this warp starts 16 rows per warp in
    a.lane_offset("%vofs", BLayout::RowsK, pv);
    a.lane_offset("%kofs", BLayout::RowsN, pq);
    a.lane_offset("%qofs", BLayout::RowsK, pq);
    a.i(format!("mad.lo.u32 %qofs, %warp, {}, %qofs;", 16 * pq));
    a.i("add.u32 %qofs, %qofs, %sq;");

    // ---- which keys each lane row sees, and how many K/V tiles to visit
    mask::row_limits(&mut a, cfg);
    mask::tile_count(&mut a, cfg, "%q0", BLOCK_M);

    // accumulators start empty; with no visible tile they stay so, and
    // l = 0 gives NaN rows and NaN lse, as the naive softmax
    for h in 0..2 {
        a.i(format!("mov.f32 %m{h}, {NEG_INF};"));
        a.i(format!("mov.f32 %l{h}, 0f00000000;"));
    }
    for r in 0..dv / 2 {
        a.i(format!("mov.f32 %o{r}, 0f00000000;"));
    }
    pipeline::kv_loop(&mut a, cfg, &[("%sq", "%gq", d)], |a| a.load_a("qa", "%qofs", d), |a| {
        a.i("add.u32 %kb, %kb, %kofs;");
        a.i("add.u32 %vb, %vb, %vofs;");
        // S = Q Kᵀ (K rows are the n of the B operand)
        a.warp_gemm(dt, "s", true, "qa", "%kb", pq, BLOCK_N, d, BLayout::RowsN);
        softmax::scale_scores(a, "s", cfg);
        mask::mask_tile(a, "s");
        // online softmax, per lane row h (g or g + 8)
        for h in 0..2 {
            softmax::update_row(a, "s", h, "%al");
            a.scale_row("o", h, dv, "%al");
        }
        // P as A fragments straight from the S accumulators, then O += P V
        a.acc_to_a(dt, "pa", "s", BLOCK_N);
        a.warp_gemm(dt, "o", false, "pa", "%vb", pv, dv, BLOCK_N, BLayout::RowsK);
        // every warp is done with this buffer before the next iteration refills it
    });

    // ---- epilogue: normalize, store o (halves) and lse (f32) for rows < sq
    softmax::finish(&mut a, cfg);
    a.i("ret;");

    let decls = format!(
        "    .reg .pred %p<2>;\n    .reg .b32 %head, %kvh, %q0, %sq, %sk0, %sv0, %qofs, %kofs, %vofs, %kb, %vb, %x, %y, %z, %nt, %kt, %minlim, %lim0, %lim1, %rl0, %rl1;\n    .reg .b64 %gq, %gk, %gv, %go, %gl;\n    .reg .b32 %qa<{}>, %pa<{}>;\n    .reg .f32 %s<{}>, %o<{}>, %m<2>, %l<2>, %mx, %base, %al, %rs, %ft;\n",
        d / 4,
        2 * s_tiles,
        4 * s_tiles,
        dv / 2,
    );
    let ptx = module("FlashAttention-2 forward", arch, &name, &PARAMS, &decls, a.finish());
    FlashKernel {
        name,
        ptx,
        grid: [cfg.sq.div_ceil(BLOCK_M), cfg.heads, 1],
        block: [THREADS, 1, 1],
        shared_bytes: shared,
        params: PARAMS.to_vec(),
        tensor_maps: Vec::new(),
    }
}

/// A name unique to the configuration.
fn kernel_name(cfg: &FlashConfig, arch: Arch) -> String {
    format!("flash_fwd_{}", super::config_tag(cfg, arch))
}
