//! models/bert.kl at a small config: the compiled CPU backend (fused
//! attention, as `kiln run` runs it) against the f64 reference interpreter
//! with a padding mask, and padding that changes nothing it should not.

use kiln_ir::interp::Tensor;
use kiln_ir::opt::{optimize, OptOptions};
use kiln_ir::DType;
use kiln_lang::Compiled;
use kiln_runtime as rt;
use kiln_tests::backends::{Backend, Cpu};
use kiln_tests::{compile_model, repo_root};
use std::collections::BTreeMap;

/// 2 layers, 32 hidden, 2 heads: every kernel of the full model at a size
/// a debug build runs in a moment.
fn small_bert() -> Compiled {
    compile_model(&repo_root().join("models/bert.kl"))
}

/// Deterministic values in [-1, 1).
fn noise(n: usize, seed: u64) -> impl Iterator<Item = f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n).map(move |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 2000) as f64 / 1000.0 - 1.0
    })
}

/// The initial parameters, perturbed so that no LayerNorm weight is one and
/// no bias zero (those would hide a term that went missing).
fn params(c: &Compiled) -> Vec<Tensor> {
    let mut ps = rt::init_params(&c.module, 5).expect("init");
    for (i, p) in ps.iter_mut().enumerate() {
        let n = p.data.len();
        for (x, e) in p.data.iter_mut().zip(noise(n, 100 + i as u64)) {
            *x += 0.1 * e;
        }
    }
    ps
}

fn ints(shape: [usize; 2], values: impl IntoIterator<Item = i64>) -> Tensor {
    let data: Vec<f64> = values.into_iter().map(|v| v as f64).collect();
    assert_eq!(data.len(), shape[0] * shape[1]);
    Tensor { dtype: DType::I32, shape: shape.to_vec(), data }
}

/// input_ids, token_type_ids and attention_mask for `b` sequences of `t`
/// tokens; sequence `i` hides keys from `real[i]` on, and also key 1 of the
/// last sequence when it has more than two real tokens (a hole, not only a
/// padded tail).
fn batch(t: usize, real: &[usize], seed: u64) -> [Tensor; 3] {
    let b = real.len();
    let ids = noise(b * t, seed).map(|x| ((x + 1.0) * 25.0) as i64 % 50);
    let types = (0..b * t).map(|i| i64::from(i % t >= t / 2));
    let mask = (0..b * t).map(|i| {
        let (s, j) = (i / t, i % t);
        i64::from(j < real[s] && !(s == b - 1 && real[s] > 2 && j == 1))
    });
    [ints([b, t], ids), ints([b, t], types), ints([b, t], mask)]
}

fn dims(b: usize, t: usize) -> BTreeMap<String, i64> {
    [("B".to_string(), b as i64), ("T".to_string(), t as i64)].into_iter().collect()
}

/// `entry` as `kiln run` runs it: through the optimizer, on the CPU backend.
fn run_cpu(c: &Compiled, entry: &str, params: &[Tensor], inputs: &[Tensor], t: usize) -> Tensor {
    let f = c.module.function(entry).expect("entry");
    let (fused, report) = optimize(&c.module, f, &OptOptions::default()).expect("optimize");
    assert_eq!(report.fused().count(), 1, "`{entry}`: the attention in the layer stack is fused once");
    let mut out = Cpu::NATIVE.run(&c.module, &fused, params, inputs, &dims(inputs[0].shape[0], t)).expect("cpu run");
    out.remove(0)
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}");
    let scale = want.data.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    for (i, (x, y)) in got.data.iter().zip(&want.data).enumerate() {
        assert!((x - y).abs() <= 1e-4 * scale, "{what}: element {i}: {x} vs {y}");
    }
}

#[test]
fn cpu_matches_the_f64_reference_with_a_padding_mask() {
    let c = small_bert();
    let ps = params(&c);
    for (t, real) in [(1, vec![1, 1]), (3, vec![3, 1, 3]), (17, vec![17, 9, 12])] {
        let inputs = batch(t, &real, t as u64);
        for entry in ["encode", "embed"] {
            let f = c.module.function(entry).expect("entry");
            let want = rt::run_reference(&c.module, f, &ps, &inputs, &dims(real.len(), t), rt::Precision::F64).expect("reference").remove(0);
            let got = run_cpu(&c, entry, &ps, &inputs, t);
            assert!(want.data.iter().all(|x| x.is_finite()), "T={t} `{entry}`: the reference is not finite");
            assert_close(&got, &want, &format!("T={t} `{entry}`"));
        }
        // The embeddings have unit length.
        let e = run_cpu(&c, "embed", &ps, &inputs, t);
        for row in e.data.chunks(32) {
            let len = row.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((len - 1.0).abs() < 1e-5, "T={t}: embedding length {len}");
        }
    }
}

/// A padded batch gives each sequence's real tokens what the sequence
/// alone, unpadded, gives them: padding is as if it were not there.
#[test]
fn padding_does_not_change_the_real_tokens() {
    let c = small_bert();
    let ps = params(&c);
    let (t, real) = (17, [17usize, 5, 11]);
    let [ids, types, mask] = batch(t, &real, 3);
    let padded = run_cpu(&c, "encode", &ps, &[ids.clone(), types.clone(), mask.clone()], t);
    let pooled = run_cpu(&c, "embed", &ps, &[ids.clone(), types.clone(), mask.clone()], t);
    let hidden = 32;
    for (s, &n) in real.iter().enumerate().take(2) {
        let row = |x: &Tensor| x.data[s * t..s * t + n].iter().map(|v| *v as i64).collect::<Vec<_>>();
        let alone = [ints([1, n], row(&ids)), ints([1, n], row(&types)), ints([1, n], vec![1; n])];
        let want = run_cpu(&c, "encode", &ps, &alone, n);
        let got = Tensor { dtype: DType::F32, shape: vec![1, n, hidden], data: padded.data[s * t * hidden..(s * t + n) * hidden].to_vec() };
        assert_close(&got, &want, &format!("sequence {s} with {n} real tokens"));
        let want = run_cpu(&c, "embed", &ps, &alone, n);
        let got = Tensor { dtype: DType::F32, shape: vec![1, hidden], data: pooled.data[s * hidden..(s + 1) * hidden].to_vec() };
        assert_close(&got, &want, &format!("embedding of sequence {s}"));
    }
    // Other tokens at the padded positions change no real token's state.
    let mut other = ids.clone();
    for (i, v) in other.data.iter_mut().enumerate() {
        if mask.data[i] == 0.0 {
            *v = ((*v as i64 + 7) % 50) as f64;
        }
    }
    let again = run_cpu(&c, "encode", &ps, &[other, types, mask.clone()], t);
    for (i, m) in mask.data.iter().enumerate() {
        if *m != 0.0 {
            let r = i * hidden..(i + 1) * hidden;
            assert_eq!(again.data[r.clone()], padded.data[r], "real token {i} moved when padding changed");
        }
    }
}
