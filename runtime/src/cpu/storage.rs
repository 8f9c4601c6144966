//! Typed host storage for kernel buffers.
//!
//! A [`Storage`] is a zero-initialized, 64-byte aligned byte allocation (a
//! cache line, and enough for any SIMD load). Elements are stored as the
//! kernels read them: native-endian `f32`, `f16`, `bf16`, `i32`, `i64`, and
//! `bool` as one byte holding 0 or 1. [`encode`] and [`decode`] convert
//! between that layout and the `f64` elements of a [`Tensor`].

use crate::{RuntimeError, Tensor};
use bytemuck::{Pod, Zeroable};
use kiln_ir::DType;

/// The alignment of every [`Storage`], in bytes.
pub const ALIGN: usize = 64;

/// One aligned block of the allocation.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Block([u8; ALIGN]);

/// A zero-initialized byte allocation whose start is 64-byte aligned.
pub struct Storage {
    blocks: Vec<Block>,
    len: usize,
}

impl Storage {
    /// `len` zero bytes; an allocation the system refuses is an error,
    /// not an abort.
    pub fn zeroed(len: usize) -> Result<Storage, RuntimeError> {
        let blocks = bytemuck::allocation::try_zeroed_vec(len.div_ceil(ALIGN)).map_err(|()| RuntimeError::OutOfMemory {
            what: "a kernel buffer".into(),
            needed: len as u64,
            detail: "one allocation".into(),
            available: crate::memory::available().unwrap_or(0),
        })?;
        Ok(Storage { blocks, len })
    }

    /// Storage for `numel` elements of `dtype`, zeroed.
    pub fn for_elements(dtype: DType, numel: u64) -> Result<Storage, RuntimeError> {
        let bytes = byte_len(dtype, numel)?;
        Storage::zeroed(bytes)
    }

    /// A tensor's elements in `dtype`'s storage layout.
    pub fn from_tensor(t: &Tensor) -> Result<Storage, RuntimeError> {
        let mut s = Storage::zeroed(t.data.len() * t.dtype.size_bytes())?;
        encode(t.dtype, &t.data, s.bytes_mut());
        Ok(s)
    }

    /// The elements as a tensor of the given dtype and shape; `Invalid`
    /// when the shape does not hold exactly the stored elements.
    pub fn to_tensor(&self, dtype: DType, shape: Vec<usize>) -> Result<Tensor, RuntimeError> {
        let numel: usize = shape.iter().product();
        if numel * dtype.size_bytes() != self.len {
            return Err(RuntimeError::Invalid(format!("a {}-byte buffer cannot hold a {dtype}{shape:?} tensor", self.len)));
        }
        let mut data = Vec::with_capacity(numel);
        decode(dtype, self.bytes(), &mut data);
        Ok(Tensor { dtype, shape, data })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the storage holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.blocks)[..self.len]
    }

    /// The bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.blocks)[..self.len]
    }

    /// A pointer to the first byte, for passing to kernels.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.blocks.as_mut_ptr().cast()
    }

    /// A pointer to the first byte of read-only storage.
    pub fn as_ptr(&self) -> *const u8 {
        self.blocks.as_ptr().cast()
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({} bytes)", self.len)
    }
}

/// The size in bytes of `numel` elements of `dtype`; `Invalid` when it
/// does not fit in memory's address space.
pub fn byte_len(dtype: DType, numel: u64) -> Result<usize, RuntimeError> {
    usize::try_from(numel)
        .ok()
        .and_then(|n| n.checked_mul(dtype.size_bytes()))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| RuntimeError::Invalid(format!("{numel} elements of {dtype} do not fit in memory")))
}

/// Writes `data` into `out` in `dtype`'s layout, rounding like
/// [`DType::round`] (integers truncate and wrap, bool is `x != 0`).
/// `out` must be `data.len() * dtype.size_bytes()` long.
pub fn encode(dtype: DType, data: &[f64], out: &mut [u8]) {
    assert_eq!(out.len(), data.len() * dtype.size_bytes(), "encode: wrong output size");
    fn each<const N: usize>(data: &[f64], out: &mut [u8], f: impl Fn(f64) -> [u8; N]) {
        for (x, o) in data.iter().zip(out.chunks_exact_mut(N)) {
            o.copy_from_slice(&f(*x));
        }
    }
    match dtype {
        DType::F32 => each(data, out, |x| (x as f32).to_ne_bytes()),
        DType::F16 => each(data, out, |x| half::f16::from_f64(x).to_ne_bytes()),
        DType::BF16 => each(data, out, |x| half::bf16::from_f64(x).to_ne_bytes()),
        DType::I32 => each(data, out, |x| ((x as i64) as i32).to_ne_bytes()),
        DType::I64 => each(data, out, |x| (x as i64).to_ne_bytes()),
        DType::Bool => each(data, out, |x| [(x != 0.0) as u8]),
    }
}

/// Appends the elements of `bytes` (in `dtype`'s layout) to `out` as
/// `f64`s; a bool byte is true when it is not 0.
pub fn decode(dtype: DType, bytes: &[u8], out: &mut Vec<f64>) {
    fn each<const N: usize>(bytes: &[u8], out: &mut Vec<f64>, f: impl Fn([u8; N]) -> f64) {
        out.extend(bytes.chunks_exact(N).map(|c| f(c.try_into().expect("chunks_exact gives N bytes"))));
    }
    match dtype {
        DType::F32 => each(bytes, out, |b| f32::from_ne_bytes(b) as f64),
        DType::F16 => each(bytes, out, |b| half::f16::from_ne_bytes(b).to_f64()),
        DType::BF16 => each(bytes, out, |b| half::bf16::from_ne_bytes(b).to_f64()),
        DType::I32 => each(bytes, out, |b| i32::from_ne_bytes(b) as f64),
        DType::I64 => each(bytes, out, |b| i64::from_ne_bytes(b) as f64),
        DType::Bool => each(bytes, out, |b: [u8; 1]| (b[0] != 0) as u8 as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_aligned_and_zeroed() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let s = Storage::zeroed(len).unwrap();
            assert_eq!(s.as_ptr() as usize % ALIGN, 0);
            assert_eq!(s.len(), len);
            assert!(s.bytes().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn every_dtype_round_trips() {
        let values = [0.0, 1.0, -2.0, 3.5, 1e-3, 65504.0, -0.0];
        for dtype in DType::ALL {
            let data: Vec<f64> = values.iter().map(|&v| dtype.round(v)).collect();
            let t = Tensor::new(dtype, vec![data.len()], data);
            let s = Storage::from_tensor(&t).unwrap();
            assert_eq!(s.len(), t.numel() * dtype.size_bytes());
            assert_eq!(s.to_tensor(dtype, t.shape.clone()).unwrap(), t, "{dtype}");
        }
    }

    #[test]
    fn encoding_rounds_like_the_dtype() {
        let data = [1.0 + 1.0 / 1024.0, -3.7, 2.0];
        for dtype in DType::ALL {
            let mut bytes = vec![0; data.len() * dtype.size_bytes()];
            encode(dtype, &data, &mut bytes);
            let mut back = Vec::new();
            decode(dtype, &bytes, &mut back);
            let want: Vec<f64> = data.iter().map(|&x| dtype.round(x)).collect();
            assert_eq!(back, want, "{dtype}");
        }
    }

    #[test]
    fn layouts_are_native() {
        let t = Tensor::new(DType::I32, vec![2], vec![1.0, -1.0]);
        let s = Storage::from_tensor(&t).unwrap();
        assert_eq!(s.bytes(), [1i32.to_ne_bytes(), (-1i32).to_ne_bytes()].concat());
        let t = Tensor::new(DType::Bool, vec![3], vec![1.0, 0.0, 5.0]);
        assert_eq!(Storage::from_tensor(&t).unwrap().bytes(), [1, 0, 1]);
        let t = Tensor::new(DType::BF16, vec![1], vec![1.0]);
        assert_eq!(Storage::from_tensor(&t).unwrap().bytes(), 0x3f80u16.to_ne_bytes());
    }

    #[test]
    fn a_wrong_shape_is_an_error() {
        let s = Storage::zeroed(8).unwrap();
        assert!(s.to_tensor(DType::F32, vec![3]).is_err());
        assert_eq!(s.to_tensor(DType::F32, vec![2]).unwrap().data, [0.0, 0.0]);
    }

    #[test]
    fn an_allocation_the_system_refuses_is_an_error() {
        // 1 EiB is past any machine's address space.
        let e = Storage::zeroed(1 << 60).err().expect("1 EiB allocated");
        assert!(matches!(e, RuntimeError::OutOfMemory { needed, .. } if needed == 1 << 60), "{e}");
    }
}
