//! The runtime's error type.
//!
//! Every message is one line that names the file, parameter, input or
//! dimension at fault, so the CLI can print it as is.

use thiserror::Error;

/// Everything that can go wrong while loading, saving, binding or running.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RuntimeError {
    /// A file could not be read (missing, unreadable, a directory, ...).
    #[error("cannot read `{path}`: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why, from the operating system.
        reason: String,
    },
    /// A file could not be written; any previous file at `path` is untouched.
    #[error("cannot write `{path}`: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An output directory could not be created or is not writable.
    #[error("cannot use `{path}` as an output directory: {reason}")]
    OutputDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// The bytes are not a well-formed `.npy` file.
    #[error("{file}: not a valid .npy file: {reason}")]
    InvalidNpy {
        /// The file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A well-formed `.npy` file that Kiln cannot use as asked (Fortran
    /// order, an unsupported dtype, values that do not fit the wanted dtype).
    #[error("{file}: {reason}")]
    UnsupportedNpy {
        /// The file.
        file: String,
        /// What Kiln cannot handle, and what to do instead.
        reason: String,
    },
    /// The bytes are not a well-formed safetensors file.
    #[error("{file}: not a valid safetensors file: {reason}")]
    InvalidSafetensors {
        /// The file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A well-formed safetensors file holding a tensor Kiln cannot use
    /// (an unsupported dtype such as f64 or u8).
    #[error("{file}: tensor `{name}`: {reason}")]
    UnsupportedTensor {
        /// The file.
        file: String,
        /// The tensor's name.
        name: String,
        /// What Kiln cannot handle.
        reason: String,
    },
    /// A checkpoint lacks one of the model's parameters.
    #[error("{file}: missing parameter `{name}`")]
    MissingParam {
        /// The checkpoint.
        file: String,
        /// The first missing storage name.
        name: String,
    },
    /// A checkpoint holds tensors the model does not have.
    #[error("{file}: unknown tensor `{name}`{}: the model has no such parameter", more(*.others))]
    UnknownTensor {
        /// The checkpoint.
        file: String,
        /// The first unknown name (in sorted order).
        name: String,
        /// How many other unknown names there are.
        others: usize,
    },
    /// A checkpoint tensor has the wrong dtype or shape.
    #[error("{file}: parameter `{name}` has {what} {found}, the model expects {expected}")]
    ParamMismatch {
        /// The checkpoint.
        file: String,
        /// The storage name.
        name: String,
        /// `shape`, `dtype` or `type` (both differ).
        what: &'static str,
        /// What the file has.
        found: String,
        /// What the model declares.
        expected: String,
    },
    /// A parameter (or the list of parameter values) cannot be used: a
    /// symbolic shape, an invalid initializer, a value of the wrong type.
    #[error("parameter `{name}`: {reason}")]
    BadParam {
        /// The parameter's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A given input does not have the type the signature asks for.
    #[error("input `{name}`: expected {expected}, got {found}")]
    InputType {
        /// The argument name.
        name: String,
        /// The expected type with dims filled in, e.g. `i32[2, 16] (B = 2, T = 16)`.
        expected: String,
        /// What was given, e.g. `f32[2, 16] from x.npy`.
        found: String,
    },
    /// Any other problem with one input.
    #[error("input `{name}`: {reason}")]
    BadInput {
        /// The argument name (or its position when out of range).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Two inputs (or an input and a `--dim`) give one dimension two values.
    #[error("dimension `{dim}` is {first} from {first_site} but {second} from {second_site}")]
    DimConflict {
        /// The dimension variable.
        dim: String,
        /// The first value seen.
        first: i64,
        /// Where it came from, e.g. ``axis 1 of input `x` ``.
        first_site: String,
        /// The conflicting value.
        second: i64,
        /// Where it came from.
        second_site: String,
    },
    /// A `--dim NAME=N` override that cannot be used.
    #[error("--dim {name}={value}: {reason}")]
    BadOverride {
        /// The dimension name as given.
        name: String,
        /// The value as given.
        value: i64,
        /// Why it is refused.
        reason: String,
    },
    /// A `where` constraint of the entry point does not hold.
    #[error("`{function}`: {message}")]
    Constraint {
        /// The entry point.
        function: String,
        /// The failed check, including the constraint's source text.
        message: String,
    },
    /// The reference interpreter refused or failed.
    #[error("`{function}` failed in the reference interpreter: {message}")]
    Interp {
        /// The entry point.
        function: String,
        /// The interpreter's message.
        message: String,
    },
    /// A run needs more memory than the machine has available (see
    /// [`crate::memory`]); nothing was allocated for it.
    #[error("{what} needs {} of memory ({detail}), but only {} is available", crate::memory::bytes(*.needed), crate::memory::bytes(*.available))]
    OutOfMemory {
        /// What needs it: an entry point, a training run, a buffer.
        what: String,
        /// Bytes needed in all.
        needed: u64,
        /// The parts, `inputs 3.0 GiB, temporaries 1.0 GiB`.
        detail: String,
        /// Bytes available.
        available: u64,
    },
    /// A compiled program failed a run-time check (an index read from the
    /// data is out of range) or cannot run at these dims (argmax over an
    /// empty axis); the message is the reference interpreter's.
    #[error("`{function}` failed: {message}")]
    Failed {
        /// The entry point (`program` until [`RuntimeError::in_function`]).
        function: String,
        /// What failed.
        message: String,
    },
    /// A tensor whose parts disagree (more or fewer values than its shape
    /// holds), or another misuse of the API by the calling code.
    #[error("{0}")]
    Invalid(String),
    /// A bug in Kiln: the scheduler or a backend failed on a checked entry
    /// point, or produced a kernel program the CPU engine refuses.
    #[error("internal compiler error in {site}: {message}")]
    Internal {
        /// What failed: ``kernel `k3_add` ``, ``the scheduler for `forward` ``.
        site: String,
        /// What went wrong.
        message: String,
    },
}

fn more(others: usize) -> String {
    match others {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    }
}

impl RuntimeError {
    /// A read failure from an I/O error.
    pub(crate) fn read(path: &std::path::Path, e: &std::io::Error) -> RuntimeError {
        RuntimeError::Read { path: path.display().to_string(), reason: io_reason(e) }
    }

    /// Names the entry point whose run a [`RuntimeError::Failed`] stopped.
    pub fn in_function(self, name: &str) -> RuntimeError {
        match self {
            RuntimeError::Failed { message, .. } => RuntimeError::Failed { function: name.to_string(), message },
            e => e,
        }
    }
}

/// The operating system's message without the ` (os error N)` suffix,
/// which tells a user nothing.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}
