//! The errors of ring operations.

use std::time::Duration;

use crate::record::RecordError;
use crate::region::OutOfBounds;

/// Errors of ring operations. `Full` and `Timeout` are backpressure; all
/// others mean the other side broke the protocol (or the caller misused it)
/// and the ring must not be used further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The payload can never fit: its record would exceed the ring's
    /// capacity (or the payload exceeds `u32::MAX` bytes).
    #[error("a {len}-byte record does not fit a {capacity}-byte ring")]
    TooLarge {
        /// Size of the payload that was offered, in bytes.
        len: u64,
        /// The ring's data area size in bytes.
        capacity: u64,
    },
    /// Not enough free space right now; retry once the consumer has
    /// released records.
    #[error("ring full: {needed} bytes needed, {free} free")]
    Full {
        /// Bytes the next write needs (the record, or the padding to the
        /// ring's end).
        needed: u64,
        /// Bytes currently free in the ring.
        free: u64,
    },
    /// A waiting send found no room before its timeout (the timeout given).
    #[error("ring still full after {0:?}")]
    Timeout(Duration),
    /// The other side's published position is impossible (the reason).
    #[error("ring positions are inconsistent: {0}")]
    Corrupt(&'static str),
    /// A record's sequence number is not the one expected next.
    #[error("record out of sequence: expected {expected}, found {found}")]
    Sequence {
        /// The sequence number this side expected.
        expected: u64,
        /// The sequence number the record carried.
        found: u64,
    },
    /// A record's header or metadata is malformed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// An access fell outside the shared region.
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
}
