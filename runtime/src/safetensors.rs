//! Model weights in the safetensors format.
//!
//! Parameters are stored by name. A stacked parameter (`Param::stack` set)
//! is stored as one tensor per layer under [`Param::storage_names`]
//! (`blocks.0.attn.w_qkv`, `blocks.1.attn.w_qkv`, ...), each without the
//! leading stack axis, and is reassembled into the stacked tensor on load,
//! so checkpoints look like those of other frameworks.
//!
//! Loading refuses a checkpoint that does not match the model, naming the
//! first mismatch: parameters are checked in module order (a missing
//! tensor, then a wrong dtype or shape), then tensors the model does not
//! have are reported (the first in sorted order). Supported dtypes are
//! F32, F16, BF16, I32, I64 and BOOL. The header is validated before the
//! `safetensors` crate parses it, so corrupt or truncated files give a
//! one-line error and never a panic. Saving is atomic.

use crate::fsutil::{read_file, write_atomic};
use crate::tensor::{check_consistent, concrete_shape, numel, shape_string, type_string};
use crate::{RuntimeError, Tensor};
use kiln_ir::{DType, Module, Param};
use ::safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Loads every parameter of `m` from a safetensors file, in module order.
pub fn load_params(m: &Module, path: &Path) -> Result<Vec<Tensor>, RuntimeError> {
    let bytes = read_file(path)?;
    decode_params(m, &bytes, &path.display().to_string())
}

/// Decodes the parameters of `m` from the bytes of a safetensors file;
/// `file` names it in errors.
pub fn decode_params(m: &Module, bytes: &[u8], file: &str) -> Result<Vec<Tensor>, RuntimeError> {
    let st = open(bytes, file)?;
    let mut known = BTreeSet::new();
    let mut out = Vec::with_capacity(m.params.len());
    for p in &m.params {
        let layout = storage_layout(p)?;
        let mut data = Vec::new();
        for name in &layout.names {
            let view = st
                .tensor(name)
                .map_err(|_| RuntimeError::MissingParam { file: file.into(), name: name.clone() })?;
            let mismatch = |what, found, expected| RuntimeError::ParamMismatch {
                file: file.into(),
                name: name.clone(),
                what,
                found,
                expected,
            };
            let dtype = kiln_dtype(view.dtype());
            let same_dtype = dtype == Some(p.ty.dtype);
            let same_shape = view.shape() == layout.slice_shape.as_slice();
            let found_dtype = dtype.map_or_else(|| file_dtype_name(view.dtype()), |d| d.to_string());
            match (same_dtype, same_shape) {
                (true, true) => {}
                (true, false) => {
                    return Err(mismatch("shape", shape_string(view.shape()), shape_string(&layout.slice_shape)))
                }
                (false, true) => return Err(mismatch("dtype", found_dtype, p.ty.dtype.to_string())),
                (false, false) => {
                    return Err(mismatch(
                        "type",
                        format!("{found_dtype}{}", shape_string(view.shape())),
                        type_string(p.ty.dtype, &layout.slice_shape),
                    ))
                }
            }
            data.extend(decode_elements(p.ty.dtype, view.data()));
            known.insert(name.as_str().to_owned());
        }
        out.push(Tensor { dtype: p.ty.dtype, shape: layout.shape, data });
    }
    let mut unknown: Vec<&str> = st.names().into_iter().filter(|n| !known.contains(*n)).collect();
    unknown.sort_unstable();
    if let Some(first) = unknown.first() {
        return Err(RuntimeError::UnknownTensor { file: file.into(), name: first.to_string(), others: unknown.len() - 1 });
    }
    Ok(out)
}

/// Reads every tensor of a safetensors file, by name; tensors of a dtype
/// Kiln does not support are an error.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
    let bytes = read_file(path)?;
    decode_tensors(&bytes, &path.display().to_string())
}

/// Decodes every tensor of the bytes of a safetensors file, by name.
pub fn decode_tensors(bytes: &[u8], file: &str) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
    let st = open(bytes, file)?;
    let mut out = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = kiln_dtype(view.dtype()).ok_or_else(|| RuntimeError::UnsupportedTensor {
            file: file.into(),
            name: name.to_string(),
            reason: format!("dtype {} is not supported (Kiln reads F32, F16, BF16, I32, I64, BOOL)", view.dtype()),
        })?;
        let t = Tensor { dtype, shape: view.shape().to_vec(), data: decode_elements(dtype, view.data()) };
        out.insert(name.to_string(), t);
    }
    Ok(out)
}

/// Saves the parameters of `m` (values parallel to `m.params`) atomically.
pub fn save_params(m: &Module, params: &[Tensor], path: &Path) -> Result<(), RuntimeError> {
    let bytes = encode_params(m, params)?;
    write_atomic(path, &bytes)
}

/// Encodes the parameters of `m` as the bytes of a safetensors file,
/// splitting each stacked parameter into its layers.
pub fn encode_params(m: &Module, params: &[Tensor]) -> Result<Vec<u8>, RuntimeError> {
    if params.len() != m.params.len() {
        return Err(RuntimeError::Invalid(format!(
            "cannot save weights: {} values for {} parameters",
            params.len(),
            m.params.len()
        )));
    }
    let mut named = Vec::new();
    for (p, t) in m.params.iter().zip(params) {
        let layout = storage_layout(p)?;
        check_consistent(t, &format!("parameter `{}`", p.name))?;
        if t.dtype != p.ty.dtype || t.shape != layout.shape {
            return Err(RuntimeError::BadParam {
                name: p.name.clone(),
                reason: format!(
                    "the value is {}, the model declares {}",
                    type_string(t.dtype, &t.shape),
                    type_string(p.ty.dtype, &layout.shape)
                ),
            });
        }
        // Stacked: consecutive row-major chunks are the layers.
        let per = numel(&layout.slice_shape).unwrap_or(0).max(1);
        let chunks: Vec<&[f64]> = if p.stack.is_some() { t.data.chunks(per).collect() } else { vec![&t.data] };
        for (name, chunk) in layout.names.iter().zip(chunks.into_iter().chain(std::iter::repeat(&[][..]))) {
            let data = Tensor { dtype: t.dtype, shape: layout.slice_shape.clone(), data: chunk.to_vec() };
            named.push((name.clone(), data));
        }
    }
    encode_tensors(&named)
}

/// Encodes named tensors as the bytes of a safetensors file.
pub fn encode_tensors(tensors: &[(String, Tensor)]) -> Result<Vec<u8>, RuntimeError> {
    let mut seen = BTreeSet::new();
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(RuntimeError::Invalid(format!("cannot save weights: two tensors are named `{name}`")));
        }
        check_consistent(t, &format!("tensor `{name}`"))?;
        views.push((name.clone(), Encoded::of(t)));
    }
    ::safetensors::tensor::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), None)
        .map_err(|e| RuntimeError::Invalid(format!("cannot encode safetensors: {e}")))
}

/// Writes named tensors to a safetensors file atomically.
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), RuntimeError> {
    let bytes = encode_tensors(tensors)?;
    write_atomic(path, &bytes)
}

/// Where a parameter lives in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageLayout {
    /// The tensor names: one, or one per layer of a stack.
    pub names: Vec<String>,
    /// The shape of each stored tensor (a stack's without the stack axis).
    pub slice_shape: Vec<usize>,
    /// The parameter's full concrete shape.
    pub shape: Vec<usize>,
}

/// The storage names and shapes of a parameter; an error when its shape is
/// symbolic or its stack prefix is malformed.
pub fn storage_layout(p: &Param) -> Result<StorageLayout, RuntimeError> {
    let bad = |reason: String| RuntimeError::BadParam { name: p.name.clone(), reason };
    let shape = concrete_shape(&p.ty).map_err(bad)?;
    match &p.stack {
        None => Ok(StorageLayout { names: vec![p.name.clone()], slice_shape: shape.clone(), shape }),
        Some(prefix) => {
            // `storage_names` slices the name by the prefix; check it first.
            if !p.name.starts_with(prefix.as_str()) {
                return Err(bad(format!("stack `{prefix}` is not a prefix of the name")));
            }
            if shape.is_empty() {
                return Err(bad("a stacked parameter needs a leading stack axis".into()));
            }
            Ok(StorageLayout { names: p.storage_names(), slice_shape: shape[1..].to_vec(), shape })
        }
    }
}

/// Parses the file after checking what the `safetensors` crate trusts:
/// the header length and the data offsets (an offset past the end of the
/// file can overflow its size arithmetic).
fn open<'a>(bytes: &'a [u8], file: &str) -> Result<SafeTensors<'a>, RuntimeError> {
    let invalid = |reason: String| RuntimeError::InvalidSafetensors { file: file.into(), reason };
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(invalid(format!("truncated: only {} bytes", bytes.len())));
    };
    let n = u64::from_le_bytes(*len_bytes);
    let rest = (bytes.len() - 8) as u64;
    if n > rest {
        return Err(invalid(format!("truncated: the header claims {n} bytes, the file has {rest} after the length")));
    }
    let data_len = rest - n;
    let header = &bytes[8..8 + n as usize];
    let json: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| invalid(format!("the header is not valid JSON: {e}")))?;
    let serde_json::Value::Object(entries) = json else {
        return Err(invalid("the header is not a JSON object".into()));
    };
    for (name, info) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info.get("data_offsets").and_then(|o| o.as_array());
        let ok = offsets.is_some_and(|o| o.iter().all(|x| x.as_u64().is_some_and(|x| x <= data_len)));
        if !ok {
            return Err(invalid(format!(
                "tensor `{name}` has data offsets outside the {data_len} data bytes (is the file truncated?)"
            )));
        }
    }
    SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string().lines().next().unwrap_or("").to_string()))
}

fn kiln_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        Dtype::I32 => Some(DType::I32),
        Dtype::I64 => Some(DType::I64),
        Dtype::BOOL => Some(DType::Bool),
        _ => None,
    }
}

fn file_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::Bool => Dtype::BOOL,
    }
}

/// A file dtype as Kiln spells dtypes (`f64`, `u8`, `f8_e4m3`).
fn file_dtype_name(d: Dtype) -> String {
    d.to_string().to_lowercase()
}

/// Little-endian elements to values. The byte length is a multiple of the
/// element size (the crate checked it against the shape).
fn decode_elements(d: DType, bytes: &[u8]) -> Vec<f64> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        bytes.chunks_exact(N).filter_map(|c| c.try_into().ok()).map(f).collect()
    }
    match d {
        DType::F32 => each(bytes, |b| f32::from_le_bytes(b) as f64),
        DType::F16 => each(bytes, |b| half::f16::from_le_bytes(b).to_f64()),
        DType::BF16 => each(bytes, |b| half::bf16::from_le_bytes(b).to_f64()),
        DType::I32 => each(bytes, |b| i32::from_le_bytes(b) as f64),
        DType::I64 => each(bytes, |b| i64::from_le_bytes(b) as f64),
        // Any nonzero byte is true, as in NumPy and PyTorch.
        DType::Bool => each(bytes, |b: [u8; 1]| (b[0] != 0) as u8 as f64),
    }
}

/// A tensor's elements as the little-endian bytes safetensors stores.
struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Encoded {
    fn of(t: &Tensor) -> Encoded {
        let v = &t.data;
        let data: Vec<u8> = match t.dtype {
            DType::F32 => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
            DType::F16 => v.iter().flat_map(|&x| half::f16::from_f64(x).to_le_bytes()).collect(),
            DType::BF16 => v.iter().flat_map(|&x| half::bf16::from_f64(x).to_le_bytes()).collect(),
            DType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
            DType::I64 => v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
            DType::Bool => v.iter().map(|&x| (x != 0.0) as u8).collect(),
        };
        Encoded { dtype: file_dtype(t.dtype), shape: t.shape.clone(), data }
    }
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}
