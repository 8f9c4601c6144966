//! Fused attention, forward and backward, computed naively: the scores of
//! one query row at a time, in f64.

use super::tensor::numel;
use super::Tensor;
use crate::{AttnMask, Attention, DType};

/// The shapes one attention node works on, flattened: `batch` rows of
/// `(heads, sq, d)` queries over `(heads / group, sk, dv)` keys and values.
struct Dims {
    batch: usize,
    heads: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
}

impl Dims {
    fn of(a: &Attention, q: &Tensor, k: &Tensor, v: &Tensor) -> Dims {
        let r = q.shape.len();
        let head_axes = if a.group == 1 { 0 } else { 1 };
        let heads = if a.group == 1 { 1 } else { q.shape[r - 3] };
        Dims {
            batch: numel(&q.shape[..r - 2 - head_axes]),
            heads,
            sq: q.shape[r - 2],
            sk: k.shape[r - 2],
            d: q.shape[r - 1],
            dv: v.shape[r - 1],
        }
    }
}

/// Calls `f(q_row, k_row, scores)` for every query row with the masked,
/// scaled scores of that row; `q_row` and `k_row` are the flat indices of
/// the query's first element and of key 0 of its key/value head.
fn each_row(a: &Attention, n: &Dims, q: &Tensor, k: &Tensor, mask: Option<&Tensor>, c: i64, mut f: impl FnMut(usize, usize, usize, &[f64])) {
    let group = a.group as usize;
    let mut s = vec![0.0; n.sk];
    for b in 0..n.batch {
        for h in 0..n.heads {
            let kv_head = b * (n.heads / group) + h / group;
            for i in 0..n.sq {
                let row = (b * n.heads + h) * n.sq + i;
                let qi = row * n.d;
                for (j, sj) in s.iter_mut().enumerate() {
                    let kj = (kv_head * n.sk + j) * n.d;
                    let dot: f64 = (0..n.d).map(|e| q.data[qi + e] * k.data[kj + e]).sum();
                    let mut x = a.scale * dot;
                    if let Some(m) = mask {
                        let mv = m.data[row * n.sk + j];
                        match a.mask {
                            AttnMask::Bias => x += mv,
                            AttnMask::Keep if mv == 0.0 => x = f64::NEG_INFINITY,
                            _ => {}
                        }
                    }
                    if a.causal.is_some() && j as i64 > i as i64 + c {
                        x = f64::NEG_INFINITY;
                    }
                    *sj = x;
                }
                f(row, kv_head * n.sk, qi, &s);
            }
        }
    }
}

/// `[m, log Σ exp(s - m)]` with `m` the row max (the log is NaN when every
/// score is `-inf`, as the naive softmax's 0/0). Kept apart: `m + log Σ`
/// would lose the log next to `|m| ~ 1e38` (see [`crate::attention`]).
fn logsumexp(s: &[f64]) -> [f64; 2] {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    [m, s.iter().map(|x| (x - m).exp()).sum::<f64>().ln()]
}

/// The probability of score `s` in a row with logsumexp `[m, ls]`.
fn probability(s: f64, [m, ls]: [f64; 2]) -> f64 {
    ((s - m) - ls).exp()
}

/// The mask argument, if any.
fn mask<'t>(a: &Attention, args: &[&'t Tensor]) -> Option<&'t Tensor> {
    (a.mask != AttnMask::None).then(|| args[3])
}

/// The dropout factor of score element `(row, j)`: `1 / (1 - p)` where it
/// is kept, 0 where dropped (1 without dropout).
fn dropout(a: &Attention, args: &[&Tensor], n: &Dims) -> impl Fn(usize, usize) -> f64 {
    let seed = a.seed_arg().map(|s| args[s].data[0] as i64 as u64);
    let (p, sk) = (a.dropout, n.sk);
    move |row, j| match seed {
        Some(s) if crate::rng::keep(s, (row * sk + j) as u64, p) => 1.0 / (1.0 - p),
        Some(_) => 0.0,
        None => 1.0,
    }
}

/// `(o, lse)`. `c` is the causal offset's value.
pub(crate) fn forward(a: &Attention, args: &[&Tensor], c: i64) -> Vec<Tensor> {
    let (q, k, v) = (args[0], args[1], args[2]);
    let n = Dims::of(a, q, k, v);
    let z = dropout(a, args, &n);
    let rows = n.batch * n.heads * n.sq;
    let mut o = vec![0.0; rows * n.dv];
    let mut lse = vec![0.0; 2 * rows];
    each_row(a, &n, q, k, mask(a, args), c, |row, k0, _, s| {
        let l = logsumexp(s);
        lse[2 * row..2 * row + 2].copy_from_slice(&l);
        for (j, &sj) in s.iter().enumerate() {
            let p = probability(sj, l) * z(row, j);
            for e in 0..n.dv {
                o[row * n.dv + e] += p * v.data[(k0 + j) * n.dv + e];
            }
        }
    });
    let mut o_shape = q.shape.clone();
    *o_shape.last_mut().expect("rank >= 2") = n.dv;
    let mut lse_shape = q.shape[..q.shape.len() - 1].to_vec();
    lse_shape.push(2);
    vec![Tensor::new(q.dtype, o_shape, o), Tensor::new(DType::F32, lse_shape, lse)]
}

/// `(dq, dk, dv)` from the forward's arguments, `o`, `lse` and `do`, with
/// the probabilities recomputed from `lse`.
pub(crate) fn backward(a: &Attention, args: &[&Tensor], c: i64) -> Vec<Tensor> {
    let nf = a.forward_arity();
    let (q, k, v) = (args[0], args[1], args[2]);
    let (o, lse, dout) = (args[nf], args[nf + 1], args[nf + 2]);
    let n = Dims::of(a, q, k, v);
    let z = dropout(a, args, &n);
    let mut dq = vec![0.0; q.numel()];
    let mut dk = vec![0.0; k.numel()];
    let mut dv = vec![0.0; v.numel()];
    each_row(a, &n, q, k, mask(a, args), c, |row, k0, qi, s| {
        let dro = &dout.data[row * n.dv..(row + 1) * n.dv];
        let delta: f64 = dro.iter().zip(&o.data[row * n.dv..(row + 1) * n.dv]).map(|(x, y)| x * y).sum();
        let l = [lse.data[2 * row], lse.data[2 * row + 1]];
        for (j, &sj) in s.iter().enumerate() {
            let (p, zj) = (probability(sj, l), z(row, j));
            let vj = (k0 + j) * n.dv;
            let dp: f64 = (0..n.dv).map(|e| dro[e] * v.data[vj + e]).sum();
            for e in 0..n.dv {
                dv[vj + e] += p * zj * dro[e];
            }
            let ds = p * (zj * dp - delta) * a.scale;
            let kj = (k0 + j) * n.d;
            for e in 0..n.d {
                dq[qi + e] += ds * k.data[kj + e];
                dk[kj + e] += ds * q.data[qi + e];
            }
        }
    });
    vec![
        Tensor::new(q.dtype, q.shape.clone(), dq),
        Tensor::new(k.dtype, k.shape.clone(), dk),
        Tensor::new(v.dtype, v.shape.clone(), dv),
    ]
}
