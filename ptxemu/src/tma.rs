//! Tensor maps for `cp.async.bulk.tensor` (TMA) in tile mode.
//!
//! A real GPU reads an opaque 128-byte `CUtensorMap` built by the driver's
//! `cuTensorMapEncodeTiled`; its layout is undocumented. The emulator has its own, equally
//! opaque to kernels: [`TensorMap::encode`] writes it and the emulator decodes it when a copy
//! executes. Kernels only pass the 128 bytes around (as a `.param .align 64 .b8 name[128]`), so
//! the same PTX runs on both; only the host side that builds the bytes differs.
//!
//! The emulator's bytes (little endian): 0..8 the magic `b"EMUTMAP1"`, 8..16 the global address,
//! 16 the rank, 17 the element size in bytes, 18 the swizzle code (0 none, 1 32B, 2 64B,
//! 3 128B), 24..64 five u64 dimensions, 64..96 four u64 byte strides (of dimensions 1..5),
//! 96..116 five u32 box sizes; the rest is zero.
//!
//! Semantics of a tile-mode copy at coordinates `c` (signed, innermost first): box element `i`
//! is the global element at `c + i`, or zero where any coordinate lies outside `0..dim` (as TMA
//! fills out-of-bounds elements). The box lands densely in shared memory, innermost dimension
//! contiguous, then with a swizzle of `S` bytes the 16-byte chunk bits 4.. of each shared
//! address are XORed with its bits 7.. (3, 2 or 1 bits for 128, 64, 32 bytes) — the same
//! address-based pattern `wgmma` descriptors read, so TMA and `wgmma` agree on one mode.

use crate::error::Error;

const MAGIC: &[u8; 8] = b"EMUTMAP1";

/// How TMA permutes 16-byte chunks in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swizzle {
    /// Rows as they are.
    None,
    /// 32-byte swizzle.
    B32,
    /// 64-byte swizzle.
    B64,
    /// 128-byte swizzle (the one wgmma kernels use for 64 halves per row).
    B128,
}

impl Swizzle {
    /// The span in bytes (0 for none).
    pub fn bytes(self) -> u64 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }

    /// The mode of a span in bytes (0 for none); other spans are not swizzle modes.
    pub fn from_bytes(bytes: u64) -> Swizzle {
        match bytes {
            32 => Swizzle::B32,
            64 => Swizzle::B64,
            128 => Swizzle::B128,
            _ => Swizzle::None,
        }
    }

    /// The shared address a dense box byte at `addr` is stored at.
    pub fn apply(self, addr: u64) -> u64 {
        match self.bytes() {
            0 => addr,
            s => {
                let bits = (s / 16).trailing_zeros();
                addr ^ (((addr >> 7) & ((1 << bits) - 1)) << 4)
            }
        }
    }
}

/// A tiled tensor map: which global tensor and which box of it one copy moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMap {
    /// Global address of element 0 (16-byte aligned).
    pub address: u64,
    /// Bytes per element (1, 2, 4 or 8).
    pub element_bytes: u8,
    /// Elements in each dimension, innermost first (1 to 5 dimensions).
    pub dims: Vec<u64>,
    /// Byte strides of dimensions 1.. (one fewer than `dims`; multiples of 16).
    pub strides: Vec<u64>,
    /// Box elements per dimension (1 to 256 each; the innermost box times the element size is
    /// a multiple of 16 bytes, and at most the swizzle span when swizzled).
    pub box_dims: Vec<u32>,
    /// Shared-memory swizzle.
    pub swizzle: Swizzle,
}

impl TensorMap {
    /// The emulator's 128-byte encoding (see the module docs).
    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.address.to_le_bytes());
        b[16] = self.dims.len() as u8;
        b[17] = self.element_bytes;
        b[18] = match self.swizzle {
            Swizzle::None => 0,
            Swizzle::B32 => 1,
            Swizzle::B64 => 2,
            Swizzle::B128 => 3,
        };
        for (i, d) in self.dims.iter().take(5).enumerate() {
            b[24 + 8 * i..32 + 8 * i].copy_from_slice(&d.to_le_bytes());
        }
        for (i, s) in self.strides.iter().take(4).enumerate() {
            b[64 + 8 * i..72 + 8 * i].copy_from_slice(&s.to_le_bytes());
        }
        for (i, x) in self.box_dims.iter().take(5).enumerate() {
            b[96 + 4 * i..100 + 4 * i].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    /// Reads the encoding back, checking what TMA requires; `Err` names the problem.
    pub fn decode(b: &[u8]) -> std::result::Result<TensorMap, String> {
        if b.len() != 128 || &b[..8] != MAGIC {
            return Err("not a tensor map encoded by ptxemu::tma::TensorMap::encode".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(std::array::from_fn(|i| b[at + i]));
        let rank = usize::from(b[16]);
        if !(1..=5).contains(&rank) {
            return Err(format!("rank {rank}"));
        }
        let swizzle = match b[18] {
            0 => Swizzle::None,
            1 => Swizzle::B32,
            2 => Swizzle::B64,
            3 => Swizzle::B128,
            s => return Err(format!("swizzle code {s}")),
        };
        let map = TensorMap {
            address: u64_at(8),
            element_bytes: b[17],
            dims: (0..rank).map(|i| u64_at(24 + 8 * i)).collect(),
            strides: (1..rank).map(|i| u64_at(64 + 8 * (i - 1))).collect(),
            box_dims: (0..rank).map(|i| u32::from_le_bytes(std::array::from_fn(|j| b[96 + 4 * i + j]))).collect(),
            swizzle,
        };
        map.check()?;
        Ok(map)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let eb = u64::from(self.element_bytes);
        if ![1, 2, 4, 8].contains(&eb) || !self.address.is_multiple_of(16) {
            return Err(format!("element size {eb} or address {:#x} (16-byte aligned)", self.address));
        }
        if self.dims.contains(&0) || self.strides.iter().any(|s| s % 16 != 0) {
            return Err(format!("dims {:?} or strides {:?} (multiples of 16 bytes)", self.dims, self.strides));
        }
        let inner = u64::from(self.box_dims[0]) * eb;
        let span = self.swizzle.bytes();
        if self.box_dims.iter().any(|&x| !(1..=256).contains(&x)) || inner % 16 != 0 || (span > 0 && inner > span) {
            return Err(format!("box {:?} with {eb}-byte elements and swizzle {span}", self.box_dims));
        }
        Ok(())
    }

    /// Bytes one box occupies in shared memory (the transaction bytes of one copy).
    pub fn box_bytes(&self) -> u64 {
        self.box_dims.iter().map(|&x| u64::from(x)).product::<u64>() * u64::from(self.element_bytes)
    }

    /// The box at `coords` as it lands at shared offset 0 (before swizzling): one
    /// `(global address or None for out of bounds, dense shared offset)` per element.
    pub fn box_elements(&self, coords: &[i64]) -> Vec<(Option<u64>, u64)> {
        let eb = u64::from(self.element_bytes);
        let total: u64 = self.box_dims.iter().map(|&x| u64::from(x)).product();
        (0..total)
            .map(|n| {
                let (mut rest, mut addr) = (n, Some(self.address));
                for (d, &extent) in self.box_dims.iter().enumerate() {
                    let i = rest % u64::from(extent);
                    rest /= u64::from(extent);
                    let g = coords[d] + i as i64;
                    let stride = if d == 0 { eb } else { self.strides[d - 1] };
                    addr = match addr {
                        Some(a) if (0..self.dims[d] as i64).contains(&g) => Some(a + g as u64 * stride),
                        _ => None,
                    };
                }
                (addr, n * eb)
            })
            .collect()
    }
}

/// The error for a copy whose tensor map or coordinates the emulator rejects.
pub(crate) fn bad_map(instr: &str, line: u32, msg: String) -> Error {
    Error::Undefined {
        instr: instr.to_string(),
        line,
        msg: format!("tensor map: {msg}"),
    }
}

