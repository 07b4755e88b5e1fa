//! Where a producer or consumer has got to, kept across borrows.

/// Where one side of a ring has got to (its own position and the next
/// record sequence number): kept by an owner that outlives the borrowing
/// [`Producer`] or [`Consumer`], to resume it later with `resume`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub sequence: u64,
}
