//! The training error type: one-line messages, like [`RuntimeError`]'s.

use crate::RuntimeError;
use thiserror::Error;

/// Everything that can stop a training run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TrainError {
    /// Loading, saving, compiling or running failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The model cannot be trained as asked (no `loss` entry, a loss that
    /// cannot be differentiated, sizes that do not fit the model).
    #[error("{0}")]
    Model(String),
    /// A configuration value that cannot be used.
    #[error("{0}")]
    Config(String),
    /// The data cannot be used (too small for one batch, tokens outside
    /// the vocabulary, ...).
    #[error("{0}")]
    Data(String),
    /// The loss, a gradient or a parameter became NaN or infinite.
    #[error("training diverged at step {step}: {what}; {}", kept(.checkpoint))]
    Diverged {
        /// The step that produced the non-finite value (1-based).
        step: u64,
        /// What was not finite, e.g. `the loss is NaN`.
        what: String,
        /// The last checkpoint written, as `(step, directory)`; it is left as it was.
        checkpoint: Option<(u64, String)>,
    },
    /// A checkpoint that cannot be resumed: unreadable, incomplete, or
    /// saved for another model.
    #[error("checkpoint `{dir}`: {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        dir: String,
        /// What is wrong, naming the first mismatch.
        reason: String,
    },
}

fn kept(c: &Option<(u64, String)>) -> String {
    match c {
        Some((step, dir)) => format!("the last good checkpoint (step {step}) is kept in `{dir}`"),
        None => "no checkpoint was written".into(),
    }
}

impl From<kiln_ir::autodiff::AutodiffError> for TrainError {
    fn from(e: kiln_ir::autodiff::AutodiffError) -> TrainError {
        TrainError::Model(format!("cannot differentiate the loss: {e}"))
    }
}
