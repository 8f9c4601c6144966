//! `kiln grad`: gradients against central finite differences of the f64
//! reference interpreter (every model and the tiny GPT), fused attention's
//! gradients on the CPU backend against the unfused reference (f64; f32 where
//! a -1e9 bias hides whole rows), and the
//! one-line errors of bad requests.

use crate::util::{kiln, repo, s, TempDir};
use crate::{npy, read};
use kiln_ir::{DType, Function, Module};
use kiln_runtime::{self as rt, Precision, Tensor};
use std::collections::BTreeMap;

/// A deterministic pseudo-random tensor in [-1, 1).
fn values(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n as u64).map(|i| ((i * 2654435761 + seed * 40503) % 2000) as f64 / 1000.0 - 1.0).collect();
    Tensor::new(dtype, shape.to_vec(), data)
}

/// What to perturb: a parameter (index, offset of its layer) or an input.
#[derive(Clone, Copy)]
enum At {
    Param(usize, usize),
    Input(usize),
}

/// The model's values and the scalar whose gradient `kiln grad` computes:
/// the output itself, or `Σ output * cotangent`.
struct Oracle {
    m: Module,
    f: Function,
    params: Vec<Tensor>,
    inputs: Vec<Tensor>,
    dims: BTreeMap<String, i64>,
    cotangent: Option<Tensor>,
}

impl Oracle {
    fn new(kl: &str, entry: &str, inputs: Vec<Tensor>, dims: &[(&str, i64)], cotangent: Option<Tensor>) -> Oracle {
        let c = kiln_lang::compile_file(&repo(kl)).unwrap_or_else(|e| panic!("{}", e.render()));
        let f = c.module.function(entry).expect("entry").clone();
        // `kiln grad` without --weights initializes from --seed 0.
        let params = rt::init_params(&c.module, 0).unwrap();
        let dims = dims.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        Oracle { m: c.module, f, params, inputs, dims, cotangent }
    }

    fn loss(&self, params: &[Tensor], inputs: &[Tensor]) -> f64 {
        let out = rt::run_reference(&self.m, &self.f, params, inputs, &self.dims, Precision::F64).unwrap();
        match &self.cotangent {
            None => out[0].data[0],
            Some(c) => out[0].data.iter().zip(&c.data).map(|(y, c)| y * c).sum(),
        }
    }

    /// Central difference at element `i` of `at`.
    fn fd(&self, at: At, i: usize) -> f64 {
        let eps = 1e-4;
        let at_shift = |h: f64| {
            let (mut p, mut x) = (self.params.clone(), self.inputs.clone());
            match at {
                At::Param(k, offset) => p[k].data[offset + i] += h,
                At::Input(k) => x[k].data[i] += h,
            }
            self.loss(&p, &x)
        };
        (at_shift(eps) - at_shift(-eps)) / (2.0 * eps)
    }

    /// Asserts that `dir/d_NAME.npy` matches finite differences at four spread coordinates.
    fn check(&self, dir: &std::path::Path, name: &str, at: At) {
        let g = read(&dir.join(format!("d_{name}.npy")));
        let n = g.data.len();
        for i in [0, n / 3, 2 * n / 3, n - 1] {
            let (ad, fd) = (g.data[i], self.fd(at, i));
            assert!((ad - fd).abs() <= 1e-6 + 1e-4 * fd.abs(), "d_{name}[{i}]: kiln grad {ad}, finite differences {fd}");
        }
    }

    fn param(&self, name: &str) -> usize {
        self.m.params.iter().position(|p| p.name == name).expect("param")
    }
}

/// `kiln grad FILE --out OUT ARGS...`, expected to succeed.
fn grad_ok(kl: &str, out: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["grad", kl, "--out", s(out)];
    all.extend_from_slice(args);
    kiln(&all).ok().stdout
}

#[test]
fn mlp_loss_matches_finite_differences() {
    let dir = TempDir::new();
    let x = values(DType::F32, &[2, 64], 1);
    let labels = Tensor::new(DType::I32, vec![2], vec![3.0, 7.0]);
    let (xp, lp) = (npy(&dir, "x.npy", &x), npy(&dir, "labels.npy", &labels));
    let out = dir.join("out");
    let kl = s(&repo("models/mlp.kl")).to_string();
    let stdout = grad_ok(&kl, &out, &["--entry", "loss", "--backend", "reference", "--precision", "f64", "--input", &format!("x={xp}"), "--input", &format!("labels={lp}")]);
    assert_eq!(stdout.lines().count(), 5, "one line per gradient:\n{stdout}");
    let o = Oracle::new("models/mlp.kl", "loss", vec![x, labels], &[("N", 2)], None);
    for name in ["w1", "b1", "w2", "b2"] {
        o.check(&out, name, At::Param(o.param(name), 0));
    }
    o.check(&out, "x", At::Input(0));
}

#[test]
fn mlp_forward_with_a_cotangent_matches_finite_differences() {
    let dir = TempDir::new();
    let x = values(DType::F32, &[3, 64], 2);
    let c = values(DType::F32, &[3, 10], 3);
    let (xp, cp) = (npy(&dir, "x.npy", &x), npy(&dir, "c.npy", &c));
    let out = dir.join("out");
    let kl = s(&repo("models/mlp.kl")).to_string();
    grad_ok(&kl, &out, &["--entry", "forward", "--wrt", "w1,x", "--backend", "reference", "--precision", "f64", "--input", &format!("x={xp}"), "--cotangent", &format!("logits={cp}")]);
    let mut files: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["d_w1.npy", "d_x.npy"], "only what --wrt names");
    let o = Oracle::new("models/mlp.kl", "forward", vec![x], &[("N", 3)], Some(c));
    o.check(&out, "w1", At::Param(o.param("w1"), 0));
    o.check(&out, "x", At::Input(0));
}

/// `kiln grad KL --entry loss` on tokens, fused, against finite differences
/// at `checks`: (file name, parameter, layer of a stack).
fn language_model_matches_finite_differences(kl: &str, vocab: f64, checks: &[(&str, &str, usize)]) {
    let dir = TempDir::new();
    let tok = |seed: u64| Tensor::new(DType::I32, vec![1, 4], (0..4).map(|i| ((i * 37 + seed * 11) % 97) as f64 % vocab).collect());
    let (tokens, targets) = (tok(1), tok(2));
    let (tp, gp) = (npy(&dir, "tokens.npy", &tokens), npy(&dir, "targets.npy", &targets));
    let out = dir.join("out");
    let path = s(&repo(kl)).to_string();
    // Fused (the default): attention's gradient is the fused backward's.
    let stdout = grad_ok(&path, &out, &["--entry", "loss", "--backend", "reference", "--precision", "f64", "--input", &format!("tokens={tp}"), "--input", &format!("targets={gp}")]);
    let o = Oracle::new(kl, "loss", vec![tokens, targets], &[("B", 1), ("T", 4)], None);
    for &(file, param, layer) in checks {
        assert!(stdout.contains(&format!("d_{file}: ")), "no d_{file} in:\n{stdout}");
        let p = o.param(param);
        let slice: usize = o.params[p].shape[1..].iter().product();
        o.check(&out, file, At::Param(p, layer * if o.m.params[p].stack.is_some() { slice } else { 0 }));
    }
}

#[test]
fn tiny_gpt_matches_finite_differences() {
    let checks = [("wte", "wte", 0), ("blocks.0.attn.w_qkv", "blocks.attn.w_qkv", 0), ("blocks.0.ln1.g", "blocks.ln1.g", 0), ("ln_f.b", "ln_f.b", 0)];
    language_model_matches_finite_differences("tests/fixtures/tiny_gpt.kl", 256.0, &checks);
}

#[test]
fn gpt_matches_finite_differences_per_layer() {
    // Stacked parameters are written per layer, named as in safetensors.
    let checks = [("blocks.2.attn.w_qkv", "blocks.attn.w_qkv", 2), ("blocks.3.mlp.b_fc", "blocks.mlp.b_fc", 3), ("wpe", "wpe", 0)];
    language_model_matches_finite_differences("models/gpt.kl", 512.0, &checks);
}

#[test]
fn lstm_matches_finite_differences() {
    let checks = [("cell.w_h", "cell.w_h", 0), ("emb", "emb", 0), ("b_out", "b_out", 0)];
    language_model_matches_finite_differences("models/lstm.kl", 128.0, &checks);
}

/// Attention as plain math, in the forms the optimizer fuses.
const ATTENTION: &str = "config { D = 16 }
dim S = T

pub fn causal(q: f32[B, H, T, D], k: f32[B, H, S, D], v: f32[B, H, S, D]) -> o: f32[B, H, T, D] {
    let scores: f32[B, H, T, S] = q @ transpose(k) / sqrt(D)
    return softmax(where(tril(T, S), scores, -inf), over: S) @ v
}

pub fn padded(q: f32[B, H, T, D], k: f32[B, H, S, D], v: f32[B, H, S, D], keep: bool[B, 1, 1, S]) -> o: f32[B, H, T, D] {
    return softmax(where(keep, q @ transpose(k) / 4.0, -inf), over: S) @ v
}

pub fn gqa(q: f32[B, 4, T, D], k: f32[B, 2, S, D], v: f32[B, 2, S, D]) -> o: f32[B, 4, T, D] {
    let kr = reshape(expand(unsqueeze(k, 2), [B, 2, 2, S, D]), [B, 4, S, D])
    let vr = reshape(expand(unsqueeze(v, 2), [B, 2, 2, S, D]), [B, 4, S, D])
    return softmax(where(tril(T, S), q @ transpose(kr) / 4.0, -inf), over: S) @ vr
}

# Left padding by a large finite bias under a causal mask: the first
# queries of batch row 1 see only padding, so their rows are uniform.
pub fn hidden(q: f32[B, H, T, D], k: f32[B, H, S, D], v: f32[B, H, S, D], keep: bool[B, 1, 1, S]) -> o: f32[B, H, T, D] {
    let bias = where(keep, 0.0, -3.4028234663852886e38)
    return softmax(where(tril(T, S), q @ transpose(k) / 4.0 + bias, -inf), over: S) @ v
}

# The same rows hidden by -1e9: f32 rounds every score of such a row to
# -1e9 (a uniform softmax) where f64 keeps the scores, so its oracle is the
# f32 reference.
pub fn hidden_1e9(q: f32[B, H, T, D], k: f32[B, H, S, D], v: f32[B, H, S, D], keep: bool[B, 1, 1, S]) -> o: f32[B, H, T, D] {
    let bias = where(keep, 0.0, -1e9)
    return softmax(where(tril(T, S), q @ transpose(k) / 4.0 + bias, -inf), over: S) @ v
}
";

#[test]
fn fused_attention_gradients_match_the_reference() {
    let dir = TempDir::new();
    let kl = dir.join("attention.kl");
    std::fs::write(&kl, ATTENTION).unwrap();
    let kl = s(&kl).to_string();
    let (b, t, d) = (2, 5, 16);
    let keep = Tensor::new(DType::Bool, vec![b, 1, 1, t], vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let keep = format!("keep={}", npy(&dir, "keep.npy", &keep));
    let cases = [("causal", 2, 2, false, "f64"), ("padded", 2, 2, true, "f64"), ("gqa", 4, 2, false, "f64"), ("hidden", 2, 2, true, "f64"), ("hidden_1e9", 2, 2, true, "f32")];
    for (entry, hq, hkv, masked, precision) in cases {
        let ir = kiln(&["ir", &kl, "--entry", entry, "--stage", "optimized"]).ok().stdout;
        assert!(ir.contains("#   fused attention["), "{entry} does not fuse:\n{ir}");
        let q = format!("q={}", npy(&dir, "q.npy", &values(DType::F32, &[b, hq, t, d], 4)));
        let k = format!("k={}", npy(&dir, "k.npy", &values(DType::F32, &[b, hkv, t, d], 5)));
        let v = format!("v={}", npy(&dir, "v.npy", &values(DType::F32, &[b, hkv, t, d], 6)));
        let c = format!("o={}", npy(&dir, "c.npy", &values(DType::F32, &[b, hq, t, d], 7)));
        let mut args = vec!["--entry", entry, "--input", &q, "--input", &k, "--input", &v, "--cotangent", &c];
        if masked {
            args.extend(["--input", &keep]);
        }
        let (fused, exact) = (dir.join(&format!("{entry}-cpu")), dir.join(&format!("{entry}-f64")));
        grad_ok(&kl, &fused, &[&args[..], &["--backend", "cpu"]].concat());
        grad_ok(&kl, &exact, &[&args[..], &["--backend", "reference", "--precision", precision, "--no-fuse"]].concat());
        for name in ["d_q", "d_k", "d_v"] {
            let (got, want) = (read(&fused.join(format!("{name}.npy"))), read(&exact.join(format!("{name}.npy"))));
            assert_eq!(got.shape, want.shape, "{entry} {name}");
            let err = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(err <= 2e-5, "{entry} {name}: fused CPU differs from the {precision} reference by {err:e}");
            assert!(want.data.iter().any(|x| x.abs() > 1e-3), "{entry} {name}: a gradient of zeros proves nothing");
        }
    }
}

/// `kiln grad models/mlp.kl ARGS --dim N=2 --out OUT` fails with one line
/// containing `words`, and writes nothing.
#[track_caller]
fn refused(args: &[&str], words: &[&str]) {
    let dir = TempDir::new();
    let out = dir.join("out");
    let mlp = s(&repo("models/mlp.kl")).to_string();
    let c = npy(&dir, "c.npy", &values(DType::F32, &[2, 9], 1));
    let args: Vec<String> = args.iter().map(|a| a.replace("C.npy", &c)).collect();
    let mut all = vec!["grad".to_string(), mlp, "--dim".into(), "N=2".into(), "--out".into(), s(&out).into()];
    all.extend(args);
    kiln(&all).one_line_error(words);
    assert!(!out.exists(), "a refused `kiln grad` created its output directory");
}

#[test]
fn bad_requests_are_one_line_errors_and_write_nothing() {
    refused(&["--entry", "loss", "--wrt", "w1,nope"], &["no float input or parameter `nope`", "w1, b1, w2, b2, x"]);
    refused(&["--entry", "loss", "--wrt", "labels"], &["input `labels`", "i32[N]", "only float inputs and parameters"]);
    refused(&["--entry", "loss", "--wrt", "x,x"], &["`x` is given twice"]);
    refused(&["--entry", "forward"], &["`logits`", "not a float scalar", "--cotangent logits="]);
    refused(&["--entry", "forward", "--cotangent", "logits=C.npy"], &["cotangent.logits", "10"]);
    refused(&["--entry", "forward", "--cotangent", "probs=C.npy"], &["no output `probs`", "logits"]);
}
