//! Weights in safetensors: round trips (with stacked layers), a file written
//! by the Python `safetensors` package, mismatched checkpoints, and corrupt
//! files (errors, never panics).

mod common;

use common::{fixture, module, normal, param, stacked, tensor, ty};
use kiln_ir::{DType, DimExpr, Init, Module, Param};
use kiln_runtime::safetensors::{
    decode_params, decode_tensors, encode_params, encode_tensors, load_params, read_tensors, save_params,
    storage_layout,
};
use kiln_runtime::{init_params, RuntimeError};
use proptest::prelude::*;

/// Every dtype, a stacked parameter of 3 layers and a scalar.
fn model() -> Module {
    module(vec![
        param("wte", DType::F32, &[5, 4], normal(0.0, 0.02)),
        stacked("blocks.attn.w_qkv", "blocks", DType::BF16, &[3, 4, 6], normal(0.0, 1.0)),
        stacked("blocks.ln.g", "blocks", DType::F32, &[3, 4], Init::Constant(1.0)),
        param("head.b", DType::F16, &[6], Init::Uniform { low: -1.0, high: 1.0 }),
        param("pos", DType::I32, &[3], normal(0.0, 50.0)),
        param("count", DType::I64, &[], Init::Constant(41.0)),
        param("mask", DType::Bool, &[2, 2], Init::Uniform { low: -1.0, high: 1.0 }),
    ])
}

#[test]
fn round_trip_with_stacked_layers() {
    let m = model();
    let params = init_params(&m, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    save_params(&m, &params, &path).unwrap();
    assert_eq!(load_params(&m, &path).unwrap(), params);

    // On disk, the stack is one tensor per layer, without the stack axis.
    let stored = read_tensors(&path).unwrap();
    let names: Vec<&str> = stored.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "blocks.0.attn.w_qkv",
            "blocks.0.ln.g",
            "blocks.1.attn.w_qkv",
            "blocks.1.ln.g",
            "blocks.2.attn.w_qkv",
            "blocks.2.ln.g",
            "count",
            "head.b",
            "mask",
            "pos",
            "wte"
        ]
    );
    let w = &params[1];
    for layer in 0..3 {
        let t = &stored[&format!("blocks.{layer}.attn.w_qkv")];
        assert_eq!(t.dtype, DType::BF16);
        assert_eq!(t.shape, vec![4, 6]);
        assert_eq!(t.data[..], w.data[layer * 24..(layer + 1) * 24]);
    }
    assert_eq!(stored["count"], tensor(DType::I64, &[], &[41.0]));
}

#[test]
fn storage_layout_of_a_stack() {
    let p = stacked("blocks.attn.w_qkv", "blocks", DType::F32, &[3, 256, 768], normal(0.0, 1.0));
    let l = storage_layout(&p).unwrap();
    assert_eq!(l.names, ["blocks.0.attn.w_qkv", "blocks.1.attn.w_qkv", "blocks.2.attn.w_qkv"]);
    assert_eq!(l.slice_shape, vec![256, 768]);
    assert_eq!(l.shape, vec![3, 256, 768]);

    let bad = stacked("w", "blocks", DType::F32, &[3, 2], normal(0.0, 1.0));
    assert!(storage_layout(&bad).unwrap_err().to_string().contains("stack `blocks` is not a prefix"));
    let scalar = stacked("blocks.w", "blocks", DType::F32, &[], normal(0.0, 1.0));
    assert!(storage_layout(&scalar).unwrap_err().to_string().contains("leading stack axis"));
}

/// The module matching `model.safetensors` (written by make_fixtures.py).
fn fixture_model() -> Module {
    module(vec![
        stacked("blocks.w", "blocks", DType::F32, &[2, 2, 3], normal(0.0, 1.0)),
        param("bias", DType::F32, &[2], Init::Constant(0.0)),
        param("scale", DType::F16, &[3], Init::Constant(1.0)),
        param("ids", DType::I64, &[2], Init::Constant(0.0)),
        param("mask", DType::Bool, &[3], Init::Constant(0.0)),
    ])
}

#[test]
fn reads_a_file_written_by_python_safetensors() {
    let path = fixture("model.safetensors");
    let p = load_params(&fixture_model(), &path).unwrap();
    assert_eq!(p[0], tensor(DType::F32, &[2, 2, 3], &[1., 2., 3., 4., 5., 6., -1., -2., -3., -4., -5., -6.]));
    assert_eq!(p[1], tensor(DType::F32, &[2], &[0.25, -0.75]));
    assert_eq!(p[2], tensor(DType::F16, &[3], &[1.5, 65504.0, -0.125]));
    assert_eq!(p[3], tensor(DType::I64, &[2], &[-(2f64.powi(40)), 7.0]));
    assert_eq!(p[4], tensor(DType::Bool, &[3], &[1.0, 0.0, 1.0]));
}

#[test]
fn reads_hand_written_bf16() {
    let all = read_tensors(&fixture("bf16.safetensors")).unwrap();
    assert_eq!(all["w"], tensor(DType::BF16, &[3], &[1.0, -3.0, 0.15625]));
}

fn load_err(m: &Module) -> String {
    load_params(m, &fixture("model.safetensors")).unwrap_err().to_string()
}

fn file() -> String {
    fixture("model.safetensors").display().to_string()
}

#[test]
fn missing_parameter_is_named() {
    let mut m = fixture_model();
    m.params.insert(1, param("lm_head", DType::F32, &[2], Init::Constant(0.0)));
    assert_eq!(load_err(&m), format!("{}: missing parameter `lm_head`", file()));
    // A stack with more layers than the checkpoint.
    let mut m = fixture_model();
    m.params[0] = stacked("blocks.w", "blocks", DType::F32, &[3, 2, 3], normal(0.0, 1.0));
    assert_eq!(load_err(&m), format!("{}: missing parameter `blocks.2.w`", file()));
}

#[test]
fn unknown_tensors_are_named() {
    let mut m = fixture_model();
    m.params.pop(); // mask
    assert_eq!(load_err(&m), format!("{}: unknown tensor `mask`: the model has no such parameter", file()));
    m.params.remove(1); // bias
    assert_eq!(
        load_err(&m),
        format!("{}: unknown tensor `bias` (and 1 more): the model has no such parameter", file())
    );
    // A stack with fewer layers than the checkpoint.
    let mut m = fixture_model();
    m.params[0] = stacked("blocks.w", "blocks", DType::F32, &[1, 2, 3], normal(0.0, 1.0));
    assert!(load_err(&m).contains("unknown tensor `blocks.1.w`"));
}

#[test]
fn wrong_shape_names_both_shapes() {
    let mut m = fixture_model();
    m.params[0] = stacked("blocks.w", "blocks", DType::F32, &[2, 2, 4], normal(0.0, 1.0));
    assert_eq!(load_err(&m), format!("{}: parameter `blocks.0.w` has shape [2, 3], the model expects [2, 4]", file()));
}

#[test]
fn wrong_dtype_names_both_dtypes() {
    let mut m = fixture_model();
    m.params[1] = param("bias", DType::BF16, &[2], Init::Constant(0.0));
    assert_eq!(load_err(&m), format!("{}: parameter `bias` has dtype f32, the model expects bf16", file()));
    m.params[1] = param("bias", DType::I32, &[4], Init::Constant(0.0));
    assert_eq!(load_err(&m), format!("{}: parameter `bias` has type f32[2], the model expects i32[4]", file()));
}

#[test]
fn first_mismatch_wins() {
    // Both `blocks` and `mask` are wrong; parameters are checked in order.
    let mut m = fixture_model();
    m.params[0] = stacked("blocks.w", "blocks", DType::F16, &[2, 2, 3], normal(0.0, 1.0));
    m.params[4] = param("mask", DType::Bool, &[4], Init::Constant(0.0));
    assert!(load_err(&m).contains("parameter `blocks.0.w` has dtype f32, the model expects f16"));
}

#[test]
fn unsupported_file_dtypes_are_refused() {
    let data: Vec<u8> = 1.5f64.to_le_bytes().to_vec();
    let header = r#"{"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
    let bytes = raw_file(header, &data);
    let msg = decode_tensors(&bytes, "d.safetensors").unwrap_err().to_string();
    assert_eq!(msg, "d.safetensors: tensor `x`: dtype F64 is not supported (Kiln reads F32, F16, BF16, I32, I64, BOOL)");
    let m = module(vec![param("x", DType::F32, &[1], Init::Constant(0.0))]);
    let msg = decode_params(&m, &bytes, "d.safetensors").unwrap_err().to_string();
    assert_eq!(msg, "d.safetensors: parameter `x` has dtype f64, the model expects f32");
}

#[test]
fn symbolic_shapes_and_bad_values_are_refused() {
    let p = Param {
        name: "w".into(),
        ty: kiln_ir::TensorType::new(DType::F32, vec![DimExpr::var("D"), DimExpr::constant(2)]),
        init: Init::Constant(0.0),
        stack: None,
    };
    let m = module(vec![p]);
    let msg = encode_params(&m, &[tensor(DType::F32, &[1, 2], &[0.0, 0.0])]).unwrap_err().to_string();
    assert!(msg.starts_with("parameter `w`: shape f32[D, 2] is symbolic"), "{msg}");
    assert!(load_params(&m, &fixture("model.safetensors")).unwrap_err().to_string().contains("symbolic"));

    let m = module(vec![param("w", DType::F32, &[2], Init::Constant(0.0))]);
    let msg = encode_params(&m, &[]).unwrap_err().to_string();
    assert_eq!(msg, "cannot save weights: 0 values for 1 parameters");
    let msg = encode_params(&m, &[tensor(DType::F32, &[3], &[0.0; 3])]).unwrap_err().to_string();
    assert_eq!(msg, "parameter `w`: the value is f32[3], the model declares f32[2]");
    let dup = [("a".to_string(), tensor(DType::F32, &[], &[1.0])), ("a".to_string(), tensor(DType::F32, &[], &[2.0]))];
    assert!(encode_tensors(&dup).unwrap_err().to_string().contains("two tensors are named `a`"));
}

#[test]
fn save_replaces_an_existing_file() {
    let m = fixture_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    std::fs::write(&path, vec![b'x'; 10_000]).unwrap();
    let params = load_params(&m, &fixture("model.safetensors")).unwrap();
    save_params(&m, &params, &path).unwrap();
    assert_eq!(load_params(&m, &path).unwrap(), params);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn missing_file_names_it() {
    let msg = load_params(&fixture_model(), std::path::Path::new("w.safetensors")).unwrap_err().to_string();
    assert_eq!(msg, "cannot read `w.safetensors`: No such file or directory");
}

/// A file from a raw JSON header and data.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

#[test]
fn every_truncation_is_an_error() {
    let full = std::fs::read(fixture("model.safetensors")).unwrap();
    let m = fixture_model();
    for n in 0..full.len() {
        let err = decode_params(&m, &full[..n], "t.safetensors").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RuntimeError::InvalidSafetensors { .. }), "{n}: {msg}");
        assert!(msg.starts_with("t.safetensors: not a valid safetensors file: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn corrupt_headers_are_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\x05\x00\x00\x00\x00\x00\x00\x00{}".to_vec(), "truncated: the header claims 5 bytes"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff{}".to_vec(), "truncated"),
        (raw_file("not json", &[]), "not valid JSON"),
        (raw_file("[1, 2]", &[]), "not a JSON object"),
        (raw_file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &[0; 4]), "invalid shape, data type, or offset"),
        (raw_file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#, &[0; 4]), "data offsets outside"),
        (raw_file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 8]), "incomplete metadata"),
        (raw_file(r#"{"a":{"dtype":"F32","shape":[1]}}"#, &[0; 4]), "data offsets outside"),
        (raw_file(r#"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]), "JSON"),
        (raw_file(r#"{"a":{"dtype":"F32","shape":[4611686018427387904, 8],"data_offsets":[0,0]}}"#, &[]), "overflow"),
    ];
    for (bytes, want) in cases {
        let msg = decode_tensors(&bytes, "c.safetensors").unwrap_err().to_string();
        assert!(msg.contains(want), "want {want:?}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn huge_offsets_do_not_overflow() {
    // 15 tensors of 2^60 bytes and one of 2^60 - 1 end at 2^64 - 1: the
    // crate's end-of-buffer sum would overflow; it must be an error.
    let mut entries = Vec::new();
    let big = 1u64 << 60;
    for k in 0..15u64 {
        entries.push(format!(r#""t{k:02}":{{"dtype":"U8","shape":[{big}],"data_offsets":[{},{}]}}"#, k * big, (k + 1) * big));
    }
    entries.push(format!(r#""t15":{{"dtype":"U8","shape":[{}],"data_offsets":[{},{}]}}"#, big - 1, 15 * big, u64::MAX));
    let header = format!("{{{}}}", entries.join(","));
    let msg = decode_tensors(&raw_file(&header, &[]), "h.safetensors").unwrap_err().to_string();
    assert!(msg.contains("data offsets outside the 0 data bytes"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_tensors(&bytes, "r.safetensors");
        let _ = decode_params(&fixture_model(), &bytes, "r.safetensors");
    }

    #[test]
    fn random_headers_never_panic(
        header in "\\{(\"[a-c]\":\\{\"dtype\":\"(F32|BOOL|U8|F4|BF16)\",\"shape\":\\[[0-9]{0,20}(,[0-9]{0,3})?\\],\"data_offsets\":\\[[0-9]{1,20},[0-9]{1,20}\\]\\},?){0,3}\\}",
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = decode_tensors(&raw_file(&header, &data), "r.safetensors");
    }

    #[test]
    fn corrupted_files_never_panic(pos in 0usize..1000, byte in any::<u8>(), cut in 0usize..1000) {
        let mut bytes = std::fs::read(fixture("model.safetensors")).unwrap();
        let i = pos % bytes.len();
        bytes[i] = byte;
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = decode_params(&fixture_model(), &bytes, "r.safetensors");
    }
}

#[test]
fn types_in_messages_use_kiln_names() {
    // Guard for the message format the CLI relies on.
    assert_eq!(ty(DType::BF16, &[2, 3]).to_string(), "bf16[2, 3]");
}
