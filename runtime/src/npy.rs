//! Reading and writing NumPy `.npy` files.
//!
//! Reading maps the file's dtype to a Kiln dtype exactly: `f4` → f32,
//! `f2` → f16, `i4` → i32, `i8` → i64, `b1` → bool (either byte order).
//! Any other dtype (`f8`, `u1`, `i2`, ...) is refused with an error that
//! names it, unless the caller asks for a conversion with [`read_npy_as`]:
//! then floats and integers convert to a float dtype (rounded to it),
//! integers and bools convert to an integer dtype when every value fits,
//! and bools (or integers that are all 0 or 1) convert to bool. Floats are
//! never silently truncated to integers.
//!
//! Only C-order arrays are read; a Fortran-order array of rank 2 or more is
//! refused (for rank 0 and 1 both orders are the same bytes). The header is
//! checked before `npyz` sees it, and the data length is checked against
//! the shape, so a truncated or corrupt file is an error, never a panic.
//!
//! Writing uses the exact dtype, except bf16, which has no `.npy` dtype: a
//! bf16 tensor is written as `<f4` (every bf16 value is exactly an f32).
//! Writes are atomic (see [`crate::fsutil`]).

use crate::fsutil::{read_file, write_atomic};
use crate::tensor::{check_consistent, numel};
use crate::{RuntimeError, Tensor};
use kiln_ir::DType;
use npyz::{NpyFile, NpyHeader, TypeChar, WriterBuilder};
use py_literal::Value;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// NumPy itself refuses headers over 10 000 bytes by default; anything much
/// larger is not a plain array.
const MAX_HEADER: usize = 1 << 16;
/// Array headers nest a dict and a shape tuple; deeper nesting is not an
/// array we can read, and bounding it keeps the literal parser's recursion small.
const MAX_NESTING: usize = 8;

/// Reads a `.npy` file whose dtype maps exactly to a Kiln dtype.
pub fn read_npy(path: &Path) -> Result<Tensor, RuntimeError> {
    let bytes = read_file(path)?;
    decode_npy(&bytes, &path.display().to_string(), None)
}

/// Reads a `.npy` file and converts it to `dtype` where that is allowed
/// (see the module docs).
pub fn read_npy_as(path: &Path, dtype: DType) -> Result<Tensor, RuntimeError> {
    let bytes = read_file(path)?;
    decode_npy(&bytes, &path.display().to_string(), Some(dtype))
}

/// Decodes the bytes of a `.npy` file; `file` names it in errors. With
/// `want = None` the file's dtype must map exactly; with `Some(d)` the
/// values are converted to `d` where allowed.
pub fn decode_npy(bytes: &[u8], file: &str, want: Option<DType>) -> Result<Tensor, RuntimeError> {
    let invalid = |reason: String| RuntimeError::InvalidNpy { file: file.to_string(), reason };
    let unsupported = |reason: String| RuntimeError::UnsupportedNpy { file: file.to_string(), reason };

    let header_end = check_preamble(bytes).map_err(invalid)?;
    let text_start = if bytes[6] == 1 { 10 } else { 12 };
    let summary = parse_header_text(&bytes[text_start..header_end]).map_err(invalid)?;

    let header = NpyHeader::from_reader(bytes).map_err(|e| invalid(first_line(&e.to_string())))?;
    let npyz::DType::Plain(ts) = header.dtype() else {
        return Err(unsupported(format!(
            "structured dtype {} is not supported; save a plain numeric array",
            header.dtype().descr()
        )));
    };
    let kind = FileKind::of(ts.type_char(), ts.size_field()).ok_or_else(|| {
        unsupported(format!("dtype '{ts}' is not supported; Kiln reads float, integer and bool arrays"))
    })?;
    if summary.fortran && summary.shape.len() > 1 {
        return Err(unsupported(
            "the array is stored in Fortran order; Kiln reads C order only (save np.ascontiguousarray(a))".into(),
        ));
    }

    let n = numel(&summary.shape).ok_or_else(|| invalid(format!("shape {:?} has too many elements", summary.shape)))?;
    let need = n.checked_mul(kind.size()).ok_or_else(|| invalid(format!("shape {:?} is too large", summary.shape)))?;
    let data = &bytes[header_end..];
    if data.len() < need {
        return Err(invalid(format!(
            "truncated: shape {:?} of '{ts}' needs {need} data bytes, the file has {}",
            summary.shape,
            data.len()
        )));
    }
    if data.len() > need {
        return Err(invalid(format!("{} unexpected bytes after the data", data.len() - need)));
    }

    let exact = kind.exact_dtype();
    let target = match (want, exact) {
        (Some(d), _) => d,
        (None, Some(d)) => d,
        (None, None) => {
            return Err(unsupported(format!(
                "dtype {} ('{ts}') is not supported; Kiln reads float32, float16, int32, int64 and bool \
                 (convert with a.astype(...))",
                kind.numpy_name()
            )))
        }
    };
    let raw = read_values(header, data, kind).map_err(|e| invalid(first_line(&e)))?;
    let values = convert(raw, kind, target).map_err(unsupported)?;
    Ok(Tensor { dtype: target, shape: summary.shape, data: values })
}

/// Checks magic, version and header length; returns where the data starts.
fn check_preamble(bytes: &[u8]) -> Result<usize, String> {
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err("it does not start with the .npy magic bytes \\x93NUMPY".into());
    }
    if bytes.len() < 10 {
        return Err(format!("truncated: only {} bytes", bytes.len()));
    }
    let (len, start) = match (bytes[6], bytes[7]) {
        (1, 0) => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        (2, 0) | (3, 0) => {
            let b = bytes.get(8..12).ok_or_else(|| format!("truncated: only {} bytes", bytes.len()))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        (a, b) => return Err(format!("unsupported format version {a}.{b}")),
    };
    if len > MAX_HEADER {
        return Err(format!("the header claims {len} bytes, more than an array header can need"));
    }
    let end = start + len;
    if end > bytes.len() {
        return Err(format!("truncated: the header needs {end} bytes, the file has {}", bytes.len()));
    }
    Ok(end)
}

/// What the header says, read before npyz so that bad shapes are refused here.
struct HeaderSummary {
    shape: Vec<usize>,
    fortran: bool,
}

fn parse_header_text(raw: &[u8]) -> Result<HeaderSummary, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the header is not text".to_string())?;
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err("the header nests too deeply to be an array header".into());
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let value: Value = text
        .trim_end_matches(['\n', ' ', '\0'])
        .parse()
        .map_err(|_| "the header is not a Python dict literal".to_string())?;
    let Value::Dict(entries) = value else {
        return Err("the header is not a Python dict".into());
    };
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Value::String(s) if s == key))
            .map(|(_, v)| v)
            .ok_or_else(|| format!("the header has no '{key}' entry"))
    };
    let fortran = match get("fortran_order")? {
        Value::Boolean(b) => *b,
        _ => return Err("'fortran_order' is not True or False".into()),
    };
    let dims = match get("shape")? {
        Value::Tuple(v) | Value::List(v) => v,
        _ => return Err("'shape' is not a tuple".into()),
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Value::Integer(i) => i.to_string().parse::<usize>().map_err(|_| format!("bad dimension {i} in 'shape'")),
            _ => Err("'shape' holds a non-integer".to_string()),
        })
        .collect::<Result<Vec<usize>, String>>()?;
    // npyz multiplies the sizes (skipping none) into u64 strides; a product
    // of the non-zero sizes that fits rules out any overflow there.
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    get("descr")?;
    Ok(HeaderSummary { shape, fortran })
}

/// The element kinds Kiln can read, with their byte size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Bool,
    Int(u64),
    Uint(u64),
    Float(u64),
}

impl FileKind {
    fn of(c: TypeChar, size: u64) -> Option<FileKind> {
        match (c, size) {
            (TypeChar::Bool, 1) => Some(FileKind::Bool),
            (TypeChar::Int, 1 | 2 | 4 | 8) => Some(FileKind::Int(size)),
            (TypeChar::Uint, 1 | 2 | 4 | 8) => Some(FileKind::Uint(size)),
            (TypeChar::Float, 2 | 4 | 8) => Some(FileKind::Float(size)),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            FileKind::Bool => 1,
            FileKind::Int(s) | FileKind::Uint(s) | FileKind::Float(s) => s as usize,
        }
    }

    /// The Kiln dtype that holds this kind without conversion.
    fn exact_dtype(self) -> Option<DType> {
        match self {
            FileKind::Bool => Some(DType::Bool),
            FileKind::Int(4) => Some(DType::I32),
            FileKind::Int(8) => Some(DType::I64),
            FileKind::Float(2) => Some(DType::F16),
            FileKind::Float(4) => Some(DType::F32),
            _ => None,
        }
    }

    fn numpy_name(self) -> String {
        match self {
            FileKind::Bool => "bool".into(),
            FileKind::Int(s) => format!("int{}", s * 8),
            FileKind::Uint(s) => format!("uint{}", s * 8),
            FileKind::Float(s) => format!("float{}", s * 8),
        }
    }
}

/// Values as read, before conversion: integers kept exact in `i128`.
enum Raw {
    Float(Vec<f64>),
    Int(Vec<i128>),
    Bool(Vec<bool>),
}

fn read_values(header: NpyHeader, data: &[u8], kind: FileKind) -> Result<Raw, String> {
    fn all<T: npyz::Deserialize>(header: NpyHeader, data: &[u8]) -> Result<Vec<T>, String> {
        NpyFile::with_header(header, data).into_vec::<T>().map_err(|e| e.to_string())
    }
    fn ints<T: npyz::Deserialize + Into<i128>>(header: NpyHeader, data: &[u8]) -> Result<Raw, String> {
        Ok(Raw::Int(all::<T>(header, data)?.into_iter().map(Into::into).collect()))
    }
    Ok(match kind {
        FileKind::Bool => Raw::Bool(all::<bool>(header, data)?),
        FileKind::Float(2) => Raw::Float(all::<half::f16>(header, data)?.into_iter().map(f64::from).collect()),
        FileKind::Float(4) => Raw::Float(all::<f32>(header, data)?.into_iter().map(f64::from).collect()),
        FileKind::Float(_) => Raw::Float(all::<f64>(header, data)?),
        FileKind::Int(1) => ints::<i8>(header, data)?,
        FileKind::Int(2) => ints::<i16>(header, data)?,
        FileKind::Int(4) => ints::<i32>(header, data)?,
        FileKind::Int(_) => ints::<i64>(header, data)?,
        FileKind::Uint(1) => ints::<u8>(header, data)?,
        FileKind::Uint(2) => ints::<u16>(header, data)?,
        FileKind::Uint(4) => ints::<u32>(header, data)?,
        FileKind::Uint(_) => ints::<u64>(header, data)?,
    })
}

/// Converts read values to `target`; `Err` says why one cannot be.
fn convert(raw: Raw, kind: FileKind, target: DType) -> Result<Vec<f64>, String> {
    let from = kind.numpy_name();
    match raw {
        Raw::Bool(v) => Ok(v.into_iter().map(|b| b as u8 as f64).collect()),
        Raw::Float(v) if target.is_float() => Ok(v.into_iter().map(|x| target.round(x)).collect()),
        Raw::Float(_) => Err(format!(
            "holds {from} values; Kiln does not convert floats to {target} (save the array with an integer dtype)"
        )),
        Raw::Int(v) => {
            let (lo, hi): (i128, i128) = match target {
                DType::I32 => (i32::MIN.into(), i32::MAX.into()),
                DType::I64 => (i64::MIN.into(), i64::MAX.into()),
                DType::Bool => (0, 1),
                _ => return Ok(v.into_iter().map(|x| target.round(x as f64)).collect()),
            };
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !(lo..=hi).contains(*x)) {
                return Err(format!("element {i} is {x}, which does not fit in {target}"));
            }
            Ok(v.into_iter().map(|x| x as f64).collect())
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Encodes a tensor as the bytes of a `.npy` file (bf16 as `<f4`).
pub fn encode_npy(t: &Tensor) -> Result<Vec<u8>, RuntimeError> {
    check_consistent(t, "cannot write .npy")?;
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let v = &t.data;
    let out = match t.dtype {
        DType::F32 | DType::BF16 => encode(&shape, v.iter().map(|&x| x as f32)),
        DType::F16 => encode(&shape, v.iter().map(|&x| half::f16::from_f64(x))),
        DType::I32 => encode(&shape, v.iter().map(|&x| x as i32)),
        DType::I64 => encode(&shape, v.iter().map(|&x| x as i64)),
        DType::Bool => encode(&shape, v.iter().map(|&x| x != 0.0)),
    };
    out.map_err(|e| RuntimeError::Invalid(format!("cannot encode .npy: {e}")))
}

fn encode<T: npyz::AutoSerialize>(shape: &[u64], values: impl Iterator<Item = T>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::<T>::new().default_dtype().shape(shape).writer(&mut buf).begin_nd()?;
    for x in values {
        w.push(&x)?;
    }
    w.finish()?;
    Ok(buf)
}

/// Writes a tensor to a `.npy` file atomically (bf16 as `<f4`).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), RuntimeError> {
    let bytes = encode_npy(t)?;
    write_atomic(path, &bytes)
}
