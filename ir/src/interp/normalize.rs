//! Normalizations: softmax and log_softmax along an axis, layernorm and
//! rmsnorm along the last axis.

use super::tensor::numel;
use super::Tensor;

/// Softmax (or log-softmax) along `axis`, max-subtracted for stability.
pub(crate) fn softmax(x: &Tensor, axis: usize, log: bool) -> Tensor {
    let outer = numel(&x.shape[..axis]);
    let n = x.shape[axis];
    let inner = numel(&x.shape[axis + 1..]);
    let mut data = vec![0.0; x.numel()];
    for o in 0..outer {
        for i in 0..inner {
            // Lane elements are `inner` apart.
            let at = |j: usize| (o * n + j) * inner + i;
            let max = (0..n).map(|j| x.data[at(j)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..n).map(|j| (x.data[at(j)] - max).exp()).sum();
            for j in 0..n {
                let z = x.data[at(j)] - max;
                data[at(j)] = if log { z - sum.ln() } else { z.exp() / sum };
            }
        }
    }
    Tensor::new(x.dtype, x.shape.clone(), data)
}

/// Calls `f` with each last-axis row of `x` and the matching output row.
fn rows(x: &Tensor, mut f: impl FnMut(&[f64], &mut [f64])) -> Tensor {
    let n = *x.shape.last().expect("verified: rank >= 1");
    let mut data = vec![0.0; x.numel()];
    if n > 0 {
        for (row, out) in x.data.chunks(n).zip(data.chunks_mut(n)) {
            f(row, out);
        }
    }
    Tensor::new(x.dtype, x.shape.clone(), data)
}

/// `(x - mean) / sqrt(var + eps) * gamma + beta` over the last axis, with
/// the biased variance (divided by n).
pub(crate) fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Tensor {
    rows(x, |row, out| {
        let n = row.len() as f64;
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, o) in out.iter_mut().enumerate() {
            *o = (row[j] - mean) * inv * gamma.data[j] + beta.data[j];
        }
    })
}

/// `x / sqrt(mean(x^2) + eps) * gamma` over the last axis.
pub(crate) fn rms_norm(x: &Tensor, gamma: &Tensor, eps: f64) -> Tensor {
    rows(x, |row, out| {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for (j, o) in out.iter_mut().enumerate() {
            *o = row[j] * inv * gamma.data[j];
        }
    })
}
