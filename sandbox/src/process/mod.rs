//! Script workers run as jailed host processes (`isolation: process`)
//! instead of in VMs: the same worker, SDK and ring protocol, on the same
//! image's files ([`tree`]), started by `reflow-vmm __worker` (see
//! `reflow_vmm::worker_jail`) with the ring's memfd at its fd 3, which it
//! maps where a VM's worker maps `/dev/mem`.

mod hold;
mod outcome;
pub mod tree;

pub use outcome::ProcessOutcome;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reflow_agent_protocol::paths::{self, RUN_DIR, WORKER_READY};
use reflow_ring::{Region, RegionLayout};
use reflow_vmm::memcg::MemoryGroup;
use reflow_vmm::monitor::harden::MAX_THREADS;
use reflow_vmm::monitor::{MonitorError, MonitorProgram};
use reflow_vmm::pidcg::PidsGroup;
use reflow_vmm::shm::{region_size, SharedRegion, ShmError};
use reflow_vmm::worker_jail::{WorkerJail, LIFELINE_FD, SHM_FD, WORKER_ARG};

use crate::language::Language;
use crate::warmup::{self, Guest, ReadError, Started, WarmupError, WarmupPolicy};

/// Why a process worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The image's files could not be had.
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    /// The ring's region could not be made.
    #[error("the worker's ring: {0}")]
    Shm(#[from] ShmError),
    /// The jailer program (`reflow-vmm`) was not found.
    #[error(transparent)]
    Program(#[from] MonitorError),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The OS's error.
        source: std::io::Error,
    },
    /// The worker did not get ready (it failed, died or stalled).
    #[error(transparent)]
    Warmup(#[from] WarmupError),
}

/// Time between two looks at a starting worker's progress and ready
/// files.
const READY_POLL: Duration = Duration::from_millis(2);

/// What a process worker runs and within what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The worker's language.
    pub language: Language,
    /// The language's root image (`rootfs.ext4`); its files are unpacked
    /// beside it on first use.
    pub image: PathBuf,
    /// The ring's region, MiB (rounded up as a VM's).
    pub shm_mib: u32,
    /// The most memory the worker may use, MiB (its memory cgroup's
    /// limit, where the host has cgroups; the ring is charged to the
    /// host's side).
    pub mem_mib: u32,
    /// Size of the worker's `/tmp`, MiB.
    pub tmp_mib: u32,
}

/// A script worker running as a jailed host process, ready to serve its
/// ring. Killed (with everything it started) when dropped.
pub struct ProcessWorker {
    shared: SharedRegion,
    child: Mutex<Child>,
    pid: u32,
    /// The worker's `/run/reflow`: removed once it is gone.
    run_dir: tempfile::TempDir,
    /// Its memory cgroup: removed once it has been reaped.
    memory: Option<MemoryGroup>,
    /// Its pids cgroup (at most [`MAX_THREADS`] processes and threads):
    /// removed once it has been reaped.
    pids: Option<PidsGroup>,
    /// The memory limit, MiB.
    mem_mib: u32,
    /// What stops and continues the worker while idle, found on first
    /// use (`None`: it cannot be held).
    hold: std::sync::OnceLock<Option<hold::Hold>>,
    started: Started,
    /// The write end of the jail's lifeline: closed when the worker is
    /// dropped or this process ends, however it ends, which makes the jail
    /// kill the worker.
    _lifeline: OwnedFd,
}

/// A pipe for a worker's lifeline: (read end, numbered above
/// [`LIFELINE_FD`] and the memfd's slot so that placing either in the
/// child cannot close it; write end), both close-on-exec, so that no other
/// child of this process holds the write end.
fn lifeline() -> Result<(OwnedFd, OwnedFd), ProcessError> {
    let io = |source| ProcessError::Io {
        what: "making the worker's lifeline pipe",
        source,
    };
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by no one
    // else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new one (or
    // -1), which is then owned here.
    let high = unsafe { libc::fcntl(read.as_raw_fd(), libc::F_DUPFD_CLOEXEC, LIFELINE_FD + 1) };
    if high < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: `high` is the descriptor fcntl just made.
    Ok((unsafe { OwnedFd::from_raw_fd(high) }, write))
}

impl ProcessWorker {
    /// Starts `spec`'s worker (in the CPU cgroup at `cpu_group`, if any)
    /// and waits until it serves its ring (or fails, dies, or makes no
    /// progress for `policy.stall`); `progress` hears its steps.
    pub fn start(
        spec: &ProcessSpec,
        cpu_group: Option<&Path>,
        policy: WarmupPolicy,
        progress: &dyn Fn(&str),
    ) -> Result<ProcessWorker, ProcessError> {
        let tree = tree::image_tree(&spec.image)?;
        let shared = SharedRegion::create(region_size(spec.shm_mib), 0)?;
        let run_dir = tempfile::Builder::new()
            .prefix("reflow-worker-")
            .tempdir()
            .map_err(|source| ProcessError::Io {
                what: "creating the worker's run directory",
                source,
            })?;
        let memory = memory_group(spec.mem_mib);
        let pids = pids_group();
        let jail = WorkerJail {
            root: tree,
            run_dir: run_dir.path().to_path_buf(),
            memory_group: memory.as_ref().map(|g| g.dir().to_path_buf()),
            pids_group: pids.as_ref().map(|g| g.dir().to_path_buf()),
            cpu_group: cpu_group.map(Path::to_path_buf),
            tmp_mib: spec.tmp_mib,
            command: command(spec.language, shared.size()),
        };
        let program = MonitorProgram::get()?;
        let mut cmd = Command::new(&program.path);
        cmd.arg(WORKER_ARG)
            .args(jail.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let memfd = shared.memfd().as_raw_fd();
        let (lifeline_read, lifeline) = lifeline()?;
        let lifeline_read_fd = lifeline_read.as_raw_fd();
        // SAFETY: between fork and exec only dup2 or fcntl run, which are
        // async-signal-safe; they put the memfd at SHM_FD without
        // close-on-exec (dup2 onto itself would keep the flag), then the
        // lifeline's read end (numbered above both targets, so the first
        // dup2 cannot close it) at LIFELINE_FD.
        unsafe {
            cmd.pre_exec(move || {
                let rc = if memfd == SHM_FD {
                    libc::fcntl(SHM_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(memfd, SHM_FD)
                };
                if rc < 0 || libc::dup2(lifeline_read_fd, LIFELINE_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| ProcessError::Io {
            what: "starting the worker's jail (reflow-vmm __worker)",
            source,
        })?;
        // The child's copy is at LIFELINE_FD; only the write end stays here.
        drop(lifeline_read);
        let pid = child.id();
        if let Some(stderr) = child.stderr.take() {
            if let Err(e) = reflow_vmm::monitor::stderr_relay::relay(pid, stderr) {
                tracing::warn!(error = %e, pid, "a process worker's standard error is not relayed");
            }
        }
        let mut worker = ProcessWorker {
            shared,
            child: Mutex::new(child),
            pid,
            run_dir,
            memory,
            pids,
            mem_mib: spec.mem_mib,
            hold: std::sync::OnceLock::new(),
            _lifeline: lifeline,
            started: Started {
                steps: Vec::new(),
                took: Duration::ZERO,
            },
        };
        let mut guest = HostRun {
            run_dir: worker.run_dir.path(),
        };
        let script = spec.language.worker();
        // Looking is reading a host file here, not a request to a guest.
        let policy = WarmupPolicy {
            poll: policy.poll.min(READY_POLL),
            ..policy
        };
        worker.started = warmup::watch(
            &mut guest,
            script,
            Some(pid),
            WORKER_READY,
            policy,
            progress,
        )?;
        Ok(worker)
    }

    /// The ring's region, for a [`crate::worker::WorkerClient`].
    pub fn ring_region(&self) -> &Region {
        self.shared.ring_region()
    }

    /// Where the rings are in [`ProcessWorker::ring_region`].
    pub fn layout(&self) -> RegionLayout {
        self.shared.layout()
    }

    /// The host pid of the process the bridge started (the jail's outer
    /// process; the worker dies with it).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The host directory the worker sees as `/run/reflow` (removed when
    /// it is dropped).
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// The worker's memory cgroup's directory, where the host has one
    /// (removed when it is dropped).
    pub fn memory_group(&self) -> Option<&Path> {
        self.memory.as_ref().map(|g| g.dir())
    }

    /// The worker's pids cgroup's directory, where the host has one
    /// (removed when it is dropped).
    pub fn pids_group(&self) -> Option<&Path> {
        self.pids.as_ref().map(|g| g.dir())
    }

    /// The steps the worker reported while it started, and how long that
    /// took.
    pub fn started(&self) -> &Started {
        &self.started
    }

    /// Whether the worker's process still runs.
    pub fn is_alive(&self) -> bool {
        matches!(self.child.lock().try_wait(), Ok(None))
    }

    /// Stops the idle worker (`SIGSTOP`) so that it uses no CPU until
    /// [`ProcessWorker::release`]; `false` if it cannot be held (it ended,
    /// or the host has no pidfds), and then it goes on polling its ring.
    pub fn hold(&self) -> bool {
        let hold = self.hold.get_or_init(|| hold::Hold::find(self.pid));
        hold.as_ref().is_some_and(hold::Hold::stop)
    }

    /// Lets a held worker run again (nothing if it was not held).
    pub fn release(&self) {
        if let Some(Some(hold)) = self.hold.get() {
            hold.go();
        }
    }

    /// How the worker ended, if it has (its jail's status, and whether its
    /// memory group's limit ended it); if it still runs, it is killed now
    /// and there is nothing to tell: the host stopped it.
    pub fn finish(&self) -> Option<ProcessOutcome> {
        let mut child = self.child.lock();
        let ended = child.try_wait().ok().flatten();
        if ended.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let oom_kills = self.memory.as_ref().and_then(MemoryGroup::oom_kills);
        Some(ProcessOutcome::from_status(
            ended?,
            oom_kills.unwrap_or(0),
            self.mem_mib,
        ))
    }

    /// Ends the worker now (`SIGKILL`; the worker, its namespace's PID 1,
    /// dies with the process the bridge started, and every process it
    /// started with it), and reaps it.
    pub fn kill(&self) {
        let mut child = self.child.lock();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ProcessWorker {
    fn drop(&mut self) {
        self.kill();
        // The group can go only once nothing is in it: the worker's
        // namespace died with its PID 1, but the kernel may take a moment.
        if let Some(group) = self.memory.take() {
            group.remove(Duration::from_secs(1));
        }
        if let Some(group) = self.pids.take() {
            group.remove(Duration::from_secs(1));
        }
    }
}

/// The worker's command line in its jail: the image's interpreter, its
/// flags, the worker script, and the region (offset 0 of the memfd at
/// [`SHM_FD`], `size` bytes).
pub fn command(language: Language, size: u64) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![language.interpreter().into()];
    args.extend(language.interpreter_flags().iter().map(Into::into));
    args.extend([
        format!("/opt/reflow/{}", language.worker()).into(),
        "0".into(),
        format!("{size:#x}").into(),
        format!("/proc/self/fd/{SHM_FD}").into(),
    ]);
    args
}

/// A memory group allowing `mem_mib`, or `None` (with a warning) where
/// the host cannot make one.
fn memory_group(mem_mib: u32) -> Option<MemoryGroup> {
    match MemoryGroup::create(u64::from(mem_mib) << 20) {
        Ok(group) => Some(group),
        Err(e) => {
            tracing::warn!(error = %e, "cannot limit a process worker's memory with a cgroup; it runs without the limit");
            None
        }
    }
}

/// A pids group allowing [`MAX_THREADS`] tasks, or `None` (with a
/// warning) where the host cannot make one: then a worker run as root is
/// still bounded by its own uid's `RLIMIT_NPROC`, one run by a user shares
/// that user's.
fn pids_group() -> Option<PidsGroup> {
    match PidsGroup::create(MAX_THREADS) {
        Ok(group) => Some(group),
        Err(e) => {
            tracing::warn!(error = %e, "cannot bound a process worker's processes with a cgroup; only RLIMIT_NPROC bounds them");
            None
        }
    }
}

/// The worker's run directory, seen from the host, for the warm-up watch.
struct HostRun<'a> {
    run_dir: &'a Path,
}

impl Guest for HostRun<'_> {
    fn read(&mut self, path: &str) -> Result<Option<String>, ReadError> {
        let prefix = paths::in_image(&format!("{RUN_DIR}/"));
        let host = match path.strip_prefix(&prefix) {
            Some(name) if !name.contains('/') => self.run_dir.join(name),
            Some(_) => return Ok(None),
            // The watch asks for `/proc/<pid>/stat` of the pid it was given:
            // the host's.
            None if path.starts_with("/proc/") => PathBuf::from(path),
            None => return Ok(None),
        };
        match std::fs::read_to_string(&host) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ReadError::Host { path: host, source }),
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
