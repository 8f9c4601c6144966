//! `.npy` reading and writing: round trips, NumPy-written fixtures, and
//! malformed files (which must be errors, never panics).

mod common;

use common::{fixture, tensor};
use kiln_ir::DType;
use kiln_runtime::npy::{decode_npy, encode_npy, read_npy, read_npy_as, write_npy};
use kiln_runtime::{RuntimeError, Tensor};
use proptest::prelude::*;

fn roundtrip(t: &Tensor) -> Tensor {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.npy");
    write_npy(&p, t).unwrap();
    read_npy(&p).unwrap()
}

#[test]
fn round_trips_every_dtype() {
    let cases = [
        tensor(DType::F32, &[2, 3], &[0.0, -1.5, 3.25, 1e-30f32 as f64, f32::MAX as f64, -0.0]),
        tensor(DType::F16, &[4], &[0.5, -2.25, 65504.0, 2f64.powi(-24)]),
        tensor(DType::I32, &[3], &[i32::MIN as f64, 0.0, i32::MAX as f64]),
        tensor(DType::I64, &[2, 2], &[-(2f64.powi(53)), 1.0, 2.0, 2f64.powi(53)]),
        tensor(DType::Bool, &[5], &[1.0, 0.0, 1.0, 1.0, 0.0]),
        tensor(DType::F32, &[], &[7.5]),
        tensor(DType::I64, &[0, 3], &[]),
        tensor(DType::F32, &[1, 1, 2, 1], &[f64::INFINITY, f64::NEG_INFINITY]),
    ];
    for t in &cases {
        assert_eq!(&roundtrip(t), t, "{t}");
    }
    let nan = roundtrip(&tensor(DType::F32, &[1], &[f64::NAN]));
    assert!(nan.data[0].is_nan());
}

#[test]
fn bf16_is_written_as_f32() {
    let t = tensor(DType::BF16, &[3], &[1.0, -3.0, 0.15625]);
    let back = roundtrip(&t);
    assert_eq!(back, tensor(DType::F32, &[3], &[1.0, -3.0, 0.15625]));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.npy");
    write_npy(&p, &t).unwrap();
    assert_eq!(read_npy_as(&p, DType::BF16).unwrap(), t);
}

#[test]
fn reads_numpy_fixtures_exactly() {
    let f = |name: &str| read_npy(&fixture(name)).unwrap();
    assert_eq!(f("f32_2x3.npy"), tensor(DType::F32, &[2, 3], &[-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]));
    assert_eq!(f("f16_4.npy"), tensor(DType::F16, &[4], &[0.5, -2.25, 65504.0, 2f64.powi(-14)]));
    assert_eq!(f("i32_3.npy"), tensor(DType::I32, &[3], &[-(2f64.powi(31)), 0.0, 2f64.powi(31) - 1.0]));
    assert_eq!(f("i64_2x2.npy"), tensor(DType::I64, &[2, 2], &[-(2f64.powi(53)), 1.0, 2.0, 2f64.powi(53)]));
    assert_eq!(f("bool_5.npy"), tensor(DType::Bool, &[5], &[1.0, 0.0, 1.0, 1.0, 0.0]));
    assert_eq!(f("f32_be.npy"), tensor(DType::F32, &[2], &[1.5, -2.0]));
    assert_eq!(f("scalar_f32.npy"), tensor(DType::F32, &[], &[3.25]));
    assert_eq!(f("empty_0x3.npy"), tensor(DType::F32, &[0, 3], &[]));
    assert_eq!(f("v2_i32.npy"), tensor(DType::I32, &[2, 2], &[1.0, -2.0, 3.0, -4.0]));
}

#[test]
fn writes_what_numpy_writes() {
    // Our header and data bytes match NumPy's for the same array.
    let numpy = std::fs::read(fixture("f32_2x3.npy")).unwrap();
    let ours = encode_npy(&tensor(DType::F32, &[2, 3], &[-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])).unwrap();
    assert_eq!(decode_npy(&ours, "ours", None).unwrap(), decode_npy(&numpy, "numpy", None).unwrap());
    assert_eq!(ours[ours.len() - 24..], numpy[numpy.len() - 24..]);
}

#[test]
fn float64_needs_an_explicit_conversion() {
    let err = read_npy(&fixture("f64_3.npy")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("f64_3.npy") && msg.contains("float64"), "{msg}");
    assert!(matches!(err, RuntimeError::UnsupportedNpy { .. }));
    let t = read_npy_as(&fixture("f64_3.npy"), DType::F32).unwrap();
    assert_eq!(t, tensor(DType::F32, &[3], &[0.1f32 as f64, 1.0, -3.5]));
}

#[test]
fn conversions_refuse_lossy_integer_casts() {
    let u8s = fixture("u8_4.npy");
    assert!(read_npy(&u8s).unwrap_err().to_string().contains("uint8"));
    assert_eq!(read_npy_as(&u8s, DType::I32).unwrap(), tensor(DType::I32, &[4], &[0.0, 1.0, 255.0, 7.0]));
    assert_eq!(read_npy_as(&u8s, DType::F16).unwrap(), tensor(DType::F16, &[4], &[0.0, 1.0, 255.0, 7.0]));
    let msg = read_npy_as(&u8s, DType::Bool).unwrap_err().to_string();
    assert!(msg.contains("element 2 is 255") && msg.contains("bool"), "{msg}");

    let msg = read_npy_as(&fixture("i64_2x2.npy"), DType::I32).unwrap_err().to_string();
    assert!(msg.contains("element 0 is -9007199254740992, which does not fit in i32"), "{msg}");

    let msg = read_npy_as(&fixture("f32_2x3.npy"), DType::I64).unwrap_err().to_string();
    assert!(msg.contains("does not convert floats to i64"), "{msg}");

    assert_eq!(read_npy_as(&fixture("bool_5.npy"), DType::F32).unwrap().data, vec![1.0, 0.0, 1.0, 1.0, 0.0]);
}

#[test]
fn fortran_order_is_refused() {
    let msg = read_npy(&fixture("fortran_2x3.npy")).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}: ", fixture("fortran_2x3.npy").display())), "{msg}");
    assert!(msg.contains("Fortran order"), "{msg}");
}

#[test]
fn unsupported_dtypes_are_named() {
    let msg = read_npy(&fixture("c64_2.npy")).unwrap_err().to_string();
    assert!(msg.contains("'<c8'") && msg.contains("not supported"), "{msg}");
    assert!(read_npy_as(&fixture("c64_2.npy"), DType::F32).is_err());
}

#[test]
fn missing_file_names_it() {
    let msg = read_npy(std::path::Path::new("no/such/x.npy")).unwrap_err().to_string();
    assert_eq!(msg, "cannot read `no/such/x.npy`: No such file or directory");
}

#[test]
fn every_truncation_is_an_error() {
    let full = std::fs::read(fixture("f32_2x3.npy")).unwrap();
    for n in 0..full.len() {
        let err = decode_npy(&full[..n], "x.npy", None).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RuntimeError::InvalidNpy { .. }), "{n}: {msg}");
        assert!(msg.starts_with("x.npy: not a valid .npy file: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    let msg = decode_npy(&full[..full.len() - 4], "x.npy", None).unwrap_err().to_string();
    assert!(msg.contains("truncated: shape [2, 3] of '<f4' needs 24 data bytes, the file has 20"), "{msg}");
    let mut long = full.clone();
    long.push(0);
    assert!(decode_npy(&long, "x.npy", None).unwrap_err().to_string().contains("1 unexpected bytes"));
}

#[test]
fn garbage_is_an_error() {
    let msg = decode_npy(b"PK\x03\x04 this is a zip", "x.npy", None).unwrap_err().to_string();
    assert_eq!(msg, "x.npy: not a valid .npy file: it does not start with the .npy magic bytes \\x93NUMPY");
    let msg = decode_npy(b"\x93NUMPY\x07\x00\x10\x00", "x.npy", None).unwrap_err().to_string();
    assert!(msg.contains("unsupported format version 7.0"), "{msg}");
}

/// A version-1.0 file with a hand-written header dict and data.
fn with_header(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

#[test]
fn hostile_headers_are_errors() {
    let cases = [
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 2), }", "too large"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 0), }", "too large"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }", "bad dimension"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "bad dimension -1"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,), }", "non-integer"),
        ("{'descr': '<f4', 'fortran_order': 'no', 'shape': (1,), }", "fortran_order"),
        ("{'descr': '<f4', 'shape': (1,), }", "no 'fortran_order'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': ((((((((((1,),),),),),),),),),), }", "nests too deeply"),
        ("[1, 2, 3]", "not a Python dict"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "not a Python dict literal"),
        ("{'descr': 'zz', 'fortran_order': False, 'shape': (1,), }", "invalid type string"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000,), }", "truncated"),
        ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "structured dtype"),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "not supported"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", "too large"),
    ];
    for (dict, want) in cases {
        let msg = decode_npy(&with_header(dict, &[0; 4]), "h.npy", None).unwrap_err().to_string();
        assert!(msg.contains(want), "{dict}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    // The same writer makes a file we do accept.
    let ok = with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", &7i32.to_le_bytes());
    assert_eq!(decode_npy(&ok, "h.npy", None).unwrap(), tensor(DType::I32, &[1], &[7.0]));
    // A bool byte other than 0 or 1 is corrupt.
    let bad_bool = with_header("{'descr': '|b1', 'fortran_order': False, 'shape': (1,), }", &[2]);
    assert!(decode_npy(&bad_bool, "h.npy", None).unwrap_err().to_string().contains("invalid value for bool"));
}

#[test]
fn write_replaces_an_existing_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.npy");
    write_npy(&p, &tensor(DType::F32, &[100], &[1.0; 100])).unwrap();
    let small = tensor(DType::I32, &[2], &[3.0, 4.0]);
    write_npy(&p, &small).unwrap();
    assert_eq!(read_npy(&p).unwrap(), small);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp files left behind");
}

#[test]
fn inconsistent_tensor_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.npy");
    let err = write_npy(&p, &tensor(DType::F32, &[2, 2], &[1.0])).unwrap_err();
    assert!(err.to_string().contains("must hold 4 values, this one holds 1"), "{err}");
    assert!(!p.exists());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_npy(&bytes, "r.npy", None);
        let _ = decode_npy(&bytes, "r.npy", Some(DType::F32));
    }

    #[test]
    fn random_bytes_after_the_magic_never_panic(
        version in 0u8..4,
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = b"\x93NUMPY".to_vec();
        bytes.extend([version, 0]);
        bytes.extend(rest);
        let _ = decode_npy(&bytes, "r.npy", None);
    }

    #[test]
    fn random_header_texts_never_panic(
        dict in "[{}()\\[\\]',: 0-9a-z<>|.\\-\\\\\"]{0,80}",
        data in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let _ = decode_npy(&with_header(&dict, &data), "r.npy", None);
        let real = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dict}, }}");
        let _ = decode_npy(&with_header(&real, &data), "r.npy", None);
    }

    #[test]
    fn corrupted_files_never_panic(pos in 0usize..152, byte in any::<u8>(), cut in 0usize..160) {
        let mut bytes = std::fs::read(fixture("f32_2x3.npy")).unwrap();
        let i = pos % bytes.len();
        bytes[i] = byte;
        bytes.truncate(cut.max(1));
        let _ = decode_npy(&bytes, "r.npy", None);
    }

    #[test]
    fn f32_values_round_trip(values in proptest::collection::vec(any::<f32>().prop_filter("not NaN", |x| !x.is_nan()), 0..20)) {
        let t = tensor(DType::F32, &[values.len()], &values.iter().map(|&x| x as f64).collect::<Vec<_>>());
        let bytes = encode_npy(&t).unwrap();
        prop_assert_eq!(decode_npy(&bytes, "p.npy", None).unwrap(), t);
    }
}
