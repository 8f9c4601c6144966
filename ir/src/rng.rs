//! The counter-based random numbers behind `dropout`, defined once.
//!
//! Every backend (the graph interpreter, `kernel::eval`, Cranelift, PTX)
//! computes [`uniform`] bit for bit, so a dropout mask is a pure function
//! of `(seed, counter)`: the backward pass, the fused attention kernels
//! and the naive graph all draw the same mask without storing it.
//!
//! The generator is SplitMix64 (Steele, Lea and Flood, "Fast Splittable
//! Pseudorandom Number Generators", OOPSLA 2014; the finalizer is
//! Stafford's "Mix13", as in `java.util.SplittableRandom`): the stream
//! seeded with `seed` has state `seed + (n + 1) * GAMMA` before its `n`-th
//! output, so output `n` is computed directly from `n` without running the
//! stream. It is 64-bit adds, multiplies, shifts and xors only, which
//! every backend has natively.
//!
//! Seeds travel through the graph as i64 values and the reference
//! evaluators hold values as f64, so a seed must be exactly representable:
//! a graph's seed argument is below [`SEED_LIMIT`] (`2^52`), which leaves
//! room for the offsets the front end adds to it (per dropout site and
//! per scan step, below `2^51`).

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
/// The finalizer's first multiplier.
pub const MIX1: u64 = 0xBF58_476D_1CE4_E5B9;
/// The finalizer's second multiplier.
pub const MIX2: u64 = 0x94D0_49BB_1331_11EB;

/// Seed arguments are below `2^52`: plus a site offset, still exact in f64.
pub const SEED_LIMIT: u64 = 1 << 52;

/// Stafford's Mix13 finalizer: a bijection on 64-bit words whose every
/// output bit depends on every input bit.
pub fn mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(MIX1);
    let z = (z ^ (z >> 27)).wrapping_mul(MIX2);
    z ^ (z >> 31)
}

/// The `counter`-th output (from 0) of SplitMix64 seeded with `seed`.
pub fn bits(seed: u64, counter: u64) -> u64 {
    mix(seed.wrapping_add(counter.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// A uniform f32 in `[0, 1)`: the top 24 bits of [`bits`] times `2^-24`,
/// so every value is exact in f32 (and in f64).
pub fn uniform(seed: u64, counter: u64) -> f32 {
    (bits(seed, counter) >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// `p` rounded up to a multiple of `2^-24`: draws are multiples of
/// `2^-24`, so `uniform >= threshold(p)` holds exactly when `uniform >= p`
/// does, and the threshold is exact in f32 (kernels compare in f32).
pub fn threshold(p: f64) -> f32 {
    let grid = (1u32 << 24) as f64;
    ((p * grid).ceil() / grid) as f32
}

/// Whether dropout with probability `p` keeps element `counter`: the
/// element survives when its uniform draw is at least `p`.
pub fn keep(seed: u64, counter: u64, p: f64) -> bool {
    uniform(seed, counter) >= threshold(p)
}

/// A seed in `[0, SEED_LIMIT)` derived from a base seed and a step number
/// (the trainer's per-step dropout seed).
pub fn derive_seed(base: u64, step: u64) -> u64 {
    bits(base, step) >> 12
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 seeded with 1234567, first outputs, from the reference
    /// C implementation (Vigna's splitmix64.c).
    #[test]
    fn matches_the_reference_stream() {
        let mut state: u64 = 1234567;
        let mut next = || {
            state = state.wrapping_add(GAMMA);
            mix(state)
        };
        for n in 0..4 {
            assert_eq!(bits(1234567, n), next());
        }
        assert_eq!(bits(1234567, 0), 6457827717110365317);
        assert_eq!(bits(1234567, 1), 3203168211198807973);
    }

    #[test]
    fn uniform_is_in_the_unit_interval_and_exact() {
        for c in 0..10_000 {
            let u = uniform(42, c);
            assert!((0.0..1.0).contains(&u));
            assert_eq!((u as f64 * (1u64 << 24) as f64).fract(), 0.0);
        }
    }

    #[test]
    fn the_threshold_decides_like_p_itself() {
        for p in [0.0, 0.1, 0.25, 1.0 / 3.0, 0.9, 0.999_999_99] {
            let t = threshold(p);
            assert!(t as f64 >= p && (t as f64 - p) < 1.0 / (1u32 << 24) as f64, "{p}");
            for c in 0..20_000 {
                assert_eq!(keep(9, c, p), uniform(9, c) as f64 >= p, "p {p} counter {c}");
            }
        }
    }

    #[test]
    fn derived_seeds_fit_the_limit() {
        assert!((0..1000).all(|s| derive_seed(7, s) < SEED_LIMIT));
        assert_ne!(derive_seed(7, 0), derive_seed(7, 1));
    }
}
