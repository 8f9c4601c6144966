//! Optimizers over f32 master weights held on the host.
//!
//! Parameters and gradients are `Vec<f32>` per parameter tensor, in the
//! module's parameter order. The update rules follow PyTorch's so that
//! hyper-parameters carry over:
//!
//! - SGD with momentum: `b = μ·b + g`, `p -= lr·b` (the buffer starts at 0,
//!   so the first step is plain SGD); weight decay adds `wd·p` to `g`.
//! - Adam: `m = β1·m + (1-β1)·g`, `v = β2·v + (1-β2)·g²`,
//!   `p -= lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + ε)`; weight decay is
//!   an L2 term added to `g` (coupled, as in `torch.optim.Adam`).
//! - AdamW: Adam with decoupled weight decay, `p -= lr·wd·p` before the
//!   Adam update (Loshchilov & Hutter, 2019).
//!
//! Weight decay applies only to the tensors the decay mask selects (the
//! trainer selects matrices and embeddings, not biases or norm gains).
//! Each element is updated in f32 in a fixed order, so results are
//! bitwise reproducible.

use super::TrainError;
use serde::{Deserialize, Serialize};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd,
    /// Adam with L2 weight decay.
    Adam,
    /// Adam with decoupled weight decay.
    AdamW,
}

impl OptimizerKind {
    /// `sgd`, `adam` or `adamw`.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }
}

/// An optimizer's hyper-parameters (the learning rate comes from the
/// schedule at every step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// The update rule.
    pub kind: OptimizerKind,
    /// SGD's momentum μ (0 for plain SGD).
    pub momentum: f32,
    /// Adam's β1.
    pub beta1: f32,
    /// Adam's β2.
    pub beta2: f32,
    /// Adam's ε.
    pub eps: f32,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    pub weight_decay: f32,
}

impl OptimizerConfig {
    /// SGD with the given momentum and no weight decay.
    pub fn sgd(momentum: f32) -> OptimizerConfig {
        OptimizerConfig { kind: OptimizerKind::Sgd, momentum, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }

    /// Adam with β = (0.9, 0.999), ε = 1e-8 and no weight decay.
    pub fn adam() -> OptimizerConfig {
        OptimizerConfig { kind: OptimizerKind::Adam, momentum: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }

    /// AdamW with β = (0.9, 0.999), ε = 1e-8 and the given weight decay.
    pub fn adamw(weight_decay: f32) -> OptimizerConfig {
        OptimizerConfig { kind: OptimizerKind::AdamW, weight_decay, ..OptimizerConfig::adam() }
    }

    /// Refuses hyper-parameters no run could use.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |what: &str, v: f32, want: &str| Err(TrainError::Config(format!("{what} {v} {want}")));
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", self.momentum, "is not in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1", self.beta1, "is not in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", self.beta2, "is not in [0, 1)");
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad("epsilon", self.eps, "must be positive");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight decay", self.weight_decay, "must be zero or positive");
        }
        Ok(())
    }

    /// The names of the per-parameter state tensors: `momentum` for SGD,
    /// `m` and `v` for Adam(W).
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self.kind {
            OptimizerKind::Sgd => &["momentum"],
            OptimizerKind::Adam | OptimizerKind::AdamW => &["m", "v"],
        }
    }
}

/// An optimizer and its state: the step count and, per parameter tensor,
/// one state vector per slot (see [`OptimizerConfig::slot_names`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    config: OptimizerConfig,
    /// Updates applied so far (Adam's `t` before the next step).
    steps: u64,
    /// Per parameter: apply weight decay?
    decay: Vec<bool>,
    /// `slots[k][i]`: slot `k`'s state for parameter `i`.
    slots: Vec<Vec<Vec<f32>>>,
}

impl Optimizer {
    /// A fresh optimizer for parameters of the given sizes (elements);
    /// `decay[i]` says whether parameter `i` gets weight decay.
    pub fn new(config: OptimizerConfig, sizes: &[usize], decay: Vec<bool>) -> Result<Optimizer, TrainError> {
        config.validate()?;
        if decay.len() != sizes.len() {
            return Err(TrainError::Config(format!("{} decay flags for {} parameters", decay.len(), sizes.len())));
        }
        let slots = config.slot_names().iter().map(|_| sizes.iter().map(|&n| vec![0.0; n]).collect()).collect();
        Ok(Optimizer { config, steps: 0, decay, slots })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// How many updates have been applied.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Which parameters get weight decay.
    pub fn decay_mask(&self) -> &[bool] {
        &self.decay
    }

    /// Slot `k`'s state, per parameter (see [`OptimizerConfig::slot_names`]).
    pub fn slot(&self, k: usize) -> &[Vec<f32>] {
        &self.slots[k]
    }

    /// Restores saved state: the step count and every slot, which must
    /// have the sizes this optimizer was made for.
    pub fn restore(&mut self, steps: u64, slots: Vec<Vec<Vec<f32>>>) -> Result<(), TrainError> {
        let fits = slots.len() == self.slots.len()
            && slots.iter().zip(&self.slots).all(|(a, b)| {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.len() == y.len())
            });
        if !fits {
            return Err(TrainError::Config("optimizer state does not fit the parameters".into()));
        }
        self.steps = steps;
        self.slots = slots;
        Ok(())
    }

    /// Applies one update with learning rate `lr` to `params` given their
    /// gradients (parallel lists, sizes as given to [`new`](Self::new)).
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f32) -> Result<(), TrainError> {
        let sizes_ok = params.len() == self.decay.len()
            && grads.len() == params.len()
            && params.iter().zip(grads).zip(&self.slots[0]).all(|((p, g), s)| p.len() == g.len() && p.len() == s.len());
        if !sizes_ok {
            return Err(TrainError::Config("parameters, gradients and optimizer state differ in size".into()));
        }
        self.steps += 1;
        let c = self.config;
        match c.kind {
            OptimizerKind::Sgd => {
                for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
                    let wd = if self.decay[i] { c.weight_decay } else { 0.0 };
                    let buf = &mut self.slots[0][i];
                    for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                        let g = g + wd * *p;
                        *b = c.momentum * *b + g;
                        *p -= lr * *b;
                    }
                }
            }
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                // Bias corrections in f64: β^t underflows gracefully there.
                let t = self.steps.min(i32::MAX as u64) as i32;
                let bc1 = (1.0 - (c.beta1 as f64).powi(t)) as f32;
                let bc2_sqrt = (1.0 - (c.beta2 as f64).powi(t)).sqrt() as f32;
                let decoupled = c.kind == OptimizerKind::AdamW;
                let (ms, vs) = self.slots.split_at_mut(1);
                for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
                    let wd = if self.decay[i] { c.weight_decay } else { 0.0 };
                    let (m, v) = (&mut ms[0][i], &mut vs[0][i]);
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        let g = if decoupled {
                            *p *= 1.0 - lr * wd;
                            g
                        } else {
                            g + wd * *p
                        };
                        *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                        *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
                        let denom = v.sqrt() / bc2_sqrt + c.eps;
                        *p -= lr * (*m / bc1) / denom;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The global L2 norm of all gradients, accumulated in f64 in a fixed order.
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads.iter().flatten().map(|&g| (g as f64) * (g as f64)).sum::<f64>().sqrt()
}

/// Scales all gradients down so that their global L2 norm is at most
/// `max_norm` (as `torch.nn.utils.clip_grad_norm_`: factor
/// `max_norm / (norm + 1e-6)` when the norm exceeds `max_norm`). Returns
/// the norm before clipping; a non-finite norm leaves the gradients alone.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f32) -> f64 {
    let norm = global_norm(grads);
    if norm.is_finite() && norm > max_norm as f64 {
        let scale = (max_norm as f64 / (norm + 1e-6)) as f32;
        grads.iter_mut().flatten().for_each(|g| *g *= scale);
    }
    norm
}

/// Sums the gradients of several micro-batches, then averages them: the
/// gradient of the mean loss over all of them, for a batch too large to
/// run at once.
#[derive(Clone, Debug, PartialEq)]
pub struct GradAccumulator {
    sums: Vec<Vec<f32>>,
    count: usize,
}

impl GradAccumulator {
    /// Zeroed sums for parameters of the given sizes.
    pub fn new(sizes: &[usize]) -> GradAccumulator {
        GradAccumulator { sums: sizes.iter().map(|&n| vec![0.0; n]).collect(), count: 0 }
    }

    /// How many micro-batches were added since the last reset.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds one micro-batch's gradients, multiplied by `scale` (e.g. to
    /// undo a loss scale); each is read from `grad(i)` as f64 elements.
    pub fn add_scaled<'a>(&mut self, grads: impl IntoIterator<Item = &'a [f64]>, scale: f64) -> Result<(), TrainError> {
        let mut n = 0;
        for (sum, g) in self.sums.iter_mut().zip(grads) {
            if sum.len() != g.len() {
                return Err(TrainError::Config(format!("a gradient has {} elements, expected {}", g.len(), sum.len())));
            }
            for (s, &x) in sum.iter_mut().zip(g) {
                *s += (x * scale) as f32;
            }
            n += 1;
        }
        if n != self.sums.len() {
            return Err(TrainError::Config(format!("{n} gradients for {} parameters", self.sums.len())));
        }
        self.count += 1;
        Ok(())
    }

    /// Adds one micro-batch's f32 gradients.
    pub fn add(&mut self, grads: &[Vec<f32>]) -> Result<(), TrainError> {
        let as_f64: Vec<Vec<f64>> = grads.iter().map(|g| g.iter().map(|&x| x as f64).collect()).collect();
        self.add_scaled(as_f64.iter().map(|g| g.as_slice()), 1.0)
    }

    /// The mean of the added gradients (zeros when none were added), and
    /// zeroed sums for the next batch.
    pub fn take_mean(&mut self) -> Vec<Vec<f32>> {
        let n = self.count.max(1) as f32;
        let zeros: Vec<Vec<f32>> = self.sums.iter().map(|s| vec![0.0; s.len()]).collect();
        let mut mean = std::mem::replace(&mut self.sums, zeros);
        if n != 1.0 {
            mean.iter_mut().flatten().for_each(|g| *g /= n);
        }
        self.count = 0;
        mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) {
        assert!((a as f64 - b).abs() < 1e-6, "{a} vs {b}");
    }

    /// Two steps on a scalar p0 = 1 with gradients 2 then -1, lr 0.1:
    fn two_steps(config: OptimizerConfig) -> (f32, f32) {
        let mut o = Optimizer::new(config, &[1], vec![true]).unwrap();
        let mut p = vec![vec![1.0f32]];
        o.step(&mut p, &[vec![2.0]], 0.1).unwrap();
        let p1 = p[0][0];
        o.step(&mut p, &[vec![-1.0]], 0.1).unwrap();
        (p1, p[0][0])
    }

    #[test]
    fn adam_by_hand() {
        // t=1: m = 0.1·2 = 0.2, v = 0.001·4 = 0.004; m̂ = 0.2/0.1 = 2,
        //      v̂ = 0.004/0.001 = 4; p = 1 - 0.1·2/(2 + 1e-8) ≈ 0.9.
        // t=2: m = 0.9·0.2 + 0.1·(-1) = 0.08; v = 0.999·0.004 + 0.001·1 = 0.004996;
        //      m̂ = 0.08/0.19 = 0.4210526, v̂ = 0.004996/0.001999 = 2.4992496,
        //      p = 0.9 - 0.1·0.4210526/1.5809016 = 0.8733663.
        let (p1, p2) = two_steps(OptimizerConfig::adam());
        close(p1, 0.9000000005);
        close(p2, 0.8733662967);
    }

    #[test]
    fn adamw_decays_before_the_update() {
        // wd = 0.1: each step first multiplies p by 1 - 0.1·0.1 = 0.99.
        // t=1: p = 0.99 - 0.1 = 0.89;  t=2: p = 0.89·0.99 - 0.0266337 = 0.8544663.
        let (p1, p2) = two_steps(OptimizerConfig::adamw(0.1));
        close(p1, 0.8900000005);
        close(p2, 0.8544662967);
    }

    #[test]
    fn adam_l2_decay_adds_to_the_gradient() {
        // wd = 0.5 with p = 1: g1 = 2 + 0.5 = 2.5; Adam's first step is
        // lr·sign(g) whatever the magnitude: p1 = 0.9. Then
        // g2 = -1 + 0.5·0.9 = -0.55: m = 0.9·0.25 - 0.055 = 0.17,
        // v = 0.999·0.00625 + 0.001·0.3025 = 0.00654625;
        // p2 = 0.9 - 0.1·(0.17/0.19)/sqrt(0.00654625/0.001999) = 0.9 - 0.0494431 = 0.8505569.
        let c = OptimizerConfig { weight_decay: 0.5, ..OptimizerConfig::adam() };
        let (p1, p2) = two_steps(c);
        close(p1, 0.9000000004);
        let v2: f64 = 0.999 * 0.00625 + 0.001 * 0.3025;
        let want = 0.9 - 0.1 * (0.17 / 0.19) / ((v2 / 0.001999).sqrt() + 1e-8);
        close(p2, want);
        assert!((want - 0.8505569).abs() < 1e-7);
    }

    #[test]
    fn sgd_momentum_by_hand() {
        // μ = 0.9: b1 = 2, p1 = 1 - 0.2 = 0.8; b2 = 0.9·2 - 1 = 0.8, p2 = 0.8 - 0.08 = 0.72.
        let (p1, p2) = two_steps(OptimizerConfig::sgd(0.9));
        close(p1, 0.8);
        close(p2, 0.72);
        // Plain SGD: p1 = 0.8, p2 = 0.8 + 0.1 = 0.9.
        let (p1, p2) = two_steps(OptimizerConfig::sgd(0.0));
        close(p1, 0.8);
        close(p2, 0.9);
    }

    #[test]
    fn decay_mask_exempts_parameters() {
        let mut o = Optimizer::new(OptimizerConfig::adamw(0.5), &[1, 1], vec![true, false]).unwrap();
        let mut p = vec![vec![1.0f32], vec![1.0]];
        o.step(&mut p, &[vec![0.0], vec![0.0]], 0.1).unwrap();
        // Zero gradient: only the decay moves p (1 · (1 - 0.05)).
        close(p[0][0], 0.95);
        close(p[1][0], 1.0);
    }

    #[test]
    fn clipping_by_global_norm() {
        // Norm of (3, 4) and (12) = sqrt(9 + 16 + 144) = 13.
        let mut g = vec![vec![3.0f32, 4.0], vec![12.0]];
        let n = clip_grad_norm(&mut g, 1.3);
        assert!((n - 13.0).abs() < 1e-9);
        let f = 1.3 / (13.0 + 1e-6);
        close(g[0][0], 3.0 * f);
        close(g[1][0], 12.0 * f);
        // Under the threshold: untouched.
        let mut g = vec![vec![0.3f32, 0.4]];
        assert!((clip_grad_norm(&mut g, 1.0) - 0.5).abs() < 1e-7);
        assert_eq!(g, vec![vec![0.3f32, 0.4]]);
    }

    #[test]
    fn accumulation_averages() {
        let mut acc = GradAccumulator::new(&[2]);
        acc.add(&[vec![1.0, 2.0]]).unwrap();
        acc.add(&[vec![3.0, -2.0]]).unwrap();
        assert_eq!(acc.count(), 2);
        assert_eq!(acc.take_mean(), vec![vec![2.0, 0.0]]);
        assert_eq!(acc.count(), 0);
        // Scaled: a loss scale of 4 undone by 0.25.
        acc.add_scaled([&[4.0, 8.0][..]], 0.25).unwrap();
        assert_eq!(acc.take_mean(), vec![vec![1.0, 2.0]]);
        assert!(acc.add(&[vec![1.0]]).is_err());
    }

    #[test]
    fn bad_hyper_parameters_are_refused() {
        assert!(OptimizerConfig { beta1: 1.0, ..OptimizerConfig::adam() }.validate().is_err());
        assert!(OptimizerConfig { eps: 0.0, ..OptimizerConfig::adam() }.validate().is_err());
        assert!(OptimizerConfig::sgd(-0.1).validate().is_err());
        assert!(OptimizerConfig { weight_decay: f32::NAN, ..OptimizerConfig::adam() }.validate().is_err());
    }
}
