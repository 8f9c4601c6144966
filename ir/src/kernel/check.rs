//! Run-time index checks: an index taken from a tensor's values (a gather's
//! or one_hot's index, cross-entropy's targets) that falls outside its
//! range fails the program, with the reference interpreter's message,
//! instead of silently reading a clamped element.
//!
//! An [`Expr::Checked`](super::Expr::Checked) yields its index clamped into
//! range ([`Checked::clamp_max`]), so memory stays in bounds whatever happens, and on a miss records
//! the failure in the program's status buffer ([`BufKind::Status`](super::BufKind::Status),
//! [`STATUS_LEN`] i64 words, zero before the run):
//!
//! - word 0 is `code(site, pos)` of the first failure: the largest code
//!   wins (an atomic max), and codes order failures as the reference
//!   interpreter meets them: earlier sites first, then earlier elements of
//!   the index tensor (`pos`, its row-major position);
//! - word 1 is the offending index, stored by whoever raised word 0.
//!
//! Two failures racing inside one launch may leave word 1 holding the
//! other one's value; in every other case the report is the reference's.
//! The runtime reads the buffer after the run ([`fault`]). Nothing here
//! runs in a kernel that has no data-dependent index.

use super::{BufKind, Mem, Program};
use crate::interp::InterpError;

/// Elements of the status buffer.
pub const STATUS_LEN: u64 = 2;

/// Bits of `pos` in a code; larger positions share the last value.
pub const POS_BITS: u32 = 40;

/// A data-dependent index (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// The index (i64).
    pub index: super::Expr,
    /// The exclusive upper bound (0: every index fails).
    pub bound: u64,
    /// Which [`Program::checks`] entry this is.
    pub site: u32,
    /// The index's row-major position in its index tensor (i64).
    pub pos: super::Expr,
    /// The status buffer, a kernel argument of [`STATUS_LEN`] i64s.
    pub status: Mem,
}

impl Checked {
    /// The largest value the clamped index takes: `bound - 1`, or 0 when
    /// there is no valid index (the consumer must not read with it).
    pub fn clamp_max(&self) -> u64 {
        self.bound.saturating_sub(1)
    }
}

/// What a check site reports: the node it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// The node as the reference interpreter names it (`%5 = gather`).
    pub node: String,
    /// Its index bound.
    pub bound: u64,
}

/// The largest `pos` a code distinguishes.
pub const POS_MAX: u64 = (1 << POS_BITS) - 1;

/// The constant a backend subtracts `min(pos, POS_MAX)` from to get
/// `code(site, pos)`: `!(site << POS_BITS)`, whose low bits are all ones.
pub fn code_base(site: u32) -> u64 {
    !(u64::from(site) << POS_BITS)
}

/// The status code of a failure at `pos` of `site`: larger for earlier
/// failures, never 0 (0 means none).
pub fn code(site: u32, pos: u64) -> u64 {
    code_base(site) - pos.min(POS_MAX)
}

/// An out-of-range index found by a run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", InterpError::IndexOutOfRange { node: node.clone(), value: *value as f64, bound: *bound as usize })]
pub struct Fault {
    /// The node (`%5 = gather`).
    pub node: String,
    /// The offending index.
    pub value: i64,
    /// The exclusive upper bound.
    pub bound: u64,
}

/// The program's status buffer, if any kernel checks an index.
pub fn status_buffer(p: &Program) -> Option<usize> {
    p.buffers.iter().position(|b| b.kind == BufKind::Status)
}

/// [`fault`] of status words stored as little-endian bytes.
pub fn fault_in_bytes(p: &Program, bytes: &[u8]) -> Option<Fault> {
    let words: Vec<u64> = bytes.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))).collect();
    fault(p, &words)
}

/// The failure a finished run recorded in its status words, if any.
pub fn fault(p: &Program, status: &[u64]) -> Option<Fault> {
    let (&c, &value) = (status.first()?, status.get(1)?);
    if c == 0 {
        return None;
    }
    let site = !c >> POS_BITS;
    Some(match p.checks.get(site as usize) {
        Some(s) => Fault { node: s.node.clone(), value: value as i64, bound: s.bound },
        None => Fault { node: format!("check site {site}"), value: value as i64, bound: 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_order_failures_as_the_reference_meets_them() {
        assert!(code(0, 5) > code(0, 6) && code(0, 6) > code(1, 0) && code(1, u64::MAX) > 0);
        let p = Program { checks: vec![Site { node: "%1 = gather".into(), bound: 4 }, Site { node: "%3 = one_hot".into(), bound: 7 }], ..Default::default() };
        assert_eq!(fault(&p, &[0, 0]), None);
        let f = fault(&p, &[code(1, 2), (-3i64) as u64]).expect("a fault");
        assert_eq!(f.to_string(), "%3 = one_hot: index -3 out of range 0..7");
    }
}
