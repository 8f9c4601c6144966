//! Shared helpers of the training tests: the tiny GPT fixture and a
//! trainer on the default corpus.
#![allow(dead_code)]

use kiln_ir::Module;
use kiln_runtime::data::{Dataset, Tokenizer, DEFAULT_CORPUS, DEFAULT_CORPUS_NAME};
use kiln_runtime::train::{DatasetBatches, TrainConfig, TrainError, Trainer};
use std::path::{Path, PathBuf};

/// A file of `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// Compiles a fixture model.
pub fn model(name: &str) -> Module {
    kiln_lang::compile_file(&fixture(name)).map_err(|e| e.render()).unwrap().module
}

/// The tiny GPT (1 layer, 2 heads, 32 wide, block 32, vocab 256).
pub fn tiny_gpt() -> Module {
    model("tiny_gpt.kl")
}

/// A quick configuration: batch 8, block 32, AdamW at 1e-2.
pub fn config(steps: u64) -> TrainConfig {
    let mut c = TrainConfig::new(8, 32, steps);
    c.schedule.base_lr = 1e-2;
    c.schedule.min_lr = 1e-3;
    c.eval_every = 0;
    c
}

/// The default corpus, byte-level (vocab 256), as training batches and
/// up to four validation batches.
pub fn data(c: &TrainConfig) -> (DatasetBatches, Vec<kiln_runtime::train::Batch>) {
    let tok = Tokenizer::train(DEFAULT_CORPUS, 256).unwrap();
    let data = Dataset::from_text(DEFAULT_CORPUS, DEFAULT_CORPUS_NAME, &tok, c.block).unwrap();
    let src = DatasetBatches::new(data, c.batch, c.seed).unwrap();
    let val = src.validation(4);
    (src, val)
}

/// A fresh trainer for `m` on the default corpus.
pub fn trainer(m: &Module, c: TrainConfig) -> Result<Trainer, TrainError> {
    let (src, val) = data(&c);
    Trainer::new(m, "tiny_gpt.kl", c, Box::new(src), val)
}

/// Resumes the checkpoint in `dir` on the default corpus.
pub fn resume(m: &Module, dir: &Path) -> Result<Trainer, TrainError> {
    let meta = kiln_runtime::train::Checkpoint::read_meta(dir)?;
    let (src, val) = data(&meta.config);
    Trainer::resume(m, dir, Box::new(src), val, None)
}

/// Every f32 master weight's bits, in order.
pub fn bits(t: &Trainer) -> Vec<u32> {
    t.master_weights().flat_map(|(_, w)| w.iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect()
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
