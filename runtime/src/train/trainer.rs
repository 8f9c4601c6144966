//! The training loop.
//!
//! [`Trainer::new`] differentiates the model's `loss` entry point with
//! respect to every float parameter ([`kiln_ir::autodiff::grad`]), after
//! giving it a loss-scale argument (1 in f32 runs, so exact), retypes the
//! gradient to bf16/f16 for mixed precision, and compiles it and `loss`
//! itself for the CPU once, for the run's batch and block sizes. Each
//! [`step`](Trainer::step) then runs the gradient on `accumulate`
//! micro-batches, averages their gradients in f32, clips them by global
//! norm, and applies the optimizer with the schedule's learning rate to the
//! f32 master weights. Every `eval_every` steps the validation loss is the
//! mean of `loss` (in f32) over the fixed validation batches.
//!
//! Dropout acts in training only: the gradient is taken of `loss` as
//! written, and each micro-batch gets a fresh dropout seed derived from
//! `seed` and its position in the run (so a resumed run draws the same
//! masks), while the validation loss is compiled from
//! [`kiln_ir::dropout::inference`] of `loss`, without dropout.
//!
//! A non-finite loss, gradient or parameter stops the run with
//! [`TrainError::Diverged`] before anything is written, so the last
//! checkpoint stays the last good one. In mixed precision a non-finite
//! gradient first means the loss scale is too large: the update is skipped
//! and the scale halved ([`LossScaler`]); only a long run of skipped
//! steps is divergence.

use super::batches::{Batch, BatchSource};
use super::checkpoint::{self, Checkpoint};
use super::optim::{clip_grad_norm, global_norm, GradAccumulator, Optimizer, OptimizerConfig};
use super::precision::{to_half, with_loss_scale, LossScaler};
use super::schedule::Schedule;
use super::TrainError;
use crate::cpu::{compile_cpu_with, Cache, CpuExecutable, Profile};
use crate::safetensors::storage_layout;
use crate::{RuntimeError, Tensor};
use kiln_ir::autodiff::{grad, Wrt};
use kiln_ir::opt::{optimize, OptOptions};
use kiln_ir::{dropout, rng};
use kiln_ir::{unroll_scans, AttnVariant, DType, Function, Module};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The precision the forward and backward passes store values in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainDtype {
    /// Everything in f32.
    F32,
    /// bfloat16 parameters and activations, f32 master weights.
    Bf16,
    /// IEEE half parameters and activations, f32 master weights.
    F16,
}

impl TrainDtype {
    /// The IR dtype.
    pub fn dtype(self) -> DType {
        match self {
            TrainDtype::F32 => DType::F32,
            TrainDtype::Bf16 => DType::BF16,
            TrainDtype::F16 => DType::F16,
        }
    }

    /// `f32`, `bf16` or `f16`.
    pub fn name(self) -> &'static str {
        self.dtype().name()
    }
}

/// Everything that defines a run (stored in every checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Sequences per micro-batch (`B`).
    pub batch: usize,
    /// Tokens per sequence (`T`).
    pub block: usize,
    /// Micro-batches whose gradients are averaged into one update.
    pub accumulate: usize,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule; its `total` is the number of updates.
    pub schedule: Schedule,
    /// Clip gradients to this global L2 norm.
    pub clip: Option<f32>,
    /// Storage precision of the forward and backward passes.
    pub dtype: TrainDtype,
    /// The initial loss scale of mixed precision (ignored in f32).
    pub loss_scale: f64,
    /// Clean steps before the loss scale doubles.
    pub loss_scale_growth: u32,
    /// Seed of the parameter initializers (and of the data order, for
    /// sources that take it).
    pub seed: u64,
    /// Steps between validation losses (0: only at the end).
    pub eval_every: u64,
    /// Steps between checkpoints when an output directory is set (0: only
    /// at the end).
    pub checkpoint_every: u64,
    /// Where the training data came from (a corpus path), recorded in
    /// checkpoints so a resumed run can find it again; not read here.
    #[serde(default)]
    pub data: Option<String>,
    /// Run the e-graph optimizer (attention fusion) on the loss before
    /// differentiating it, so the gradient uses the fused backward.
    /// Checkpoints older than the optimizer were not fused, hence the
    /// `false` default when reading them.
    #[serde(default)]
    pub fuse: bool,
    /// Force the fused attention's kernel variant (default FlashAttention-2).
    #[serde(default)]
    pub attention: Option<AttnKernel>,
}

/// A fused attention kernel variant, as stored in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttnKernel {
    /// FlashAttention-1.
    Fa1,
    /// FlashAttention-2.
    Fa2,
}

impl AttnKernel {
    /// The IR's variant.
    pub fn variant(self) -> AttnVariant {
        match self {
            AttnKernel::Fa1 => AttnVariant::Fa1,
            AttnKernel::Fa2 => AttnVariant::Fa2,
        }
    }
}

impl From<AttnVariant> for AttnKernel {
    fn from(v: AttnVariant) -> AttnKernel {
        match v {
            AttnVariant::Fa1 => AttnKernel::Fa1,
            AttnVariant::Fa2 => AttnKernel::Fa2,
        }
    }
}

impl TrainConfig {
    /// A small default run: AdamW (lr 1e-3, weight decay 0.1, β2 0.99 as
    /// usual for small language models), 10% warmup then cosine decay to
    /// a tenth, clipping at 1.0, f32.
    pub fn new(batch: usize, block: usize, steps: u64) -> TrainConfig {
        let warmup = steps / 10;
        TrainConfig {
            batch,
            block,
            accumulate: 1,
            optimizer: OptimizerConfig { beta2: 0.99, ..OptimizerConfig::adamw(0.1) },
            schedule: Schedule::new(super::ScheduleKind::Cosine, 1e-3, warmup, steps, 1e-4),
            clip: Some(1.0),
            dtype: TrainDtype::F32,
            loss_scale: 32768.0,
            loss_scale_growth: 200,
            seed: 0,
            eval_every: 50,
            checkpoint_every: 0,
            data: None,
            fuse: true,
            attention: None,
        }
    }

    /// Total updates of the run.
    pub fn steps(&self) -> u64 {
        self.schedule.total
    }

    /// Refuses settings no run could use.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.batch == 0 {
            return bad("the batch size must be at least 1".into());
        }
        if self.block == 0 {
            return bad("the block size must be at least 1".into());
        }
        if self.accumulate == 0 {
            return bad("gradient accumulation needs at least 1 micro-batch".into());
        }
        if let Some(c) = self.clip {
            if !(c > 0.0 && c.is_finite()) {
                return bad(format!("the clipping norm {c} must be positive"));
            }
        }
        if self.dtype != TrainDtype::F32 && !(self.loss_scale >= 1.0 && self.loss_scale <= LossScaler::MAX_SCALE) {
            return bad(format!("the loss scale {} must be between 1 and {}", self.loss_scale, LossScaler::MAX_SCALE));
        }
        self.optimizer.validate()?;
        self.schedule.validate()
    }
}

/// One step's numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step just taken (1 for the first).
    pub step: u64,
    /// Its mean training loss over the micro-batches.
    pub loss: f64,
    /// The learning rate it used.
    pub lr: f64,
    /// The gradients' global norm before clipping.
    pub grad_norm: f64,
    /// Tokens per second of the step (forward, backward and update).
    pub tokens_per_s: f64,
    /// False when mixed precision skipped the update (gradient overflow).
    pub applied: bool,
    /// The loss scale after the step (1 in f32).
    pub loss_scale: f64,
}

/// One row of the loss history (and of `loss.csv`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// Updates taken so far.
    pub step: u64,
    /// The step's training loss (none for the evaluation before training).
    pub train_loss: Option<f64>,
    /// The validation loss after the step, when it was evaluated.
    pub val_loss: Option<f64>,
    /// The step's learning rate.
    pub lr: f64,
    /// The step's throughput.
    pub tokens_per_s: f64,
}

/// What [`Trainer::run`] reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A step finished.
    Step(StepReport),
    /// A validation loss was computed after `step` updates.
    Eval {
        /// Updates so far.
        step: u64,
        /// The mean validation loss.
        val_loss: f64,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Updates it holds.
        step: u64,
        /// Its directory.
        dir: PathBuf,
    },
}

/// Scans of at most this many steps (layer stacks) are unrolled before
/// differentiation.
pub const MAX_UNROLLED_STEPS: u64 = 128;

/// A model being trained: compiled executables, f32 master weights,
/// optimizer state and the data stream.
pub struct Trainer {
    pub(super) module: Module,
    pub(super) model_path: String,
    pub(super) config: TrainConfig,
    /// Dims of the compiled executables (`B`, `T`, ...).
    pub(super) dims: BTreeMap<String, i64>,
    grad_exe: CpuExecutable,
    loss_exe: CpuExecutable,
    /// The gradient's parameter dtypes, per module parameter.
    grad_dtypes: Vec<DType>,
    /// Whether `loss` uses dropout: the gradient then takes a seed per micro-batch.
    dropout: bool,
    /// Index bounds of the loss's two arguments (vocabulary sizes).
    bounds: [Option<i64>; 2],
    /// Indices of the trained (float) parameters, in module order.
    pub(super) trainable: Vec<usize>,
    /// Per module parameter: its index in `trainable` and `master`.
    slot_of: Vec<Option<usize>>,
    /// Every parameter's dtype and shape, and the values of those not
    /// trained (trained ones live in `master`; their data here is empty).
    frozen: Vec<Tensor>,
    /// f32 master weights of the trained parameters (parallel to `trainable`).
    pub(super) master: Vec<Vec<f32>>,
    pub(super) optimizer: Optimizer,
    pub(super) scaler: Option<LossScaler>,
    pub(super) step: u64,
    pub(super) history: Vec<LogRow>,
    pub(super) data: Box<dyn BatchSource>,
    val: Vec<Batch>,
    out: Option<PathBuf>,
    /// The last checkpoint written by this trainer (or resumed from).
    pub(super) last_checkpoint: Option<(u64, PathBuf)>,
    /// A run without a checkpoint yet writes one after this long, even
    /// between `checkpoint_every` steps.
    first_checkpoint_after: Duration,
    /// Set (by a signal handler, say) to stop after the current step.
    stop: Option<Arc<AtomicBool>>,
    /// Where the training steps' time went.
    profile: Profile,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("step", &self.step).field("config", &self.config).finish_non_exhaustive()
    }
}

/// The loss entry point in training mode (dropout active) or evaluation
/// mode (dropout removed), through the e-graph optimizer unless
/// `config.fuse` is off.
fn optimized_loss(module: &Module, config: &TrainConfig, training: bool) -> Result<Function, TrainError> {
    let f = loss_function(module)?;
    let f = if training { f.clone() } else { dropout::inference(f) };
    if !config.fuse {
        return Ok(f);
    }
    let opts = OptOptions { variant: config.attention.map(AttnKernel::variant), ..OptOptions::default() };
    let (f, _) = optimize(module, &f, &opts).map_err(|e| TrainError::Model(format!("optimizing `loss`: {e}")))?;
    Ok(f)
}

/// The entry point training minimizes.
pub const LOSS_ENTRY: &str = "loss";

/// How long a run trains before its first checkpoint at the latest (when
/// it checkpoints periodically), so a killed run loses at most this much.
pub const FIRST_CHECKPOINT_AFTER: Duration = Duration::from_secs(60);

impl Trainer {
    /// Prepares training `module` (loaded from `model_path`, recorded in
    /// checkpoints) from freshly initialized parameters (`config.seed`):
    /// differentiates and compiles `loss`. `data` yields training batches
    /// and `val` are the validation batches, all `config.batch ×
    /// config.block`.
    pub fn new(
        module: &Module,
        model_path: &str,
        config: TrainConfig,
        data: Box<dyn BatchSource>,
        val: Vec<Batch>,
    ) -> Result<Trainer, TrainError> {
        let params = crate::init_params(module, config.seed)?;
        Trainer::with_params(module, model_path, config, params, data, val)
    }

    /// [`new`](Self::new) starting from the given parameter values
    /// (parallel to `module.params`).
    pub fn with_params(
        module: &Module,
        model_path: &str,
        config: TrainConfig,
        params: Vec<Tensor>,
        data: Box<dyn BatchSource>,
        val: Vec<Batch>,
    ) -> Result<Trainer, TrainError> {
        config.validate()?;
        let f = &optimized_loss(module, &config, false)?;
        let train_f = optimized_loss(module, &config, true)?;
        let dropout = dropout::seed_arg(&train_f).is_some();
        let dims = bind_batch_dims(f, config.batch, config.block)?;
        let env = |n: &str| dims.get(n).copied();
        let mut bounds = [None, None];
        for (i, b) in bounds.iter_mut().enumerate() {
            if let Some(Some(e)) = f.arg_bounds.get(i) {
                *b = e.eval(&env).ok();
            }
        }
        if params.len() != module.params.len() {
            return Err(TrainError::Config(format!("{} values for {} parameters", params.len(), module.params.len())));
        }
        let trainable: Vec<usize> =
            module.params.iter().enumerate().filter(|(_, p)| p.ty.dtype.is_float()).map(|(i, _)| i).collect();
        if trainable.is_empty() {
            return Err(TrainError::Model("the model has no float parameters to train".into()));
        }
        let mut slot_of = vec![None; module.params.len()];
        for (k, &i) in trainable.iter().enumerate() {
            slot_of[i] = Some(k);
        }

        let mut master = Vec::with_capacity(trainable.len());
        let mut sizes = Vec::with_capacity(trainable.len());
        let mut decay = Vec::with_capacity(trainable.len());
        for &i in &trainable {
            let p = &module.params[i];
            let t = &params[i];
            let layout = storage_layout(p)?;
            if t.dtype != p.ty.dtype || t.shape != layout.shape || t.data.len() != t.shape.iter().product::<usize>() {
                return Err(TrainError::Config(format!("the value of parameter `{}` does not fit it", p.name)));
            }
            // Exact for f32 values; a bf16/f16 parameter gets f32 masters too.
            master.push(t.data.iter().map(|&x| x as f32).collect::<Vec<f32>>());
            sizes.push(t.data.len());
            // Decay matrices and embeddings, not biases or norm gains
            // (a stack's own axis does not count).
            decay.push(layout.slice_shape.len() >= 2);
        }
        let optimizer = Optimizer::new(config.optimizer, &sizes, decay)?;
        let scaler = (config.dtype != TrainDtype::F32).then(|| LossScaler::new(config.loss_scale, config.loss_scale_growth));
        for b in &val {
            check_batch(b, &config, bounds, "validation")?;
        }

        // Compiling comes last: it is the slow part for a large model.
        // Unrolled layer stacks keep their activations for the backward
        // pass instead of recomputing each layer's forward.
        let scaled = with_loss_scale(&unroll_scans(&train_f, MAX_UNROLLED_STEPS))?;
        let g = grad(module, &scaled, &Wrt::params(trainable.iter().map(|&i| i as u32)))?;
        let (gm, gf) = match config.dtype {
            TrainDtype::F32 => (module.clone(), g),
            d => to_half(module, &g, d.dtype())?,
        };
        let cache = Cache::new();
        let grad_exe = compile_cpu_with(&gm, &gf, &dims, cache.pool().clone(), cache.options(), cache.codegen())?;
        let loss_exe = compile_cpu_with(module, f, &dims, cache.pool().clone(), cache.options(), cache.codegen())?;
        crate::memory::ensure("training", &[("the gradient step", grad_exe.memory_bytes()), ("evaluation", loss_exe.memory_bytes())])?;
        let grad_dtypes = gm.params.iter().map(|p| p.ty.dtype).collect();
        let mut frozen = params;
        for &i in &trainable {
            frozen[i].data = Vec::new();
        }
        Ok(Trainer {
            module: module.clone(),
            model_path: model_path.to_string(),
            config,
            dims,
            grad_exe,
            loss_exe,
            grad_dtypes,
            dropout,
            bounds,
            trainable,
            slot_of,
            frozen,
            master,
            optimizer,
            scaler,
            step: 0,
            history: Vec::new(),
            data,
            val,
            out: None,
            last_checkpoint: None,
            first_checkpoint_after: FIRST_CHECKPOINT_AFTER,
            stop: None,
            profile: Profile::default(),
        })
    }

    /// Continues the run saved in checkpoint `dir`: its configuration,
    /// parameters, optimizer state, loss scale, data position and history.
    /// `data` must be built like the original run's (the checkpoint moves
    /// it to where it was); `steps`, when given, changes the run's total.
    pub fn resume(
        module: &Module,
        dir: &Path,
        data: Box<dyn BatchSource>,
        val: Vec<Batch>,
        steps: Option<u64>,
    ) -> Result<Trainer, TrainError> {
        let ck = Checkpoint::load(module, dir)?;
        let mut config = ck.meta.config.clone();
        if let Some(s) = steps {
            config.schedule.total = s;
        }
        let mut t = Trainer::with_params(module, &ck.meta.model, config, ck.params, data, val)?;
        t.optimizer.restore(ck.meta.optimizer_steps, ck.slots)?;
        t.scaler = ck.meta.scaler;
        t.step = ck.meta.step;
        t.history = ck.meta.history.clone();
        t.data.restore(&ck.meta.data)?;
        t.last_checkpoint = Some((ck.meta.step, dir.to_path_buf()));
        Ok(t)
    }

    /// Writes checkpoints (and `loss.csv`) to `dir`, created if needed;
    /// fails now when it cannot be written. What killed writes left there
    /// is cleaned up ([`checkpoint::tidy`]), so this process must be the
    /// folder's only writer (the CLI holds its [`crate::DirLock`]).
    pub fn set_output(&mut self, dir: &Path) -> Result<(), TrainError> {
        crate::create_output_dir(dir)?;
        checkpoint::tidy(dir)?;
        self.out = Some(dir.to_path_buf());
        Ok(())
    }

    /// Writes the first checkpoint of a run after `after` at the latest
    /// (default [`FIRST_CHECKPOINT_AFTER`]), unless `checkpoint_every` is 0.
    pub fn set_first_checkpoint_after(&mut self, after: Duration) {
        self.first_checkpoint_after = after;
    }

    /// [`run`](Self::run) stops after the step during which `flag` is set
    /// (and checkpoints there).
    pub fn stop_when(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// Whether the stop flag is set.
    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Changes how often the run evaluates and checkpoints (0: only at
    /// the end); neither affects the weights.
    pub fn set_eval_every(&mut self, eval_every: u64, checkpoint_every: u64) {
        self.config.eval_every = eval_every;
        self.config.checkpoint_every = checkpoint_every;
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Changes the base learning rate from now on (the schedule's shape is kept).
    pub fn set_base_lr(&mut self, lr: f64) {
        let ratio = self.config.schedule.min_lr / self.config.schedule.base_lr;
        self.config.schedule.base_lr = lr;
        self.config.schedule.min_lr = lr * ratio;
    }

    /// The model.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Updates taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The loss history (one row per step, and the evaluation before training).
    pub fn history(&self) -> &[LogRow] {
        &self.history
    }

    /// The current loss scale (mixed precision only).
    pub fn loss_scale(&self) -> Option<f64> {
        self.scaler.map(|s| s.scale)
    }

    /// Every parameter's current value, parallel to the module's
    /// parameters, trained ones from the f32 master weights.
    pub fn params(&self) -> Vec<Tensor> {
        self.param_tensors(None)
    }

    /// The f32 master weights of the trained parameters, with their
    /// module indices.
    pub fn master_weights(&self) -> impl Iterator<Item = (usize, &[f32])> {
        self.trainable.iter().copied().zip(self.master.iter().map(|m| m.as_slice()))
    }

    /// Parameter values in `dtypes` (per module parameter; the executable
    /// rounds to them), or in their own dtypes, rounded.
    fn param_tensors(&self, dtypes: Option<&[DType]>) -> Vec<Tensor> {
        self.frozen
            .iter()
            .zip(&self.slot_of)
            .enumerate()
            .map(|(i, (t, slot))| match slot {
                None => t.clone(),
                Some(k) => {
                    let w = &self.master[*k];
                    let data = match dtypes {
                        Some(_) => w.iter().map(|&x| x as f64).collect(),
                        None => w.iter().map(|&x| t.dtype.round(x as f64)).collect(),
                    };
                    Tensor { dtype: dtypes.map_or(t.dtype, |d| d[i]), shape: t.shape.clone(), data }
                }
            })
            .collect()
    }

    /// Takes one optimizer step (see the module docs).
    pub fn step(&mut self) -> Result<StepReport, TrainError> {
        let start = Instant::now();
        let next = self.step + 1;
        let lr = self.config.schedule.lr(self.step);
        let scale = self.scaler.map_or(1.0, |s| s.scale);
        let prepared = self.grad_exe.prepare_params(&self.param_tensors(Some(&self.grad_dtypes)))?;
        self.host_time("(host) convert parameters", start);
        let scale_t = Tensor { dtype: DType::F32, shape: vec![], data: vec![scale] };
        let sizes: Vec<usize> = self.master.iter().map(Vec::len).collect();
        let mut acc = GradAccumulator::new(&sizes);
        let mut loss_sum = 0.0;
        for micro in 0..self.config.accumulate {
            let b = self.data.next_batch()?;
            check_batch(&b, &self.config, self.bounds, "training")?;
            let (tokens, targets) = batch_tensors(&b);
            let mut inputs = vec![tokens, targets];
            if self.dropout {
                // A fresh mask per micro-batch, reproducible from --seed and the step.
                let seed = rng::derive_seed(self.config.seed, self.step * self.config.accumulate as u64 + micro as u64);
                inputs.push(Tensor { dtype: DType::I64, shape: vec![], data: vec![seed as f64] });
            }
            inputs.push(scale_t.clone());
            let (outs, stats) = self.grad_exe.run_prepared(&prepared, &inputs).map_err(|e| e.in_function("loss"))?;
            self.profile.add(&stats.profile);
            let t = Instant::now();
            loss_sum += outs[0].data[0] / scale;
            acc.add_scaled(outs[1..].iter().map(|t| t.data.as_slice()), 1.0 / scale)?;
            self.host_time("(host) accumulate gradients", t);
        }
        let loss = loss_sum / self.config.accumulate as f64;
        let mut grads = acc.take_mean();
        let bad_grad = grads.iter().position(|g| g.iter().any(|x| !x.is_finite()));
        let finite = loss.is_finite() && bad_grad.is_none();
        let elapsed = start.elapsed().as_secs_f64().max(1e-9);
        let tokens = (self.config.batch * self.config.block * self.config.accumulate) as f64;
        let mut report =
            StepReport { step: next, loss, lr, grad_norm: f64::NAN, tokens_per_s: tokens / elapsed, applied: false, loss_scale: scale };

        if let Some(s) = &mut self.scaler {
            if !s.update(finite) {
                if s.gave_up() {
                    let n = s.skipped_in_a_row;
                    return Err(self.diverged(next, format!("the gradients overflowed {n} steps in a row")));
                }
                report.loss_scale = s.scale;
                self.step = next;
                self.history.push(LogRow { step: next, train_loss: loss.is_finite().then_some(loss), val_loss: None, lr, tokens_per_s: report.tokens_per_s });
                self.profile.wall += start.elapsed();
                return Ok(report);
            }
            report.loss_scale = s.scale;
        } else if !finite {
            let what = match bad_grad {
                _ if !loss.is_finite() => format!("the loss is {}", if loss.is_nan() { "NaN" } else { "infinite" }),
                Some(k) => format!("the gradient of `{}` is not finite", self.module.params[self.trainable[k]].name),
                None => "a value is not finite".into(),
            };
            return Err(self.diverged(next, what));
        }

        report.grad_norm = match self.config.clip {
            Some(c) => clip_grad_norm(&mut grads, c),
            None => global_norm(&grads),
        };
        let t = Instant::now();
        self.optimizer.step(&mut self.master, &grads, lr as f32)?;
        self.host_time("(host) optimizer update", t);
        if let Some(k) = self.master.iter().position(|p| p.iter().any(|x| !x.is_finite())) {
            let name = &self.module.params[self.trainable[k]].name;
            return Err(self.diverged(next, format!("parameter `{name}` is no longer finite")));
        }
        report.applied = true;
        let elapsed = start.elapsed().as_secs_f64().max(1e-9);
        report.tokens_per_s = tokens / elapsed;
        self.step = next;
        self.history.push(LogRow { step: next, train_loss: Some(loss), val_loss: None, lr, tokens_per_s: report.tokens_per_s });
        self.profile.wall += start.elapsed();
        Ok(report)
    }

    /// Time per kernel of the training steps so far, with the host's work
    /// between kernels as `(host) ...` entries and the steps' wall time.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn host_time(&mut self, what: &str, since: Instant) {
        self.profile.add_host(what, since.elapsed());
    }

    fn diverged(&self, step: u64, what: String) -> TrainError {
        let checkpoint = self.last_checkpoint.as_ref().map(|(s, d)| (*s, d.display().to_string()));
        TrainError::Diverged { step, what, checkpoint }
    }

    /// The mean `loss` over the validation batches with the current f32
    /// weights (NaN when there are none).
    pub fn eval(&self) -> Result<f64, TrainError> {
        if self.val.is_empty() {
            return Ok(f64::NAN);
        }
        let prepared = self.loss_exe.prepare_params(&self.params())?;
        let mut sum = 0.0;
        for b in &self.val {
            let (tokens, targets) = batch_tensors(b);
            let (outs, _) = self.loss_exe.run_prepared(&prepared, &[tokens, targets]).map_err(|e| e.in_function("loss"))?;
            sum += outs[0].data[0];
        }
        Ok(sum / self.val.len() as f64)
    }

    /// Records a validation loss for the current step in the history.
    fn record_eval(&mut self, val: f64) {
        let v = val.is_finite().then_some(val);
        match self.history.last_mut() {
            Some(r) if r.step == self.step => r.val_loss = v,
            _ => self.history.push(LogRow {
                step: self.step,
                train_loss: None,
                val_loss: v,
                lr: self.config.schedule.lr(self.step),
                tokens_per_s: 0.0,
            }),
        }
    }

    /// Trains until `until` updates have been taken (or the run's total,
    /// whichever comes first, or the stop flag is set), evaluating and
    /// checkpointing on the way; with an output directory it always ends
    /// with a checkpoint of where it stopped. A fresh run first evaluates
    /// the initial weights.
    pub fn run(&mut self, until: u64, on_event: &mut dyn FnMut(&Event)) -> Result<(), TrainError> {
        let until = until.min(self.config.steps());
        let start = Instant::now();
        if self.step == 0 && self.history.is_empty() {
            let v = self.eval()?;
            self.record_eval(v);
            on_event(&Event::Eval { step: 0, val_loss: v });
        }
        while self.step < until && !self.stop_requested() {
            let r = self.step()?;
            on_event(&Event::Step(r));
            let last = self.step == until;
            let step = self.step;
            let every = |n: u64| n > 0 && step.is_multiple_of(n);
            if every(self.config.eval_every) || last {
                let v = self.eval()?;
                if !v.is_finite() && !self.val.is_empty() {
                    return Err(self.diverged(self.step, format!("the validation loss is {v}")));
                }
                self.record_eval(v);
                on_event(&Event::Eval { step: self.step, val_loss: v });
            }
            let overdue = self.config.checkpoint_every > 0
                && self.last_checkpoint.is_none()
                && start.elapsed() >= self.first_checkpoint_after;
            if every(self.config.checkpoint_every) || overdue {
                self.checkpoint_if_new(on_event)?;
            }
        }
        self.checkpoint_if_new(on_event)
    }

    /// Checkpoints the current step to the output directory, if there is
    /// one and it does not hold this step already.
    fn checkpoint_if_new(&mut self, on_event: &mut dyn FnMut(&Event)) -> Result<(), TrainError> {
        let Some(out) = &self.out else { return Ok(()) };
        if self.last_checkpoint.as_ref().is_some_and(|(s, d)| *s == self.step && d == out) {
            return Ok(());
        }
        let dir = self.save_checkpoint()?;
        on_event(&Event::Checkpoint { step: self.step, dir });
        Ok(())
    }

    /// Writes a checkpoint of the current state to the output directory
    /// (see [`checkpoint`]) and `loss.csv` beside it.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let dir = self.out.clone().ok_or_else(|| TrainError::Config("no output directory is set".into()))?;
        checkpoint::save(self, &dir)?;
        write_loss_csv(&dir.join("loss.csv"), &self.history)?;
        self.last_checkpoint = Some((self.step, dir.clone()));
        Ok(dir)
    }
}

/// The model's `loss` entry point, checked to take two integer `[B, T]`
/// arguments (tokens and targets) and return a scalar.
pub fn loss_function(m: &Module) -> Result<&Function, TrainError> {
    let f = m.function(LOSS_ENTRY).ok_or_else(|| {
        let names: Vec<&str> = m.functions.iter().map(|f| f.name.as_str()).collect();
        TrainError::Model(format!(
            "training needs an entry point `loss(tokens, targets)`; this model has: {}",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ))
    })?;
    // Besides tokens and targets, only the hidden dropout seed (third).
    let seed = dropout::seed_arg(f);
    let n = if seed.is_some() { 3 } else { 2 };
    let ok = seed.is_none_or(|s| s == 2)
        && f.graph.inputs.len() == n
        && f.graph.inputs[..2].iter().all(|t| t.dtype.is_int() && t.rank() == 2);
    if !ok {
        let args: Vec<String> = f.arg_names.iter().zip(&f.graph.inputs).map(|(n, t)| format!("{n}: {t}")).collect();
        return Err(TrainError::Model(format!(
            "`loss` must take token ids and targets as two integer [B, T] arguments; it takes ({})",
            args.join(", ")
        )));
    }
    Ok(f)
}

/// Binds `loss`'s dims for `batch × block` inputs, checking its `where`
/// constraints (so a block longer than the model's is refused here).
fn bind_batch_dims(f: &Function, batch: usize, block: usize) -> Result<BTreeMap<String, i64>, TrainError> {
    let z = |dtype| Tensor { dtype, shape: vec![batch, block], data: vec![0.0; batch * block] };
    let (a, b) = (z(f.graph.inputs[0].dtype), z(f.graph.inputs[1].dtype));
    let bound = crate::bind_dims(f, &[Some(&a), Some(&b)], &[]).map_err(|e| match e {
        RuntimeError::Constraint { message, .. } => {
            TrainError::Config(format!("batch {batch} × block {block} does not fit the model: {message}"))
        }
        e => e.into(),
    })?;
    Ok(bound.dims)
}

fn check_batch(b: &Batch, c: &TrainConfig, bounds: [Option<i64>; 2], what: &str) -> Result<(), TrainError> {
    let n = c.batch * c.block;
    if b.batch != c.batch || b.block != c.block || b.tokens.len() != n || b.targets.len() != n {
        return Err(TrainError::Data(format!(
            "a {what} batch is {}×{} with {} tokens, the run needs {}×{}",
            b.batch,
            b.block,
            b.tokens.len(),
            c.batch,
            c.block
        )));
    }
    for (ids, bound, name) in [(&b.tokens, bounds[0], "token"), (&b.targets, bounds[1], "target")] {
        if let Some(limit) = bound {
            if let Some(&x) = ids.iter().find(|&&x| x < 0 || x as i64 >= limit) {
                return Err(TrainError::Data(format!(
                    "{what} data has {name} id {x}, outside the model's vocabulary 0..{limit}"
                )));
            }
        }
    }
    Ok(())
}

fn batch_tensors(b: &Batch) -> (Tensor, Tensor) {
    let t = |ids: &[i32]| Tensor { dtype: DType::I32, shape: vec![b.batch, b.block], data: ids.iter().map(|&x| x as f64).collect() };
    (t(&b.tokens), t(&b.targets))
}

/// Writes the history as CSV: `step,train_loss,val_loss,lr,tokens_per_s`,
/// empty cells for values not measured. Atomic.
pub fn write_loss_csv(path: &Path, rows: &[LogRow]) -> Result<(), TrainError> {
    let mut s = String::from("step,train_loss,val_loss,lr,tokens_per_s\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{:.6e},{:.1}\n",
            r.step,
            opt(r.train_loss),
            opt(r.val_loss),
            r.lr,
            r.tokens_per_s
        ));
    }
    crate::write_atomic(path, s.as_bytes())?;
    Ok(())
}
