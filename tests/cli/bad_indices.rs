//! Indices computed in the graph that fall outside their range are an
//! error on the CPU backend, with the reference interpreter's message,
//! never a clamped read.

use crate::util::{kiln, s, write, TempDir};
use kiln_ir::DType;
use kiln_runtime::{self as rt, Tensor};

const MODEL: &str = "config { classes = 10 }
param e: f32[16, 4] = normal(std: 1.0)
pub fn far(t: i32[T]) -> y: f32[T, 4] { return e[t + 100000000] }
pub fn neg(t: i32[T]) -> y: f32[T, 4] { return e[t * 0 - 5] }
pub fn ce(x: f32[T, classes], t: i32[T]) -> loss: f32[] { return cross_entropy(x, t + 50, over: classes) }
";

/// `kiln run --entry entry --input t=[3, 0, 9]` on `backend`: its one-line
/// error from the node on (`%5 = gather: ...`), after checking it names
/// `words` and that no output was written.
fn error(entry: &str, backend: &str, words: &[&str]) -> String {
    let dir = TempDir::new();
    let model = write(&dir, "m.kl", MODEL);
    let ids = dir.join("t.npy");
    rt::write_npy(&ids, &Tensor { dtype: DType::I32, shape: vec![3], data: vec![3.0, 0.0, 9.0] }).expect("write t.npy");
    let out = dir.join("out");
    let line = kiln(&["run", s(&model), "--entry", entry, "--backend", backend, "--input", &format!("t={}", s(&ids)), "--out", s(&out)]).one_line_error(words);
    assert!(!out.join("y.npy").exists() && !out.join("loss.npy").exists(), "a failed run wrote an output");
    line[line.find('%').expect("the node")..].to_string()
}

/// The CPU backend fails where the reference does, with its message.
fn same_error(entry: &str, words: &[&str]) {
    assert_eq!(error(entry, "cpu", words), error(entry, "reference", words));
}

#[test]
fn a_gather_index_past_the_end_is_an_error() {
    same_error("far", &["gather: index 100000003 out of range 0..16"]);
}

#[test]
fn a_negative_gather_index_is_an_error() {
    same_error("neg", &["gather: index -5 out of range 0..16"]);
}

#[test]
fn cross_entropy_targets_out_of_range_are_an_error() {
    same_error("ce", &["one_hot: index 53 out of range 0..10"]);
}
