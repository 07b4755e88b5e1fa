//! The errors of ring operations.

use std::time::Duration;

use crate::record::RecordError;
use crate::region::OutOfBounds;

/// Errors of ring operations. `Full` and `Timeout` are backpressure; all
/// others mean the other side broke the protocol (or the caller misused it)
/// and the ring must not be used further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a {len}-byte record does not fit a {capacity}-byte ring")]
    TooLarge { len: u64, capacity: u64 },
    #[error("ring full: {needed} bytes needed, {free} free")]
    Full { needed: u64, free: u64 },
    #[error("ring still full after {0:?}")]
    Timeout(Duration),
    #[error("ring positions are inconsistent: {0}")]
    Corrupt(&'static str),
    #[error("record out of sequence: expected {expected}, found {found}")]
    Sequence { expected: u64, found: u64 },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
}
