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

use crate::process::{ProcessError, ProcessOutcome, ProcessSpec, ProcessWorker};
use crate::warmup::WarmupPolicy;
use crate::worker::{ClientState, WorkerClient};

/// Longest wait for every vCPU to leave the guest when holding it.
const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// How long a stopped VM's monitor may take to say how it ended before
/// its process is killed.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// What to restore: a golden snapshot and the config it was taken with;
/// or, for [`Isolation::Process`], the worker to start as a jailed host
/// process (its memory and ring sizes in `config`).
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Path of the golden snapshot each clone is restored from (for a
    /// process worker: its root image).
    pub golden: PathBuf,
    /// The VM config the snapshot was taken with (for a process worker:
    /// its memory limit and ring size, `mem_mib` and `shm_mib`).
    pub config: VmConfig,
    /// CPU time each clone may use, in CPUs (a cgroup of its own; see
    /// [`reflow_vmm::cgroup`]); `None`: unlimited.
    pub cpu: Option<f64>,
    /// A VM, or a jailed host process.
    pub isolation: Isolation,
}

/// What runs an actor's worker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Isolation {
    /// A microVM restored from [`VmSpec::golden`].
    #[default]
    Vm,
    /// A jailed host process (see [`crate::process`]) of this language,
    /// on the files of the root image at [`VmSpec::golden`], with a `/tmp`
    /// of `tmp_mib`.
    Process {
        /// The worker's language.
        language: crate::Language,
        /// Its `/tmp` size, MiB.
        tmp_mib: u32,
    },
}

impl VmSpec {
    /// Clones of `golden` (taken with `config`) without a CPU limit.
    pub fn new(golden: PathBuf, config: VmConfig) -> VmSpec {
        VmSpec {
            golden,
            config,
            cpu: None,
            isolation: Isolation::Vm,
        }
    }

    /// Workers of `language` run as jailed host processes on the files of
    /// `image` (a language's `rootfs.ext4`), each allowed `mem_mib` of
    /// memory and a ring of `shm_mib`, without a CPU limit.
    pub fn process(
        language: crate::Language,
        image: PathBuf,
        mem_mib: u32,
        shm_mib: u32,
    ) -> VmSpec {
        let mut config = VmConfig::new(&image);
        config.mem_mib = mem_mib;
        config.shm_mib = shm_mib;
        config.vcpus = 1;
        VmSpec {
            golden: image,
            config,
            cpu: None,
            isolation: Isolation::Process {
                language,
                tmp_mib: PROCESS_TMP_MIB,
            },
        }
    }
}

/// [`Isolation`] without its parameters: what a pool's clones are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IsolationKind {
    /// MicroVMs.
    #[default]
    Vm,
    /// Jailed host processes.
    Process,
}

impl Isolation {
    /// Which kind this is.
    pub fn kind(&self) -> IsolationKind {
        match self {
            Isolation::Vm => IsolationKind::Vm,
            Isolation::Process { .. } => IsolationKind::Process,
        }
    }
}

impl IsolationKind {
    /// The kind reflow.yaml's `isolation` key names (`vm`, `process`).
    pub fn named(name: &str) -> Option<IsolationKind> {
        match name {
            "vm" => Some(IsolationKind::Vm),
            "process" => Some(IsolationKind::Process),
            _ => None,
        }
    }

    /// What a sandbox of this kind is called in a user's error message.
    pub fn noun(self) -> &'static str {
        match self {
            IsolationKind::Vm => "VM",
            IsolationKind::Process => "worker process",
        }
    }
}

/// How a sandbox ended, as far as the host can tell.
#[derive(Debug, Clone)]
pub enum SandboxOutcome {
    /// A VM's, from its monitor.
    Vm(VmOutcome),
    /// A process worker's, from its jail's status.
    Process(ProcessOutcome),
}

impl std::fmt::Display for SandboxOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxOutcome::Vm(o) => o.fmt(f),
            SandboxOutcome::Process(o) => o.fmt(f),
        }
    }
}

impl std::fmt::Display for IsolationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IsolationKind::Vm => "vm",
            IsolationKind::Process => "process",
        })
    }
}

/// A process worker's `/tmp`, MiB (what a VM's guest has in its tmpfs).
pub const PROCESS_TMP_MIB: u32 = 64;

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
    /// A process worker could not be started.
    #[error("cannot start the process worker: {0}")]
    Process(ProcessError),
    /// The agent did not connect within the restore timeout (given).
    #[error("the VM's agent did not connect within {0:?}")]
    Timeout(Duration),
}

/// Why a sandbox could not be held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The VM's monitor did not hold its vCPUs.
    #[error(transparent)]
    Monitor(MonitorError),
    /// The process worker could not be stopped.
    #[error("the worker process cannot be stopped (it ended, or this host has no pidfds)")]
    Process,
}

/// Why a clone's snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A message is in flight, or the worker was abandoned.
    #[error("the worker is not idle: a snapshot now would lose a message")]
    Busy,
    /// The worker runs as a host process, which has no snapshot.
    #[error("a process worker cannot be snapshotted")]
    NotAVm,
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
/// ([`reflow_vmm::monitor`]), or a worker run as a jailed host process
/// ([`Isolation::Process`]). Dropping it ends that process.
pub struct SandboxVm {
    backend: Backend,
    ready_after: Duration,
    worker: ClientState,
    /// The VM's cgroup; dropped (removed) after its process has ended.
    cpu: Option<Arc<CpuGroup>>,
    /// Its process has been ended (finish, kill or drop).
    finished: bool,
}

/// What runs the worker.
enum Backend {
    Vm {
        control: ControlChannel,
        shared: Arc<SharedRegion>,
        monitor: Arc<MonitorProcess>,
    },
    Process(Arc<ProcessWorker>),
}

/// Stops a sandbox VM from any thread, as if it crashed: its monitor
/// process (or its worker's) is killed, and a message it is running fails
/// with "the VM stopped".
#[derive(Clone)]
pub struct StopHandle(Stop);

#[derive(Clone)]
enum Stop {
    Vm(Arc<MonitorProcess>),
    Process(Arc<ProcessWorker>),
}

impl StopHandle {
    /// Ends the VM's monitor process (or the worker's process) now.
    pub fn stop(&self) {
        match &self.0 {
            Stop::Vm(monitor) => monitor.kill(),
            Stop::Process(worker) => worker.kill(),
        }
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
        if let Isolation::Process { language, tmp_mib } = spec.isolation {
            return SandboxVm::start_process(spec, language, tmp_mib, timeout, started);
        }
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
            ..SpawnOptions::default()
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
            backend: Backend::Vm {
                control,
                shared,
                monitor,
            },
            ready_after: started.elapsed(),
            worker,
            cpu,
            finished: false,
        })
    }

    /// A worker of `language` run as a jailed host process on the files
    /// of `spec`'s image, ready within `timeout` of no progress.
    fn start_process(
        spec: &VmSpec,
        language: crate::Language,
        tmp_mib: u32,
        timeout: Duration,
        started: Instant,
    ) -> Result<SandboxVm, SandboxError> {
        let process = ProcessSpec {
            language,
            image: spec.golden.clone(),
            shm_mib: spec.config.shm_mib,
            mem_mib: spec.config.mem_mib,
            tmp_mib,
        };
        let cpu = cpu_group(spec.cpu);
        let policy = WarmupPolicy {
            stall: timeout,
            ..WarmupPolicy::default()
        };
        let worker =
            ProcessWorker::start(&process, cpu.as_deref().map(CpuGroup::dir), policy, &|_| {})
                .map_err(SandboxError::Process)?;
        Ok(SandboxVm {
            backend: Backend::Process(Arc::new(worker)),
            ready_after: started.elapsed(),
            worker: ClientState::default(),
            cpu,
            finished: false,
        })
    }

    /// Whether the worker runs in a VM or a host process.
    pub fn isolation_kind(&self) -> IsolationKind {
        match self.backend {
            Backend::Vm { .. } => IsolationKind::Vm,
            Backend::Process(_) => IsolationKind::Process,
        }
    }

    /// Runs `f` with the client of this VM's worker; the client goes on
    /// from where the previous call left it, and its waits end early
    /// ([`crate::WorkerError::Died`]) if the VM stops.
    pub fn with_worker<R>(&mut self, f: impl FnOnce(&mut WorkerClient<'_>) -> R) -> R {
        let state = self.worker;
        let (result, state) = match &self.backend {
            Backend::Vm {
                shared, monitor, ..
            } => {
                let alive = || monitor.is_alive();
                let mut client =
                    WorkerClient::resume(shared.ring_region(), &shared.layout(), state)
                        .with_liveness(&alive);
                (f(&mut client), client.state())
            }
            Backend::Process(worker) => {
                let alive = || worker.is_alive();
                let mut client =
                    WorkerClient::resume(worker.ring_region(), &worker.layout(), state)
                        .with_liveness(&alive);
                (f(&mut client), client.state())
            }
        };
        self.worker = state;
        result
    }

    /// Holds the guest's vCPUs, or stops a process worker (it uses no CPU
    /// until [`SandboxVm::release`]; what a pool does with the clones it
    /// keeps ready). One that cannot be held goes on waiting on its ring,
    /// sleeping (a poll every 10 ms at most, once its spin is spent).
    pub fn hold(&self) -> Result<(), HoldError> {
        match &self.backend {
            Backend::Vm { monitor, .. } => monitor.hold(HOLD_LIMIT).map_err(HoldError::Monitor),
            Backend::Process(worker) if worker.hold() => Ok(()),
            Backend::Process(_) => Err(HoldError::Process),
        }
    }

    /// Lets a held guest (or process worker) run again.
    pub fn release(&self) {
        match &self.backend {
            Backend::Vm { monitor, .. } => monitor.release(),
            Backend::Process(worker) => worker.release(),
        }
    }

    /// The VM's monitor, to release it from another thread (`None` for a
    /// process worker).
    pub fn gate(&self) -> Option<Arc<MonitorProcess>> {
        match &self.backend {
            Backend::Vm { monitor, .. } => Some(monitor.clone()),
            Backend::Process(_) => None,
        }
    }

    /// The agent's control channel (`None` for a process worker, which
    /// has no agent).
    pub fn control(&mut self) -> Option<&mut ControlChannel> {
        match &mut self.backend {
            Backend::Vm { control, .. } => Some(control),
            Backend::Process(_) => None,
        }
    }

    /// Hostile input the monitor saw from this guest (none for a process
    /// worker, which has no device emulation to send it to).
    pub fn hostile(&self) -> &HostileLog {
        static NONE: std::sync::OnceLock<HostileLog> = std::sync::OnceLock::new();
        match &self.backend {
            Backend::Vm { monitor, .. } => monitor.hostile(),
            Backend::Process(_) => NONE.get_or_init(HostileLog::default),
        }
    }

    /// Whether the guest has sent its devices input they had to refuse
    /// ([`HostileLog`]): such a VM is discarded, never kept or lent again.
    pub fn misbehaved(&self) -> bool {
        self.hostile().count() > 0
    }

    /// The id of the VM's monitor process (of a process worker's jail).
    pub fn monitor_pid(&self) -> u32 {
        match &self.backend {
            Backend::Vm { monitor, .. } => monitor.pid(),
            Backend::Process(worker) => worker.pid(),
        }
    }

    /// Whether the monitor is still running the guest (the process
    /// worker still runs).
    pub fn is_alive(&self) -> bool {
        match &self.backend {
            Backend::Vm { monitor, .. } => monitor.is_alive(),
            Backend::Process(worker) => worker.is_alive(),
        }
    }

    /// Host time from the start of the restore to the agent being ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// A handle that stops this VM from any thread (as if it crashed: a
    /// message it is running fails with "the VM stopped").
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(match &self.backend {
            Backend::Vm { monitor, .. } => Stop::Vm(monitor.clone()),
            Backend::Process(worker) => Stop::Process(worker.clone()),
        })
    }

    /// Whether the guest's script worker process has ended while the VM
    /// lives on (asked of the agent: the pid in the worker's ready file,
    /// then that pid in `/proc`); `Err` says why the agent could not tell.
    pub fn worker_gone(&mut self) -> Result<bool, WorkerCheckError> {
        // Generous: the guest may be busy (this runs after a timeout), and
        // its kernel is emulated on some hosts.
        const ASK: Duration = Duration::from_secs(10);
        let control = match &mut self.backend {
            Backend::Vm { control, .. } => control,
            // The worker is the process.
            Backend::Process(worker) => return Ok(!worker.is_alive()),
        };
        let ready = Request::ReadFile {
            path: paths::ready_file(paths::WORKER_READY),
        };
        let text = control
            .request(&ready, ASK)
            .map_err(WorkerCheckError::ReadyFile)?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| WorkerCheckError::BadPid(text.clone()))?;
        let stat = Request::ReadFile {
            path: format!("/proc/{pid}/stat"),
        };
        match control.request(&stat, ASK) {
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
    /// it ended; `None` once it has been asked before, or if nothing said
    /// (the monitor, or a process worker that still ran: the host stopped
    /// it).
    pub fn finish(&mut self) -> Option<SandboxOutcome> {
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
        let Backend::Vm {
            shared, monitor, ..
        } = &self.backend
        else {
            return Err(SnapshotError::NotAVm);
        };
        if self.worker.is_poisoned() || !shared.rings_idle_at(&rings) {
            return Err(SnapshotError::Busy);
        }
        let files = SnapshotFiles::create(dir)
            .map_err(|(path, source)| SnapshotError::File { path, source })?;
        let written = monitor
            .snapshot(&files, rings, Instant::now() + timeout)
            .map_err(SnapshotError::Monitor);
        self.stop_and_join();
        written
    }

    /// Stops the VM and returns how it ended.
    pub fn kill(mut self) -> Option<SandboxOutcome> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<SandboxOutcome> {
        if std::mem::replace(&mut self.finished, true) {
            return None;
        }
        match &self.backend {
            Backend::Vm { monitor, .. } => monitor.finish(FINISH_GRACE).map(SandboxOutcome::Vm),
            Backend::Process(worker) => worker.finish().map(SandboxOutcome::Process),
        }
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
