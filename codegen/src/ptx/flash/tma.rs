//! TMA for the sm_90a kernels: the tensor-map parameters a launcher must
//! build, and the PTX that loads boxes through them and waits on mbarriers.
//!
//! A tensor map is a 128-byte parameter passed by value
//! (`.param .align 64 .b8 tmap_q[128]`). On a GPU the launcher fills it with
//! `cuTensorMapEncodeTiled` from a [`TensorMapParam`]; in tests,
//! `ptxemu::tma::TensorMap` encodes the emulator's own bytes from the same
//! fields. The kernel takes the map's generic address (`cvta.param`), as
//! `cp.async.bulk.tensor` requires.

use super::asm::Asm;
use super::config::Half;

/// How TMA lays a box out in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TmaSwizzle {
    /// `CU_TENSOR_MAP_SWIZZLE_128B`: 16-byte chunk `c` of the 128-byte row
    /// `r` lands at chunk `c ^ (r % 8)` (what `wgmma` descriptors with
    /// 128-byte swizzle read).
    B128,
}

/// One tensor-map parameter of a kernel: a rank-3 tiled map over a
/// row-major `[outer, rows, inner]` tensor of halves. For
/// `cuTensorMapEncodeTiled`: `tensorDataType` from `dtype` (BFLOAT16 or
/// FLOAT16), `tensorRank` 3, `globalAddress` the device pointer of `tensor`,
/// `globalDim = dims`, `globalStrides = strides`, `boxDim = box_dims`,
/// `elementStrides` all 1, `interleave` NONE, `swizzle` from `swizzle`,
/// `l2Promotion` any (128B is a good choice), `oobFill` NONE (out-of-bounds
/// elements read as zero, which the kernels rely on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMapParam {
    /// The `.param` name (`tmap_q`).
    pub param: &'static str,
    /// The tensor it maps, by the name a pointer parameter would have (`q`).
    pub tensor: &'static str,
    /// The element type.
    pub dtype: Half,
    /// Elements per dimension, innermost first: `[inner, rows, outer]`.
    pub dims: [u64; 3],
    /// Byte strides of dimensions 1 and 2 (`globalStrides`).
    pub strides: [u64; 2],
    /// Box elements per dimension, innermost first.
    pub box_dims: [u32; 3],
    /// Shared-memory layout of a box.
    pub swizzle: TmaSwizzle,
}

impl TensorMapParam {
    /// The map of a `[outer, rows, inner]` tensor of halves read in boxes of
    /// `box_rows` rows by 64 halves (one 128-byte swizzle span).
    pub fn rows_of_halves(param: &'static str, tensor: &'static str, dtype: Half, [outer, rows, inner]: [u32; 3], box_rows: u32) -> TensorMapParam {
        let (outer, rows, inner) = (u64::from(outer), u64::from(rows), u64::from(inner));
        TensorMapParam {
            param,
            tensor,
            dtype,
            dims: [inner, rows, outer],
            strides: [2 * inner, 2 * inner * rows],
            box_dims: [64, box_rows, 1],
            swizzle: TmaSwizzle::B128,
        }
    }

    /// Bytes one box occupies in shared memory (transaction bytes of one copy).
    pub fn box_bytes(&self) -> u32 {
        self.box_dims.iter().product::<u32>() * 2
    }
}

impl Asm {
    /// `dst` = the generic address of tensor-map parameter `param`.
    pub fn tensor_map_address(&mut self, dst: &str, param: &str) {
        self.i(format!("mov.u64 {dst}, {param};"));
        self.i(format!("cvta.param.u64 {dst}, {dst};"));
    }

    /// One TMA box copy to shared address `dst` through the map at generic
    /// address `map`, at coordinates `coords` (registers, innermost first),
    /// completing on the mbarrier at shared address `bar`.
    pub fn tma_load(&mut self, dst: &str, map: &str, coords: [&str; 3], bar: &str) {
        self.i(format!(
            "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{dst}], [{map}, {{{}}}], [{bar}];",
            coords.join(", ")
        ));
    }

    /// Spins until the phase of parity `parity` of the mbarrier at `bar` has
    /// completed. Uses `%pw`.
    pub fn mbarrier_wait(&mut self, bar: &str, parity: &str) {
        let spin = self.label("wait");
        self.place(&spin);
        self.i(format!("mbarrier.try_wait.parity.shared::cta.b64 %pw, [{bar}], {parity};"));
        self.i(format!("@!%pw bra {spin};"));
    }
}
