//! Zero-size tensors and reductions over empty axes through `kiln run`:
//! the CPU backend and the reference give the same empty outputs, the
//! same identities, and the same error where a reduction has no result.

use crate::util::{kiln, repo, s, write, TempDir};
use kiln_runtime::{self as rt, Tensor};
use std::path::Path;

const MODEL: &str = "pub fn lit(x: f32[2, 0, 1]) -> y: f32[2, 0, 1] { return x * 2.0 + 1.0 }
pub fn red(x: f32[N, M]) -> (s: f32[N], me: f32[N], mx: f32[N], mn: f32[N], im: i32[N]) {
    return (sum(x, over: M), mean(x, over: M), max(x, over: M), min(x, over: M), max(cast(x, i32), over: M))
}
pub fn arg(x: f32[N, M]) -> i: i64[N] { return argmax(x, over: M) }
";

/// `kiln run FILE args... --backend b --out DIR` on both backends; the
/// outputs named `names` of each, as read back.
fn outputs(file: &Path, args: &[&str], names: &[&str]) -> Vec<Vec<Tensor>> {
    ["cpu", "reference"]
        .iter()
        .map(|b| {
            let dir = TempDir::new();
            let out = dir.join("out");
            let mut all: Vec<&str> = vec!["run", s(file)];
            all.extend(args);
            all.extend(["--backend", b, "--out", s(&out)]);
            kiln(&all).ok();
            names.iter().map(|n| rt::read_npy(&out.join(format!("{n}.npy"))).unwrap_or_else(|e| panic!("{e}"))).collect()
        })
        .collect()
}

#[test]
fn a_literal_zero_in_a_shape_gives_an_empty_output() {
    let dir = TempDir::new();
    let model = write(&dir, "m.kl", MODEL);
    for outs in outputs(&model, &["--entry", "lit"], &["y"]) {
        assert_eq!((outs[0].shape.as_slice(), outs[0].data.len()), (&[2, 0, 1][..], 0));
    }
}

#[test]
fn reductions_over_an_empty_axis_give_their_identities() {
    let dir = TempDir::new();
    let model = write(&dir, "m.kl", MODEL);
    let i32_min = i32::MIN as f64;
    for outs in outputs(&model, &["--entry", "red", "--dim", "N=2", "--dim", "M=0"], &["s", "me", "mx", "mn", "im"]) {
        let row = |k: usize| outs[k].data.clone();
        assert_eq!((row(0), row(2), row(3), row(4)), (vec![0.0; 2], vec![f64::NEG_INFINITY; 2], vec![f64::INFINITY; 2], vec![i32_min; 2]));
        assert!(row(1).len() == 2 && row(1).iter().all(|x| x.is_nan()), "mean over nothing: {:?}", row(1));
    }
}

#[test]
fn argmax_over_an_empty_axis_is_the_same_error_everywhere() {
    let dir = TempDir::new();
    let model = write(&dir, "m.kl", MODEL);
    let err = |b: &str| {
        let line = kiln(&["run", s(&model), "--entry", "arg", "--dim", "N=2", "--dim", "M=0", "--backend", b, "--out", s(&dir.join("out"))])
            .one_line_error(&["reduce_argmax: argmax over an empty axis"]);
        line[line.find('%').expect("the node")..].to_string()
    };
    assert_eq!(err("cpu"), err("reference"));
}

#[test]
fn mlp_with_no_examples() {
    let mlp = repo("models/mlp.kl");
    for outs in outputs(&mlp, &["--dim", "N=0"], &["logits"]) {
        assert_eq!((outs[0].shape.as_slice(), outs[0].data.len()), (&[0, 10][..], 0));
    }
    for outs in outputs(&mlp, &["--entry", "loss", "--dim", "N=0"], &["loss"]) {
        assert!(outs[0].data.len() == 1 && outs[0].data[0].is_nan(), "the mean loss of no examples is NaN: {:?}", outs[0].data);
    }
}
