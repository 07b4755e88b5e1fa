//! A jail for a script worker run as a host process (`isolation: process`)
//! instead of in a VM: the bridge starts this program as
//! `reflow-vmm __worker --root TREE --run DIR [--memory-group CG]
//! [--pids-group CG] [--cpu-group CG] [--tmp-mib N] -- PROGRAM ARGS...` with the ring's memfd at
//! [`SHM_FD`] and a lifeline pipe at [`LIFELINE_FD`], and it execs
//! `PROGRAM` (a path in the image's tree) in:
//!
//! - PID, mount, network, IPC and UTS namespaces of its own (no network
//!   device at all, not even loopback), inside a user namespace of its
//!   own when not run as root; the worker is its namespace's PID 1, killed
//!   with the process the bridge started;
//! - the image's files read-only as its root, through `pivot_root` (see
//!   [`mount`]), tmpfs of a stated size for what it writes;
//! - the memory, pids and CPU cgroups the bridge made for it, when there
//!   are (the pids group bounds its processes and threads together,
//!   whatever its uid);
//! - a uid and gid of its own when run as root (no capability left after
//!   `execve`, at most [`harden::MAX_THREADS`] threads), `no_new_privs`, no core
//!   dumps, at most [`harden::MAX_FILES`] descriptors, files no larger than its
//!   `/tmp`, umask 077;
//! - a seccomp allowlist (`worker` in `vmm/seccomp/x86_64.json`) over
//!   everything it runs: what the interpreters and their libraries use,
//!   sockets of the Unix family only, no device `ioctl`, and none of
//!   `ptrace`, `mount`, namespaces, `bpf`, `perf_event_open`, keyrings,
//!   `io_uring`, `userfaultfd`, other processes' memory, modules; a call
//!   outside it fails with `EPERM` (`REFLOW_SECCOMP=kill` kills instead,
//!   `log` allows and logs while developing): the script is the user's,
//!   and an exception it can read says more than a killed worker;
//! - an environment of its own (nothing of the bridge's).
//!
//! What a `process` worker can still reach is the host kernel's system
//! call surface (a VM's guest reaches only its monitor's device
//! emulation): see the security model in the README.

pub mod mount;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cgroup::CpuGroup;
use crate::memcg::MemoryGroup;
use crate::monitor::harden::{self, Side};
use crate::pidcg::PidsGroup;
use crate::seccomp::{self, SeccompError};

/// First argument of a `reflow-vmm` started to jail a worker.
pub const WORKER_ARG: &str = "__worker";

/// Where the bridge puts the ring's memfd in the jailed worker: the worker
/// maps `/proc/self/fd/3`.
pub const SHM_FD: i32 = 3;

/// Where the bridge puts the read end of a pipe whose write end only it
/// holds: the jail kills its worker once that pipe closes, so a worker
/// never outlives its bridge, however the bridge ends.
pub const LIFELINE_FD: i32 = 4;

/// `/tmp` size when `--tmp-mib` is not given, MiB.
pub const DEFAULT_TMP_MIB: u32 = 64;

/// The environment a jailed worker starts with (and nothing else).
pub const ENVIRONMENT: [(&str, &str); 4] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("HOME", "/tmp"),
    ("LANG", "C.UTF-8"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
];

/// Why a worker's jail could not be built or its program started.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The command line was not one the bridge writes.
    #[error("bad {WORKER_ARG} arguments: {0}")]
    Usage(String),
    /// Building the file system view failed.
    #[error("the worker's root: {0}")]
    Mount(String),
    /// A hardening step failed.
    #[error(transparent)]
    Harden(#[from] harden::HardenError),
    /// The seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Joining a cgroup failed (which, and why).
    #[error("joining the worker's {0} cgroup")]
    Cgroup(String),
    /// `execve` failed.
    #[error("starting {program}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// The OS's error.
        source: std::io::Error,
    },
}

/// What the bridge asks for, from the command line after [`WORKER_ARG`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerJail {
    /// The image's files.
    pub root: PathBuf,
    /// The host directory seen as `/run/reflow`.
    pub run_dir: PathBuf,
    /// A memory cgroup to join (the bridge's), if any.
    pub memory_group: Option<PathBuf>,
    /// A pids cgroup to join (the bridge's), if any.
    pub pids_group: Option<PathBuf>,
    /// A CPU cgroup to join (the bridge's), if any.
    pub cpu_group: Option<PathBuf>,
    /// `/tmp` size, MiB.
    pub tmp_mib: u32,
    /// The program (a path in the tree) and its arguments.
    pub command: Vec<OsString>,
}

impl WorkerJail {
    /// The arguments that make [`WorkerJail::parse`] return `self`
    /// (after [`WORKER_ARG`]).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--root".into(),
            self.root.clone().into(),
            "--run".into(),
            self.run_dir.clone().into(),
            "--tmp-mib".into(),
            self.tmp_mib.to_string().into(),
        ];
        if let Some(group) = &self.memory_group {
            args.extend(["--memory-group".into(), group.clone().into()]);
        }
        if let Some(group) = &self.pids_group {
            args.extend(["--pids-group".into(), group.clone().into()]);
        }
        if let Some(group) = &self.cpu_group {
            args.extend(["--cpu-group".into(), group.clone().into()]);
        }
        args.push("--".into());
        args.extend(self.command.iter().cloned());
        args
    }

    /// Reads the arguments after [`WORKER_ARG`].
    pub fn parse(args: &[OsString]) -> Result<WorkerJail, JailError> {
        let usage = |why: String| JailError::Usage(why);
        let mut root = None;
        let mut run_dir = None;
        let mut memory_group = None;
        let mut pids_group = None;
        let mut cpu_group = None;
        let mut tmp_mib = DEFAULT_TMP_MIB;
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            if flag == "--" {
                break;
            }
            let mut value = || {
                rest.next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{} needs a value", flag.to_string_lossy())))
            };
            match flag.to_str() {
                Some("--root") => root = Some(PathBuf::from(value()?)),
                Some("--run") => run_dir = Some(PathBuf::from(value()?)),
                Some("--memory-group") => memory_group = Some(PathBuf::from(value()?)),
                Some("--pids-group") => pids_group = Some(PathBuf::from(value()?)),
                Some("--cpu-group") => cpu_group = Some(PathBuf::from(value()?)),
                Some("--tmp-mib") => {
                    let v = value()?;
                    tmp_mib = v
                        .to_str()
                        .and_then(|t| t.parse().ok())
                        .filter(|&n: &u32| (1..=1 << 20).contains(&n))
                        .ok_or_else(|| usage(format!("--tmp-mib {v:?} is not a size in MiB")))?;
                }
                _ => return Err(usage(format!("unknown argument {flag:?}"))),
            }
        }
        let command: Vec<OsString> = rest.cloned().collect();
        let absolute = |p: Option<PathBuf>, name: &str| match p {
            Some(p) if p.is_absolute() => Ok(p),
            Some(p) => Err(usage(format!("{name} {} is not absolute", p.display()))),
            None => Err(usage(format!("{name} is missing"))),
        };
        let jail = WorkerJail {
            root: absolute(root, "--root")?,
            run_dir: absolute(run_dir, "--run")?,
            memory_group: memory_group
                .map(|g| absolute(Some(g), "--memory-group"))
                .transpose()?,
            pids_group: pids_group
                .map(|g| absolute(Some(g), "--pids-group"))
                .transpose()?,
            cpu_group: cpu_group
                .map(|g| absolute(Some(g), "--cpu-group"))
                .transpose()?,
            tmp_mib,
            command,
        };
        match jail.command.first() {
            Some(p) if Path::new(p).is_absolute() => Ok(jail),
            Some(p) => Err(usage(format!("the program {p:?} is not an absolute path"))),
            None => Err(usage("no program after --".into())),
        }
    }
}

/// Serves a `reflow-vmm __worker ...` command line (`args`: what follows
/// [`WORKER_ARG`]): builds the jail and execs the worker, or returns the
/// exit code (after saying why on standard error).
pub fn serve(args: &[OsString]) -> i32 {
    let jail = match WorkerJail::parse(args) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("reflow-vmm: {e}");
            return 2;
        }
    };
    // SAFETY: a plain system call; nothing in this process uses
    // descriptors above the lifeline's, and standard streams stay.
    unsafe {
        libc::syscall(libc::SYS_close_range, LIFELINE_FD as u32 + 1, u32::MAX, 0);
    }
    // Fail closed: a worker that could outlive its bridge is not started.
    // SAFETY: F_GETFD on a descriptor number has no other effect.
    if unsafe { libc::fcntl(LIFELINE_FD, libc::F_GETFD) } < 0 {
        eprintln!("reflow-vmm: no lifeline pipe at descriptor {LIFELINE_FD}");
        return 2;
    }
    let host_pid = std::process::id();
    match harden::pid_namespace_with_lifeline(SHM_FD, LIFELINE_FD) {
        Ok(Side::Outer(code)) => return code,
        Ok(Side::Inner) => {}
        Err(e) => {
            eprintln!("reflow-vmm: the worker's jail: {e}");
            return 1;
        }
    }
    let e = enter(&jail, host_pid);
    eprintln!("reflow-vmm: the worker's jail: {e}");
    1
}

/// Builds the jail in this process (PID 1 of its namespace) and execs the
/// worker; returns only on failure.
fn enter(jail: &WorkerJail, host_pid: u32) -> JailError {
    let steps = || -> Result<(), JailError> {
        // Before the worker allocates anything, so all of it is charged.
        if let Some(dir) = &jail.memory_group {
            MemoryGroup::join(dir).map_err(|e| JailError::Cgroup(format!("memory: {e}")))?;
        }
        if let Some(dir) = &jail.pids_group {
            PidsGroup::join(dir).map_err(|e| JailError::Cgroup(format!("pids: {e}")))?;
        }
        // Single-threaded still: every thread the worker starts is born
        // in the group.
        if let Some(dir) = &jail.cpu_group {
            CpuGroup::attach(dir)
                .map_err(|e| e.to_string())
                .and_then(|g| g.join_current_thread().map_err(|e| e.to_string()))
                .map_err(|e| JailError::Cgroup(format!("CPU: {e}")))?;
        }
        harden::namespaces()?;
        mount::enter_root(&mount::RootPlan {
            tree: &jail.root,
            run_dir: &jail.run_dir,
            tmp_mib: jail.tmp_mib,
        })?;
        if let Some(id) = harden::dedicated_id(host_pid)? {
            hand_run_dir_to(id)?;
            harden::drop_to(id)?;
        }
        harden::harden(u64::from(jail.tmp_mib) << 20)?;
        // Last: the filter allows execve, which comes next, and what the
        // interpreter uses, and holds for everything it starts.
        let mode = seccomp::Mode::from_env()?;
        seccomp::install_worker(mode)?;
        Ok(())
    };
    if let Err(e) = steps() {
        return e;
    }
    let (program, args) = jail.command.split_first().expect("parse checked");
    let e = Command::new(program)
        .args(args)
        .env_clear()
        .envs(ENVIRONMENT)
        .current_dir("/tmp")
        .exec();
    JailError::Exec {
        program: program.to_string_lossy().into_owned(),
        source: e,
    }
}

/// Lets uid `id` write `/run/reflow` (the bridge's run directory).
fn hand_run_dir_to(id: u32) -> Result<(), JailError> {
    std::os::unix::fs::chown("/run/reflow", Some(id), Some(id))
        .map_err(|e| JailError::Mount(format!("handing /run/reflow to the worker: {e}")))
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
