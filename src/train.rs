//! `kiln train`: train a model's `loss` entry point on a text corpus.
//!
//! The corpus is tokenized by a byte-level BPE tokenizer trained on it to
//! the model's vocabulary (the index bound of `loss`'s `tokens` argument)
//! and saved as `OUT/tokenizer.json`. Training runs on the CPU backend;
//! `OUT` receives checkpoints (see `kiln_runtime::train::checkpoint`),
//! `loss.csv` and `loss.png`.
//!
//! `OUT` belongs to one run: it is locked while training, a fresh run
//! refuses a folder holding another run's checkpoint (unless
//! `--overwrite`), and a fresh run that fails before its first checkpoint
//! leaves the folder as it found it. SIGINT and SIGTERM stop the run after
//! the current step with a checkpoint (exit 130 and 143).

use crate::Failed;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_ir::{Module, Relation};
use kiln_runtime::data::{Dataset, Tokenizer, DEFAULT_CORPUS, DEFAULT_CORPUS_NAME};
use kiln_runtime::train::checkpoint::SIDECAR;
use kiln_runtime::train::{
    self, AttnKernel, Checkpoint, CheckpointMeta, DatasetBatches, Event, LogRow, OptimizerConfig, OptimizerKind,
    Schedule, ScheduleKind, TrainConfig, TrainDtype, Trainer,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Train a model's `loss(tokens, targets)` on a text corpus (CPU backend).
#[derive(clap::Args)]
pub struct Args {
    /// The `.kl` model; it needs an entry point `loss(tokens, targets)`.
    file: PathBuf,
    /// The training text (UTF-8) [default: data/tiny-corpus.txt, looked up
    /// in the working directory, then beside the model's folder, then the
    /// copy built into kiln].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Optimizer updates in the whole run [default: 300].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<u64>)]
    steps: Option<u64>,
    /// Sequences per micro-batch [default: 8].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<usize>)]
    batch: Option<usize>,
    /// Tokens per sequence [default: the model's longest, at most 64].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<usize>)]
    block: Option<usize>,
    /// Peak learning rate [default: 1e-3; 0.1 for sgd].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative::<f64>)]
    lr: Option<f64>,
    /// The learning rate decays to this floor [default: lr / 10].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative::<f64>)]
    min_lr: Option<f64>,
    /// Linear warmup updates [default: steps / 10].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<u64>)]
    warmup: Option<u64>,
    /// The optimizer [default: adamw].
    #[arg(long, value_enum)]
    optimizer: Option<Opt>,
    /// Weight decay of matrices and embeddings [default: 0.1 for adamw, 0 otherwise].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative::<f32>)]
    weight_decay: Option<f32>,
    /// Clip gradients to this global norm; 0 turns clipping off [default: 1.0].
    #[arg(long, allow_negative_numbers = true, value_parser = non_negative::<f32>)]
    clip: Option<f32>,
    /// Micro-batches per update (gradient accumulation) [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<usize>)]
    accumulate: Option<usize>,
    /// Learning-rate schedule after the warmup [default: cosine].
    #[arg(long, value_enum)]
    schedule: Option<Sched>,
    /// Storage precision of the forward and backward passes (f32 master weights either way) [default: f32].
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// Output directory: checkpoints, tokenizer.json, loss.csv, loss.png
    /// [default: out/train, or the --resume directory].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run checkpointed in DIR, bit-identically.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Replace the checkpoint of another run in the output directory
    /// (deleted when training starts); without it such a folder is refused.
    #[arg(long)]
    overwrite: bool,
    /// Seed of the initial weights and of the data order [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<u64>)]
    seed: Option<u64>,
    #[command(flatten)]
    fuse: crate::FuseArgs,
    /// Updates between validation losses [default: 50].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<u64>)]
    eval_every: Option<u64>,
    /// Updates between checkpoints [default: --eval-every].
    #[arg(long, allow_negative_numbers = true, value_parser = count::<u64>)]
    checkpoint_every: Option<u64>,
    /// Stop (with a checkpoint) after this many updates, as if interrupted;
    /// the schedule still spans --steps.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count::<u64>)]
    stop_at: Option<u64>,
    /// After training, print where the steps' time went, per kernel.
    #[arg(long)]
    profile: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Opt {
    Adamw,
    Adam,
    Sgd,
}

impl From<Opt> for OptimizerKind {
    fn from(o: Opt) -> OptimizerKind {
        match o {
            Opt::Adamw => OptimizerKind::AdamW,
            Opt::Adam => OptimizerKind::Adam,
            Opt::Sgd => OptimizerKind::Sgd,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Sched {
    Cosine,
    Linear,
    Noam,
    Constant,
}

impl From<Sched> for ScheduleKind {
    fn from(s: Sched) -> ScheduleKind {
        match s {
            Sched::Cosine => ScheduleKind::Cosine,
            Sched::Linear => ScheduleKind::Linear,
            Sched::Noam => ScheduleKind::Noam,
            Sched::Constant => ScheduleKind::Constant,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Dtype {
    F32,
    Bf16,
    F16,
}

impl From<Dtype> for TrainDtype {
    fn from(d: Dtype) -> TrainDtype {
        match d {
            Dtype::F32 => TrainDtype::F32,
            Dtype::Bf16 => TrainDtype::Bf16,
            Dtype::F16 => TrainDtype::F16,
        }
    }
}

/// Parses a whole number flag; a negative one is out of range (clap would
/// otherwise take `-1` for a flag and suggest `-- -1`).
fn count<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    if s.starts_with('-') {
        return Err(format!("{s} is out of range: it must be 0 or more"));
    }
    s.parse().map_err(|_| format!("`{s}` is not a whole number"))
}

/// Parses a finite number that is 0 or more.
fn non_negative<T: std::str::FromStr + Into<f64> + Copy>(s: &str) -> Result<T, String> {
    let x: T = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    let v: f64 = x.into();
    if v.is_finite() && v >= 0.0 {
        Ok(x)
    } else {
        Err(format!("{s} is out of range: it must be a finite number, 0 or more"))
    }
}

/// `--clip X`: 0 turns clipping off.
fn clip_of(x: f32) -> Option<f32> {
    (x != 0.0).then_some(x)
}

/// Validation batches per evaluation, at most.
const EVAL_BATCHES: usize = 8;
/// The longest default block.
const MAX_DEFAULT_BLOCK: usize = 64;

fn fail(msg: impl std::fmt::Display) -> Failed {
    Failed(format!("error: {msg}\n"))
}

/// The vocabulary size of `m`'s `loss`: the constant index bound of its
/// token argument, at least the tokenizer's byte alphabet.
fn model_vocab(m: &Module) -> Result<usize, Failed> {
    let loss = train::trainer::loss_function(m)?;
    let vocab = match loss.arg_bounds.first().and_then(|b| b.as_ref()).and_then(|b| b.as_const()) {
        Some(v) => v,
        None => return Err(fail(format!("`loss`'s first argument `{}` has no constant vocabulary size (an index bound such as `wte[tokens]` gives it one)", loss.arg_names[0]))),
    };
    let vocab = usize::try_from(vocab).map_err(|_| fail(format!("the model's vocabulary {vocab} is not a size")))?;
    if vocab < Tokenizer::BYTE_TOKENS {
        return Err(fail(format!(
            "the model's vocabulary has {vocab} tokens; a byte-level tokenizer needs at least {}",
            Tokenizer::BYTE_TOKENS
        )));
    }
    Ok(vocab)
}

/// What a short training run did.
pub struct Brief {
    /// Validation loss before the first step.
    pub val_before: f64,
    /// Validation loss after the last step.
    pub val_after: f64,
    /// Training tokens per second over the steps.
    pub tokens_per_s: f64,
    /// Tokens per sequence.
    pub block: usize,
}

/// Trains `m` for `steps` steps of `batch` sequences on the built-in corpus
/// in memory (no files written): the demo's last stage.
pub fn brief(m: &Module, steps: u64, batch: usize, block: usize) -> Result<Brief, Failed> {
    let tokenizer = Tokenizer::train(DEFAULT_CORPUS, model_vocab(m)?)?;
    let dataset = Dataset::from_text(DEFAULT_CORPUS, &builtin_name(), &tokenizer, block)?;
    let src = DatasetBatches::new(dataset, batch, 0)?;
    let val = src.validation(EVAL_BATCHES);
    let mut config = TrainConfig::new(batch, block, steps);
    config.eval_every = 0;
    let mut trainer = Trainer::new(m, "models/gpt.kl", config, Box::new(src), val)?;
    let start = Instant::now();
    trainer.run(steps, &mut |_| {})?;
    let secs = start.elapsed().as_secs_f64();
    let evals: Vec<f64> = trainer.history().iter().filter_map(|r| r.val_loss).collect();
    Ok(Brief {
        val_before: evals.first().copied().unwrap_or(f64::NAN),
        val_after: evals.last().copied().unwrap_or(f64::NAN),
        tokens_per_s: (steps as usize * batch * block) as f64 / secs.max(1e-9),
        block,
    })
}

/// `kiln train`: exit 0, or 130 (SIGINT) or 143 (SIGTERM) when a signal
/// stopped the run after a checkpoint.
pub fn run(a: &Args) -> Result<ExitCode, Failed> {
    let c = crate::compile(&a.file)?;
    let m = &c.module;
    let vocab = model_vocab(m)?;

    let (config, resume) = match &a.resume {
        Some(dir) => {
            let meta = Checkpoint::read_meta(dir)?;
            meta.check_model(m, dir)?;
            refuse_changes(a, dir, &meta.config)?;
            if let Some(done) = nothing_to_do(a, dir, &meta) {
                println!("{done}");
                return Ok(ExitCode::SUCCESS);
            }
            (meta.config, Some(dir.clone()))
        }
        None => (fresh_config(a, m)?, None),
    };
    let out = a.out.clone().or_else(|| resume.clone()).unwrap_or_else(|| PathBuf::from("out/train"));
    let continues = resume.as_deref().is_some_and(|r| same_dir(r, &out));
    if !continues && !a.overwrite {
        refuse_other_run(&out)?;
    }
    let existed = out.exists();
    let had_tokenizer = out.join(TOKENIZER).exists();
    // An unusable output folder fails here, before any work.
    kiln_runtime::create_output_dir(&out)?;
    let lock = kiln_runtime::lock_dir(&out)?;
    let result = train_into(a, m, vocab, config, resume.as_deref(), &out);
    if result.is_err() && resume.is_none() && !out.join(SIDECAR).exists() {
        // A fresh run that failed before its first checkpoint leaves the
        // folder as it found it (a diverged run's loss curve excepted).
        if !had_tokenizer {
            let _ = std::fs::remove_file(out.join(TOKENIZER));
        }
        let _ = std::fs::remove_file(lock.path());
        if !existed {
            let _ = std::fs::remove_dir(&out);
        }
    }
    drop(lock);
    result
}

/// The tokenizer's file in the output directory.
const TOKENIZER: &str = "tokenizer.json";

/// Trains into `out`, which this process has locked.
fn train_into(
    a: &Args,
    m: &Module,
    vocab: usize,
    config: TrainConfig,
    resume: Option<&Path>,
    out: &Path,
) -> Result<ExitCode, Failed> {
    let (text, source) = corpus(a.data.as_deref(), config.data.as_deref().filter(|_| resume.is_some()), &a.file)?;
    let tok_path = out.join(TOKENIZER);
    let t0 = Instant::now();
    let tokenizer = match resume.map(|d| d.join(TOKENIZER)).filter(|p| p.is_file()) {
        Some(p) => Tokenizer::load(&p)?,
        None => Tokenizer::train(&text, vocab)?,
    };
    let dataset = Dataset::from_text(&text, &source, &tokenizer, config.block)?;
    eprintln!(
        "data: {source}: {} tokens (vocabulary {}), {} training and {} validation sequences of {}; tokenizer in {:.1}s -> {}",
        dataset.num_tokens(),
        tokenizer.vocab_size(),
        dataset.train_len(),
        dataset.valid_len(),
        config.block,
        t0.elapsed().as_secs_f64(),
        tok_path.display()
    );
    let mut config = config;
    // Recorded so that `--resume` finds the corpus from any folder.
    let built_in = source == builtin_name();
    config.data = Some(if built_in { source.clone() } else { absolute(&source) });
    let src = DatasetBatches::new(dataset, config.batch, config.seed)?;
    let val = src.validation(EVAL_BATCHES);

    let t1 = Instant::now();
    let mut trainer = match resume {
        Some(dir) => {
            let mut t = Trainer::resume(m, dir, Box::new(src), val, a.steps)?;
            if a.eval_every.is_some() || a.checkpoint_every.is_some() {
                let e = a.eval_every.unwrap_or(t.config().eval_every);
                t.set_eval_every(e, a.checkpoint_every.unwrap_or(e));
            }
            t
        }
        None => Trainer::new(m, &a.file.display().to_string(), config, Box::new(src), val)?,
    };
    trainer.set_output(out)?;
    if a.overwrite && !resume.is_some_and(|r| same_dir(r, out)) {
        // Everything is ready: only now is the other run's checkpoint deleted.
        train::checkpoint::remove(out)?;
        for f in ["loss.csv", "loss.png"] {
            let _ = std::fs::remove_file(out.join(f));
        }
    }
    if resume.is_none_or(|r| !same_dir(r, out)) {
        tokenizer.save(&tok_path)?;
    }
    let cfg = trainer.config().clone();
    let n_params: usize = trainer.master_weights().map(|(_, w)| w.len()).sum();
    eprintln!(
        "model: {}: {n_params} trained weights; gradient compiled in {:.1}s; {} {} lr {:.2e} ({} schedule, warmup {}), batch {}×{}{}, {} steps{}",
        a.file.display(),
        t1.elapsed().as_secs_f64(),
        cfg.optimizer.kind.name(),
        cfg.dtype.name(),
        cfg.schedule.base_lr,
        cfg.schedule.kind.name(),
        cfg.schedule.warmup,
        cfg.batch,
        cfg.block,
        if cfg.accumulate > 1 { format!(" × {} micro-batches", cfg.accumulate) } else { String::new() },
        cfg.steps(),
        match trainer.step_count() {
            0 => String::new(),
            s => format!(", resuming at step {s}"),
        }
    );

    let (stop, signal) = catch_signals()?;
    trainer.stop_when(stop);
    let until = a.stop_at.unwrap_or(u64::MAX).min(cfg.steps());
    let bar = ProgressBar::with_draw_target(Some(until), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.step_count());
    bar.reset_eta();
    let start = Instant::now();
    let first_step = trainer.step_count();
    let mut last_val = last_val_loss(trainer.history()).unwrap_or(f64::NAN);
    let result = trainer.run(until, &mut |e| match e {
        Event::Step(r) => {
            bar.set_position(r.step);
            let skipped = if r.applied { "" } else { " (skipped: overflow)" };
            bar.set_message(format!("loss {:.4} val {:.4} {:.0} tok/s{skipped}", r.loss, last_val, r.tokens_per_s));
        }
        Event::Eval { step, val_loss } => {
            last_val = *val_loss;
            bar.suspend(|| eprintln!("step {step:>6}: val loss {val_loss:.4}"));
        }
        Event::Checkpoint { .. } => {}
    });
    bar.finish_and_clear();
    let history = trainer.history().to_vec();
    // The curve is worth having even for a run that diverged.
    train::write_loss_csv(&out.join("loss.csv"), &history)?;
    if let Err(e) = plot(&out.join("loss.png"), &history) {
        eprintln!("warning: cannot draw {}: {e}", out.join("loss.png").display());
    }
    result?;

    let secs = start.elapsed().as_secs_f64();
    let steps = trainer.step_count() - first_step;
    let tokens = steps as f64 * (cfg.batch * cfg.block * cfg.accumulate) as f64;
    let first_val = history.iter().find_map(|r| r.val_loss);
    let train_loss = history.iter().rev().find_map(|r| r.train_loss);
    println!(
        "trained {steps} steps in {secs:.1}s ({:.0} tokens/s): train loss {}, val loss {} -> {} (uniform: {:.4})",
        tokens / secs.max(1e-9),
        show_loss(train_loss),
        show_loss(first_val),
        show_loss(last_val_loss(&history)),
        (vocab as f64).ln()
    );
    println!(
        "checkpoint (step {}) in {}: params.safetensors, checkpoint.json, loss.csv, loss.png (train blue, validation orange)",
        trainer.step_count(),
        out.display()
    );
    if a.profile {
        let ceilings = kiln_runtime::cpu::Ceilings::measured(kiln_runtime::cpu::Pool::global().threads())?;
        println!("time per kernel over the {steps} training steps:\n{}", trainer.profile().table(15, &ceilings));
        // Kernels only: the time outside them is in the table above.
        let kinds = kiln_runtime::cpu::Profile { host: Vec::new(), wall: Default::default(), ..trainer.profile().by_kind() };
        println!("the same by kind of kernel (names without their number):\n{}", kinds.table(15, &ceilings));
    }
    match signal.load(Ordering::SeqCst) {
        0 => Ok(ExitCode::SUCCESS),
        sig => {
            let name = if sig == signal_hook::consts::SIGINT as usize { "SIGINT" } else { "SIGTERM" };
            eprintln!(
                "stopped by {name} after step {} of {}: continue with `kiln train {} --resume {}`",
                trainer.step_count(),
                cfg.steps(),
                a.file.display(),
                out.display()
            );
            Ok(ExitCode::from(128 + sig as u8))
        }
    }
}

/// SIGINT and SIGTERM set the returned flag (the trainer checkpoints after
/// the current step and stops) and record which signal came; a second one
/// ends the process at once, as usual.
fn catch_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicUsize>), Failed> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for sig in [SIGINT, SIGTERM] {
        let err = |e: std::io::Error| fail(format!("cannot handle signal {sig}: {e}"));
        // Registered first, so it sees the flag as the previous signal left it.
        flag::register_conditional_shutdown(sig, 128 + sig, stop.clone()).map_err(err)?;
        flag::register_usize(sig, which.clone(), sig as usize).map_err(err)?;
        flag::register(sig, stop.clone()).map_err(err)?;
    }
    Ok((stop, which))
}

/// A loss as printed, `-` when there is none.
fn show_loss(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"))
}

/// The latest validation loss of a history.
fn last_val_loss(h: &[LogRow]) -> Option<f64> {
    h.iter().rev().find_map(|r| r.val_loss)
}

/// Whether two paths name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Refuses an output folder that holds another run's checkpoint: running
/// a command again must not destroy the previous run.
fn refuse_other_run(out: &Path) -> Result<(), Failed> {
    if !out.join(SIDECAR).exists() {
        return Ok(());
    }
    let step = Checkpoint::read_meta(out).map(|m| format!(" (step {})", m.step)).unwrap_or_default();
    Err(fail(format!(
        "`{0}` holds the checkpoint of another run{step}: continue it with --resume {0}, or replace it with --overwrite",
        out.display()
    )))
}

/// What to say when a resumed run has no step left to take (its
/// checkpoint is at or past --steps or --stop-at); `None` otherwise.
fn nothing_to_do(a: &Args, dir: &Path, meta: &CheckpointMeta) -> Option<String> {
    let total = a.steps.unwrap_or(meta.config.steps());
    let until = a.stop_at.unwrap_or(u64::MAX).min(total);
    if meta.step < until {
        return None;
    }
    let h = &meta.history;
    let losses = format!(
        "last train loss {}, val loss {}",
        show_loss(h.iter().rev().find_map(|r| r.train_loss)),
        show_loss(last_val_loss(h))
    );
    let dir = dir.display();
    Some(if meta.step >= total {
        format!("the run in `{dir}` is already complete: step {} of {total}, {losses}; nothing to train (a larger --steps continues it)", meta.step)
    } else {
        format!("the checkpoint in `{dir}` is at step {}, --stop-at {until}: nothing to train ({losses})", meta.step)
    })
}

/// The configuration of a new run from the flags and the model.
fn fresh_config(a: &Args, m: &Module) -> Result<TrainConfig, Failed> {
    let steps = a.steps.unwrap_or(300);
    if steps == 0 {
        return Err(fail("--steps must be at least 1"));
    }
    let block = match a.block {
        Some(b) => b,
        None => max_block(m).unwrap_or(MAX_DEFAULT_BLOCK).min(MAX_DEFAULT_BLOCK),
    };
    let mut c = TrainConfig::new(a.batch.unwrap_or(8), block, steps);
    let kind = a.optimizer.unwrap_or(Opt::Adamw);
    c.optimizer = match kind {
        Opt::Adamw => OptimizerConfig { beta2: 0.99, ..OptimizerConfig::adamw(0.1) },
        Opt::Adam => OptimizerConfig { beta2: 0.99, ..OptimizerConfig::adam() },
        Opt::Sgd => OptimizerConfig::sgd(0.9),
    };
    if let Some(wd) = a.weight_decay {
        c.optimizer.weight_decay = wd;
    }
    let lr = a.lr.unwrap_or(if matches!(kind, Opt::Sgd) { 0.1 } else { 1e-3 });
    let sched = a.schedule.unwrap_or(Sched::Cosine).into();
    c.schedule = Schedule::new(sched, lr, a.warmup.unwrap_or(steps / 10), steps, a.min_lr.unwrap_or(lr / 10.0));
    c.clip = a.clip.map_or(Some(1.0), clip_of);
    c.accumulate = a.accumulate.unwrap_or(1);
    c.dtype = a.dtype.unwrap_or(Dtype::F32).into();
    c.seed = a.seed.unwrap_or(0);
    c.eval_every = a.eval_every.unwrap_or(50);
    c.checkpoint_every = a.checkpoint_every.unwrap_or(c.eval_every);
    c.validate()?;
    c.fuse = !a.fuse.no_fuse;
    c.attention = a.fuse.variant().map(AttnKernel::from);
    Ok(c)
}

/// Refuses flags that would change the arithmetic of the run saved in
/// checkpoint `dir` (whose configuration is `c`); a flag equal to the
/// checkpoint's value is accepted.
fn refuse_changes(a: &Args, dir: &Path, c: &TrainConfig) -> Result<(), Failed> {
    /// `(given, saved)` as printed, when a flag was given another value.
    fn changed<T: PartialEq>(given: Option<T>, saved: T, show: impl Fn(&T) -> String) -> Option<(String, String)> {
        given.filter(|g| *g != saved).map(|g| (show(&g), show(&saved)))
    }
    let num = |x: &dyn std::fmt::Display| x.to_string();
    let clip = |x: &Option<f32>| x.map_or_else(|| "0 (off)".to_string(), |v| v.to_string());
    let attention = |x: &Option<AttnKernel>| x.map_or_else(|| "(default)".to_string(), |k| format!("{k:?}").to_lowercase());
    let changes = [
        ("--batch", changed(a.batch, c.batch, |x| num(x))),
        ("--block", changed(a.block, c.block, |x| num(x))),
        ("--lr", changed(a.lr, c.schedule.base_lr, |x| num(x))),
        ("--min-lr", changed(a.min_lr, c.schedule.min_lr, |x| num(x))),
        ("--warmup", changed(a.warmup, c.schedule.warmup, |x| num(x))),
        ("--optimizer", changed(a.optimizer.map(OptimizerKind::from), c.optimizer.kind, |k| k.name().to_string())),
        ("--weight-decay", changed(a.weight_decay, c.optimizer.weight_decay, |x| num(x))),
        ("--clip", changed(a.clip.map(clip_of), c.clip, clip)),
        ("--accumulate", changed(a.accumulate, c.accumulate, |x| num(x))),
        ("--schedule", changed(a.schedule.map(ScheduleKind::from), c.schedule.kind, |k| k.name().to_string())),
        ("--dtype", changed(a.dtype.map(TrainDtype::from), c.dtype, |d| d.name().to_string())),
        ("--seed", changed(a.seed, c.seed, |x| num(x))),
        ("--no-fuse", changed(a.fuse.no_fuse.then_some(false), c.fuse, |f| if *f { "fusion on" } else { "fusion off" }.to_string())),
        ("--attention", changed(a.fuse.variant().map(|v| Some(AttnKernel::from(v))), c.attention, attention)),
    ];
    match changes.into_iter().find_map(|(flag, d)| d.map(|d| (flag, d))) {
        None => Ok(()),
        Some((flag, (given, saved))) => Err(fail(format!(
            "{flag} {given} differs from the checkpoint in `{}`, which was trained with {saved}: a resumed run keeps its settings (only --steps, --data, --out, --eval-every, --checkpoint-every and --stop-at may change)",
            dir.display()
        ))),
    }
}

/// The constant `N` of a `where T <= N` constraint on `loss`'s sequence axis.
fn max_block(m: &Module) -> Option<usize> {
    let f = m.function(train::trainer::LOSS_ENTRY)?;
    let t = f.graph.inputs.first()?.shape.get(1)?.as_var()?;
    f.constraints
        .iter()
        .filter(|c| c.rel == Relation::Le && c.lhs.as_var() == Some(t))
        .filter_map(|c| c.rhs.as_const())
        .filter_map(|n| usize::try_from(n).ok())
        .min()
}

/// `path` made absolute (as given if that fails).
fn absolute(path: &str) -> String {
    std::fs::canonicalize(path).map_or_else(|_| path.to_string(), |p| p.display().to_string())
}

/// What the built-in corpus is called in messages and checkpoints.
fn builtin_name() -> String {
    format!("{DEFAULT_CORPUS_NAME} (built in)")
}

/// The corpus text and its name. `--data` must exist; a resumed run reads
/// the corpus its checkpoint names; otherwise the default corpus is looked
/// up in the working directory, then beside the model's folder
/// (`models/x.kl` -> `data/...`), and else the copy built into kiln is used.
fn corpus(given: Option<&Path>, recorded: Option<&str>, model: &Path) -> Result<(String, String), Failed> {
    let path = match (given, recorded) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(r)) if r == builtin_name() => None,
        (None, Some(r)) => Some(PathBuf::from(r)),
        (None, None) => {
            let beside = model.parent().and_then(Path::parent).map(|d| d.join(DEFAULT_CORPUS_NAME));
            [Some(PathBuf::from(DEFAULT_CORPUS_NAME)), beside].into_iter().flatten().find(|p| p.is_file())
        }
    };
    let Some(path) = path else {
        return Ok((DEFAULT_CORPUS.to_string(), builtin_name()));
    };
    let name = path.display().to_string();
    let bytes = kiln_runtime::read_file(&path).map_err(|e| match (given, recorded) {
        (None, Some(_)) => fail(format!("{e} (the checkpoint was trained on it; give its new place with --data)")),
        _ => fail(e),
    })?;
    if bytes.is_empty() {
        return Err(fail(format!("corpus `{name}` is empty: there is no text to train on")));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!("corpus `{name}` is not UTF-8 text: invalid bytes at offset {}", e.utf8_error().valid_up_to()))
    })?;
    Ok((text, name))
}

// ---------------------------------------------------------------------------
// The loss curve. Plotters draws the lines; labels use a built-in 3×5 pixel
// font so that no system font (and no font crate) is needed.

use image::codecs::png::PngEncoder;
use image::{ColorType, ImageEncoder};
use plotters::prelude::*;

const W: u32 = 800;
const H: u32 = 480;
/// Plot area inside the image: left, top, right, bottom.
const AREA: (i32, i32, i32, i32) = (70, 40, 780, 440);
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);
const GRID: RGBColor = RGBColor(225, 225, 225);

/// Draws the train (blue) and validation (orange) loss against the step.
fn plot(path: &Path, rows: &[LogRow]) -> Result<(), String> {
    let train: Vec<(f64, f64)> =
        rows.iter().filter_map(|r| r.train_loss.filter(|x| x.is_finite()).map(|l| (r.step as f64, l))).collect();
    let val: Vec<(f64, f64)> =
        rows.iter().filter_map(|r| r.val_loss.filter(|x| x.is_finite()).map(|l| (r.step as f64, l))).collect();
    let all = train.iter().chain(&val);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let (mut y_min, mut y_max) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    if y_max - y_min < 1e-6 {
        y_max = y_min + 1.0;
    }
    let pad = (y_max - y_min) * 0.05;
    let (y_min, y_max) = ((y_min - pad).max(0.0), y_max + pad);
    let (l, t, r, b) = AREA;
    let px = |x: f64| l + ((x / x_max) * (r - l) as f64).round() as i32;
    let py = |y: f64| b - (((y - y_min) / (y_max - y_min)) * (b - t) as f64).round() as i32;

    let mut rgb = vec![0u8; (W * H * 3) as usize];
    let mut draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        for k in 0..=4 {
            let y = y_min + (y_max - y_min) * k as f64 / 4.0;
            root.draw(&PathElement::new(vec![(l, py(y)), (r, py(y))], GRID))?;
            text(&root, &format!("{y:.2}"), l - 8, py(y) - 5, Align::Right, &BLACK)?;
        }
        for k in 0..=4 {
            let x = x_max * k as f64 / 4.0;
            root.draw(&PathElement::new(vec![(px(x), t), (px(x), b)], GRID))?;
            text(&root, &format!("{}", x.round() as u64), px(x), b + 8, Align::Center, &BLACK)?;
        }
        root.draw(&Rectangle::new([(l, t), (r, b)], BLACK))?;
        let line = |pts: &[(f64, f64)]| pts.iter().map(|&(x, y)| (px(x), py(y))).collect::<Vec<_>>();
        root.draw(&PathElement::new(line(&train), TRAIN.stroke_width(1)))?;
        root.draw(&PathElement::new(line(&val), VAL.stroke_width(2)))?;
        for &(x, y) in &val {
            root.draw(&Circle::new((px(x), py(y)), 3, VAL.filled()))?;
        }
        text(&root, "LOSS", l, 14, Align::Left, &BLACK)?;
        root.draw(&PathElement::new(vec![(r - 200, 19), (r - 180, 19)], TRAIN.stroke_width(3)))?;
        text(&root, "TRAIN", r - 172, 14, Align::Left, &TRAIN)?;
        root.draw(&PathElement::new(vec![(r - 90, 19), (r - 70, 19)], VAL.stroke_width(3)))?;
        text(&root, "VAL", r - 62, 14, Align::Left, &VAL)?;
        text(&root, "STEP", (l + r) / 2, b + 24, Align::Center, &BLACK)?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| e.to_string())?;
    // Encoded in memory and written atomically like every other output.
    let mut png = Vec::new();
    PngEncoder::new(&mut png).write_image(&rgb, W, H, ColorType::Rgb8).map_err(|e| e.to_string())?;
    kiln_runtime::write_atomic(path, &png).map_err(|e| e.to_string())
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Center,
    Right,
}

/// Pixel size of one font dot.
const DOT: i32 = 2;

/// Draws `s` (digits, `.`, `-` and the capitals used above) at `(x, y)`.
fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &str,
    x: i32,
    y: i32,
    align: Align,
    color: &RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let advance = 4 * DOT;
    let width = s.chars().count() as i32 * advance - DOT;
    let x0 = match align {
        Align::Left => x,
        Align::Center => x - width / 2,
        Align::Right => x - width,
    };
    for (i, ch) in s.chars().enumerate() {
        let rows = glyph(ch);
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    let (gx, gy) = (x0 + i as i32 * advance + col * DOT, y + row as i32 * DOT);
                    area.draw(&Rectangle::new([(gx, gy), (gx + DOT - 1, gy + DOT - 1)], color.filled()))?;
                }
            }
        }
    }
    Ok(())
}

/// A 3×5 glyph: five rows of three bits, the left column the high bit.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' | 'O' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' | 'S' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b001, 0b001],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0, 0, 0, 0, 0b010],
        '-' => [0, 0, 0b111, 0, 0],
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'N' => [0b110, 0b101, 0b101, 0b101, 0b101],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        _ => [0; 5],
    }
}
