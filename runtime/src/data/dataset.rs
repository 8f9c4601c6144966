//! The training data pipeline: a corpus becomes token sequences, split into
//! training and validation sets, served as shuffled batches.
//!
//! - **Packing.** The corpus's tokens are cut into sequences of `block + 1`
//!   tokens, each starting where the previous one's inputs end: sequence
//!   `k` is `tokens[k*block .. k*block + block + 1]`. Its inputs are the
//!   first `block` tokens and its targets the last `block` (the inputs
//!   shifted by one), so every token after the first is a target exactly
//!   once. The `(n - 1) % block` tokens left at the end are not used.
//! - **Split.** The last tenth of the sequences (at least one) is the
//!   validation set, the rest the training set: deterministic, and the two
//!   cover disjoint stretches of the text.
//! - **Deduplication.** A validation sequence whose tokens also form a
//!   training sequence (repeated boilerplate, a licence text quoted twice)
//!   is dropped: its loss would measure memory, not generalization.
//! - **Batches.** [`Batches`] deals the training sequences in a new order
//!   each epoch: a Fisher–Yates shuffle driven by the ChaCha8 stream
//!   `data.shuffle.{epoch}` under the seed (see [`crate::init::stream`]).
//!   A batch that runs past the end of an epoch continues into the next
//!   one. Because each epoch's order depends only on the seed and the
//!   epoch, the whole iterator state is `(seed, epoch, position)`
//!   ([`BatchState`]), and restoring it continues bit-identically.

use super::tokenizer::Tokenizer;
use crate::bind::MAX_ELEMENTS;
use crate::init::stream;
use crate::{fsutil, RuntimeError, Tensor};
use kiln_ir::DType;
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// A tokenized corpus, packed and split (see the module docs).
#[derive(Clone)]
pub struct Dataset {
    /// Names the corpus in messages.
    source: String,
    block: usize,
    /// Tokens in the whole corpus.
    tokens: usize,
    /// The training sequences, `block + 1` tokens each, back to back.
    /// Shared with every [`Batches`] over this data.
    train: Arc<[u32]>,
    /// The validation sequences left after deduplication, likewise.
    valid: Vec<u32>,
    /// Validation sequences dropped as copies of training ones.
    duplicates: usize,
    /// Identifies `block` and the training sequences, so a saved
    /// [`BatchState`] is never resumed over different data.
    fingerprint: u64,
}

impl Dataset {
    /// The share of the sequences that goes to validation, in percent.
    pub const VALID_PERCENT: usize = 10;

    /// Reads, tokenizes and packs the UTF-8 text file at `path`.
    pub fn from_file(path: &Path, tokenizer: &Tokenizer, block: usize) -> Result<Dataset, RuntimeError> {
        let source = path.display().to_string();
        let bytes = fsutil::read_file(path)?;
        if bytes.is_empty() {
            return Err(empty(&source));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            RuntimeError::Invalid(format!(
                "corpus `{source}` is not UTF-8 text: invalid bytes at offset {}",
                e.valid_up_to()
            ))
        })?;
        Dataset::from_text(text, &source, tokenizer, block)
    }

    /// Tokenizes and packs `text`; `source` names it in messages.
    pub fn from_text(text: &str, source: &str, tokenizer: &Tokenizer, block: usize) -> Result<Dataset, RuntimeError> {
        if text.is_empty() {
            return Err(empty(source));
        }
        check_block(block)?;
        Dataset::from_tokens(&tokenizer.encode(text)?, source, block)
    }

    /// Packs, splits and deduplicates already tokenized text.
    pub fn from_tokens(tokens: &[u32], source: &str, block: usize) -> Result<Dataset, RuntimeError> {
        check_block(block)?;
        let n = tokens.len();
        if n == 0 {
            return Err(empty(source));
        }
        // One training and one validation sequence share a boundary token.
        let need = block.saturating_mul(2).saturating_add(1);
        if n < need {
            return Err(RuntimeError::Invalid(format!(
                "corpus `{source}` is too small for block size {block}: it has {n} tokens, but one training and one validation sequence need at least {need}"
            )));
        }
        let count = (n - 1) / block;
        let n_valid = (count * Dataset::VALID_PERCENT).div_ceil(100).max(1);
        let n_train = count - n_valid;
        let seq = |k: usize| &tokens[k * block..k * block + block + 1];
        let train: Vec<u32> = (0..n_train).flat_map(seq).copied().collect();
        let seen: HashSet<&[u32]> = train.chunks_exact(block + 1).collect();
        let mut valid = Vec::with_capacity(n_valid * (block + 1));
        let mut duplicates = 0;
        for k in n_train..count {
            if seen.contains(seq(k)) {
                duplicates += 1;
            } else {
                valid.extend_from_slice(seq(k));
            }
        }
        if valid.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "corpus `{source}`: every validation sequence of block size {block} also appears in the training data, so nothing is left to validate on; use a larger or less repetitive corpus"
            )));
        }
        Ok(Dataset {
            source: source.to_string(),
            block,
            tokens: n,
            fingerprint: fingerprint(block, &train),
            train: train.into(),
            valid,
            duplicates,
        })
    }

    /// The corpus's name, as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The sequence length `T`: inputs and targets have `block` tokens.
    pub fn block(&self) -> usize {
        self.block
    }

    /// How many tokens the whole corpus has.
    pub fn num_tokens(&self) -> usize {
        self.tokens
    }

    /// How many training sequences there are (one epoch).
    pub fn train_len(&self) -> usize {
        self.train.len() / (self.block + 1)
    }

    /// How many validation sequences there are, after deduplication.
    pub fn valid_len(&self) -> usize {
        self.valid.len() / (self.block + 1)
    }

    /// How many validation sequences were dropped as copies of training
    /// sequences.
    pub fn duplicates_dropped(&self) -> usize {
        self.duplicates
    }

    /// Training sequence `i` (`block + 1` tokens), in corpus order.
    pub fn train_sequence(&self, i: usize) -> Option<&[u32]> {
        self.train.chunks_exact(self.block + 1).nth(i)
    }

    /// Validation sequence `i` (`block + 1` tokens), in corpus order.
    pub fn valid_sequence(&self, i: usize) -> Option<&[u32]> {
        self.valid.chunks_exact(self.block + 1).nth(i)
    }

    /// Shuffled training batches from the first epoch on.
    pub fn batches(&self, seed: u64) -> Batches {
        Batches::start(self, seed, 0, 0)
    }

    /// Training batches continuing from a saved [`Batches::state`]. Fails
    /// if the state was saved over different data (another corpus,
    /// tokenizer or block size).
    pub fn resume(&self, state: &BatchState) -> Result<Batches, RuntimeError> {
        if state.sequences != self.train_len() || state.fingerprint != self.fingerprint {
            return Err(RuntimeError::Invalid(format!(
                "the saved data position is for other training data ({} sequences, fingerprint {:016x}), not corpus `{}` ({} sequences of block size {}, fingerprint {:016x}): was the corpus, tokenizer or block size changed?",
                state.sequences,
                state.fingerprint,
                self.source,
                self.train_len(),
                self.block,
                self.fingerprint
            )));
        }
        if state.position >= self.train_len() {
            return Err(RuntimeError::Invalid(format!(
                "the saved data position {} is past the end of an epoch of {} sequences",
                state.position,
                self.train_len()
            )));
        }
        Ok(Batches::start(self, state.seed, state.epoch, state.position))
    }

    /// The validation set as batches of up to `batch` sequences, in corpus
    /// order; the last batch holds what is left and may be smaller.
    pub fn valid_batches(&self, batch: usize) -> Result<impl Iterator<Item = (Tensor, Tensor)> + '_, RuntimeError> {
        check_batch(batch)?;
        let rows = batch.saturating_mul(self.block + 1);
        Ok(self.valid.chunks(rows).map(|c| tensors(c.chunks_exact(self.block + 1), self.block)))
    }
}

/// Shuffled training batches over a [`Dataset`] (see the module docs).
/// Owns what it needs, so it can live apart from the dataset.
#[derive(Clone)]
pub struct Batches {
    train: Arc<[u32]>,
    block: usize,
    fingerprint: u64,
    seed: u64,
    epoch: u64,
    position: usize,
    /// This epoch's order of the training sequences.
    order: Vec<usize>,
}

impl Batches {
    fn start(data: &Dataset, seed: u64, epoch: u64, position: usize) -> Batches {
        let n = data.train_len();
        Batches {
            train: data.train.clone(),
            block: data.block,
            fingerprint: data.fingerprint,
            seed,
            epoch,
            position,
            order: shuffled(n, seed, epoch),
        }
    }

    /// The next `batch` training sequences as `(tokens, targets)`, both
    /// `i32[batch, block]`; `targets[b][t]` is the token after
    /// `tokens[b][t]`.
    pub fn next_batch(&mut self, batch: usize) -> Result<(Tensor, Tensor), RuntimeError> {
        check_batch(batch)?;
        if batch.checked_mul(self.block).is_none_or(|n| n as u64 > MAX_ELEMENTS as u64) {
            return Err(RuntimeError::Invalid(format!(
                "batch size {batch} is too large: {batch} sequences of {} tokens are more than the {MAX_ELEMENTS} elements a tensor may have",
                self.block
            )));
        }
        let width = self.block + 1;
        let mut rows = Vec::with_capacity(batch.min(self.order.len()));
        for _ in 0..batch {
            let k = self.order[self.position];
            rows.push(&self.train[k * width..(k + 1) * width]);
            self.position += 1;
            if self.position == self.order.len() {
                self.epoch += 1;
                self.position = 0;
                self.order = shuffled(self.order.len(), self.seed, self.epoch);
            }
        }
        Ok(tensors(rows.into_iter(), self.block))
    }

    /// The epoch the next sequence comes from, counting from 0.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How many sequences of the current epoch have been dealt.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Sequences per epoch.
    pub fn epoch_len(&self) -> usize {
        self.order.len()
    }

    /// Where the iterator stands, to save and later [`Dataset::resume`].
    pub fn state(&self) -> BatchState {
        BatchState {
            seed: self.seed,
            epoch: self.epoch,
            position: self.position,
            sequences: self.order.len(),
            fingerprint: self.fingerprint,
        }
    }
}

/// A saved position of [`Batches`]: everything needed to continue it
/// exactly, plus what identifies the data it ran over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchState {
    /// The shuffle seed.
    pub seed: u64,
    /// The current epoch.
    pub epoch: u64,
    /// Sequences of the current epoch already dealt.
    pub position: usize,
    /// Training sequences per epoch.
    pub sequences: usize,
    /// The training data's fingerprint (FNV-1a of the block size and the
    /// training tokens).
    pub fingerprint: u64,
}

impl BatchState {
    /// The state as a JSON object. The fingerprint is a hex string, so
    /// readers that hold numbers as doubles keep it whole.
    pub fn to_json(&self) -> Value {
        json!({
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "sequences": self.sequences,
            "fingerprint": format!("{:016x}", self.fingerprint),
        })
    }

    /// Reads a state written by [`BatchState::to_json`].
    pub fn from_json(v: &Value) -> Result<BatchState, RuntimeError> {
        let bad = |what: &str| RuntimeError::Invalid(format!("saved data position: {what}"));
        let int = |key: &str| {
            v.get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(&format!("`{key}` is missing or not a non-negative integer")))
        };
        let size =
            |key: &str| int(key).and_then(|n| usize::try_from(n).map_err(|_| bad(&format!("`{key}` is too large"))));
        let fingerprint = v
            .get("fingerprint")
            .and_then(Value::as_str)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| bad("`fingerprint` is missing or not a hex string"))?;
        Ok(BatchState {
            seed: int("seed")?,
            epoch: int("epoch")?,
            position: size("position")?,
            sequences: size("sequences")?,
            fingerprint,
        })
    }
}

// Summaries: the derived forms would print every token.
impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("source", &self.source)
            .field("block", &self.block)
            .field("tokens", &self.tokens)
            .field("train", &self.train_len())
            .field("valid", &self.valid_len())
            .field("duplicates", &self.duplicates)
            .finish()
    }
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").field("state", &self.state()).finish()
    }
}

/// FNV-1a ([`crate::init::fnv1a64`]) of `block` (8 bytes, little-endian) followed by
/// each token (4 bytes, little-endian), without building that buffer.
fn fingerprint(block: usize, train: &[u32]) -> u64 {
    let bytes = (block as u64).to_le_bytes().into_iter().chain(train.iter().flat_map(|t| t.to_le_bytes()));
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// `0..n` in the order of `epoch` under `seed`: Fisher–Yates on ChaCha8
/// words with rejection sampling, written out so the order never changes
/// with a `rand` upgrade.
fn shuffled(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = stream(seed, &format!("data.shuffle.{epoch}"));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// A uniform draw from `0..n` (`n > 0`).
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    // Words below 2^64 mod n would favour small results.
    let threshold = n.wrapping_neg() % n;
    loop {
        let x = rng.next_u64();
        if x >= threshold {
            return x % n;
        }
    }
}

/// Inputs and targets, `i32[rows, block]`, from sequences of `block + 1`.
fn tensors<'a>(rows: impl Iterator<Item = &'a [u32]>, block: usize) -> (Tensor, Tensor) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in rows {
        x.extend(r[..block].iter().map(|&t| t as f64));
        y.extend(r[1..].iter().map(|&t| t as f64));
    }
    let b = x.len() / block;
    (
        Tensor { dtype: DType::I32, shape: vec![b, block], data: x },
        Tensor { dtype: DType::I32, shape: vec![b, block], data: y },
    )
}

fn empty(source: &str) -> RuntimeError {
    RuntimeError::Invalid(format!("corpus `{source}` is empty: there is no text to train on"))
}

fn check_block(block: usize) -> Result<(), RuntimeError> {
    match block {
        0 => Err(RuntimeError::Invalid("block size must be at least 1".into())),
        _ => Ok(()),
    }
}

fn check_batch(batch: usize) -> Result<(), RuntimeError> {
    match batch {
        0 => Err(RuntimeError::Invalid("batch size must be at least 1".into())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_fnv1a_of_the_bytes() {
        let train = [1u32, 70_000, u32::MAX];
        let mut bytes = 5u64.to_le_bytes().to_vec();
        bytes.extend(train.iter().flat_map(|t| t.to_le_bytes()));
        assert_eq!(fingerprint(5, &train), crate::init::fnv1a64(&bytes));
    }

    #[test]
    fn shuffles_are_permutations_and_differ_by_epoch() {
        let a = shuffled(1000, 9, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, shuffled(1000, 9, 1));
        assert_eq!(a, shuffled(1000, 9, 0));
        assert_eq!(shuffled(0, 9, 0), Vec::<usize>::new());
        assert_eq!(shuffled(1, 9, 0), [0]);
    }
}
