//! FlashAttention-3-style forward for sm_90a: TMA, mbarriers, warp
//! specialization, `wgmma` and ping-pong scheduling.
//!
//! One CTA per (128-query block, head), three warpgroups. Warpgroup 0 is
//! the producer: one thread loads the CTA's Q block once and then K/V tiles
//! of 64 keys with TMA (`cp.async.bulk.tensor`, 128-byte swizzle, boxes of
//! 64 rows x 64 halves, out-of-bounds rows zero-filled) into a ring of
//! [`STAGES`] shared-memory stages. Each stage has a `full` mbarrier (the
//! producer arms it with `expect_tx` of the stage's bytes; TMA completes
//! them) and an `empty` mbarrier (all 256 consumer threads arrive when done
//! with the stage; the producer waits on it before refilling).
//!
//! Warpgroups 1 and 2 are consumers owning 64 query rows each. Per K/V
//! tile `t` a consumer issues `S = Q Kₜᵀ` (`wgmma` m64n64k16, both operands
//! K-major from descriptors) and `O += Pₜ₋₁ Vₜ₋₁` (`wgmma` m64n{dv}k16, P
//! from registers, V MN-major from a descriptor), waits for S only, runs
//! the online softmax of tile `t` while its previous `P V` finishes, then
//! rescales O and re-packs P. The two consumers take turns issuing their
//! GEMMs through named barriers 1 and 2 (`bar.sync` on its own,
//! `bar.arrive` on the other's, 256 threads), so one warpgroup's softmax
//! overlaps the other's GEMMs. Both consumers visit the same tiles (the
//! CTA's causal limit), which keeps the turn-taking balanced; the masking
//! is per row. S and O accumulators have the `mma.sync` per-warp layout,
//! so masking, softmax and the epilogue are shared with the sm_80 kernel.
//!
//! Shared memory (1024-byte aligned for the swizzle atoms): Q (two 64-row
//! blocks), the K and V stages, each tile as `d / 64` (or `dv / 64`)
//! boxes of 8 KiB, then the mbarriers. Needs `d` and `dv` in {64, 128}.

use super::asm::{Asm, Entry, NEG_INF};
use super::config::{FlashConfig, BLOCK_N};
use super::tma::TensorMapParam;
use super::{mask, softmax, FlashKernel};
use crate::ptx::Arch;

/// Query rows per CTA (two consumer warpgroups of 64).
pub const BLOCK_M: u32 = 128;
/// Threads per CTA: the producer warpgroup and two consumers.
pub const THREADS: u32 = 384;
/// K/V stages in the shared-memory ring.
pub const STAGES: u32 = 2;
/// Bytes of one TMA box: 64 rows of 128 bytes.
const BOX: u32 = 64 * 128;

/// The parameters, in order.
const PARAMS: [&str; 5] = ["tmap_q", "tmap_k", "tmap_v", "o", "lse"];

/// Where everything lies in shared memory.
struct Layout {
    k: u32,
    v: u32,
    k_stage: u32,
    v_stage: u32,
    q_full: u32,
    full: u32,
    empty: u32,
    total: u32,
}

impl Layout {
    fn new(cfg: &FlashConfig) -> Layout {
        let (k_stage, v_stage) = (cfg.d / 64 * BOX, cfg.dv / 64 * BOX);
        let k = 2 * cfg.d / 64 * BOX;
        let v = k + STAGES * k_stage;
        let q_full = v + STAGES * v_stage;
        let full = q_full + 8;
        let empty = full + 8 * STAGES;
        Layout { k, v, k_stage, v_stage, q_full, full, empty, total: empty + 8 * STAGES }
    }
}

/// Whether this kernel handles `cfg` (validated): head sizes 64 and 128.
pub fn supports(cfg: &FlashConfig) -> bool {
    [64, 128].contains(&cfg.d) && [64, 128].contains(&cfg.dv)
}

/// Descriptor bits besides the start address: 128-byte swizzle, 8-row
/// groups 1024 bytes apart (SBO), and LBO (unused by swizzled K-major
/// operands; for MN-major V the distance between 64-column boxes).
fn descriptor_bits(lbo: u32) -> u64 {
    (u64::from(lbo >> 4) << 16) | (1024u64 >> 4 << 32) | (1 << 62)
}

/// The kernel for `cfg` (validated, and accepted by [`supports`]).
pub fn generate(cfg: &FlashConfig) -> FlashKernel {
    let (d, dv) = (cfg.d, cfg.dv);
    let lay = Layout::new(cfg);
    let mut a = Asm::default();
    let name = format!("flash3_fwd_{}", super::config_tag(cfg, Arch::Sm90a));

    // ---- indices, barriers
    a.lanes();
    a.i("mov.u32 %head, %ctaid.y;");
    a.i(format!("div.u32 %kvh, %head, {};", cfg.group));
    a.i("mov.u32 %qc, %ctaid.x;");
    a.i(format!("mul.lo.u32 %qc, %qc, {BLOCK_M};"));
    a.i("shr.u32 %wg, %tx, 7;");
    a.i("mov.u64 %cd0, smem;");
    a.i("cvt.u32.u64 %sb, %cd0;");
    mask::tile_count(&mut a, cfg, "%qc", BLOCK_M);
    let inited = a.label("inited");
    a.i("setp.ne.u32 %p0, %tx, 0;");
    a.i(format!("@%p0 bra {inited};"));
    a.i(format!("add.u32 %bar, %sb, {};", lay.q_full));
    a.i("mbarrier.init.shared::cta.b64 [%bar], 1;");
    for s in 0..STAGES {
        a.i(format!("add.u32 %bar, %sb, {};", lay.full + 8 * s));
        a.i("mbarrier.init.shared::cta.b64 [%bar], 1;");
        a.i(format!("add.u32 %bar, %sb, {};", lay.empty + 8 * s));
        a.i("mbarrier.init.shared::cta.b64 [%bar], 256;");
    }
    a.i("fence.mbarrier_init.release.cluster;");
    a.place(&inited);
    a.i("bar.sync 0;");
    let (consumer, exit) = (a.label("consumer"), a.label("exit"));
    a.i("setp.ne.u32 %p0, %wg, 0;");
    a.i(format!("@%p0 bra {consumer};"));
    producer(&mut a, cfg, &lay, &exit);
    a.place(&consumer);
    consumers(&mut a, cfg, &lay);
    a.place(&exit);
    a.i("ret;");

    let decls = format!(
        "    .reg .pred %p<2>, %pw, %pt, %pf;\n    .reg .b32 %head, %kvh, %qc, %q0, %wg, %sb, %bar, %kst, %vst, %vp, %st, %par, %bme, %bother, %x, %y, %z, %nt, %kt, %minlim, %lim0, %lim1, %rl0, %rl1;\n    .reg .b64 %go, %gl, %tmq, %tmk, %tmv, %dq, %dk, %dv, %da, %db;\n    .reg .b32 %pa<{}>;\n    .reg .f32 %s<{}>, %o<{}>, %m<2>, %l<2>, %mx, %base, %al, %al0, %al1, %rs, %ft;\n",
        BLOCK_N / 4,
        BLOCK_N / 2,
        dv / 2,
    );
    let entry = Entry { what: "FlashAttention-3-style forward (TMA, wgmma, warp-specialized)", arch: Arch::Sm90a, name: &name, params: &PARAMS, tensor_maps: &PARAMS[..3], threads: THREADS };
    let kv_heads = cfg.heads / cfg.group;
    let tensor_maps = vec![
        TensorMapParam::rows_of_halves("tmap_q", "q", cfg.dtype, [cfg.heads, cfg.sq, d], 64),
        TensorMapParam::rows_of_halves("tmap_k", "k", cfg.dtype, [kv_heads, cfg.sk, d], BLOCK_N),
        TensorMapParam::rows_of_halves("tmap_v", "v", cfg.dtype, [kv_heads, cfg.sk, dv], BLOCK_N),
    ];
    FlashKernel {
        ptx: entry.module(&decls, a.finish()),
        name,
        grid: [cfg.sq.div_ceil(BLOCK_M), cfg.heads, 1],
        block: [THREADS, 1, 1],
        shared_bytes: lay.total,
        params: PARAMS.to_vec(),
        tensor_maps,
    }
}

/// `%kst`/`%vst` = the K/V buffers of stage `%st`, `%bar` its barrier at `offset` (full or empty).
fn stage(a: &mut Asm, lay: &Layout, barrier: u32) {
    a.i(format!("mad.lo.u32 %kst, %st, {}, %sb;", lay.k_stage));
    a.i(format!("add.u32 %kst, %kst, {};", lay.k));
    a.i(format!("mad.lo.u32 %vst, %st, {}, %sb;", lay.v_stage));
    a.i(format!("add.u32 %vst, %vst, {};", lay.v));
    a.i("mad.lo.u32 %bar, %st, 8, %sb;");
    a.i(format!("add.u32 %bar, %bar, {barrier};"));
}

/// One elected thread: Q once, then K/V tile `kt` into stage `kt % STAGES`
/// once the consumers released the tile that used it before.
fn producer(a: &mut Asm, cfg: &FlashConfig, lay: &Layout, exit: &str) {
    a.i("setp.ne.u32 %p0, %tx, 0;");
    a.i("setp.eq.u32 %p1, %nt, 0;");
    a.i("or.pred %p0, %p0, %p1;");
    a.i(format!("@%p0 bra {exit};"));
    for (reg, p) in [("%tmq", "tmap_q"), ("%tmk", "tmap_k"), ("%tmv", "tmap_v")] {
        a.tensor_map_address(reg, p);
    }
    a.i(format!("add.u32 %bar, %sb, {};", lay.q_full));
    a.i(format!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%bar], {};", 2 * cfg.d / 64 * BOX));
    for w in 0..2 {
        a.i(format!("add.u32 %y, %qc, {};", 64 * w));
        for h in 0..cfg.d / 64 {
            a.i(format!("add.u32 %c0, %sb, {};", (w * cfg.d / 64 + h) * BOX));
            a.i(format!("mov.u32 %c1, {};", 64 * h));
            a.tma_load("%c0", "%tmq", ["%c1", "%y", "%head"], "%bar");
        }
    }
    let (top, free) = (a.label("produce"), a.label("free"));
    a.i("mov.u32 %kt, 0;");
    a.place(&top);
    a.i(format!("rem.u32 %st, %kt, {STAGES};"));
    a.i(format!("setp.lt.u32 %p0, %kt, {STAGES};"));
    a.i(format!("@%p0 bra {free};"));
    // the stage's previous tile kt - STAGES completed empty phase kt / STAGES - 1
    stage(a, lay, lay.empty);
    a.i(format!("div.u32 %par, %kt, {STAGES};"));
    a.i("add.u32 %par, %par, 1;");
    a.i("and.b32 %par, %par, 1;");
    a.mbarrier_wait("%bar", "%par");
    a.place(&free);
    stage(a, lay, lay.full);
    a.i(format!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%bar], {};", (cfg.d + cfg.dv) / 64 * BOX));
    a.i(format!("mul.lo.u32 %y, %kt, {BLOCK_N};"));
    for (base, map, width) in [("%kst", "%tmk", cfg.d), ("%vst", "%tmv", cfg.dv)] {
        for h in 0..width / 64 {
            a.i(format!("add.u32 %c0, {base}, {};", h * BOX));
            a.i(format!("mov.u32 %c1, {};", 64 * h));
            a.tma_load("%c0", map, ["%c1", "%y", "%kvh"], "%bar");
        }
    }
    a.i("add.u32 %kt, %kt, 1;");
    a.i("setp.lt.u32 %p0, %kt, %nt;");
    a.i(format!("@%p0 bra {top};"));
    a.i(format!("bra.uni {exit};"));
}

/// `dst` = a 128-byte-swizzled descriptor of the shared address in `addr`.
fn descriptor(a: &mut Asm, dst: &str, addr: &str, lbo: u32) {
    a.i(format!("cvt.u64.u32 {dst}, {addr};"));
    a.i(format!("shr.u64 {dst}, {dst}, 4;"));
    a.i(format!("and.b64 {dst}, {dst}, 16383;"));
    a.i(format!("or.b64 {dst}, {dst}, {};", descriptor_bits(lbo)));
}

/// The `wgmma`s of `S = Q Kᵀ` (Q at descriptor `%dq`, K at `%dk`), S overwritten.
fn gemm_s(a: &mut Asm, cfg: &FlashConfig) {
    let t = cfg.dtype.ptx();
    let s: Vec<String> = (0..BLOCK_N / 2).map(|r| format!("%s{r}")).collect();
    for k in 0..cfg.d / 16 {
        // 16 columns = 32 bytes along the swizzled row; 64 columns per box
        let offset = (k / 4 * BOX + k % 4 * 32) >> 4;
        a.i(format!("add.s64 %da, %dq, {offset};"));
        a.i(format!("add.s64 %db, %dk, {offset};"));
        let scale_d = if k == 0 { "%pf" } else { "%pt" };
        a.i(format!("wgmma.mma_async.sync.aligned.m64n{BLOCK_N}k16.f32.{t}.{t} {{{}}}, %da, %db, {scale_d}, 1, 1, 0, 0;", s.join(", ")));
    }
}

/// The `wgmma`s of `O += P V` (P in `%pa..`, V at descriptor `%dv`, MN-major).
fn gemm_o(a: &mut Asm, cfg: &FlashConfig) {
    let t = cfg.dtype.ptx();
    let o: Vec<String> = (0..cfg.dv / 2).map(|r| format!("%o{r}")).collect();
    for k in 0..BLOCK_N / 16 {
        // 16 keys = 16 rows of 128 bytes
        a.i(format!("add.s64 %db, %dv, {};", (k * 16 * 128) >> 4));
        let p: Vec<String> = (4 * k..4 * k + 4).map(|r| format!("%pa{r}")).collect();
        a.i(format!("wgmma.mma_async.sync.aligned.m64n{}k16.f32.{t}.{t} {{{}}}, {{{}}}, %db, %pt, 1, 1, 1;", cfg.dv, o.join(", "), p.join(", ")));
    }
}

/// Waits for K/V tile `%kt` (stage `%kt % STAGES`, full phase `kt / STAGES`)
/// and points `%dk` at its K.
fn wait_tile(a: &mut Asm, lay: &Layout) {
    a.i(format!("rem.u32 %st, %kt, {STAGES};"));
    stage(a, lay, lay.full);
    a.i(format!("div.u32 %par, %kt, {STAGES};"));
    a.i("and.b32 %par, %par, 1;");
    a.mbarrier_wait("%bar", "%par");
    descriptor(a, "%dk", "%kst", 0);
}

/// Passes the turn to the other consumer, except on the second consumer's
/// last tile (every turn handed over is taken: the first consumer waits
/// `nt` times on a barrier the second signals once up front and then after
/// each of its first `nt - 1` tiles).
fn pass_turn(a: &mut Asm) {
    a.i("add.u32 %x, %kt, 1;");
    a.i("setp.eq.u32 %p0, %x, %nt;");
    a.i("setp.eq.u32 %p1, %wg, 1;");
    a.i("and.pred %p0, %p0, %p1;");
    a.i("@!%p0 bar.arrive %bother, 256;");
}

/// The two consumer warpgroups (see the module docs).
fn consumers(a: &mut Asm, cfg: &FlashConfig, lay: &Layout) {
    let dv = cfg.dv;
    a.i("sub.u32 %wg, %wg, 1;");
    a.i("and.b32 %warp, %warp, 3;");
    a.i("mad.lo.u32 %q0, %wg, 64, %qc;");
    a.i("add.u32 %bme, %wg, 1;");
    a.i("sub.u32 %bother, 2, %wg;");
    a.global_param("%go", "o", "%head", cfg.sq * dv * 2);
    a.global_param("%gl", "lse", "%head", cfg.sq * 8);
    mask::row_limits(a, cfg);
    // accumulators start empty; with no visible tile they stay so, and
    // l = 0 gives NaN rows and NaN lse, as the naive softmax
    for h in 0..2 {
        a.i(format!("mov.f32 %m{h}, {NEG_INF};"));
        a.i(format!("mov.f32 %l{h}, 0f00000000;"));
    }
    for r in 0..dv / 2 {
        a.i(format!("mov.f32 %o{r}, 0f00000000;"));
    }
    let (top, last, done) = (a.label("tile"), a.label("last_pv"), a.label("done"));
    a.i("setp.eq.u32 %p0, %nt, 0;");
    a.i(format!("@%p0 bra {done};"));
    a.i("setp.eq.u32 %pt, %tx, %tx;");
    a.i("setp.ne.u32 %pf, %tx, %tx;");
    a.i(format!("mad.lo.u32 %x, %wg, {}, %sb;", cfg.d / 64 * BOX));
    descriptor(a, "%dq", "%x", 0);
    a.i(format!("add.u32 %bar, %sb, {};", lay.q_full));
    a.i("mov.u32 %par, 0;");
    a.mbarrier_wait("%bar", "%par");
    // the first consumer takes the first turn
    a.i("setp.eq.u32 %p0, %wg, 1;");
    a.i("@%p0 bar.arrive 1, 256;");

    // ---- tile 0: S only (there is no P yet)
    a.i("mov.u32 %kt, 0;");
    wait_tile(a, lay);
    a.i("bar.sync %bme, 256;");
    a.i("wgmma.fence.sync.aligned;");
    gemm_s(a, cfg);
    a.i("wgmma.commit_group.sync.aligned;");
    pass_turn(a);
    a.i("wgmma.wait_group.sync.aligned 0;");
    softmax_tile(a, cfg);
    a.acc_to_a(cfg.dtype, "pa", "s", BLOCK_N);
    a.i("mov.u32 %vp, %vst;");
    a.i("mov.u32 %kt, 1;");

    // ---- tiles 1..nt: S of this tile and P V of the previous one
    a.place(&top);
    a.i("setp.ge.u32 %p0, %kt, %nt;");
    a.i(format!("@%p0 bra {last};"));
    wait_tile(a, lay);
    descriptor(a, "%dv", "%vp", BOX);
    a.i("bar.sync %bme, 256;");
    a.i("wgmma.fence.sync.aligned;");
    gemm_s(a, cfg);
    a.i("wgmma.commit_group.sync.aligned;");
    gemm_o(a, cfg);
    a.i("wgmma.commit_group.sync.aligned;");
    pass_turn(a);
    // S is ready; P V (reading P and O) may still run during the softmax
    a.i("wgmma.wait_group.sync.aligned 1;");
    softmax_tile(a, cfg);
    a.i("wgmma.wait_group.sync.aligned 0;");
    // the previous tile's stage is free
    a.i("sub.u32 %x, %kt, 1;");
    a.i(format!("rem.u32 %x, %x, {STAGES};"));
    a.i("mad.lo.u32 %x, %x, 8, %sb;");
    a.i(format!("add.u32 %x, %x, {};", lay.empty));
    a.i("mbarrier.arrive.shared::cta.b64 _, [%x];");
    for h in 0..2 {
        a.scale_row("o", h, dv, &format!("%al{h}"));
    }
    a.acc_to_a(cfg.dtype, "pa", "s", BLOCK_N);
    a.i("mov.u32 %vp, %vst;");
    a.i("add.u32 %kt, %kt, 1;");
    a.i(format!("bra.uni {top};"));

    // ---- the last tile's P V
    a.place(&last);
    descriptor(a, "%dv", "%vp", BOX);
    a.i("wgmma.fence.sync.aligned;");
    gemm_o(a, cfg);
    a.i("wgmma.commit_group.sync.aligned;");
    a.i("wgmma.wait_group.sync.aligned 0;");
    a.place(&done);
    softmax::finish(a, cfg);
}

/// Scales and masks S (tile `%kt`) and runs the online softmax on both lane
/// rows, leaving the O factors in `%al0`/`%al1`.
fn softmax_tile(a: &mut Asm, cfg: &FlashConfig) {
    softmax::scale_scores(a, "s", cfg);
    mask::mask_tile(a, "s");
    for h in 0..2 {
        softmax::update_row(a, "s", h, &format!("%al{h}"));
    }
}
