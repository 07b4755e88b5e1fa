//! Seccomp allowlists for the monitor's threads. The guest is hostile: a
//! bug in a device model or the exit handling must not hand it the host's
//! whole system call surface. Each kind of monitor thread gets its own
//! allowlist, kept as data in `vmm/seccomp/x86_64.json` and compiled into
//! BPF at build time (`build.rs`), installed by the thread itself before
//! it handles anything from the guest:
//!
//! - `vcpu`: each vCPU thread, before its first `KVM_RUN` (exits are
//!   handled on it: port and MMIO accesses reach the device models);
//! - `vmm`: the thread that runs [`crate::Vm::run`]'s event loop (virtio
//!   queues, the disk, vsock, the console), once the vCPUs are started.
//!
//! And one for a script worker run as a host process (`worker`, installed
//! by its jail before it execs the interpreter; see
//! [`crate::worker_jail`]).
//!
//! Arguments are filtered where the call allows more than the thread needs:
//! `ioctl` requests, `socket` families, and `mmap`/`mprotect` never with
//! `PROT_EXEC` (a thread that has been taken over cannot make itself new
//! code to run).
//!
//! A system call outside the allowlist is refused: it fails with EPERM and
//! the kernel logs it (`dmesg`, audit type 1326, with the thread's name and
//! the call's number). Refused rather than fatal by default because the
//! threads share the host bridge's process with every other VM and the
//! Reflow network: a call some rare path makes (a panic's backtrace opens
//! the executable) must not take them all down. `REFLOW_SECCOMP=kill`
//! kills the process instead (Firecracker's choice, for a monitor process
//! of its own); `REFLOW_SECCOMP=log` allows and logs (while developing:
//! that is how the allowlists were drawn up).

use seccompiler::{apply_filter, sock_filter, BpfProgram};

mod filters {
    include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));
}

/// The environment variable of the debug switch.
pub const ENV: &str = "REFLOW_SECCOMP";

/// A kind of monitor thread, with its own allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread, which runs the guest and handles its exits.
    Vcpu,
    /// The VM's event-loop thread, which serves device I/O.
    Vmm,
    /// A whole monitor process (every thread, the union of the others
    /// and what starting threads and talking to the bridge take).
    Monitor,
    /// The event loop of a VM whose owner allowed snapshots
    /// ([`crate::Vm::allow_snapshots`]): [`ThreadKind::Vmm`]'s list plus
    /// reading KVM state and writing the files it is handed.
    VmmSnapshot,
    /// A monitor process that may snapshot its VM: [`ThreadKind::Monitor`]'s
    /// list plus the same.
    MonitorSnapshot,
    /// A script worker run as a jailed host process (see
    /// [`crate::worker_jail`]): everything it starts inherits the filter.
    Worker,
}

/// What a system call outside the allowlist does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fails with EPERM (and the kernel logs it).
    #[default]
    Enforce,
    /// Kills the process.
    Kill,
    /// Allowed, and logged by the kernel (debugging).
    Log,
}

/// Why a filter was not installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// `REFLOW_SECCOMP` names no [`Mode`]; holds the value given.
    #[error("{ENV}={0:?} is not a seccomp mode (enforce, kill, or log while developing)")]
    BadMode(String),
    /// Installing the filter on the calling thread failed.
    #[error("installing the {kind:?} thread's seccomp filter: {source}")]
    Install {
        /// The thread kind the filter was for.
        kind: ThreadKind,
        /// The error from seccompiler.
        source: seccompiler::Error,
    },
}

impl Mode {
    /// The mode `REFLOW_SECCOMP` asks for (unset: enforce).
    pub fn from_env() -> Result<Mode, SeccompError> {
        match std::env::var(ENV) {
            Err(_) => Ok(Mode::Enforce),
            Ok(v) => match v.as_str() {
                "" | "enforce" => Ok(Mode::Enforce),
                "kill" => Ok(Mode::Kill),
                "log" => Ok(Mode::Log),
                _ => Err(SeccompError::BadMode(v)),
            },
        }
    }
}

fn program(kind: ThreadKind, mode: Mode) -> BpfProgram {
    let table = match (kind, mode) {
        (ThreadKind::Vcpu, Mode::Enforce) => filters::VCPU_ENFORCE,
        (ThreadKind::Vcpu, Mode::Kill) => filters::VCPU_KILL,
        (ThreadKind::Vcpu, Mode::Log) => filters::VCPU_LOG,
        (ThreadKind::Vmm, Mode::Enforce) => filters::VMM_ENFORCE,
        (ThreadKind::Vmm, Mode::Kill) => filters::VMM_KILL,
        (ThreadKind::Vmm, Mode::Log) => filters::VMM_LOG,
        (ThreadKind::Monitor, Mode::Enforce) => filters::MONITOR_ENFORCE,
        (ThreadKind::Monitor, Mode::Kill) => filters::MONITOR_KILL,
        (ThreadKind::Monitor, Mode::Log) => filters::MONITOR_LOG,
        (ThreadKind::VmmSnapshot, Mode::Enforce) => filters::VMM_SNAPSHOT_ENFORCE,
        (ThreadKind::VmmSnapshot, Mode::Kill) => filters::VMM_SNAPSHOT_KILL,
        (ThreadKind::VmmSnapshot, Mode::Log) => filters::VMM_SNAPSHOT_LOG,
        (ThreadKind::MonitorSnapshot, Mode::Enforce) => filters::MONITOR_SNAPSHOT_ENFORCE,
        (ThreadKind::MonitorSnapshot, Mode::Kill) => filters::MONITOR_SNAPSHOT_KILL,
        (ThreadKind::MonitorSnapshot, Mode::Log) => filters::MONITOR_SNAPSHOT_LOG,
        (ThreadKind::Worker, Mode::Enforce) => filters::WORKER_ENFORCE,
        (ThreadKind::Worker, Mode::Kill) => filters::WORKER_KILL,
        (ThreadKind::Worker, Mode::Log) => filters::WORKER_LOG,
    };
    table
        .iter()
        .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
        .collect()
}

/// The mode of a monitor process's own filter: `REFLOW_SECCOMP` as for
/// threads, but unset means [`Mode::Kill`] (Firecracker's choice: the
/// process holds one VM and nothing else, so a violation ends just it).
pub fn monitor_mode() -> Result<Mode, SeccompError> {
    if std::env::var_os(ENV).is_none() {
        return Ok(Mode::Kill);
    }
    Mode::from_env()
}

/// Installs the filter of a whole monitor process on the calling thread,
/// before it starts any other (they inherit it), in `mode` (with what
/// writing a snapshot takes when `snapshots`); and beneath
/// it one that answers `clone3` with ENOSYS, whose flags (in memory) a
/// filter cannot read: glibc then starts threads with `clone`, whose
/// flags the monitor filter checks for `CLONE_THREAD` (no new process).
pub fn install_monitor(mode: Mode, snapshots: bool) -> Result<(), SeccompError> {
    let kind = match snapshots {
        true => ThreadKind::MonitorSnapshot,
        false => ThreadKind::Monitor,
    };
    errno_for(kind, libc::SYS_clone3, libc::ENOSYS)?;
    install(kind, mode)
}

/// Installs a jailed worker's filter on the calling process, before it
/// execs the interpreter, in `mode`; and beneath it one that answers
/// `io_uring_setup` with ENOSYS (libuv probes io_uring when Node starts and
/// falls back to epoll on ENOSYS; the kernel's io_uring is attack surface
/// no worker gets, and the worker list lets the call through only to this
/// filter).
pub fn install_worker(mode: Mode) -> Result<(), SeccompError> {
    errno_for(ThreadKind::Worker, libc::SYS_io_uring_setup, libc::ENOSYS)?;
    install(ThreadKind::Worker, mode)
}

/// Installs a filter that answers system call `nr` with `errno` and
/// allows every other (stacked with `kind`'s, which must allow `nr`).
fn errno_for(kind: ThreadKind, nr: libc::c_long, errno: i32) -> Result<(), SeccompError> {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let filter = SeccompFilter::new(
        [(nr, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        TargetArch::x86_64,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| SeccompError::Install {
        kind,
        source: seccompiler::Error::Backend(e),
    })?;
    apply_filter(&filter).map_err(|source| SeccompError::Install { kind, source })
}

/// Installs `kind`'s filter on the calling thread (for good: a thread
/// cannot shed its filter, and the threads it starts inherit it).
pub fn install(kind: ThreadKind, mode: Mode) -> Result<(), SeccompError> {
    apply_filter(&program(kind, mode)).map_err(|source| SeccompError::Install { kind, source })
}

#[cfg(test)]
mod tests;
