//! One VM per monitor process. A sandbox VM's vCPUs, event loop and
//! device models run in a process of their own (this crate's `reflow-vmm`
//! binary, started with [`MONITOR_ARG`]), so a guest that breaks out of
//! device emulation holds one VM's monitor, not the bridge with every other
//! VM's memory, every actor's state and the Redis credentials.
//!
//! The bridge ([`MonitorProcess`]) and the monitor ([`child`]) talk over a
//! `SOCK_SEQPACKET` socket pair ([`wire`]): the bridge sends the snapshot
//! and config (or, for a golden boot, only the config: the monitor boots
//! the kernel); the monitor restores the VM and hands back the shared
//! region's memfd (sealed against shrinking, so the bridge's mapping cannot
//! be pulled from under it) and the guest doorbell, then each agent
//! connection that finished its handshake. Messages cross the ring in
//! shared memory as before, zero-copy: the monitor is not on that path.
//! The bridge can always end the process (`SIGKILL` through a pidfd).
//! A monitor started for it may be asked to write its VM's snapshot into
//! two files the bridge hands over (golden and component golden builds).

pub mod child;
mod console_pipe;
pub mod harden;
mod lifeline;
mod parent;
pub mod stderr_relay;
pub mod wire;

#[cfg(test)]
mod jail_tests;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use console_pipe::{ConsolePipe, ConsolePipeError};
pub use parent::{start, MonitorProcess, SpawnOptions};

/// The first argument that makes `reflow-vmm` (or a binary that forwards
/// to [`child::serve_inherited`]) a monitor process.
pub const MONITOR_ARG: &str = "__monitor";

/// Environment variable naming the monitor binary (a `reflow-vmm`).
pub const MONITOR_ENV: &str = "REFLOW_VMM";

/// Why a monitor process could not run a VM.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// No monitor binary was found (where it was looked for).
    #[error("cannot find the monitor binary (reflow-vmm): {0}; build it (cargo build -p reflow-vmm) or set {MONITOR_ENV}")]
    NotFound(String),
    /// Starting the process failed.
    #[error("starting the monitor process {program}: {source}")]
    Spawn {
        /// The program started.
        program: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The socket pair or pidfd could not be made.
    #[error("the monitor process's socket: {0}")]
    Socket(std::io::Error),
    /// The bridge's reader thread could not be started.
    #[error("starting the monitor reader thread: {0}")]
    Thread(std::io::Error),
    /// The monitor's standard error could not be relayed.
    #[error(transparent)]
    Stderr(#[from] stderr_relay::RelayError),
    /// A message could not be sent or made sense of.
    #[error(transparent)]
    Wire(wire::WireError),
    /// The monitor could not restore the VM (why).
    #[error("the monitor could not restore the VM: {0}")]
    Restore(String),
    /// The process or its VM ended (how).
    #[error("{0}")]
    Ended(String),
    /// The vCPUs could not be held (why).
    #[error("holding the VM's vCPUs: {0}")]
    Hold(String),
    /// The VM could not be snapshotted (why).
    #[error("snapshotting the VM: {0}")]
    Snapshot(String),
    /// What was waited for did not happen in time.
    #[error("the monitor process did not answer in time")]
    Timeout,
}

/// The program to start as a monitor process, and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorProgram {
    /// The executable.
    pub path: PathBuf,
    /// Its arguments (starting with [`MONITOR_ARG`]).
    pub args: Vec<String>,
}

static PROGRAM: OnceLock<MonitorProgram> = OnceLock::new();

impl MonitorProgram {
    /// The binary at `path` (a `reflow-vmm`, or one that serves
    /// [`MONITOR_ARG`] the same way), started with [`MONITOR_ARG`].
    pub fn at(path: impl Into<PathBuf>) -> MonitorProgram {
        MonitorProgram {
            path: path.into(),
            args: vec![MONITOR_ARG.into()],
        }
    }

    /// Makes `program` what [`MonitorProgram::get`] returns in this process
    /// (a binary that serves [`MONITOR_ARG`] itself sets its own path);
    /// `false` if one was set already.
    pub fn set(program: MonitorProgram) -> bool {
        PROGRAM.set(program).is_ok()
    }

    /// The monitor program: the one [`MonitorProgram::set`] made, else
    /// `$REFLOW_VMM`, else a `reflow-vmm` beside this executable or one
    /// directory up (where cargo puts binaries for its test executables).
    pub fn get() -> Result<MonitorProgram, MonitorError> {
        if let Some(p) = PROGRAM.get() {
            return Ok(p.clone());
        }
        if let Some(path) = std::env::var_os(MONITOR_ENV) {
            return Ok(MonitorProgram::at(path));
        }
        let exe = std::env::current_exe()
            .map_err(|e| MonitorError::NotFound(format!("this executable's path: {e}")))?;
        let mut looked = Vec::new();
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("reflow-vmm");
            if candidate.is_file() {
                return Ok(MonitorProgram::at(candidate));
            }
            looked.push(candidate.display().to_string());
        }
        Err(MonitorError::NotFound(format!(
            "not at {}",
            looked.join(" or ")
        )))
    }
}
