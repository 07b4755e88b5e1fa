//! Where a producer or consumer has got to, kept across borrows, and
//! the state both sides keep the same way.

use crate::layout::RingLayout;
use crate::region::Region;
use crate::wait::Backoff;

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

/// One side of one ring: the region, where the ring lies in it, this side's
/// own position (never re-read from shared memory), and how it waits.
pub(crate) struct Side<'a> {
    pub region: &'a Region,
    pub ring: RingLayout,
    /// The producer's head or the consumer's tail.
    pub offset: u64,
    /// The next record's sequence number.
    pub sequence: u64,
    pub backoff: Backoff,
}

impl<'a> Side<'a> {
    /// This side of `ring` in `region`, going on from `at`.
    pub fn at(region: &'a Region, ring: RingLayout, at: Position) -> Side<'a> {
        Side {
            region,
            ring,
            offset: at.offset,
            sequence: at.sequence,
            backoff: Backoff::default(),
        }
    }

    /// Where this side has got to.
    pub fn position(&self) -> Position {
        Position {
            offset: self.offset,
            sequence: self.sequence,
        }
    }
}
