//! How a matmul is cut into GEMM tiles for a number of threads.
//!
//! Each tile is one [`Gemm`](crate::kernel::Gemm) call that packs its own
//! panels of both operands, and tiles of one size form one kernel whose
//! grid the runtime spreads over the threads (a remainder tile is a kernel
//! of its own, launched after). So the choice trades three costs, which
//! [`matmul_tiles`] adds up for every candidate and minimizes:
//!
//! - **imbalance**: a kernel takes `ceil(tiles / threads)` tile times, so a
//!   grid of 3 tiles on 2 threads wastes a quarter of the machine and a
//!   lone remainder tile leaves all threads but one idle;
//! - **packing**: every tile packs `(rows + cols)·k` operand elements, at
//!   about [`PACK`] multiply-adds' time each (packing streams memory, a
//!   vector unit retires 16–32 multiply-adds per cycle);
//! - **calls**: a fixed [`CALL`] multiply-adds' time per tile (the call, the
//!   micro-kernel's edge handling, the epilogue's loop set-up).
//!
//! Candidates are the even splits of each side (`ceil(size / c)` for `c`
//! pieces) from [`MIN_TILE`] to [`MAX_TILE`], so a side whose size divides
//! evenly gets one kernel, not a full grid and a remainder.

/// The largest tile side: bounds the epilogue's working set (it runs on a
/// tile right after the tile's product, while it is in cache).
pub const MAX_TILE: u64 = 256;
/// The smallest tile side (unless the side is smaller): below it a
/// micro-kernel's register tile is mostly padding.
pub const MIN_TILE: u64 = 16;
/// Cost of packing one operand element, in multiply-adds.
const PACK: u64 = 16;
/// Fixed cost of one tile, in multiply-adds (about a microsecond).
const CALL: u64 = 50_000;
/// The most pieces a side is split into when searching.
const MAX_PIECES: u64 = 64;

/// Tile sides `(rows, cols)` for `batch` independent `m × n` products
/// with inner dimension `k` on `threads` threads (see the module
/// documentation for the model).
pub fn matmul_tiles(batch: u64, m: u64, n: u64, k: u64, threads: usize) -> (u64, u64) {
    let threads = threads.max(1) as u64;
    let (m, n, batch) = (m.max(1), n.max(1), batch.max(1));
    let mut best = (u64::MAX, (m.min(MAX_TILE), n.min(MAX_TILE)));
    for mt in sides(m) {
        for nt in sides(n) {
            let cost = grid_cost(batch, m, mt, n, nt, k, threads);
            // Ties go to larger tiles (less packing in reality than modeled).
            if cost < best.0 || (cost == best.0 && mt * nt > best.1 .0 * best.1 .1) {
                best = (cost, (mt, nt));
            }
        }
    }
    best.1
}

/// The candidate tile sides of a side of `size`.
fn sides(size: u64) -> Vec<u64> {
    let least = size.div_ceil(MAX_TILE);
    let most = MAX_PIECES.min(size.div_ceil(MIN_TILE)).max(least);
    let mut v: Vec<u64> = (least..=most).map(|c| size.div_ceil(c)).filter(|&t| t >= MIN_TILE.min(size)).collect();
    v.dedup();
    v
}

/// Modeled time (in multiply-adds of one thread) of the kernels that tiles
/// of `mt × nt` make.
fn grid_cost(batch: u64, m: u64, mt: u64, n: u64, nt: u64, k: u64, threads: u64) -> u64 {
    let mut total = 0u64;
    for (_, msz, mcount) in super::emit::regions(m, mt) {
        for (_, nsz, ncount) in super::emit::regions(n, nt) {
            let tiles = batch.saturating_mul(mcount).saturating_mul(ncount);
            let tile = msz.saturating_mul(nsz).saturating_mul(k).saturating_add(PACK.saturating_mul(msz + nsz).saturating_mul(k)).saturating_add(CALL);
            total = total.saturating_add(tiles.div_ceil(threads).saturating_mul(tile));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_layer_splits_evenly_over_two_threads() {
        // BERT-MiniLM's Linear: 984 rows (8 x 123 tokens), 384 x 384.
        let (mt, nt) = matmul_tiles(1, 984, 384, 384, 2);
        assert_eq!(984 % mt, 0, "no remainder kernel: {mt}");
        assert_eq!(384 % nt, 0, "no remainder kernel: {nt}");
        assert_eq!((984 / mt * (384 / nt)) % 2, 0, "an even grid on 2 threads: {mt} x {nt}");
    }

    #[test]
    fn tiles_never_exceed_the_maximum_or_the_matrix() {
        for (m, n) in [(1, 1), (3, 17), (127, 257), (2048, 2048), (5000, 7), (100_000, 3)] {
            for threads in [1, 2, 16] {
                let (mt, nt) = matmul_tiles(1, m, n, 64, threads);
                assert!((1..=MAX_TILE.min(m)).contains(&mt), "{m} x {n} on {threads}: {mt}");
                assert!((1..=MAX_TILE.min(n)).contains(&nt), "{m} x {n} on {threads}: {nt}");
            }
        }
    }

    #[test]
    fn a_tiny_product_is_one_tile() {
        assert_eq!(matmul_tiles(1, 4, 4, 4, 16), (4, 4));
    }

    #[test]
    fn a_square_product_keeps_every_thread_busy() {
        // 256 x 256 on 16 threads: one tile would idle 15 of them.
        let (mt, nt) = matmul_tiles(1, 256, 256, 256, 16);
        assert!(256u64.div_ceil(mt) * 256u64.div_ceil(nt) >= 16, "{mt} x {nt}");
    }

    #[test]
    fn a_batch_already_busy_keeps_whole_matrices() {
        // 64 heads of 128 x 128 on 2 threads: splitting adds packing only.
        assert_eq!(matmul_tiles(64, 128, 128, 64, 2), (128, 128));
    }
}
