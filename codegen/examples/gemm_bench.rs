//! GEMM throughput against the machine's f32x4 FMA ceiling.
//!
//! ```text
//! cargo run --release -p kiln-codegen --example gemm_bench [-- MR NR KC MC NC]
//! ```
//!
//! Measures the FMA ceiling ([`fma_peak_gflops`]) on 1 and 2 threads, then
//! the f32 row-major GEMM `C = A·B` for N = 128 … 2048 on one thread and on
//! two (C split into two row blocks, one call per thread, as the runtime
//! splits output tiles), printing GFLOP/s and the percentage of the
//! ceiling for the same thread count. Optional arguments override the
//! blocking (for tuning).

use cranelift_jit::JITModule;
use kiln_codegen::cpu::gemm::{declare_gemm_with, Blocking};
use kiln_codegen::cpu::peak::fma_peak_gflops;
use kiln_ir::DType;
use std::time::Instant;

type GemmFn = unsafe extern "C" fn(*const f32, i64, i64, *const f32, i64, i64, *mut f32, i64, i64, i64, i64, i64, i64);

fn module() -> JITModule {
    kiln_codegen::cpu::host_module(&Default::default()).expect("host module")
}

/// Seconds for one `n³` GEMM on `threads` threads: each thread computes
/// its row block of C `reps` times back to back, after a barrier; the time
/// is the slowest thread's average, best of a few rounds (so that a round
/// disturbed by other processes does not count).
fn time_gemm(f: GemmFn, n: usize, threads: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0).collect();
    let mut c = vec![0f32; n * n];
    let flops = 2.0 * (n as f64).powi(3);
    // About 0.1 s per round at 50 GFLOP/s, at least one repetition.
    let reps = ((0.1 * 50e9 / flops) as usize).max(1);
    let rows = n.div_ceil(threads);
    let cp = c.as_mut_ptr() as usize;
    let barrier = std::sync::Barrier::new(threads);
    let rounds = 7;
    let per_thread: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|th| {
                let (a, b, barrier) = (&a, &b, &barrier);
                s.spawn(move || {
                    let r0 = (th * rows).min(n);
                    let m = rows.min(n - r0);
                    let nn = n as i64;
                    let call = || {
                        // SAFETY: disjoint row blocks of C; A, B, C are n×n.
                        unsafe {
                            let ap = a.as_ptr().add(r0 * n);
                            let cp = (cp as *mut f32).add(r0 * n);
                            f(ap, nn, 1, b.as_ptr(), nn, 1, cp, nn, 1, m as i64, nn, nn, 0);
                        }
                    };
                    call(); // warm up: stack pages, caches
                    (0..rounds)
                        .map(|_| {
                            barrier.wait();
                            let t = Instant::now();
                            for _ in 0..reps {
                                call();
                            }
                            t.elapsed().as_secs_f64() / reps as f64
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread panicked")).collect()
    });
    let best = (0..rounds).map(|r| per_thread.iter().map(|t| t[r]).fold(0.0, f64::max)).fold(f64::INFINITY, f64::min);
    // Spot-check one element so a broken kernel cannot post a number.
    let (i, j) = (n / 3, n / 2);
    let want: f64 = (0..n).map(|p| a[i * n + p] as f64 * b[p * n + j] as f64).sum();
    assert!((c[i * n + j] as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()), "wrong result at n={n}");
    best
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("numeric blocking")).collect();
    let blk = match args.as_slice() {
        [] => Blocking::DEFAULT,
        [mr, nr, kc, mc, nc] => Blocking { mr: *mr, nr: *nr, kc: *kc, mc: *mc, nc: *nc, fma: None },
        _ => panic!("usage: gemm_bench [MR NR KC MC NC]"),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("blocking {blk:?}; {cores} cores");
    // The ceiling is measured before and after the GEMMs and the best taken:
    // on a shared machine a measurement can only be too low.
    let peak = |t: usize| fma_peak_gflops(t, 1.0).unwrap();
    let (mut peak1, mut peak2) = (peak(1), peak(2));

    let mut m = module();
    let compile = |m: &mut JITModule, blk: Blocking| -> GemmFn {
        let id = declare_gemm_with(m, DType::F32, DType::F32, DType::F32, blk).unwrap();
        m.finalize_definitions().unwrap();
        // SAFETY: the GEMM's signature is the C ABI of `GemmFn`.
        unsafe { std::mem::transmute(m.get_finalized_function(id)) }
    };
    let f = compile(&mut m, blk);
    let gflops = |f: GemmFn, n: usize, t: usize| 2.0 * (n as f64).powi(3) / time_gemm(f, n, t) / 1e9;
    let rows: Vec<(usize, f64, f64)> =
        [128, 256, 512, 1024, 2048].into_iter().map(|n| (n, gflops(f, n, 1), gflops(f, n, 2))).collect();
    // The two micro-kernel forms side by side (the default picks one).
    let forms: Vec<(&str, f64)> = [(true, "FMA"), (false, "multiply + add")]
        .into_iter()
        .map(|(fma, what)| (what, gflops(compile(&mut m, Blocking { fma: Some(fma), ..blk }), 1024, 1)))
        .collect();
    peak1 = peak1.max(peak(1));
    peak2 = peak2.max(peak(2));

    println!("FMA ceiling (f32x4): 1 thread {peak1:.1} GFLOP/s, 2 threads {peak2:.1} GFLOP/s");
    println!("{:>6} {:>12} {:>8} {:>12} {:>8}", "N", "1T GFLOP/s", "% peak", "2T GFLOP/s", "% peak");
    for (n, g1, g2) in rows {
        println!("{n:>6} {g1:>12.1} {:>7.1}% {g2:>12.1} {:>7.1}%", 100.0 * g1 / peak1, 100.0 * g2 / peak2);
    }
    for (what, g) in forms {
        println!("N = 1024, 1 thread, {what} micro-kernel: {g:.1} GFLOP/s ({:.1}%)", 100.0 * g / peak1);
    }
}
