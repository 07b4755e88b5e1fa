//! Where a producer or consumer has got to, kept across borrows.

/// Where one side of a ring has got to (its own position and the next
/// record sequence number): kept by an owner that outlives the borrowing
/// [`Producer`](crate::Producer) or [`Consumer`](crate::Consumer), to resume
/// it later with `resume`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// This side's byte position: the producer's `head` or the consumer's
    /// `tail` (a count that only grows).
    pub offset: u64,
    /// The sequence number of the next record to send or receive.
    pub sequence: u64,
}
