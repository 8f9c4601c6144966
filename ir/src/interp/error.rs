//! What can go wrong while interpreting a graph.

use crate::verify::VerifyError;
use thiserror::Error;

/// An error from [`super::run`]; node-level errors name the node as
/// `%12 = gather` so the failing step can be found in the IR text.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum InterpError {
    /// The graph failed verification; nothing was run.
    #[error("invalid graph: {0}")]
    Invalid(#[from] VerifyError),
    /// A shape mentions a dimension variable the caller did not bind, or
    /// its size overflows 64 bits.
    #[error(transparent)]
    Dim(#[from] crate::DimError),
    /// A shape evaluated to a negative size.
    #[error("dimension `{expr}` evaluates to {value}")]
    NegativeDim {
        /// The symbolic size.
        expr: String,
        /// Its value under the bindings.
        value: i64,
    },
    /// The caller passed the wrong number of inputs.
    #[error("the graph takes {expected} inputs, got {got}")]
    InputCount {
        /// `g.inputs.len()`.
        expected: usize,
        /// Inputs given.
        got: usize,
    },
    /// An input's dtype or shape disagrees with `g.inputs[index]`.
    #[error("input {index}: expected {expected}, got {got}")]
    InputMismatch {
        /// Input position.
        index: usize,
        /// The declared type, with dims evaluated.
        expected: String,
        /// What was passed.
        got: String,
    },
    /// A `param` node refers to a parameter the caller did not pass.
    #[error("param {index} `{name}` is missing: {given} params given")]
    MissingParam {
        /// Parameter index.
        index: usize,
        /// Its name in the module.
        name: String,
        /// How many params were passed.
        given: usize,
    },
    /// A parameter's dtype or shape disagrees with the module's declaration.
    #[error("param {index} `{name}`: expected {expected}, got {got}")]
    ParamMismatch {
        /// Parameter index.
        index: usize,
        /// Its name in the module.
        name: String,
        /// The declared type, with dims evaluated.
        expected: String,
        /// What was passed.
        got: String,
    },
    /// An input or parameter holds a value its integer or bool dtype cannot.
    #[error("{what}, element {pos}: {value} is not a {dtype} value")]
    NotRepresentable {
        /// `input 2` or `param 0 `wte``.
        what: String,
        /// Flat element position.
        pos: usize,
        /// The value.
        value: f64,
        /// The declared dtype.
        dtype: String,
    },
    /// A gather or one_hot index outside `0..bound`.
    #[error("{node}: index {value} out of range 0..{bound}")]
    IndexOutOfRange {
        /// The node.
        node: String,
        /// The offending index.
        value: f64,
        /// The exclusive upper bound.
        bound: usize,
    },
    /// Integer division (or integer power with a negative exponent) by zero.
    #[error("{node}: integer division by zero")]
    DivisionByZero {
        /// The node.
        node: String,
    },
    /// Any other runtime failure of a node (slice bounds, empty max, ...).
    #[error("{node}: {msg}")]
    Node {
        /// The node.
        node: String,
        /// What went wrong.
        msg: String,
    },
    /// A failure inside one step of a scan body.
    #[error("{node}, step {step}: {inner}")]
    InScan {
        /// The scan node.
        node: String,
        /// The loop iteration.
        step: usize,
        /// The error in the body.
        inner: Box<InterpError>,
    },
}

/// An op-level failure, before the node that raised it is known.
#[derive(Debug)]
pub(crate) enum OpError {
    /// See [`InterpError::IndexOutOfRange`].
    IndexOutOfRange { value: f64, bound: usize },
    /// See [`InterpError::DivisionByZero`].
    DivisionByZero,
    /// See [`InterpError::Node`].
    Other(String),
    /// An error that already carries its context (from a scan body).
    Full(InterpError),
}

impl From<String> for OpError {
    fn from(s: String) -> OpError {
        OpError::Other(s)
    }
}

impl OpError {
    /// Attaches the node's description.
    pub(crate) fn at(self, node: String) -> InterpError {
        match self {
            OpError::IndexOutOfRange { value, bound } => InterpError::IndexOutOfRange { node, value, bound },
            OpError::DivisionByZero => InterpError::DivisionByZero { node },
            OpError::Other(msg) => InterpError::Node { node, msg },
            OpError::Full(e) => e,
        }
    }
}
