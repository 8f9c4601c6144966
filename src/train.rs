//! `kiln train`: train a model's `loss` entry point on a text corpus.
//!
//! The corpus is tokenized by a byte-level BPE tokenizer trained on it to
//! the model's vocabulary (the index bound of `loss`'s `tokens` argument)
//! and saved as `OUT/tokenizer.json`. Training runs on the CPU backend;
//! `OUT` receives checkpoints (see `kiln_runtime::train::checkpoint`),
//! `loss.csv` and `loss.png`.

use crate::Failed;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_ir::{Module, Relation};
use kiln_runtime::data::{Dataset, Tokenizer, DEFAULT_CORPUS, DEFAULT_CORPUS_NAME};
use kiln_runtime::train::{
    self, Checkpoint, DatasetBatches, Event, LogRow, OptimizerConfig, Schedule, ScheduleKind,
    AttnKernel, TrainConfig, TrainDtype, Trainer,
};
use std::path::{Path, PathBuf};
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
    #[arg(long)]
    steps: Option<u64>,
    /// Sequences per micro-batch [default: 8].
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence [default: the model's longest, at most 64].
    #[arg(long)]
    block: Option<usize>,
    /// Peak learning rate [default: 1e-3; 0.1 for sgd].
    #[arg(long)]
    lr: Option<f64>,
    /// The learning rate decays to this floor [default: lr / 10].
    #[arg(long)]
    min_lr: Option<f64>,
    /// Linear warmup updates [default: steps / 10].
    #[arg(long)]
    warmup: Option<u64>,
    /// The optimizer [default: adamw].
    #[arg(long, value_enum)]
    optimizer: Option<Opt>,
    /// Weight decay of matrices and embeddings [default: 0.1 for adamw, 0 otherwise].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Clip gradients to this global norm; 0 turns clipping off [default: 1.0].
    #[arg(long)]
    clip: Option<f32>,
    /// Micro-batches per update (gradient accumulation) [default: 1].
    #[arg(long)]
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
    /// Seed of the initial weights and of the data order [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    fuse: crate::FuseArgs,
    /// Updates between validation losses [default: 50].
    #[arg(long)]
    eval_every: Option<u64>,
    /// Updates between checkpoints [default: --eval-every].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Stop (with a checkpoint) after this many updates, as if interrupted;
    /// the schedule still spans --steps.
    #[arg(long, value_name = "N")]
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum Sched {
    Cosine,
    Linear,
    Noam,
    Constant,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Dtype {
    F32,
    Bf16,
    F16,
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

/// `kiln train`.
pub fn run(a: &Args) -> Result<(), Failed> {
    let c = crate::compile(&a.file)?;
    let m = &c.module;
    let vocab = model_vocab(m)?;

    let (config, resume) = match &a.resume {
        Some(dir) => (resumed_config(a, dir)?, Some(dir.clone())),
        None => (fresh_config(a, m)?, None),
    };
    let out = a.out.clone().or_else(|| resume.clone()).unwrap_or_else(|| PathBuf::from("out/train"));
    // An unusable output folder fails here, before any work.
    kiln_runtime::create_output_dir(&out)?;

    let (text, source) = corpus(a.data.as_deref(), config.data.as_deref().filter(|_| resume.is_some()), &a.file)?;
    let tok_path = out.join("tokenizer.json");
    let t0 = Instant::now();
    let tokenizer = match resume.as_ref().map(|d| d.join("tokenizer.json")).filter(|p| p.is_file()) {
        Some(p) => Tokenizer::load(&p)?,
        None => Tokenizer::train(&text, vocab)?,
    };
    tokenizer.save(&tok_path)?;
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
    let mut trainer = match &resume {
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
    trainer.set_output(&out)?;
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
    let mut last_val = f64::NAN;
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
    let first = history.iter().find_map(|r| r.val_loss).unwrap_or(f64::NAN);
    let train_loss = history.iter().rev().find_map(|r| r.train_loss).unwrap_or(f64::NAN);
    println!(
        "trained {steps} steps in {secs:.1}s ({:.0} tokens/s): train loss {train_loss:.4}, val loss {first:.4} -> {last_val:.4} (uniform: {:.4})",
        tokens / secs.max(1e-9),
        (vocab as f64).ln()
    );
    println!(
        "checkpoint (step {}) in {}: params.safetensors, checkpoint.json, loss.csv, loss.png (train blue, validation orange)",
        trainer.step_count(),
        out.display()
    );
    if a.profile {
        println!("time per kernel over the training steps:\n{}", trainer.profile().table(15));
    }
    Ok(())
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
    let sched = match a.schedule.unwrap_or(Sched::Cosine) {
        Sched::Cosine => ScheduleKind::Cosine,
        Sched::Linear => ScheduleKind::Linear,
        Sched::Noam => ScheduleKind::Noam,
        Sched::Constant => ScheduleKind::Constant,
    };
    c.schedule = Schedule::new(sched, lr, a.warmup.unwrap_or(steps / 10), steps, a.min_lr.unwrap_or(lr / 10.0));
    c.clip = match a.clip {
        Some(x) => (x != 0.0).then_some(x),
        None => Some(1.0),
    };
    c.accumulate = a.accumulate.unwrap_or(1);
    c.dtype = match a.dtype.unwrap_or(Dtype::F32) {
        Dtype::F32 => TrainDtype::F32,
        Dtype::Bf16 => TrainDtype::Bf16,
        Dtype::F16 => TrainDtype::F16,
    };
    c.seed = a.seed.unwrap_or(0);
    c.eval_every = a.eval_every.unwrap_or(50);
    c.checkpoint_every = a.checkpoint_every.unwrap_or(c.eval_every);
    c.validate()?;
    c.fuse = !a.fuse.no_fuse;
    c.attention = a.fuse.variant().map(AttnKernel::from);
    Ok(c)
}

/// The configuration saved in checkpoint `dir`; flags that would change
/// the run's arithmetic are refused.
fn resumed_config(a: &Args, dir: &Path) -> Result<TrainConfig, Failed> {
    let fixed = [
        ("--batch", a.batch.is_some()),
        ("--block", a.block.is_some()),
        ("--lr", a.lr.is_some()),
        ("--min-lr", a.min_lr.is_some()),
        ("--warmup", a.warmup.is_some()),
        ("--optimizer", a.optimizer.is_some()),
        ("--weight-decay", a.weight_decay.is_some()),
        ("--clip", a.clip.is_some()),
        ("--accumulate", a.accumulate.is_some()),
        ("--schedule", a.schedule.is_some()),
        ("--dtype", a.dtype.is_some()),
        ("--seed", a.seed.is_some()),
        ("--no-fuse", a.fuse.no_fuse),
        ("--attention", a.fuse.attention.is_some()),
    ];
    if let Some((flag, _)) = fixed.iter().find(|(_, given)| *given) {
        return Err(fail(format!(
            "{flag} cannot be changed when resuming: the checkpoint in `{}` fixes it (only --steps, --data, --out, --eval-every, --checkpoint-every and --stop-at may be given)",
            dir.display()
        )));
    }
    let meta = Checkpoint::read_meta(dir)?;
    Ok(meta.config)
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

    // The image crate picks the format by extension: keep `.png` last.
    let tmp = path.with_file_name(format!(".{}.tmp.png", std::process::id()));
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(&tmp, (W, H)).into_drawing_area();
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
    let result = draw().map_err(|e| e.to_string()).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
