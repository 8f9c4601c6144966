//! Deterministic parameter initialization.
//!
//! Every tensor is drawn from its own random stream, a ChaCha8 generator
//! whose 32-byte seed is, in order: the user's `seed` as 8 little-endian
//! bytes, the 64-bit FNV-1a hash of the tensor's storage name (UTF-8) as 8
//! little-endian bytes, then 16 zero bytes. So values depend only on the
//! seed, the name, the shape and the initializer: adding, removing or
//! reordering other parameters changes nothing, and results are the same
//! on every platform. A stacked parameter draws each layer from the stream
//! of that layer's storage name (`blocks.0.attn.w_q`), so it initializes
//! exactly like the unrolled layers would. Elements are drawn in row-major
//! order and rounded to the parameter's dtype with [`DType::round`] (a
//! uniform draw may round up to `high` in a narrow float dtype).

use crate::safetensors::storage_layout;
use crate::tensor::numel;
use crate::{RuntimeError, Tensor};
use kiln_ir::{DType, Init, Module, Param};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// 64-bit FNV-1a: a fixed, documented hash that is the same on every
/// platform and Rust version (unlike `std`'s `DefaultHasher`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The random stream for `key` under `seed` (see the module docs).
pub fn stream(seed: u64, key: &str) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&fnv1a64(key.as_bytes()).to_le_bytes());
    ChaCha8Rng::from_seed(s)
}

/// Draws every parameter of `m`, in module order.
pub fn init_params(m: &Module, seed: u64) -> Result<Vec<Tensor>, RuntimeError> {
    m.params.iter().map(|p| init_param(p, seed)).collect()
}

/// Draws one parameter from its initializer.
pub fn init_param(p: &Param, seed: u64) -> Result<Tensor, RuntimeError> {
    let layout = storage_layout(p)?;
    let bad = |reason: String| RuntimeError::BadParam { name: p.name.clone(), reason };
    let per = numel(&layout.slice_shape).ok_or_else(|| bad("the shape has too many elements".into()))?;
    let total = per
        .checked_mul(layout.names.len())
        .ok_or_else(|| bad("the shape has too many elements".into()))?;
    let sampler = Sampler::new(&p.init).map_err(bad)?;
    let mut data = Vec::with_capacity(total);
    for name in &layout.names {
        let mut rng = stream(seed, name);
        data.extend((0..per).map(|_| p.ty.dtype.round(sampler.draw(&mut rng))));
    }
    Ok(Tensor { dtype: p.ty.dtype, shape: layout.shape, data })
}

/// An [`Init`] checked and ready to draw from.
enum Sampler {
    Normal(Normal<f64>),
    Uniform(Uniform<f64>),
    Constant(f64),
}

impl Sampler {
    fn new(init: &Init) -> Result<Sampler, String> {
        match *init {
            Init::Normal { mean, std } => {
                if !mean.is_finite() || !std.is_finite() || std < 0.0 {
                    return Err(format!("normal(mean = {mean}, std = {std}) needs a finite mean and std >= 0"));
                }
                Normal::new(mean, std).map(Sampler::Normal).map_err(|e| format!("normal(mean = {mean}, std = {std}): {e}"))
            }
            Init::Uniform { low, high } => {
                if !low.is_finite() || !high.is_finite() || low > high {
                    return Err(format!("uniform({low}, {high}) needs finite bounds with low <= high"));
                }
                if low == high {
                    return Ok(Sampler::Constant(low));
                }
                Uniform::new(low, high).map(Sampler::Uniform).map_err(|e| format!("uniform({low}, {high}): {e}"))
            }
            Init::Constant(c) => Ok(Sampler::Constant(c)),
        }
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Sampler::Normal(d) => d.sample(rng),
            Sampler::Uniform(d) => d.sample(rng),
            Sampler::Constant(c) => *c,
        }
    }
}

/// A standard normal draw rounded to a float dtype, a fair coin for bool,
/// or a uniform integer in `[0, bound)`: the element distributions of
/// [`crate::inputs::random_input`].
pub(crate) fn draw_element(rng: &mut ChaCha8Rng, dtype: DType, bound: i64) -> f64 {
    match dtype {
        DType::Bool => rng.random_bool(0.5) as u8 as f64,
        d if d.is_int() => rng.random_range(0..bound) as f64,
        d => d.round(rand_distr::StandardNormal.sample(rng)),
    }
}
