//! The machine's ceilings that profiles and benchmarks compare kernels
//! with: the native vector FMA throughput ([`kiln_codegen::cpu::peak`])
//! and the copy bandwidth, on the threads that run tiles. A profile
//! measures them once per process, in about 0.2 s.

use crate::RuntimeError;
use kiln_codegen::cpu::peak::native_fma_peak_gflops;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds the FMA probe runs (after a calibration of about 30 ms).
const FMA_SECONDS: f64 = 0.05;
/// How long the copy is repeated (after one warm-up copy).
const COPY_TIME: Duration = Duration::from_millis(100);

/// What the machine can do at best.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ceilings {
    /// Threads the ceilings are measured on.
    pub threads: usize,
    /// The native vector FMA ceiling, GFLOP/s.
    pub gflops: f64,
    /// Which FMA instructions it was measured with (`avx512f`, `avx2+fma`, `f32x4`).
    pub isa: &'static str,
    /// Copy bandwidth, GB/s of bytes read plus written.
    pub gbs: f64,
}

impl Ceilings {
    /// The ceilings on `threads` threads: measured by the first call for
    /// that count, then the same numbers for the rest of the process.
    pub fn measured(threads: usize) -> Result<Ceilings, RuntimeError> {
        static CACHE: Mutex<Vec<Ceilings>> = Mutex::new(Vec::new());
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.iter().find(|c| c.threads == threads) {
            return Ok(*c);
        }
        let peak = native_fma_peak_gflops(threads, FMA_SECONDS).map_err(|e| RuntimeError::Invalid(format!("cannot measure the FMA ceiling: {e}")))?;
        let c = Ceilings { threads, gflops: peak.gflops, isa: peak.isa, gbs: copy_gbs(threads, COPY_TIME) };
        cache.push(c);
        Ok(c)
    }

    /// The arithmetic intensity (flops per byte) where the two ceilings
    /// meet: a kernel below it is bound by memory, above it by arithmetic.
    pub fn ridge(&self) -> f64 {
        self.gflops / self.gbs
    }
}

/// The copy bandwidth in GB/s (bytes read plus written): a parallel
/// memcpy of 4096×768 f32s split over `threads` threads, the mean over at
/// least three copies and `min` after a warm-up copy.
pub fn copy_gbs(threads: usize, min: Duration) -> f64 {
    let n = 4096 * 768;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let per = n.div_ceil(threads.max(1));
    let mut copy = || {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (d, x) in dst.chunks_mut(per).zip(src.chunks(per)) {
                s.spawn(move || d.copy_from_slice(x));
            }
        });
        t0.elapsed().as_secs_f64()
    };
    copy();
    let (start, mut runs, mut total) = (Instant::now(), 0u32, 0.0);
    while runs < 3 || start.elapsed() < min {
        total += copy();
        runs += 1;
    }
    (2 * n * 4) as f64 / (total / runs as f64) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Measured once: the second call returns the first one's numbers.
    #[test]
    fn ceilings_are_measured_once_per_thread_count() {
        let a = Ceilings::measured(1).expect("measured");
        assert!(a.gflops > 0.0 && a.gbs > 0.0, "{a:?}");
        assert_eq!(Ceilings::measured(1).expect("cached"), a);
        assert!((a.ridge() - a.gflops / a.gbs).abs() < 1e-12);
    }
}
