//! Snapshotting a running VM on request from another thread, into files
//! another process opened: how a jailed monitor process, which may not
//! create a file, writes the snapshot of a clone that has loaded a script
//! (a component golden). The VM's event loop takes the request, pauses the
//! vCPUs, writes memory then state, answers, and ends the VM: a VM that
//! was snapshotted does not run on (its clones do).
//!
//! Only a VM whose owner called [`super::Vm::allow_snapshots`] takes
//! requests; its event loop then runs under a seccomp filter that also
//! allows reading the vCPUs' and the VM's KVM state and writing files
//! (`vmm_snapshot`, `monitor_snapshot`), which ordinary clones never get.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use super::run::StopHandle;
use crate::snapshot::state::RingMarks;
use crate::snapshot::{private, MEMORY_FILE, STATE_FILE};

/// The two files a snapshot is written into, open for writing and empty.
pub struct SnapshotFiles {
    /// Receives `state.bin`.
    pub state: File,
    /// Receives `memory.bin`.
    pub memory: File,
}

impl SnapshotFiles {
    /// `state.bin` and `memory.bin` created empty in `dir` (private, no
    /// symlink followed: [`private::create_file`]); on failure, the path
    /// that failed and why.
    pub fn create(dir: &Path) -> Result<SnapshotFiles, (PathBuf, std::io::Error)> {
        let create = |name: &str| {
            let path = dir.join(name);
            private::create_file(&path).map_err(|e| (path, e))
        };
        Ok(SnapshotFiles {
            state: create(STATE_FILE)?,
            memory: create(MEMORY_FILE)?,
        })
    }
}

/// One request: where to write and what to record about the rings.
pub(crate) struct SnapshotJob {
    pub files: SnapshotFiles,
    pub rings: RingMarks,
    done: Sender<Result<(), String>>,
}

impl SnapshotJob {
    /// Answers the requester (who may have given up: then nobody hears).
    pub fn answer(self, result: Result<(), String>) {
        let _ = self.done.send(result);
    }
}

/// Where a request waits for the event loop.
pub(crate) type SnapshotSlot = Arc<Mutex<Option<SnapshotJob>>>;

/// Asks a running VM (from any thread) to snapshot itself and end.
#[derive(Clone)]
pub struct SnapshotHandle {
    pub(crate) slot: SnapshotSlot,
    pub(crate) stop: StopHandle,
}

impl SnapshotHandle {
    /// Asks the VM to pause, write its snapshot into `files` (recording
    /// that its rings' ends stood at `rings`) and end; the answer comes on
    /// the receiver once the files are written (or why not). A second
    /// request before the first was taken replaces it (the first's
    /// receiver then hears nothing).
    pub fn request(&self, files: SnapshotFiles, rings: RingMarks) -> Receiver<Result<(), String>> {
        let (done, answer) = mpsc::channel();
        let job = SnapshotJob { files, rings, done };
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
        self.stop.stop();
        answer
    }
}

/// Takes the pending request, if any.
pub(crate) fn take(slot: &SnapshotSlot) -> Option<SnapshotJob> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}
