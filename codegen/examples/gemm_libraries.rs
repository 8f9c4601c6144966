//! Kiln's generated f32x4 GEMM beside the two precompiled wide-vector GEMMs
//! it could call, on one thread, at the shapes whole models are made of:
//! the measurement behind `codegen/src/cpu/native.rs`'s choice.
//!
//! ```text
//! cargo run --release -p kiln-codegen --example gemm_libraries
//! ```
//!
//! Every GEMM is called the way the CPU backend calls it: one call per
//! tile, its own threading off, row-major f32 operands with B optionally
//! transposed (`x @ transpose(w)`, a Linear layer). Each time is the best
//! of 7 rounds; each result is spot-checked.

use kiln_codegen::cpu::gemm::declare_gemm;
use kiln_codegen::cpu::peak::{fma_peak_gflops, native_fma_peak_gflops};
use kiln_ir::DType;
use std::time::Instant;

type GemmFn = unsafe extern "C" fn(*const f32, i64, i64, *const f32, i64, i64, *mut f32, i64, i64, i64, i64, i64, i64);

/// One GEMM implementation: `c = a·b` with element strides.
type Call<'a> = &'a dyn Fn(&[f32], (isize, isize), &[f32], (isize, isize), &mut [f32], (usize, usize, usize));

fn best_seconds(flops: f64, mut f: impl FnMut()) -> f64 {
    f();
    let reps = ((0.05 * 50e9 / flops) as usize).max(1);
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn gflops(call: Call, m: usize, n: usize, k: usize, bt: bool) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0).collect();
    let bs = if bt { (1, k as isize) } else { (n as isize, 1) };
    let mut c = vec![0f32; m * n];
    let flops = 2.0 * (m * n * k) as f64;
    let s = best_seconds(flops, || call(&a, (k as isize, 1), &b, bs, &mut c, (m, n, k)));
    let (i, j) = (m / 3, n / 2);
    let want: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[(p as isize * bs.0 + j as isize * bs.1) as usize] as f64).sum();
    assert!((c[i * n + j] as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()), "wrong result at {m}x{n}x{k}");
    flops / s / 1e9
}

fn main() {
    let mut module = kiln_codegen::cpu::host_module(&Default::default()).expect("host module");
    let id = declare_gemm(&mut module, DType::F32, DType::F32, DType::F32).expect("gemm");
    module.finalize_definitions().expect("finalize");
    // SAFETY: the GEMM's signature is the C ABI of `GemmFn`.
    let generated: GemmFn = unsafe { std::mem::transmute(module.get_finalized_function(id)) };

    let kiln: Call = &|a, (ars, acs), b, (brs, bcs), c, (m, n, k)| {
        // SAFETY: the slices hold the strided matrices.
        unsafe {
            generated(a.as_ptr(), ars as i64, acs as i64, b.as_ptr(), brs as i64, bcs as i64, c.as_mut_ptr(), n as i64, 1, m as i64, n as i64, k as i64, 0)
        }
    };
    let gemm_crate: Call = &|a, (ars, acs), b, (brs, bcs), c, (m, n, k)| {
        // SAFETY: as above; C is not read (`read_dst` false).
        unsafe {
            gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), acs, ars, b.as_ptr(), bcs, brs, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None)
        }
    };
    let mm_crate: Call = &|a, (ars, acs), b, (brs, bcs), c, (m, n, k)| {
        // SAFETY: as above.
        unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), ars, acs, b.as_ptr(), brs, bcs, 0.0, c.as_mut_ptr(), n as isize, 1) }
    };

    let f32x4 = fma_peak_gflops(1, 0.5).expect("f32x4 peak");
    let native = native_fma_peak_gflops(1, 0.5).expect("native peak");
    println!("one thread; FMA ceilings: f32x4 {f32x4:.1} GFLOP/s, {} {:.1} GFLOP/s", native.isa, native.gflops);
    println!("{:>22} {:>10} {:>10} {:>15}", "m x n x k", "kiln f32x4", "gemm", "matrixmultiply");
    let shapes: &[(usize, usize, usize, bool, &str)] = &[
        (256, 256, 256, false, ""),
        (512, 512, 512, false, ""),
        (1024, 1024, 1024, false, ""),
        (2048, 2048, 2048, false, ""),
        (984, 384, 384, true, " Linear"),
        (984, 1536, 384, true, " FFN up"),
        (984, 384, 1536, true, " FFN down"),
        (246, 192, 384, true, " tile"),
        (128, 128, 32, true, " attn QK"),
        (64, 64, 64, false, ""),
    ];
    for &(m, n, k, bt, what) in shapes {
        let g = [kiln, gemm_crate, mm_crate].map(|c| gflops(c, m, n, k, bt));
        println!("{:>22} {:>10.1} {:>10.1} {:>15.1}", format!("{m}x{n}x{k}{what}"), g[0], g[1], g[2]);
    }
}
