//! What a flash kernel is specialized to, which configurations are
//! supported, and the tile shape every kernel shares.

use super::FlashError;

/// The 16-bit float type of q, k, v and o.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl Half {
    /// The PTX type name (`bf16`, `f16`).
    pub fn ptx(self) -> &'static str {
        match self {
            Half::Bf16 => "bf16",
            Half::F16 => "f16",
        }
    }
}

/// One attention call: every kernel is generated for exactly these values.
#[derive(Clone, Debug, PartialEq)]
pub struct FlashConfig {
    /// Query heads times batch.
    pub heads: u32,
    /// Query heads per key/value head (query head `h` reads kv head `h / group`).
    pub group: u32,
    /// Query length.
    pub sq: u32,
    /// Key length.
    pub sk: u32,
    /// Head size of q and k.
    pub d: u32,
    /// Head size of v and o.
    pub dv: u32,
    /// Causal offset `c`: key `j` is visible to query `i` iff `j <= i + c`.
    pub causal: Option<i64>,
    /// Multiplies `q · k` before the softmax.
    pub scale: f32,
    /// Storage type of q, k, v, o.
    pub dtype: Half,
}

/// Query rows per CTA (4 warps of 16 rows).
pub const BLOCK_M: u32 = 64;
/// Keys per K/V tile.
pub const BLOCK_N: u32 = 64;
/// Threads per CTA.
pub const THREADS: u32 = 128;
/// Shared-memory rows are padded by this many halves (16 bytes) so the 8
/// rows one `ldmatrix` reads fall in distinct bank groups.
pub const PAD: u32 = 8;

impl FlashConfig {
    /// Rejects what the kernels cannot do, with the reason.
    pub fn validate(&self) -> Result<(), FlashError> {
        let bad = |s: String| Err(FlashError::Unsupported(s));
        if self.heads == 0 || self.sq == 0 || self.sk == 0 {
            return bad(format!("an empty problem (heads {}, sq {}, sk {})", self.heads, self.sq, self.sk));
        }
        if self.group == 0 || !self.heads.is_multiple_of(self.group) {
            return bad(format!("{} query heads in groups of {}", self.heads, self.group));
        }
        // k fragments are loaded 32 columns at a time, v fragments 16
        if !(32..=128).contains(&self.d) || !self.d.is_multiple_of(32) {
            return bad(format!("head size d = {} (supported: 32, 64, 96, 128)", self.d));
        }
        if !(16..=128).contains(&self.dv) || !self.dv.is_multiple_of(16) {
            return bad(format!("value head size dv = {} (supported: multiples of 16 up to 128)", self.dv));
        }
        if !self.scale.is_finite() {
            return bad(format!("scale {}", self.scale));
        }
        // element offsets are 32-bit
        let widest = u64::from(self.heads) * u64::from(self.sq.max(self.sk)) * u64::from(self.d.max(self.dv));
        if widest >= 1 << 31 {
            return bad(format!("{widest} elements in one tensor (the most is 2^31 - 1)"));
        }
        Ok(())
    }

    /// Row pitch in shared memory, in bytes, of a tile `width` halves wide.
    pub fn pitch(width: u32) -> u32 {
        (width + PAD) * 2
    }

    /// The causal offset clamped to where it still matters, as an i32:
    /// below `-sq` every key is hidden, above `sk` every key is visible.
    pub fn causal_i32(&self) -> Option<i32> {
        self.causal.map(|c| c.clamp(-i64::from(self.sq) - 1, i64::from(self.sk)) as i32)
    }
}
