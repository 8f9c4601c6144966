//! Running a kernel's tiles on all cores.
//!
//! A kernel's grid `0..n` is split into contiguous chunks, about four per
//! thread (so an uneven tile cost still balances) and at least one tile
//! each; every chunk is one call of the kernel function with its range. A
//! grid of one tile, or a pool of one thread, runs inline on the caller's
//! thread.

use crate::RuntimeError;
use rayon::prelude::*;
use std::ops::Range;

/// Chunks per thread.
const CHUNKS_PER_THREAD: usize = 4;

/// Where kernels run: rayon's global pool or a pool of its own.
#[derive(Debug, Default)]
pub struct Pool {
    pool: Option<rayon::ThreadPool>,
}

impl Pool {
    /// Rayon's global pool (one thread per core unless `RAYON_NUM_THREADS`
    /// says otherwise).
    pub fn global() -> Pool {
        Pool { pool: None }
    }

    /// A pool of its own with `threads` threads; 1 runs everything on the
    /// caller's thread.
    pub fn with_threads(threads: usize) -> Result<Pool, RuntimeError> {
        if threads == 0 {
            return Err(RuntimeError::Invalid("a thread pool needs at least one thread".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kiln-cpu-{i}"))
            .build()
            .map_err(|e| RuntimeError::Invalid(format!("cannot start {threads} threads: {e}")))?;
        Ok(Pool { pool: Some(pool) })
    }

    /// How many threads run tiles.
    pub fn threads(&self) -> usize {
        match &self.pool {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Calls `f` on chunks covering `0..n` (see [`chunks`]), in parallel;
    /// returns when every call has returned.
    pub fn for_each_chunk(&self, n: u64, f: &(dyn Fn(Range<u64>) + Sync)) {
        let threads = self.threads();
        if n == 0 {
            return;
        }
        if n == 1 || threads == 1 {
            return f(0..n);
        }
        let count = chunk_count(n, threads);
        let run = || (0..count).into_par_iter().for_each(|c| f(chunk(n, count, c)));
        match &self.pool {
            Some(p) => p.install(run),
            None => run(),
        }
    }
}

/// How many chunks `0..n` is split into on `threads` threads.
fn chunk_count(n: u64, threads: usize) -> usize {
    let want = threads.max(1).saturating_mul(CHUNKS_PER_THREAD);
    usize::try_from(n).map_or(want, |n| n.min(want))
}

/// Chunk `c` of `count` balanced chunks of `0..n`.
fn chunk(n: u64, count: usize, c: usize) -> Range<u64> {
    let at = |c: usize| (n as u128 * c as u128 / count as u128) as u64;
    at(c)..at(c + 1)
}

/// The chunks `0..n` is split into on `threads` threads: contiguous,
/// non-empty, in order, about four per thread.
pub fn chunks(n: u64, threads: usize) -> Vec<Range<u64>> {
    if n == 0 {
        return Vec::new();
    }
    let count = chunk_count(n, threads);
    (0..count).map(|c| chunk(n, count, c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    #[test]
    fn chunks_cover_the_grid() {
        for n in [0u64, 1, 2, 7, 31, 32, 33, 1000, 1 << 40] {
            for threads in [1, 2, 8, 64] {
                let cs = chunks(n, threads);
                assert!(cs.len() as u64 <= n.min(threads as u64 * 4));
                let mut next = 0;
                for c in &cs {
                    assert_eq!(c.start, next);
                    assert!(c.end > c.start);
                    next = c.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn every_tile_runs_once() {
        for pool in [Pool::global(), Pool::with_threads(1).unwrap(), Pool::with_threads(3).unwrap()] {
            for n in [0u64, 1, 5, 1000] {
                let seen = Mutex::new(vec![0u32; n as usize]);
                let calls = AtomicU64::new(0);
                pool.for_each_chunk(n, &|r| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    let mut s = seen.lock().unwrap();
                    r.for_each(|t| s[t as usize] += 1);
                });
                assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1));
                let calls = calls.into_inner();
                if pool.threads() == 1 || n <= 1 {
                    assert_eq!(calls, n.min(1));
                }
            }
        }
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(Pool::with_threads(0).is_err());
        assert_eq!(Pool::with_threads(2).unwrap().threads(), 2);
    }
}
