//! The double-buffered K/V tile loop of the kernels whose CTAs own a query
//! block (the forward and dQ): tile `kt + 1` streams into one shared
//! buffer with `cp.async` while the CTA computes on tile `kt` in the other.

use super::asm::Asm;
use super::config::{FlashConfig, BLOCK_N};

/// Emits, in order: the query-side tiles `first` (rows from `%q0`) as one
/// copy group; when `%nt > 0`, K/V tile 0 into buffer 0, then `setup`
/// once both have landed; then for `%kt` in `0..%nt`: prefetch tile
/// `kt + 1`, wait for tile `kt`, set `%kb`/`%vb` to its K/V buffers
/// (buffer 0 at `%sk0`/`%sv0`) and run `body`. Clobbers `%x`, `%y`, `%p0`.
pub fn kv_loop(a: &mut Asm, cfg: &FlashConfig, first: &[(&str, &str, u32)], setup: impl FnOnce(&mut Asm), body: impl FnOnce(&mut Asm)) {
    let (d, dv) = (cfg.d, cfg.dv);
    let (k_bytes, v_bytes) = (BLOCK_N * FlashConfig::pitch(d), BLOCK_N * FlashConfig::pitch(dv));
    let buffers = |a: &mut Asm, tile: &str| {
        a.i(format!("and.b32 %y, {tile}, 1;"));
        a.i(format!("mad.lo.u32 %kb, %y, {k_bytes}, %sk0;"));
        a.i(format!("mad.lo.u32 %vb, %y, {v_bytes}, %sv0;"));
    };
    a.copy_group(first, "%q0", cfg.sq);
    let (no_tiles, top, done) = (a.label("no_tiles"), a.label("tile"), a.label("tiles_done"));
    a.i("setp.eq.u32 %p0, %nt, 0;");
    a.i(format!("@%p0 bra {no_tiles};"));
    a.i("mov.u32 %x, 0;");
    a.copy_group(&[("%sk0", "%gk", d), ("%sv0", "%gv", dv)], "%x", cfg.sk);
    a.i("cp.async.wait_group 1;");
    a.i("bar.sync 0;");
    setup(a);
    a.i("mov.u32 %kt, 0;");
    a.place(&top);
    // prefetch tile kt + 1 (an empty group when there is none keeps wait_group 1 exact)
    let no_next = a.label("no_prefetch");
    a.i("add.u32 %x, %kt, 1;");
    a.i("setp.ge.u32 %p0, %x, %nt;");
    a.i(format!("@%p0 bra {no_next};"));
    buffers(a, "%x");
    a.i(format!("mul.lo.u32 %x, %x, {BLOCK_N};"));
    a.copy_tile("%kb", "%gk", "%x", d, d * 2, cfg.sk);
    a.copy_tile("%vb", "%gv", "%x", dv, dv * 2, cfg.sk);
    a.place(&no_next);
    a.i("cp.async.commit_group;");
    a.i("cp.async.wait_group 1;");
    a.i("bar.sync 0;");
    buffers(a, "%kt");
    body(a);
    // every warp is done with this buffer before the next iteration refills it
    a.i("bar.sync 0;");
    a.i("add.u32 %kt, %kt, 1;");
    a.i("setp.lt.u32 %p0, %kt, %nt;");
    a.i(format!("@%p0 bra {top};"));
    a.i(format!("bra.uni {done};"));
    a.place(&no_tiles);
    a.i("cp.async.wait_all;");
    a.place(&done);
}
