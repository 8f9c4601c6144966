//! Training: optimizers, learning-rate schedules, the training loop,
//! checkpoints and mixed precision.
//!
//! - [`optim`]: SGD with momentum, Adam and AdamW over f32 master weights
//!   held on the host, gradient clipping by global norm and gradient
//!   accumulation.
//! - [`schedule`]: learning-rate schedules (linear warmup then cosine or
//!   linear decay to a floor, and the Transformer's inverse-square-root
//!   "Noam" schedule).
//! - [`precision`]: graph transforms for training: a loss-scale argument,
//!   and retyping a gradient function to bf16/f16 storage; dynamic loss
//!   scaling.
//! - [`batches`]: what the trainer reads batches from ([`BatchSource`]),
//!   and a simple source of random windows over a token sequence.
//! - [`trainer`]: [`Trainer`], which compiles `loss`'s gradient once for
//!   the run's batch and block sizes and then steps.
//! - [`checkpoint`]: checkpoints that resume bit-identically.
//!
//! Everything is deterministic: the same model, data, configuration and
//! seed give bitwise-identical parameters, and a run resumed from a
//! checkpoint continues exactly as if it had never stopped.

pub mod batches;
pub mod checkpoint;
pub mod error;
pub mod optim;
pub mod precision;
pub mod schedule;
pub mod trainer;

pub use batches::{Batch, BatchSource, DatasetBatches, TokenWindows};
pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use error::TrainError;
pub use optim::{clip_grad_norm, GradAccumulator, Optimizer, OptimizerConfig, OptimizerKind};
pub use precision::{to_half, with_loss_scale, LossScaler};
pub use schedule::{Schedule, ScheduleKind};
pub use trainer::{write_loss_csv, AttnKernel, Event, LogRow, StepReport, TrainConfig, TrainDtype, Trainer};
