//! Learning-rate schedules.
//!
//! A [`Schedule`] maps the index of an update (0 for the first) to a
//! learning rate. Every kind but `constant` starts with a linear warmup:
//! update `s < warmup` uses `base · (s + 1) / warmup`, so the first update
//! already moves the weights. After the warmup, with
//! `progress = (s - warmup) / (total - warmup)` clamped to `[0, 1]`:
//!
//! - `cosine`: `min + (base - min) · (1 + cos(π · progress)) / 2`;
//! - `linear`: `base - (base - min) · progress`;
//! - `noam`: `base · sqrt(warmup / (s + 1))`, the inverse-square-root decay
//!   of "Attention Is All You Need", never below `min`. The paper writes it
//!   as `factor · d_model^-0.5 · min(n^-0.5, n · warmup^-1.5)` with
//!   `n = s + 1`; that is this schedule with the peak
//!   `base = factor · (d_model · warmup)^-0.5` (see [`Schedule::noam`]).

use super::TrainError;
use serde::{Deserialize, Serialize};

/// The shape of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The base rate throughout (no warmup).
    Constant,
    /// Warmup, then a half cosine that reaches the floor at update `total`
    /// (one past the last, as PyTorch's `CosineAnnealingLR`).
    Cosine,
    /// Warmup, then a straight line that reaches the floor at update `total`.
    Linear,
    /// Warmup, then inverse-square-root decay.
    Noam,
}

impl ScheduleKind {
    /// `constant`, `cosine`, `linear` or `noam`.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Constant => "constant",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Linear => "linear",
            ScheduleKind::Noam => "noam",
        }
    }
}

/// A learning-rate schedule (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The shape.
    pub kind: ScheduleKind,
    /// The peak rate, reached at the end of the warmup.
    pub base_lr: f64,
    /// Warmup updates.
    pub warmup: u64,
    /// Updates in the whole run (the decay ends there).
    pub total: u64,
    /// The floor the decay ends at.
    pub min_lr: f64,
}

impl Schedule {
    /// A schedule of `kind` peaking at `base_lr` after `warmup` updates and
    /// decaying to `min_lr` over `total` updates.
    pub fn new(kind: ScheduleKind, base_lr: f64, warmup: u64, total: u64, min_lr: f64) -> Schedule {
        Schedule { kind, base_lr, warmup, total, min_lr }
    }

    /// The Transformer paper's schedule for model width `d_model`:
    /// `factor · d_model^-0.5 · min(n^-0.5, n · warmup^-1.5)`.
    pub fn noam(d_model: u64, warmup: u64, factor: f64, total: u64) -> Schedule {
        let peak = factor / ((d_model.max(1) * warmup.max(1)) as f64).sqrt();
        Schedule::new(ScheduleKind::Noam, peak, warmup, total, 0.0)
    }

    /// Refuses rates no run could use.
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(self.base_lr > 0.0 && self.base_lr.is_finite()) {
            return Err(TrainError::Config(format!("the learning rate {} must be positive", self.base_lr)));
        }
        if !(self.min_lr >= 0.0 && self.min_lr <= self.base_lr) {
            return Err(TrainError::Config(format!(
                "the learning-rate floor {} must be between 0 and the learning rate {}",
                self.min_lr, self.base_lr
            )));
        }
        Ok(())
    }

    /// The learning rate of update `step` (0 for the first).
    pub fn lr(&self, step: u64) -> f64 {
        let (base, min) = (self.base_lr, self.min_lr);
        if self.kind == ScheduleKind::Constant {
            return base;
        }
        if step < self.warmup {
            return base * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        match self.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::Cosine => min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            ScheduleKind::Linear => base - (base - min) * progress,
            ScheduleKind::Noam => (base * (self.warmup.max(1) as f64 / (step + 1) as f64).sqrt()).max(min),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn cosine_by_hand() {
        // base 1, floor 0.1, warmup 2, total 6: warmup 0.5, 1; then 4
        // decay updates with progress 0, 1/4, 2/4, 3/4 (and 1 after).
        let s = Schedule::new(ScheduleKind::Cosine, 1.0, 2, 6, 0.1);
        close(s.lr(0), 0.5);
        close(s.lr(1), 1.0);
        close(s.lr(2), 1.0);
        // 0.1 + 0.9 · (1 + cos(π/4)) / 2 = 0.1 + 0.45 · 1.7071068 = 0.8681981
        close(s.lr(3), 0.1 + 0.45 * (1.0 + std::f64::consts::FRAC_1_SQRT_2));
        close(s.lr(4), 0.55);
        close(s.lr(6), 0.1);
        close(s.lr(100), 0.1);
    }

    #[test]
    fn linear_by_hand() {
        // base 0.4, floor 0, warmup 0, total 4: 0.4, 0.3, 0.2, 0.1, then 0.
        let s = Schedule::new(ScheduleKind::Linear, 0.4, 0, 4, 0.0);
        for (i, want) in [0.4, 0.3, 0.2, 0.1, 0.0, 0.0].into_iter().enumerate() {
            close(s.lr(i as u64), want);
        }
    }

    #[test]
    fn noam_matches_the_paper() {
        // d_model 512, warmup 4000, factor 1: at n = 4000 the peak
        // 512^-0.5 · 4000^-0.5 = 6.9877e-4; at n = 16000 half of it.
        let s = Schedule::noam(512, 4000, 1.0, 100_000);
        let paper = |n: f64| 512f64.powf(-0.5) * n.powf(-0.5).min(n * 4000f64.powf(-1.5));
        for n in [1u64, 10, 1000, 3999, 4000, 4001, 16000, 99_999] {
            assert!((s.lr(n - 1) - paper(n as f64)).abs() < 1e-15, "n = {n}");
        }
        close(s.lr(15_999), s.lr(3999) / 2.0);
    }

    #[test]
    fn constant_and_validation() {
        let s = Schedule::new(ScheduleKind::Constant, 0.3, 10, 20, 0.0);
        close(s.lr(0), 0.3);
        close(s.lr(50), 0.3);
        assert!(Schedule::new(ScheduleKind::Cosine, 0.0, 0, 1, 0.0).validate().is_err());
        assert!(Schedule::new(ScheduleKind::Cosine, 1e-3, 0, 1, 1e-2).validate().is_err());
        assert!(Schedule::new(ScheduleKind::Cosine, f64::NAN, 0, 1, 0.0).validate().is_err());
        assert!(Schedule::new(ScheduleKind::Cosine, 1e-3, 0, 1, 1e-4).validate().is_ok());
    }
}
