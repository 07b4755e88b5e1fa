//! One running sandbox VM: a clone restored from a runtime's golden
//! snapshot, its monitor in a process of its own, its agent's control
//! channel and its shared-memory rings.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reflow_agent_protocol::paths;
use reflow_agent_protocol::request::Request;
use reflow_vmm::cgroup::CpuGroup;
use reflow_vmm::hostile::HostileLog;
use reflow_vmm::monitor::{MonitorError, MonitorProcess, MonitorProgram, SpawnOptions};
use reflow_vmm::shm::SharedRegion;
use reflow_vmm::snapshot::state::RingMarks;
use reflow_vmm::snapshot::CheckError;
use reflow_vmm::SnapshotFiles;
use reflow_vmm::{ControlChannel, ControlError, VmConfig, VmOutcome};

use crate::worker::{ClientState, WorkerClient};

/// Longest wait for every vCPU to leave the guest when holding it.
const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// How long a stopped VM's monitor may take to say how it ended before
/// its process is killed.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// What to restore: a golden snapshot and the config it was taken with.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Path of the golden snapshot each clone is restored from.
    pub golden: PathBuf,
    /// The VM config the snapshot was taken with.
    pub config: VmConfig,
    /// CPU time each clone may use, in CPUs (a cgroup of its own; see
    /// [`reflow_vmm::cgroup`]); `None`: unlimited.
    pub cpu: Option<f64>,
}

impl VmSpec {
    /// Clones of `golden` (taken with `config`) without a CPU limit.
    pub fn new(golden: PathBuf, config: VmConfig) -> VmSpec {
        VmSpec {
            golden,
            config,
            cpu: None,
        }
    }
}

/// Whether a failure to limit a VM's CPU time was reported (once per
/// process: every clone would fail the same way).
static CPU_LIMIT_WARNED: AtomicBool = AtomicBool::new(false);

/// Whether a `/proc/<pid>/stat` line shows a process that has ended or
/// is ending: a zombie (`Z`) or dead (`X`) one, or one with `PF_EXITING`
/// among its flags (a killed process tearing down a large address space
/// stays in that state for seconds where the guest kernel is emulated).
fn exiting(stat: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    // Fields after the command's name: state, ppid, pgrp, session, tty,
    // tpgid, flags.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ended = matches!(fields.first(), Some(&("Z" | "X")));
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    ended || flags & PF_EXITING != 0
}

/// Why this host cannot limit VMs' CPU time, if it cannot (no cgroup cpu
/// controller): VMs given a limit then run without it.
pub fn cpu_limit_unavailable() -> Option<String> {
    reflow_vmm::cgroup::CpuHierarchy::find()
        .err()
        .map(|e| e.to_string())
}

/// A group limiting a clone's CPU time to `cpus`, or `None` (with one
/// warning per process) where this host cannot: the VM then runs without
/// the limit.
fn cpu_group(cpus: Option<f64>) -> Option<Arc<CpuGroup>> {
    match CpuGroup::create(cpus?) {
        Ok(group) => Some(Arc::new(group)),
        Err(e) => {
            if !CPU_LIMIT_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot limit sandbox VMs' CPU time; they run without the limit");
            }
            None
        }
    }
}

/// Why a sandbox VM could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The golden snapshot is damaged or unreadable.
    #[error("the golden snapshot: {0}")]
    Snapshot(#[from] CheckError),
    /// The monitor process could not be started or could not restore the
    /// VM.
    #[error("cannot restore the VM: {0}")]
    Restore(MonitorError),
    /// The VM stopped before its agent connected (how it stopped).
    #[error("the VM stopped before its agent connected: {0}")]
    Died(String),
    /// The agent did not connect within the restore timeout (given).
    #[error("the VM's agent did not connect within {0:?}")]
    Timeout(Duration),
}

/// Why a clone's snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A message is in flight, or the worker was abandoned.
    #[error("the worker is not idle: a snapshot now would lose a message")]
    Busy,
    /// A file of the snapshot could not be created.
    #[error("creating {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The monitor could not write it (why).
    #[error(transparent)]
    Monitor(MonitorError),
}

/// Why the agent could not tell whether the worker process lives.
#[derive(Debug, thiserror::Error)]
pub enum WorkerCheckError {
    /// Reading the worker's ready file failed.
    #[error("the worker's ready file: {0}")]
    ReadyFile(ControlError),
    /// The ready file does not hold a pid.
    #[error("the worker's ready file says {0:?}")]
    BadPid(String),
    /// Reading the process's `/proc/<pid>/stat` failed.
    #[error("/proc/{pid}: {source}")]
    Proc {
        /// The worker's pid.
        pid: u32,
        /// What the control channel said.
        source: ControlError,
    },
}

/// A running clone, its VM in a monitor process of its own
/// ([`reflow_vmm::monitor`]). Dropping it ends that process.
pub struct SandboxVm {
    control: ControlChannel,
    shared: Arc<SharedRegion>,
    monitor: Arc<MonitorProcess>,
    ready_after: Duration,
    worker: ClientState,
    /// The VM's cgroup; dropped (removed) after its process has ended.
    cpu: Option<Arc<CpuGroup>>,
    /// Its process has been ended (finish, kill or drop).
    finished: bool,
}

/// Stops a sandbox VM from any thread, as if it crashed: its monitor
/// process is killed, and a message it is running fails with "the VM
/// stopped".
#[derive(Clone)]
pub struct StopHandle(Arc<MonitorProcess>);

impl StopHandle {
    /// Ends the VM's monitor process now.
    pub fn stop(&self) {
        self.0.kill();
    }
}

impl SandboxVm {
    /// Restores a clone of `spec` in a monitor process of its own and
    /// waits (at most `timeout`) until its agent has taken fresh entropy
    /// and time over the control channel: only then may a script be
    /// loaded (the worker reseeds from it).
    pub fn restore(spec: &VmSpec, timeout: Duration) -> Result<SandboxVm, SandboxError> {
        SandboxVm::restore_as(spec, timeout, false)
    }

    /// [`SandboxVm::restore`], for a clone that will be snapshotted
    /// ([`SandboxVm::snapshot`]) in the background (a component golden's
    /// build): its monitor runs under the seccomp lists that allow writing
    /// a snapshot, which other clones never get, and at idle CPU priority
    /// (`SCHED_IDLE`), so it uses only CPU time running messages leave.
    pub fn restore_to_snapshot(
        spec: &VmSpec,
        timeout: Duration,
    ) -> Result<SandboxVm, SandboxError> {
        SandboxVm::restore_as(spec, timeout, true)
    }

    fn restore_as(
        spec: &VmSpec,
        timeout: Duration,
        snapshots: bool,
    ) -> Result<SandboxVm, SandboxError> {
        let started = Instant::now();
        let deadline = started + timeout;
        // Checked here, once per bridge process; the monitor trusts it.
        reflow_vmm::snapshot::check_memory(&spec.golden)?;
        let program = MonitorProgram::get().map_err(SandboxError::Restore)?;
        let cpu = cpu_group(spec.cpu);
        let options = SpawnOptions {
            cpu_group: cpu.as_deref().map(CpuGroup::dir),
            memory_verified: true,
            snapshots,
            background: snapshots,
        };
        let monitor = MonitorProcess::spawn(&program, &spec.golden, &spec.config, &options)
            .map_err(SandboxError::Restore)?;
        let monitor = Arc::new(monitor);
        let waited = |e: MonitorError| match e {
            MonitorError::Timeout => SandboxError::Timeout(timeout),
            MonitorError::Ended(how) => SandboxError::Died(how),
            e => SandboxError::Restore(e),
        };
        let shared = monitor.wait_restored(deadline).map_err(waited)?;
        let control = monitor.wait_ready(deadline).map_err(waited)?;
        // A snapshot taken after its worker used the rings left them
        // further along: the client starts where they stood.
        let rings = monitor.rings();
        let worker = ClientState::at(rings.host_to_guest.into(), rings.guest_to_host.into());
        Ok(SandboxVm {
            control,
            shared,
            monitor,
            ready_after: started.elapsed(),
            worker,
            cpu,
            finished: false,
        })
    }

    /// Runs `f` with the client of this VM's worker; the client goes on
    /// from where the previous call left it, and its waits end early
    /// ([`crate::WorkerError::Died`]) if the VM stops.
    pub fn with_worker<R>(&mut self, f: impl FnOnce(&mut WorkerClient<'_>) -> R) -> R {
        let monitor = &self.monitor;
        let alive = || monitor.is_alive();
        let mut client = WorkerClient::resume(
            self.shared.ring_region(),
            &self.shared.layout(),
            self.worker,
        )
        .with_liveness(&alive);
        let result = f(&mut client);
        self.worker = client.state();
        result
    }

    /// Holds the guest's vCPUs (it uses no CPU until [`SandboxVm::release`];
    /// what a pool does with the clones it keeps ready).
    pub fn hold(&self) -> Result<(), MonitorError> {
        self.monitor.hold(HOLD_LIMIT)
    }

    /// Lets a held guest run again.
    pub fn release(&self) {
        self.monitor.release();
    }

    /// The VM's monitor, to release it from another thread.
    pub fn gate(&self) -> Arc<MonitorProcess> {
        self.monitor.clone()
    }

    /// The agent's control channel.
    pub fn control(&mut self) -> &mut ControlChannel {
        &mut self.control
    }

    /// Hostile input the monitor saw from this guest.
    pub fn hostile(&self) -> &HostileLog {
        self.monitor.hostile()
    }

    /// Whether the guest has sent its devices input they had to refuse
    /// ([`HostileLog`]): such a VM is discarded, never kept or lent again.
    pub fn misbehaved(&self) -> bool {
        self.hostile().count() > 0
    }

    /// The id of the VM's monitor process.
    pub fn monitor_pid(&self) -> u32 {
        self.monitor.pid()
    }

    /// Whether the monitor is still running the guest.
    pub fn is_alive(&self) -> bool {
        self.monitor.is_alive()
    }

    /// Host time from the start of the restore to the agent being ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// A handle that stops this VM from any thread (as if it crashed: a
    /// message it is running fails with "the VM stopped").
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.monitor.clone())
    }

    /// Whether the guest's script worker process has ended while the VM
    /// lives on (asked of the agent: the pid in the worker's ready file,
    /// then that pid in `/proc`); `Err` says why the agent could not tell.
    pub fn worker_gone(&mut self) -> Result<bool, WorkerCheckError> {
        // Generous: the guest may be busy (this runs after a timeout), and
        // its kernel is emulated on some hosts.
        const ASK: Duration = Duration::from_secs(10);
        let ready = Request::ReadFile {
            path: paths::ready_file(paths::WORKER_READY),
        };
        let text = self
            .control
            .request(&ready, ASK)
            .map_err(WorkerCheckError::ReadyFile)?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| WorkerCheckError::BadPid(text.clone()))?;
        let stat = Request::ReadFile {
            path: format!("/proc/{pid}/stat"),
        };
        match self.control.request(&stat, ASK) {
            Ok(stat) => Ok(exiting(&stat)),
            // The agent answered: no such process.
            Err(ControlError::Refused { .. }) => Ok(true),
            Err(source) => Err(WorkerCheckError::Proc { pid, source }),
        }
    }

    /// The cgroup directory limiting the VM's CPU time, if any.
    pub fn cpu_group(&self) -> Option<&std::path::Path> {
        self.cpu.as_deref().map(CpuGroup::dir)
    }

    /// Stops the VM (if it still runs), ends its process and returns how
    /// it ended; `None` once it has been asked before, or if the monitor
    /// never said.
    pub fn finish(&mut self) -> Option<VmOutcome> {
        self.stop_and_join()
    }

    /// Writes this clone's snapshot into `dir` (`state.bin`, `memory.bin`;
    /// the directory must exist and be private), recording where its
    /// rings' ends stand, so that clones of it go on from here; the VM
    /// ends. The worker must be idle (no message in flight), and the clone
    /// restored with [`SandboxVm::restore_to_snapshot`].
    pub fn snapshot(mut self, dir: &Path, timeout: Duration) -> Result<(), SnapshotError> {
        let (tx, rx) = self.worker.positions();
        let rings = RingMarks {
            host_to_guest: tx.into(),
            guest_to_host: rx.into(),
        };
        if self.worker.is_poisoned() || !self.shared.rings_idle_at(&rings) {
            return Err(SnapshotError::Busy);
        }
        let files = SnapshotFiles::create(dir)
            .map_err(|(path, source)| SnapshotError::File { path, source })?;
        let written = self
            .monitor
            .snapshot(&files, rings, Instant::now() + timeout)
            .map_err(SnapshotError::Monitor);
        self.stop_and_join();
        written
    }

    /// Stops the VM and returns how it ended.
    pub fn kill(mut self) -> Option<VmOutcome> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<VmOutcome> {
        if std::mem::replace(&mut self.finished, true) {
            return None;
        }
        self.monitor.finish(FINISH_GRACE)
    }
}

impl Drop for SandboxVm {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dying_or_dead_process_is_exiting() {
        let running = "24 (node) R 1 0 0 0 -1 4194560 9534 0 585";
        let dying = "24 (node) R 1 0 0 0 -1 4195596 9533 0 586";
        let zombie = "24 (python3) Z 1 0 0 0 -1 4194560 1 0 0";
        let odd_name = "24 (a) b) S 1 0 0 0 -1 4194560 1 0 0";
        assert!(!super::exiting(running));
        assert!(super::exiting(dying));
        assert!(super::exiting(zombie));
        assert!(!super::exiting(odd_name));
        assert!(!super::exiting("garbage"));
    }
}
