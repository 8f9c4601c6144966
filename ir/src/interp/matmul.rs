//! Batched matrix product.

use super::tensor::numel;
use super::Tensor;

/// `a[..., m, k] @ b[..., k, n]` with equal batch axes; each dot product
/// accumulates over `k` in order (in wrapping i64 for integers).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    let r = a.shape.len();
    let (m, k, n) = (a.shape[r - 2], a.shape[r - 1], b.shape[r - 1]);
    let batch = numel(&a.shape[..r - 2]);
    let mut shape = a.shape[..r - 1].to_vec();
    shape.push(n);
    let mut data = Vec::with_capacity(numel(&shape));
    for bt in 0..batch {
        let x = |i: usize, p: usize| a.data[(bt * m + i) * k + p];
        let y = |p: usize, j: usize| b.data[(bt * k + p) * n + j];
        for i in 0..m {
            for j in 0..n {
                let dot = if a.dtype.is_int() {
                    (0..k).fold(0i64, |s, p| s.wrapping_add((x(i, p) as i64).wrapping_mul(y(p, j) as i64))) as f64
                } else {
                    (0..k).map(|p| x(i, p) * y(p, j)).sum()
                };
                data.push(dot);
            }
        }
    }
    Tensor::new(a.dtype, shape, data)
}
