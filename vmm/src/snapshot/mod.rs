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

pub mod age;
pub mod digest;
pub mod file;
pub mod golden;
pub mod lock;
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

/// Why a snapshot's memory file could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Reading the state file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file is damaged or of another format.
    #[error("{path}: {source}")]
    State {
        /// The state file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: SnapshotFileError,
    },
    /// The memory file could not be read, or its digest is not the one
    /// the state recorded.
    #[error(transparent)]
    Memory(#[from] memory::SnapshotMemoryError),
}

/// Checks the snapshot in `dir`: its state file, and its memory file
/// against the digest the state recorded (hashed once per process and
/// file version). What a bridge does before it has a monitor process
/// restore the snapshot without checking it again.
pub fn check_memory(dir: &std::path::Path) -> Result<(), CheckError> {
    let state_path = dir.join(STATE_FILE);
    let bytes = private::read(&state_path).map_err(|source| CheckError::Io {
        path: state_path.clone(),
        source,
    })?;
    let state = file::decode(&bytes).map_err(|source| CheckError::State {
        path: state_path,
        source,
    })?;
    Ok(memory::verify(
        &dir.join(MEMORY_FILE),
        &state.memory_sha256,
    )?)
}
