//! Where training batches come from.
//!
//! The trainer reads `(tokens, targets)` batches of `B × T` token ids from
//! a [`BatchSource`]; `targets` are `tokens` shifted by one position. A
//! source's position must be serializable ([`BatchSource::state`]) so a
//! checkpoint can resume the exact same sequence of batches.
//! [`DatasetBatches`] deals the shuffled training sequences of a
//! [`Dataset`] (a tokenized corpus); [`TokenWindows`] is the simplest
//! source: random windows over one token sequence, drawn from a seeded
//! ChaCha8 stream.

use super::TrainError;
use crate::data::{BatchState, Batches, Dataset};
use crate::Tensor;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// One batch: `batch × block` token ids and the ids that follow each, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub block: usize,
    /// Input ids, `batch · block` of them.
    pub tokens: Vec<i32>,
    /// Next-token ids, parallel to `tokens`.
    pub targets: Vec<i32>,
}

/// An endless, resumable stream of training batches.
pub trait BatchSource {
    /// The next batch.
    fn next_batch(&mut self) -> Result<Batch, TrainError>;
    /// Where the stream is, as JSON a checkpoint stores.
    fn state(&self) -> Value;
    /// Moves the stream to a position [`state`](Self::state) returned.
    fn restore(&mut self, state: &Value) -> Result<(), TrainError>;
}

/// Random windows of `block + 1` consecutive tokens of one sequence: the
/// first `block` are the inputs, the last `block` the targets.
#[derive(Clone, Debug)]
pub struct TokenWindows {
    tokens: Vec<i32>,
    batch: usize,
    block: usize,
    rng: ChaCha8Rng,
}

impl TokenWindows {
    /// Windows over `tokens` drawn with `seed`; an error when the sequence
    /// is shorter than one window.
    pub fn new(tokens: Vec<i32>, batch: usize, block: usize, seed: u64) -> Result<TokenWindows, TrainError> {
        if batch == 0 || block == 0 {
            return Err(TrainError::Config(format!("batch ({batch}) and block ({block}) must be at least 1")));
        }
        if tokens.len() < block + 1 {
            return Err(TrainError::Data(format!(
                "the data has {} tokens; a block of {block} needs at least {}",
                tokens.len(),
                block + 1
            )));
        }
        Ok(TokenWindows { tokens, batch, block, rng: ChaCha8Rng::seed_from_u64(seed) })
    }

    /// `count` batches of consecutive, non-overlapping windows from the
    /// start of the sequence (wrapping around): a fixed validation set.
    pub fn sequential(&self, count: usize) -> Vec<Batch> {
        let starts = self.tokens.len() - self.block;
        let mut at = 0;
        (0..count)
            .map(|_| {
                let rows: Vec<usize> = (0..self.batch)
                    .map(|_| {
                        let s = at % starts;
                        at += self.block;
                        s
                    })
                    .collect();
                self.gather(&rows)
            })
            .collect()
    }

    fn gather(&self, starts: &[usize]) -> Batch {
        let mut tokens = Vec::with_capacity(starts.len() * self.block);
        let mut targets = Vec::with_capacity(starts.len() * self.block);
        for &s in starts {
            tokens.extend_from_slice(&self.tokens[s..s + self.block]);
            targets.extend_from_slice(&self.tokens[s + 1..s + 1 + self.block]);
        }
        Batch { batch: self.batch, block: self.block, tokens, targets }
    }
}

impl BatchSource for TokenWindows {
    fn next_batch(&mut self) -> Result<Batch, TrainError> {
        let starts = self.tokens.len() - self.block;
        let rows: Vec<usize> = (0..self.batch).map(|_| self.rng.random_range(0..starts)).collect();
        Ok(self.gather(&rows))
    }

    fn state(&self) -> Value {
        // u128 does not fit JSON numbers exactly: store it as a string.
        json!({
            "kind": "token_windows",
            "seed": hex(&self.rng.get_seed()),
            "word_pos": self.rng.get_word_pos().to_string(),
        })
    }

    fn restore(&mut self, state: &Value) -> Result<(), TrainError> {
        let bad = || TrainError::Data(format!("cannot restore the data position from {state}"));
        let seed = state.get("seed").and_then(Value::as_str).and_then(unhex).ok_or_else(bad)?;
        let pos: u128 = state.get("word_pos").and_then(Value::as_str).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_word_pos(pos);
        self.rng = rng;
        Ok(())
    }
}

/// The training batches of a [`Dataset`]: its shuffled sequences, `batch`
/// at a time, resumable from the [`BatchState`] a checkpoint saves.
#[derive(Clone, Debug)]
pub struct DatasetBatches {
    data: Dataset,
    batches: Batches,
    batch: usize,
}

impl DatasetBatches {
    /// Batches of `batch` sequences over `data`, shuffled with `seed`.
    pub fn new(data: Dataset, batch: usize, seed: u64) -> Result<DatasetBatches, TrainError> {
        if batch == 0 {
            return Err(TrainError::Config("the batch size must be at least 1".into()));
        }
        // A batch is held as i32 tokens and targets, then as f64 tensors;
        // the validation batches hold up to `valid_len + batch` sequences.
        let tokens = |sequences: usize| (sequences as u64).saturating_mul(data.block() as u64);
        let training = tokens(batch).saturating_mul(2 * (4 + 8));
        let validation = tokens(data.valid_len().saturating_add(batch)).saturating_mul(2 * 4);
        crate::memory::ensure(&format!("a batch of {batch} sequences of {} tokens", data.block()), &[("training batch", training), ("validation batches", validation)])?;
        let batches = data.batches(seed);
        Ok(DatasetBatches { data, batches, batch })
    }

    /// Up to `max` validation batches of exactly `batch` sequences: the
    /// validation sequences in corpus order, the last batch filled up by
    /// starting over (the compiled loss takes a fixed batch size).
    pub fn validation(&self, max: usize) -> Vec<Batch> {
        let n = self.data.valid_len();
        if n == 0 {
            return Vec::new();
        }
        let count = n.div_ceil(self.batch).min(max);
        let block = self.data.block();
        (0..count)
            .map(|k| {
                let mut b = Batch { batch: self.batch, block, tokens: Vec::new(), targets: Vec::new() };
                for r in 0..self.batch {
                    if let Some(seq) = self.data.valid_sequence((k * self.batch + r) % n) {
                        b.tokens.extend(seq[..block].iter().map(|&t| t as i32));
                        b.targets.extend(seq[1..].iter().map(|&t| t as i32));
                    }
                }
                b
            })
            .collect()
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.data
    }
}

impl BatchSource for DatasetBatches {
    fn next_batch(&mut self) -> Result<Batch, TrainError> {
        let (x, y) = self.batches.next_batch(self.batch)?;
        Ok(Batch { batch: self.batch, block: self.data.block(), tokens: ids(&x), targets: ids(&y) })
    }

    fn state(&self) -> Value {
        self.batches.state().to_json()
    }

    fn restore(&mut self, state: &Value) -> Result<(), TrainError> {
        let s = BatchState::from_json(state)?;
        self.batches = self.data.resume(&s)?;
        Ok(())
    }
}

/// Token ids of an integer tensor (the data module's ids fit i32).
fn ids(t: &Tensor) -> Vec<i32> {
    t.data.iter().map(|&x| x as i32).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_shift_targets_and_resume() {
        let tokens: Vec<i32> = (0..100).collect();
        let mut a = TokenWindows::new(tokens.clone(), 3, 5, 7).unwrap();
        let b1 = a.next_batch().unwrap();
        assert_eq!(b1.tokens.len(), 15);
        for (x, y) in b1.tokens.iter().zip(&b1.targets) {
            assert_eq!(x + 1, *y);
        }
        let state = a.state();
        let next = a.next_batch().unwrap();
        let mut b = TokenWindows::new(tokens, 3, 5, 99).unwrap();
        b.restore(&state).unwrap();
        assert_eq!(b.next_batch().unwrap(), next);
        assert!(b.restore(&json!({"seed": "zz"})).is_err());
    }

    #[test]
    fn too_little_data_is_an_error() {
        assert!(matches!(TokenWindows::new(vec![1, 2, 3], 1, 3, 0), Err(TrainError::Data(_))));
        assert!(TokenWindows::new(vec![1, 2, 3, 4], 1, 3, 0).is_ok());
    }
}
