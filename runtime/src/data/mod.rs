//! Training data: a byte-level BPE [`Tokenizer`], the default corpus, and
//! the [`Dataset`] pipeline that packs a tokenized corpus into training and
//! validation sequences and deals shuffled, resumable [`Batches`].
//!
//! ```no_run
//! use kiln_runtime::data::{Dataset, Tokenizer, DEFAULT_CORPUS, DEFAULT_CORPUS_NAME};
//! # fn main() -> Result<(), kiln_runtime::RuntimeError> {
//! let tok = Tokenizer::train(DEFAULT_CORPUS, 512)?;
//! let data = Dataset::from_text(DEFAULT_CORPUS, DEFAULT_CORPUS_NAME, &tok, 256)?;
//! let mut batches = data.batches(0);
//! let (tokens, targets) = batches.next_batch(8)?; // i32[8, 256] each
//! let saved = batches.state().to_json(); // resume later with `Dataset::resume`
//! # let _ = (tokens, targets, saved);
//! # Ok(())
//! # }
//! ```

pub mod dataset;
pub mod tokenizer;

pub use dataset::{BatchState, Batches, Dataset};
pub use tokenizer::Tokenizer;

/// The text of the default corpus, `data/tiny-corpus.txt` in the
/// repository (original English prose; see `data/README.md`). Built into
/// the binary so training works with no data file at hand.
pub const DEFAULT_CORPUS: &str = include_str!("../../../data/tiny-corpus.txt");

/// The default corpus's path in the repository, to name it in messages.
pub const DEFAULT_CORPUS_NAME: &str = "data/tiny-corpus.txt";
