//! Helpers shared by the emulator's test suites.
#![allow(dead_code)] // each suite uses a different subset

use ptxemu::{Launch, Module};

/// Parses `tests/ptx/<name>.ptx`.
pub fn module(name: &str) -> Module {
    let path = format!("{}/tests/ptx/{name}.ptx", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Module::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A one-dimensional launch.
pub fn grid1(ctas: u32, threads: u32) -> Launch {
    Launch {
        grid: [ctas, 1, 1],
        block: [threads, 1, 1],
        dynamic_shared: 0,
    }
}

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG; no dependency needed).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
