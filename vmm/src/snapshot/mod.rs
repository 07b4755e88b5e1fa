//! Snapshots: pause a VM, write its state and memory, restore clones.
//!
//! A snapshot is a directory with two files:
//! - `state.bin`: the versioned, checksummed state ([`file`](mod@file)): vCPUs, the
//!   in-kernel interrupt controllers, PIT and clock, device state;
//! - `memory.bin`: guest RAM, region after region, zero pages left as holes;
//!   its [`digest`] is recorded in `state.bin` and checked on first use.
//!
//! Restoring maps `memory.bin` `MAP_PRIVATE`, so every clone shares the pages
//! it has not written and the snapshot itself is never modified
//! ([`memory`]). [`golden`] keeps one snapshot per set of boot inputs in the
//! cache directory and creates it on first use. Every file and directory
//! of a snapshot is private to its user ([`private`]).

pub mod digest;
pub mod file;
pub mod golden;
pub mod memory;
pub mod private;
pub mod state;

pub use file::SnapshotFileError;
pub use golden::{GoldenError, GoldenSnapshot};
pub use state::SnapshotState;

/// File names inside a snapshot directory.
pub const STATE_FILE: &str = "state.bin";
/// Name of the guest RAM file: its regions in address order, all-zero pages
/// left as holes.
pub const MEMORY_FILE: &str = "memory.bin";
