//! The bridge's side of a monitor process: spawn it, wait for its shared
//! region and its agent, hold, release and stop its VM, and end it by
//! force (`SIGKILL` through a pidfd, which cannot hit a recycled pid)
//! whatever the guest does.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use vmm_sys_util::eventfd::EventFd;

use super::child::IPC_FD;
use super::wire::{self, FromMonitor, ToMonitor, WireConfig, WireError};
use super::{MonitorError, MonitorProgram};
use crate::config::VmConfig;
use crate::hostile::HostileLog;
use crate::memcg::{MemoryGroup, MONITOR_OVERHEAD};
use crate::shm::SharedRegion;
use crate::snapshot::state::RingMarks;
use crate::vm::{ControlChannel, SnapshotFiles, VmOutcome};

/// Most new hostile reports one message may add (the count is the
/// monitor's word, so it is not trusted to size a loop).
const MAX_NEW_REPORTS: u64 = 64;

#[derive(Default)]
struct State {
    /// The VM started (with its shared region, or `None` for one that
    /// asked for none), or why not.
    restored: Option<Result<Option<Arc<SharedRegion>>, String>>,
    ready: Option<ControlChannel>,
    held: Option<Option<String>>,
    snapshotted: Option<Option<String>>,
    /// Where the restored region's rings start.
    rings: RingMarks,
    exited: Option<VmOutcome>,
    /// The monitor's socket closed: the process has ended (or is ending).
    closed: bool,
    hostile_seen: u64,
}

impl State {
    /// Why the monitor ended, in the words it left.
    fn ended(&self) -> MonitorError {
        match (&self.exited, &self.restored) {
            (Some(o), _) => MonitorError::Ended(format!(
                "{o}; console: {}",
                o.console_tail.last().map_or("", String::as_str)
            )),
            (None, Some(Err(why))) => MonitorError::Restore(why.clone()),
            _ => MonitorError::Ended("the monitor process ended".into()),
        }
    }
}

/// How a wait for the monitor ended without what it waited for.
enum Waited {
    /// The monitor ended (why).
    Ended(MonitorError),
    /// The deadline passed.
    Timeout,
}

impl Waited {
    fn into_error(self) -> MonitorError {
        match self {
            Waited::Ended(e) => e,
            Waited::Timeout => MonitorError::Timeout,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    hostile: HostileLog,
    /// The region size the bridge asked for, to check the monitor's.
    shm_size: u64,
}

/// How a monitor process is started (see [`MonitorProcess::spawn`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions<'a> {
    /// A cgroup directory (made by the caller) the VM's threads join for
    /// their CPU time limit.
    pub cpu_group: Option<&'a Path>,
    /// The caller checked the snapshot's memory digest already.
    pub memory_verified: bool,
    /// The caller may ask for a snapshot of the VM
    /// ([`MonitorProcess::snapshot`]); its threads then run under the
    /// seccomp lists that allow it.
    pub snapshots: bool,
    /// Run at idle CPU priority (`SCHED_IDLE`): for work nobody waits on,
    /// such as building a component golden, which then uses only CPU time
    /// that running messages leave.
    pub background: bool,
    /// Where the guest's console output goes (the monitor gets a copy of
    /// this descriptor and makes it non-blocking, so give it a pipe of its
    /// own: [`super::ConsolePipe`]); `None`: dropped, its last lines kept
    /// for the outcome.
    pub console: Option<BorrowedFd<'a>>,
    /// Bytes read from this descriptor are typed into the guest's console.
    pub input: Option<BorrowedFd<'a>>,
}

/// A VM running in a monitor process of its own.
pub struct MonitorProcess {
    ipc: Arc<UnixStream>,
    shared: Arc<Shared>,
    pidfd: OwnedFd,
    pid: u32,
    child: Mutex<Option<Child>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// The VM's sockets (and the monitor's root): removed once the
    /// process is gone, however it ended.
    socket_dir: tempfile::TempDir,
    /// The process's memory cgroup: removed once it has been reaped.
    memory: Mutex<Option<MemoryGroup>>,
}

/// Whether this process warned that monitors run without a memory limit.
static MEMORY_LIMIT_WARNED: AtomicBool = AtomicBool::new(false);

/// A memory group for a monitor whose VM has `config`'s RAM and shared
/// region, or `None` (with one warning per process) where this host
/// cannot make one: the monitor then runs without the limit.
fn memory_group(config: &VmConfig) -> Option<MemoryGroup> {
    let limit = (u64::from(config.mem_mib) << 20)
        + crate::shm::region_size(config.shm_mib)
        + MONITOR_OVERHEAD;
    match MemoryGroup::create(limit) {
        Ok(group) => Some(group),
        Err(e) => {
            if !MEMORY_LIMIT_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot limit sandbox VM monitors' memory with a cgroup; they run without the limit");
            }
            None
        }
    }
}

/// `pidfd_open(2)`: a descriptor that names this very process, so a
/// signal sent through it never reaches a later process with its pid.
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Starts `program` as a bare monitor process, its socket at
/// [`IPC_FD`]: our end of the socket, and the process. (What
/// [`MonitorProcess::spawn`] builds on; tests speak the protocol by hand
/// over it.)
pub fn start(program: &MonitorProgram) -> Result<(UnixStream, Child), MonitorError> {
    spawn_process(program, false)
}

/// [`start`], at idle CPU priority (`SCHED_IDLE`, inherited by every
/// thread of the process) when `background`.
fn spawn_process(
    program: &MonitorProgram,
    background: bool,
) -> Result<(UnixStream, Child), MonitorError> {
    let (ours, theirs) = wire::socket_pair().map_err(MonitorError::Socket)?;
    let their_fd = theirs.as_raw_fd();
    let mut command = Command::new(&program.path);
    command
        .args(&program.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only dup2 and sched_setscheduler run,
    // which are async-signal-safe; dup2 puts the monitor's end of the
    // socket at IPC_FD without close-on-exec (dup2 clears the flag).
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(their_fd, IPC_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if background {
                let idle = libc::sched_param { sched_priority: 0 };
                if libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| MonitorError::Spawn {
        program: program.path.display().to_string(),
        source,
    })?;
    // Its log lines reach ours through a pipe (see stderr_relay).
    let relayed = match child.stderr.take() {
        Some(stderr) => super::stderr_relay::relay(child.id(), stderr).map_err(MonitorError::from),
        None => Err(MonitorError::Spawn {
            program: program.path.display().to_string(),
            source: std::io::Error::other("no pipe for its standard error"),
        }),
    };
    if let Err(e) = relayed {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok((ours, child))
}

impl MonitorProcess {
    /// Starts `program` to restore `snapshot` (taken with `config`, whose
    /// shared region the bridge will map), as `options` say.
    pub fn spawn(
        program: &MonitorProgram,
        snapshot: &Path,
        config: &VmConfig,
        options: &SpawnOptions<'_>,
    ) -> Result<MonitorProcess, MonitorError> {
        MonitorProcess::start(program, Some(snapshot), config, options)
    }

    /// Starts `program` to boot `config`'s guest from its kernel (the way
    /// a golden snapshot is made, with `options.snapshots` so that it may
    /// be asked for one: [`Self::snapshot`]), in a jailed monitor like any
    /// clone. Its agent's control channel comes as a clone's does
    /// ([`Self::wait_ready`]).
    pub fn boot(
        program: &MonitorProgram,
        config: &VmConfig,
        options: &SpawnOptions<'_>,
    ) -> Result<MonitorProcess, MonitorError> {
        MonitorProcess::start(program, None, config, options)
    }

    fn start(
        program: &MonitorProgram,
        snapshot: Option<&Path>,
        config: &VmConfig,
        options: &SpawnOptions<'_>,
    ) -> Result<MonitorProcess, MonitorError> {
        let SpawnOptions {
            cpu_group,
            memory_verified,
            snapshots,
            background,
            console,
            input,
        } = *options;
        let text = |p: &Path| wire::path_text(p).map_err(MonitorError::Wire);
        let socket_dir = crate::vm::private_socket_dir().map_err(MonitorError::Socket)?;
        let memory = memory_group(config);
        let first = ToMonitor::Start {
            snapshot: snapshot.map(text).transpose()?,
            config: Box::new(WireConfig::from_config(config).map_err(MonitorError::Wire)?),
            memory_verified,
            cpu_group: cpu_group.map(text).transpose()?,
            memory_group: memory.as_ref().map(|m| text(m.dir())).transpose()?,
            socket_dir: text(socket_dir.path())?,
            snapshots,
            console: console.is_some(),
            input: input.is_some(),
        };
        let handed: Vec<RawFd> = [console, input]
            .into_iter()
            .flatten()
            .map(|fd| fd.as_raw_fd())
            .collect();
        let (ours, child) = spawn_process(program, background)?;
        let pid = child.id();
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(MonitorError::Socket(e));
            }
        };
        let ipc = Arc::new(ours);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            hostile: HostileLog::silent(),
            shm_size: crate::shm::region_size(config.shm_mib),
        });
        let process = MonitorProcess {
            ipc: ipc.clone(),
            shared: shared.clone(),
            pidfd,
            pid,
            child: Mutex::new(Some(child)),
            reader: Mutex::new(None),
            socket_dir,
            memory: Mutex::new(memory),
        };
        let sent = wire::send_version(&ipc).and_then(|()| wire::send(&ipc, &first, &handed));
        if let Err(e) = sent {
            process.kill();
            return Err(MonitorError::Wire(e));
        }
        let reader = std::thread::Builder::new()
            .name("monitor-ipc".into())
            .spawn(move || read_loop(&ipc, &shared))
            .map_err(MonitorError::Thread)?;
        *process.reader.lock() = Some(reader);
        Ok(process)
    }

    /// Waits until `deadline` for `take` to find what it waits for in the
    /// state (it is asked first, and again after every message); the
    /// monitor's end or the deadline end the wait without it.
    fn wait_for<T>(
        &self,
        deadline: Instant,
        mut take: impl FnMut(&mut State) -> Option<T>,
    ) -> Result<T, Waited> {
        let mut s = self.shared.state.lock();
        loop {
            if let Some(found) = take(&mut s) {
                return Ok(found);
            }
            if s.closed || s.exited.is_some() {
                return Err(Waited::Ended(s.ended()));
            }
            if self.shared.changed.wait_until(&mut s, deadline).timed_out() {
                return Err(Waited::Timeout);
            }
        }
    }

    /// Waits until `deadline` for the monitor's shared region.
    pub fn wait_restored(&self, deadline: Instant) -> Result<Arc<SharedRegion>, MonitorError> {
        self.wait_for(deadline, |s| s.restored.clone())
            .map_err(Waited::into_error)?
            .map_err(MonitorError::Restore)?
            .ok_or_else(|| MonitorError::Restore("the VM has no shared-memory region".into()))
    }

    /// Where the restored region's rings start (what the snapshot
    /// recorded; zero before the region is restored).
    pub fn rings(&self) -> RingMarks {
        self.shared.state.lock().rings
    }

    /// Has the monitor pause the VM and write its snapshot into `files`
    /// (empty, open for writing), recording that its rings' ends stand at
    /// `rings`; waits until `deadline`. The VM ends either way. Only for a
    /// monitor spawned with `snapshots`.
    pub fn snapshot(
        &self,
        files: &SnapshotFiles,
        rings: RingMarks,
        deadline: Instant,
    ) -> Result<(), MonitorError> {
        self.shared.state.lock().snapshotted = None;
        let fds = [files.state.as_raw_fd(), files.memory.as_raw_fd()];
        wire::send(&self.ipc, &ToMonitor::Snapshot { rings }, &fds).map_err(MonitorError::Wire)?;
        match self.wait_for(deadline, |s| s.snapshotted.take()) {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(MonitorError::Snapshot(why)),
            Err(waited) => Err(waited.into_error()),
        }
    }

    /// Waits until `deadline` for the agent's control channel.
    pub fn wait_ready(&self, deadline: Instant) -> Result<ControlChannel, MonitorError> {
        self.wait_for(deadline, |s| s.ready.take())
            .map_err(Waited::into_error)
    }

    /// Holds the guest's vCPUs (they use no CPU until [`Self::release`]);
    /// waits at most `limit` for them, plus a second for the answer.
    pub fn hold(&self, limit: Duration) -> Result<(), MonitorError> {
        self.shared.state.lock().held = None;
        let hold = ToMonitor::Hold {
            limit_ms: limit.as_millis() as u64,
        };
        wire::send(&self.ipc, &hold, &[]).map_err(MonitorError::Wire)?;
        let deadline = Instant::now() + limit + Duration::from_secs(1);
        match self.wait_for(deadline, |s| s.held.take()) {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(MonitorError::Hold(why)),
            Err(Waited::Ended(e)) => Err(e),
            Err(Waited::Timeout) => Err(MonitorError::Hold("no answer from the monitor".into())),
        }
    }

    /// The host path of the VM's vsock socket (Firecracker's hybrid
    /// protocol: `CONNECT <port>` on it reaches a guest port). It lives in
    /// the monitor's private directory, removed when the monitor has gone.
    pub fn vsock_uds(&self) -> PathBuf {
        self.socket_dir.path().join(super::child::VSOCK_NAME)
    }

    /// Waits until `deadline` for the VM to end on its own (the guest
    /// powers off, or its time limit passes) and says how; then reaps the
    /// process. An error when the monitor ended without saying, or the
    /// deadline passed first (the process is ended then).
    pub fn wait_end(&self, deadline: Instant) -> Result<VmOutcome, MonitorError> {
        let outcome = self
            .wait_for(deadline, |s| s.exited.clone())
            .map_err(Waited::into_error);
        self.end();
        outcome
    }

    /// The monitor process's id (for looking at it in `/proc`; to signal
    /// it, use [`Self::kill`], which cannot reach a recycled pid).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets a held guest run again.
    pub fn release(&self) {
        let _ = wire::send(&self.ipc, &ToMonitor::Release, &[]);
    }

    /// Hostile input the monitor reported from this guest.
    pub fn hostile(&self) -> &HostileLog {
        &self.shared.hostile
    }

    /// Whether the monitor process still runs its VM.
    pub fn is_alive(&self) -> bool {
        {
            let s = self.shared.state.lock();
            if s.closed || s.exited.is_some() {
                return false;
            }
        }
        // The process the bridge started ends at once when killed; its VM
        // (and the socket) only once the kernel has torn the guest down.
        let mut fd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout.
        let exited = unsafe { libc::poll(&mut fd, 1, 0) } > 0;
        !exited
    }

    /// Ends the process now (`SIGKILL`), whatever its guest is doing.
    pub fn kill(&self) {
        // SAFETY: a plain system call on a pidfd we own; no pointers but a
        // null siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }

    /// Asks the VM to stop and waits up to `grace` for it to say how it
    /// ended; then (or if it does not) ends the process and reaps it.
    /// `None` when the monitor never said.
    pub fn finish(&self, grace: Duration) -> Option<VmOutcome> {
        let _ = wire::send(&self.ipc, &ToMonitor::Stop, &[]);
        let outcome = self
            .wait_for(Instant::now() + grace, |s| s.exited.clone())
            .ok();
        self.end();
        outcome
    }

    /// Kills the process, reaps it and joins the reader (at most once).
    fn end(&self) {
        self.kill();
        if let Some(mut child) = self.child.lock().take() {
            let _ = child.wait();
        }
        // Empty now: the process is gone.
        drop(self.memory.lock().take());
        // The reader ends on its own once the monitor is gone; shutting our
        // end makes sure of it should anything else still hold theirs.
        let _ = self.ipc.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.lock().take() {
            let _ = reader.join();
        }
    }
}

impl Drop for MonitorProcess {
    fn drop(&mut self) {
        self.end();
    }
}

/// Receives the monitor's messages until its socket closes.
fn read_loop(ipc: &UnixStream, shared: &Shared) {
    loop {
        let received = wire::recv::<FromMonitor>(ipc);
        let mut s = shared.state.lock();
        match received {
            Ok((msg, fds)) => handle(msg, fds, &mut s, shared),
            Err(WireError::Malformed(why)) => {
                tracing::warn!(%why, "a monitor process sent a malformed message");
                shared
                    .hostile
                    .report("monitor", format!("malformed message: {why}"));
            }
            Err(_) => {
                s.closed = true;
                shared.changed.notify_all();
                return;
            }
        }
        shared.changed.notify_all();
    }
}

fn handle(msg: FromMonitor, fds: Vec<OwnedFd>, s: &mut State, shared: &Shared) {
    match msg {
        FromMonitor::Restored {
            shm_size,
            shm_addr,
            rings,
        } if s.restored.is_none() => {
            let result = attach(fds, shm_size, shm_addr, shared.shm_size);
            s.rings = rings;
            s.restored = Some(result.map(|region| region.map(Arc::new)));
        }
        FromMonitor::Snapshotted(why) => s.snapshotted = Some(why),
        FromMonitor::Failed(why) if s.restored.is_none() => s.restored = Some(Err(why)),
        FromMonitor::Ready(hello) => match fds.into_iter().next() {
            Some(fd) => {
                let stream = UnixStream::from(fd);
                s.ready = Some(ControlChannel::from_parts(stream, hello));
            }
            None => shared
                .hostile
                .report("monitor", "a ready message without its connection"),
        },
        FromMonitor::Held(why) => s.held = Some(why),
        FromMonitor::Hostile { count, recent } => {
            let new = count.saturating_sub(s.hostile_seen).min(MAX_NEW_REPORTS);
            s.hostile_seen = s.hostile_seen.max(count);
            let shown = (new as usize).min(recent.len());
            for r in &recent[recent.len() - shown..] {
                shared.hostile.report("guest", r);
            }
            for _ in shown as u64..new {
                shared
                    .hostile
                    .report("guest", "(a report the monitor no longer kept)");
            }
        }
        FromMonitor::Exited(outcome) => s.exited = Some(outcome.to_outcome()),
        other => shared
            .hostile
            .report("monitor", format!("unexpected message {other:?}")),
    }
}

/// Maps the region a `Restored` message handed over, if it is the one
/// asked for (`None`: none was asked for, and none came).
fn attach(
    fds: Vec<OwnedFd>,
    size: u64,
    guest_addr: u64,
    expected: u64,
) -> Result<Option<SharedRegion>, String> {
    if size != expected {
        return Err(format!(
            "the monitor offered a {size}-byte region, the VM has {expected}"
        ));
    }
    // A VM that asked for no region (an agent-only guest, `reflow-vmm` by
    // hand) started without one, and hands nothing over.
    if size == 0 && fds.is_empty() {
        return Ok(None);
    }
    let mut fds = fds.into_iter();
    let (Some(memfd), Some(doorbell)) = (fds.next(), fds.next()) else {
        return Err("the monitor's region came without its descriptors".into());
    };
    // SAFETY: `doorbell` is a descriptor we own (received with the
    // message); if it is not an eventfd, reads of it fail harmlessly.
    let doorbell = unsafe { EventFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(doorbell)) };
    SharedRegion::attach(File::from(memfd), doorbell, size, guest_addr)
        .map(Some)
        .map_err(|e| e.to_string())
}
