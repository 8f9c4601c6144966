//! FlashAttention-2 backward for sm_80 (runs unchanged on sm_90a), in
//! three deterministic kernels (no atomics):
//!
//! 1. `prep`: per query row, `Δ = Σ dO∘O` and `lse · log2 e` (the sum of
//!    the forward's pair `lse = [m, log l]`), written to an
//!    f32 workspace `stats` of `[heads, sq, 2]`. A fully masked row (NaN
//!    lse) gets `lse = +inf` and `Δ = 0` so its probabilities are exact
//!    zeros and it contributes no gradient (instead of spreading NaN).
//! 2. `dq`: one CTA per (64-query block, head) like the forward; per K/V
//!    tile it recomputes `P = exp2(S·scale·log2 e − lse·log2 e)`, forms
//!    `dP = dO Vᵀ`, `dS = P∘(dP − Δ)` and accumulates `dQ += dS K`.
//! 3. `dkv`: one CTA per (64-key block, kv head), warps owning 16 keys; it
//!    walks every query block of every query head in the group, computing
//!    the transposed products `Sᵀ = K Qᵀ`, `dV += Pᵀ dO`, `dPᵀ = V dOᵀ`,
//!    `dK += dSᵀ Q`; query blocks wholly before the causal diagonal are
//!    skipped.
//!
//! dQ double-buffers its K/V tiles like the forward; dK/dV copies each Q
//! block, waits and computes (single-buffered: double buffering it is the
//! obvious next step).

use super::asm::{f32_imm, module, row_regs, tile_cells, Asm, BLayout, NEG_INF};
use super::config::{FlashConfig, BLOCK_M, BLOCK_N, THREADS};
use super::{mask, pipeline};
use super::FlashKernel;
use crate::ptx::Arch;

/// Parameters of the three kernels, in order (`stats` is the f32 workspace
/// of `heads · sq · 2` elements).
pub const PREP_PARAMS: [&str; 4] = ["o", "do", "lse", "stats"];
/// See [`PREP_PARAMS`].
pub const DQ_PARAMS: [&str; 6] = ["q", "k", "v", "do", "stats", "dq"];
/// See [`PREP_PARAMS`].
pub const DKV_PARAMS: [&str; 7] = ["q", "k", "v", "do", "stats", "dk", "dv"];

/// A name unique to the configuration.
fn name(kind: &str, cfg: &FlashConfig, arch: Arch) -> String {
    format!("flash_bwd_{kind}_{}", super::config_tag(cfg, arch))
}

/// The three kernels, in launch order.
pub fn generate(cfg: &FlashConfig, arch: Arch) -> Vec<FlashKernel> {
    vec![prep(cfg, arch), dq(cfg, arch), dkv(cfg, arch)]
}

fn prep(cfg: &FlashConfig, arch: Arch) -> FlashKernel {
    let rows = cfg.heads * cfg.sq;
    let mut a = Asm::default();
    let done = a.label("done");
    a.lanes();
    a.i("mov.u32 %row, %ctaid.x;");
    a.i("shl.b32 %row, %row, 2;");
    a.i("add.u32 %row, %row, %warp;");
    a.i(format!("setp.ge.u32 %p0, %row, {rows};"));
    a.i(format!("@%p0 bra {done};"));
    a.global_param("%go", "o", "%row", cfg.dv * 2);
    a.global_param("%gdo", "do", "%row", cfg.dv * 2);
    a.global_param("%gl", "lse", "%row", 8);
    a.global_param("%gs", "stats", "%row", 8);
    a.i("mul.wide.u32 %cd1, %lane, 2;");
    a.i("add.s64 %go, %go, %cd1;");
    a.i("add.s64 %gdo, %gdo, %cd1;");
    a.i("mov.f32 %acc, 0f00000000;");
    let t = cfg.dtype.ptx();
    for i in 0..cfg.dv / 32 {
        a.i(format!("ld.global.b16 %h0, [%go+{}];", i * 64));
        a.i(format!("ld.global.b16 %h1, [%gdo+{}];", i * 64));
        a.i(format!("cvt.f32.{t} %f0, %h0;"));
        a.i(format!("cvt.f32.{t} %f1, %h1;"));
        a.i("fma.rn.f32 %acc, %f0, %f1, %acc;");
    }
    for m in [16, 8, 4, 2, 1] {
        a.i(format!("shfl.sync.bfly.b32 %f0, %acc, {m}, 31, -1;"));
        a.i("add.f32 %acc, %acc, %f0;");
    }
    a.i("setp.ne.u32 %p0, %lane, 0;");
    a.i(format!("@%p0 bra {done};"));
    a.i("ld.global.f32 %f0, [%gl];");
    a.i("ld.global.f32 %f1, [%gl+4];");
    a.i("add.f32 %f0, %f0, %f1;");
    a.i(format!("mul.f32 %f1, %f0, {};", f32_imm(std::f32::consts::LOG2_E)));
    a.i("setp.nan.f32 %p0, %f0, %f0;");
    a.i("selp.f32 %f1, 0f7F800000, %f1, %p0;");
    a.i("selp.f32 %acc, 0f00000000, %acc, %p0;");
    a.i("st.global.v2.f32 [%gs], {%f1, %acc};");
    a.place(&done);
    a.i("ret;");
    let decls = "    .reg .pred %p<1>;\n    .reg .b32 %row;\n    .reg .b16 %h<2>;\n    .reg .b64 %go, %gdo, %gl, %gs;\n    .reg .f32 %acc, %f<2>;\n";
    let name = name("prep", cfg, arch);
    FlashKernel {
        ptx: module("FlashAttention-2 backward preprocessing", arch, &name, &PREP_PARAMS, decls, a.finish()),
        name,
        grid: [rows.div_ceil(4), 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        params: PREP_PARAMS.to_vec(),
        tensor_maps: Vec::new(),
    }
}

/// `%{s}` row `h` ← `exp2(s − %{lse}{col or row})`: the probabilities, from
/// log2-unit scores and `lse · log2 e`.
fn exp_rows(a: &mut Asm, s: &str, lse: impl Fn(u32, u32) -> String) {
    for h in 0..2 {
        for (i, r) in row_regs(s, h, BLOCK_N).iter().enumerate() {
            a.i(format!("sub.f32 {r}, {r}, {};", lse(h, i as u32)));
            a.i(format!("ex2.approx.ftz.f32 {r}, {r};"));
        }
    }
}

/// `%{s}` ← `%{s} ∘ (%{dp} − Δ)`: dS from P and dP.
fn ds_rows(a: &mut Asm, s: &str, dp: &str, delta: impl Fn(u32, u32) -> String) {
    for h in 0..2 {
        for (i, (p, q)) in row_regs(s, h, BLOCK_N).iter().zip(row_regs(dp, h, BLOCK_N)).enumerate() {
            a.i(format!("sub.f32 {q}, {q}, {};", delta(h, i as u32)));
            a.i(format!("mul.f32 {p}, {p}, {q};"));
        }
    }
}

fn scale_scores(a: &mut Asm, s: &str, cfg: &FlashConfig) {
    let sl2 = f32_imm(cfg.scale * std::f32::consts::LOG2_E);
    for r in 0..BLOCK_N / 2 {
        a.i(format!("mul.f32 %{s}{r}, %{s}{r}, {sl2};"));
    }
}

/// Stores accumulators `(acc, width, global base, scaled)` as halves to
/// rows `%z + 8h` below `rows`, multiplying by the softmax scale first
/// where `scaled` (dS is the gradient of the scaled scores).
fn store_gradients(a: &mut Asm, cfg: &FlashConfig, grads: &[(&str, u32, &str, bool)], rows: u32) {
    let scale = f32_imm(cfg.scale);
    for h in 0..2 {
        let skip = a.label("row_out");
        for &(acc, width, _, scaled) in grads {
            if scaled {
                a.scale_row(acc, h, width, &scale);
            }
        }
        a.i(format!("add.u32 %x, %z, {};", 8 * h));
        a.i(format!("setp.ge.u32 %p0, %x, {rows};"));
        a.i(format!("@%p0 bra {skip};"));
        for &(acc, width, gbase, _) in grads {
            a.store_row(cfg.dtype, acc, h, width, "%x", gbase);
        }
        a.place(&skip);
    }
}

fn zero(a: &mut Asm, acc: &str, width: u32) {
    for r in 0..width / 2 {
        a.i(format!("mov.f32 %{acc}{r}, 0f00000000;"));
    }
}

/// `dst` = shared base `base` + the lane offset for `layout` (+ 16 rows per warp when `per_warp`).
fn operand(a: &mut Asm, dst: &str, base: &str, layout: BLayout, pitch: u32, per_warp: bool) {
    a.lane_offset(dst, layout, pitch);
    if per_warp {
        a.i(format!("mad.lo.u32 {dst}, %warp, {}, {dst};", 16 * pitch));
    }
    a.i(format!("add.u32 {dst}, {dst}, {base};"));
}

fn dq(cfg: &FlashConfig, arch: Arch) -> FlashKernel {
    let dt = cfg.dtype;
    let (d, dv) = (cfg.d, cfg.dv);
    let (pq, pv) = (FlashConfig::pitch(d), FlashConfig::pitch(dv));
    let mut a = Asm::default();
    a.lanes();
    a.q_block(cfg.group);
    a.global_param("%gq", "q", "%head", cfg.sq * d * 2);
    a.global_param("%gk", "k", "%kvh", cfg.sk * d * 2);
    a.global_param("%gv", "v", "%kvh", cfg.sk * dv * 2);
    a.global_param("%gdo", "do", "%head", cfg.sq * dv * 2);
    a.global_param("%gs", "stats", "%head", cfg.sq * 8);
    a.global_param("%gdq", "dq", "%head", cfg.sq * d * 2);
    // Q, dO, then two K buffers and two V buffers
    let (sdo, sk0, sv0) = (BLOCK_M * pq, BLOCK_M * (pq + pv), BLOCK_M * (pq + pv) + 2 * BLOCK_N * pq);
    let shared = sv0 + 2 * BLOCK_N * pv;
    a.i("mov.u64 %cd0, smem;");
    a.i("cvt.u32.u64 %sq, %cd0;");
    a.i(format!("add.u32 %sdo, %sq, {sdo};"));
    a.i(format!("add.u32 %sk0, %sq, {sk0};"));
    a.i(format!("add.u32 %sv0, %sq, {sv0};"));
    operand(&mut a, "%qofs", "%sq", BLayout::RowsK, pq, true);
    operand(&mut a, "%dofs", "%sdo", BLayout::RowsK, pv, true);
    a.lane_offset("%kon", BLayout::RowsN, pq);
    a.lane_offset("%kok", BLayout::RowsK, pq);
    a.lane_offset("%von", BLayout::RowsN, pv);
    mask::row_limits(&mut a, cfg);
    mask::tile_count(&mut a, cfg, "%q0", BLOCK_M);
    // per lane row: lse · log2 e and Δ (rows past sq: zeros, never stored)
    a.lane_row("%z", "%q0");
    for h in 0..2 {
        a.i(format!("add.u32 %x, %z, {};", 8 * h));
        a.i(format!("mov.f32 %ls{h}, 0f00000000;"));
        a.i(format!("mov.f32 %dl{h}, 0f00000000;"));
        a.i(format!("setp.lt.u32 %p0, %x, {};", cfg.sq));
        a.i("mul.wide.u32 %cd0, %x, 8;");
        a.i("add.s64 %cd0, %cd0, %gs;");
        a.i(format!("@%p0 ld.global.v2.f32 {{%ls{h}, %dl{h}}}, [%cd0];"));
    }
    zero(&mut a, "aq", d);
    // Q and dO blocks once, as A fragments, then the K/V tiles
    let setup = |a: &mut Asm| {
        a.load_a("qa", "%qofs", d);
        a.load_a("da", "%dofs", dv);
    };
    pipeline::kv_loop(&mut a, cfg, &[("%sq", "%gq", d), ("%sdo", "%gdo", dv)], setup, |a| {
        a.i("add.u32 %kn, %kb, %kon;");
        a.i("add.u32 %kk, %kb, %kok;");
        a.i("add.u32 %vn, %vb, %von;");
        a.warp_gemm(dt, "s", true, "qa", "%kn", pq, BLOCK_N, d, BLayout::RowsN);
        scale_scores(a, "s", cfg);
        mask::mask_tile(a, "s");
        exp_rows(a, "s", |h, _| format!("%ls{h}"));
        a.warp_gemm(dt, "dp", true, "da", "%vn", pv, BLOCK_N, dv, BLayout::RowsN);
        ds_rows(a, "s", "dp", |h, _| format!("%dl{h}"));
        a.acc_to_a(dt, "pa", "s", BLOCK_N);
        a.warp_gemm(dt, "aq", false, "pa", "%kk", pq, d, BLOCK_N, BLayout::RowsK);
    });
    store_gradients(&mut a, cfg, &[("aq", d, "%gdq", true)], cfg.sq);
    a.i("ret;");
    let decls = format!(
        "    .reg .pred %p<2>;\n    .reg .b32 %head, %kvh, %q0, %sq, %sdo, %sk0, %sv0, %kb, %vb, %qofs, %dofs, %kon, %kok, %von, %kn, %kk, %vn, %x, %y, %z, %nt, %kt, %minlim, %lim0, %lim1, %rl0, %rl1;\n    .reg .b64 %gq, %gk, %gv, %gdo, %gs, %gdq;\n    .reg .b32 %qa<{}>, %da<{}>, %pa<{}>;\n    .reg .f32 %s<{}>, %dp<{}>, %aq<{}>, %ls<2>, %dl<2>;\n",
        d / 4,
        dv / 4,
        BLOCK_N / 4,
        BLOCK_N / 2,
        BLOCK_N / 2,
        d / 2
    );
    let name = name("dq", cfg, arch);
    FlashKernel {
        ptx: module("FlashAttention-2 backward, dQ", arch, &name, &DQ_PARAMS, &decls, a.finish()),
        name,
        grid: [cfg.sq.div_ceil(BLOCK_M), cfg.heads, 1],
        block: [THREADS, 1, 1],
        shared_bytes: shared,
        params: DQ_PARAMS.to_vec(),
        tensor_maps: Vec::new(),
    }
}

fn dkv(cfg: &FlashConfig, arch: Arch) -> FlashKernel {
    let dt = cfg.dtype;
    let (d, dv) = (cfg.d, cfg.dv);
    let (pq, pv) = (FlashConfig::pitch(d), FlashConfig::pitch(dv));
    let q_blocks = cfg.sq.div_ceil(BLOCK_M);
    // non-causal: every query sees every key, as with offset sk
    let c = cfg.causal_i32().unwrap_or(cfg.sk as i32);
    let mut a = Asm::default();
    a.lanes();
    a.i("mov.u32 %kvh, %ctaid.y;");
    a.i("mov.u32 %k0, %ctaid.x;");
    a.i(format!("mul.lo.u32 %k0, %k0, {BLOCK_N};"));
    a.global_param("%gk", "k", "%kvh", cfg.sk * d * 2);
    a.global_param("%gv", "v", "%kvh", cfg.sk * dv * 2);
    a.global_param("%gdk", "dk", "%kvh", cfg.sk * d * 2);
    a.global_param("%gdv", "dv", "%kvh", cfg.sk * dv * 2);
    a.i(format!("mul.lo.u32 %hq0, %kvh, {};", cfg.group));
    a.global_param("%gq0", "q", "%hq0", cfg.sq * d * 2);
    a.global_param("%gdo0", "do", "%hq0", cfg.sq * dv * 2);
    a.global_param("%gs0", "stats", "%hq0", cfg.sq * 8);
    let (sv, sq, sdo) = (BLOCK_N * pq, BLOCK_N * (pq + pv), BLOCK_N * (pq + pv) + BLOCK_M * pq);
    let sst = BLOCK_N * (pq + pv) + BLOCK_M * (pq + pv);
    a.i("mov.u64 %cd0, smem;");
    a.i("cvt.u32.u64 %sk, %cd0;");
    a.i(format!("add.u32 %sv, %sk, {sv};"));
    a.i(format!("add.u32 %sq, %sk, {sq};"));
    a.i(format!("add.u32 %sdo, %sk, {sdo};"));
    a.i(format!("add.u32 %sst, %sk, {sst};"));
    operand(&mut a, "%kofs", "%sk", BLayout::RowsK, pq, true);
    operand(&mut a, "%vofs", "%sv", BLayout::RowsK, pv, true);
    operand(&mut a, "%qn", "%sq", BLayout::RowsN, pq, false);
    operand(&mut a, "%qk", "%sq", BLayout::RowsK, pq, false);
    operand(&mut a, "%don", "%sdo", BLayout::RowsN, pv, false);
    operand(&mut a, "%dok", "%sdo", BLayout::RowsK, pv, false);
    // this lane's stats columns 2t, 2t + 1 of each 8-query tile
    a.i("shl.b32 %lo, %t, 4;");
    a.i("add.u32 %stl, %sst, %lo;");
    // K and V blocks once, as A fragments
    a.copy_group(&[("%sk", "%gk", d), ("%sv", "%gv", dv)], "%k0", cfg.sk);
    a.i("cp.async.wait_all;");
    a.i("bar.sync 0;");
    a.load_a("ka", "%kofs", d);
    a.load_a("va", "%vofs", dv);
    // lane key rows; query i sees key j iff i >= j - c (and i < sq)
    a.lane_row("%z", "%k0");
    for h in 0..2 {
        a.i(format!("add.s32 %qlo{h}, %z, {};", 8 * h - c));
    }
    // the block's last key needs queries from k0 + 63 - c on (with no causal
    // mask: none); its first from k0 - c
    match cfg.causal {
        Some(_) => a.i(format!("add.s32 %full, %k0, {};", BLOCK_N as i32 - 1 - c)),
        None => a.i("mov.u32 %full, 0;"),
    }
    a.i(format!("sub.s32 %first, %k0, {c};"));
    zero(&mut a, "ak", d);
    zero(&mut a, "av", dv);
    let (top, next, done) = (a.label("qtile"), a.label("qnext"), a.label("qdone"));
    a.i("mov.u32 %it, 0;");
    a.place(&top);
    a.i(format!("setp.ge.u32 %p0, %it, {};", cfg.group * q_blocks));
    a.i(format!("@%p0 bra {done};"));
    a.i(format!("div.u32 %hq, %it, {q_blocks};"));
    a.i(format!("rem.u32 %q0, %it, {q_blocks};"));
    a.i(format!("mul.lo.u32 %q0, %q0, {BLOCK_M};"));
    a.i(format!("add.s32 %x, %q0, {};", BLOCK_M - 1));
    a.i("setp.lt.s32 %p0, %x, %first;");
    a.i(format!("@%p0 bra {next};"));
    for (g, g0, bytes) in [("%gq", "%gq0", cfg.sq * d * 2), ("%gdo", "%gdo0", cfg.sq * dv * 2), ("%gs", "%gs0", cfg.sq * 8)] {
        a.i(format!("mad.wide.u32 {g}, %hq, {bytes}, {g0};"));
    }
    a.copy_group(&[("%sq", "%gq", d), ("%sdo", "%gdo", dv)], "%q0", cfg.sq);
    // stats of the block's queries (zeros past sq: masked anyway)
    a.i(format!("setp.lt.u32 %p0, %tx, {BLOCK_M};"));
    a.i("add.u32 %x, %q0, %tx;");
    a.i(format!("setp.lt.and.u32 %p1, %x, {}, %p0;", cfg.sq));
    a.i("mov.f32 %st0, 0f00000000;");
    a.i("mov.f32 %st1, 0f00000000;");
    a.i("mul.wide.u32 %cd0, %x, 8;");
    a.i("add.s64 %cd0, %cd0, %gs;");
    a.i("@%p1 ld.global.v2.f32 {%st0, %st1}, [%cd0];");
    a.i("shl.b32 %y, %tx, 3;");
    a.i("add.u32 %y, %y, %sst;");
    a.i("@%p0 st.shared.v2.f32 [%y], {%st0, %st1};");
    a.i("cp.async.wait_all;");
    a.i("bar.sync 0;");
    // Sᵀ = K Qᵀ in log2 units; rows are keys, columns queries
    a.warp_gemm(dt, "s", true, "ka", "%qn", pq, BLOCK_M, d, BLayout::RowsN);
    scale_scores(&mut a, "s", cfg);
    for n in 0..BLOCK_M / 8 {
        a.i(format!("ld.shared.v4.f32 {{%st{}, %st{}, %st{}, %st{}}}, [%stl+{}];", 4 * n, 4 * n + 1, 4 * n + 2, 4 * n + 3, n * 64));
    }
    // mask tiles that reach past sq or before some key's first query
    let unmasked = a.label("unmasked");
    a.i(format!("add.u32 %x, %q0, {};", BLOCK_M - 1));
    a.i(format!("setp.lt.u32 %p0, %x, {};", cfg.sq));
    a.i("setp.ge.and.s32 %p0, %q0, %full, %p0;");
    a.i(format!("@%p0 bra {unmasked};"));
    a.i("shl.b32 %y, %t, 1;");
    a.i("add.u32 %y, %y, %q0;");
    a.i(format!("sub.s32 %rhi, {}, %y;", cfg.sq as i32 - 1));
    for h in 0..2 {
        a.i(format!("sub.s32 %rl{h}, %qlo{h}, %y;"));
    }
    for (r, h, col) in tile_cells(BLOCK_M) {
        a.i(format!("setp.gt.s32 %p0, %rl{h}, {col};"));
        a.i(format!("setp.lt.or.s32 %p0, %rhi, {col}, %p0;"));
        a.i(format!("selp.f32 %s{r}, {NEG_INF}, %s{r}, %p0;"));
    }
    a.place(&unmasked);
    // column i of row-list entry i is tile i / 2, element i % 2
    let stat = |k: u32| move |_h: u32, i: u32| format!("%st{}", 4 * (i / 2) + 2 * (i % 2) + k);
    exp_rows(&mut a, "s", stat(0));
    a.acc_to_a(dt, "pa", "s", BLOCK_M);
    a.warp_gemm(dt, "av", false, "pa", "%dok", pv, dv, BLOCK_M, BLayout::RowsK);
    a.warp_gemm(dt, "dp", true, "va", "%don", pv, BLOCK_M, dv, BLayout::RowsN);
    ds_rows(&mut a, "s", "dp", stat(1));
    a.acc_to_a(dt, "pa", "s", BLOCK_M);
    a.warp_gemm(dt, "ak", false, "pa", "%qk", pq, d, BLOCK_M, BLayout::RowsK);
    a.i("bar.sync 0;");
    a.place(&next);
    a.i("add.u32 %it, %it, 1;");
    a.i(format!("bra.uni {top};"));
    a.place(&done);
    store_gradients(&mut a, cfg, &[("ak", d, "%gdk", true), ("av", dv, "%gdv", false)], cfg.sk);
    a.i("ret;");
    let decls = format!(
        "    .reg .pred %p<2>;\n    .reg .b32 %kvh, %k0, %hq0, %hq, %q0, %it, %sk, %sv, %sq, %sdo, %sst, %stl, %kofs, %vofs, %qn, %qk, %don, %dok, %x, %y, %z, %qlo0, %qlo1, %full, %first, %rhi, %rl0, %rl1;\n    .reg .b64 %gk, %gv, %gdk, %gdv, %gq0, %gdo0, %gs0, %gq, %gdo, %gs;\n    .reg .b32 %ka<{}>, %va<{}>, %pa<{}>;\n    .reg .f32 %s<{}>, %dp<{}>, %ak<{}>, %av<{}>, %st<{}>;\n",
        d / 4,
        dv / 4,
        BLOCK_M / 4,
        BLOCK_M / 2,
        BLOCK_M / 2,
        d / 2,
        dv / 2,
        BLOCK_M / 2
    );
    let name = name("dkv", cfg, arch);
    FlashKernel {
        ptx: module("FlashAttention-2 backward, dK and dV", arch, &name, &DKV_PARAMS, &decls, a.finish()),
        name,
        grid: [cfg.sk.div_ceil(BLOCK_N), cfg.heads / cfg.group, 1],
        block: [THREADS, 1, 1],
        shared_bytes: sst + BLOCK_M * 8,
        params: DKV_PARAMS.to_vec(),
        tensor_maps: Vec::new(),
    }
}
