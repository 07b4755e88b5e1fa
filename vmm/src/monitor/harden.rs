//! What a monitor process gives up once its VM is restored and before it
//! runs any guest code ([`jail`], then [`harden`]):
//!
//! - its own mount, network, IPC and UTS namespaces (no network device at
//!   all, not even loopback; no System V IPC of the host), inside a user
//!   namespace of its own when not run as root;
//! - a root of its own: `chroot` into the VM's private socket directory,
//!   which holds nothing but the VM's two sockets (everything else it
//!   needs is open already);
//! - `no_new_privs`: nothing it could exec gains privileges (and seccomp
//!   filters need no capability);
//! - not dumpable: no core dump of guest memory, and no other process of
//!   the same user may `ptrace` it or read its memory through `/proc`;
//! - every capability dropped (effective, permitted, inheritable), so a
//!   monitor run as root keeps only what plain file ownership allows;
//! - when started by root, a uid and gid of its own ([`dedicated_id`],
//!   [`become_id`]): no other process of the host runs as it, so nothing
//!   the file system or another monitor leaves to a user is in reach, and
//!   at most [`MAX_THREADS`] threads;
//! - resource limits: no core files, at most [`MAX_FILES`] descriptors;
//! - umask 077.
//!
//! Capabilities are per thread: this runs on the monitor's main thread
//! before it starts any other, so they inherit the empty sets.

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// Most descriptors a monitor may hold: its VM (KVM, one per vCPU,
/// eventfds per queue, the memfd, the epoll), the vsock connections its
/// muxer allows, and its socket to the bridge, with room to spare.
pub const MAX_FILES: u64 = 512;

/// Most threads a monitor run as its own uid may have (`RLIMIT_NPROC`
/// counts them per uid): one per vCPU (32 at most), the event loop and the
/// monitor's own few, with room to spare.
pub const MAX_THREADS: u64 = 64;

/// Why hardening failed (which step, and the OS's error).
#[derive(Debug, thiserror::Error)]
#[error("hardening the monitor process: {step}: {source}")]
pub struct HardenError {
    step: String,
    source: std::io::Error,
}

fn check(step: &'static str, rc: libc::c_int) -> Result<(), HardenError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(HardenError {
            step: step.to_string(),
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Set to `1`, a monitor that cannot build its jail (namespaces and
/// `chroot`; no user namespaces for a non-root user, say) runs its VM
/// without it, after a warning, instead of refusing to.
pub const UNJAILED_ENV: &str = "REFLOW_UNJAILED";

/// Moves this process into namespaces of its own and `chroot`s it into
/// `root`, its working directory already: `true`. Fails unless
/// [`UNJAILED_ENV`] allows running without (then warns, loudly, once per
/// monitor, and returns `false`).
pub fn jail(root: &Path) -> Result<bool, HardenError> {
    unless_unjailed(
        enter(root).map(|()| true),
        false,
        "its jail (no namespaces, no private root): a guest that escapes its device emulation \
         reaches this host as this user",
    )
}

/// Environment variable: the first of the uids (and gids) monitors started
/// by root run as, [`DEFAULT_ID_BASE`] if unset.
pub const ID_BASE_ENV: &str = "REFLOW_JAIL_ID_BASE";

/// Monitors started by root run as uid and gid `0x7000_0000 + pid` (the
/// host pid of the process the bridge started, unique while the monitor
/// lives), a range no distribution or systemd assigns (systemd's
/// container ranges end below it, its foreign range starts above it).
pub const DEFAULT_ID_BASE: u32 = 0x7000_0000;

/// Host pids are below this (the kernel's largest `pid_max`, 2^22).
const PID_SPAN: u32 = 1 << 22;

/// The uid and gid of its own a monitor started by root as host process
/// `host_pid` runs as once jailed; `None` when not run as root (a user
/// namespace maps the caller's own ids instead).
pub fn dedicated_id(host_pid: u32) -> Result<Option<u32>, HardenError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let bad = |why: String| HardenError {
        step: format!("{ID_BASE_ENV}: {why}"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    };
    let base = match std::env::var(ID_BASE_ENV) {
        Err(_) => DEFAULT_ID_BASE,
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .map_err(|e| bad(format!("{text:?} is not a uid: {e}")))?,
    };
    // Ids from 2^31 up are ambiguous to software that keeps them signed.
    if base < 1000
        || base
            .checked_add(PID_SPAN)
            .is_none_or(|end| end > 0x8000_0000)
    {
        return Err(bad(format!(
            "{base} must be at least 1000 and leave room for {PID_SPAN} ids below 2^31"
        )));
    }
    Ok(Some(base + host_pid % PID_SPAN))
}

/// Lets `id` reach (not list, not change) this jailed process's root, the
/// VM's socket directory, and use the sockets in it, then makes `id` its
/// real, effective and saved uid and gid, with no supplementary groups:
/// after that it holds no capability, cannot get root back, and can
/// create no file anywhere. Only for a process [`jail`]ed as root.
pub fn become_id(id: u32) -> Result<(), HardenError> {
    let hand_over = |path: &std::ffi::CStr, uid: u32, mode: Option<libc::mode_t>| {
        // SAFETY: a NUL-terminated path that lives across the calls.
        unsafe {
            check(
                "handing over the jail's sockets",
                libc::fchownat(
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    uid,
                    id,
                    libc::AT_SYMLINK_NOFOLLOW,
                ),
            )?;
            match mode {
                Some(mode) => check(
                    "handing over the jail's root",
                    libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), mode, 0),
                ),
                None => Ok(()),
            }
        }
    };
    // Root's still; the group may pass through it, nobody else.
    hand_over(c"/", 0, Some(0o710))?;
    let entries = std::fs::read_dir("/").map_err(|source| HardenError {
        step: "listing the jail's root".into(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = std::ffi::CString::new(entry.file_name().as_encoded_bytes()).map_err(|_| {
            HardenError {
                step: "handing over the jail's sockets".into(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            }
        })?;
        hand_over(&name, id, None)?;
    }
    drop_to(id)
}

/// Makes `id` this process's real, effective and saved uid and gid, with
/// no supplementary groups and at most [`MAX_THREADS`] threads, and asks
/// again to die with the parent: after that it holds no capability and
/// cannot get root back. Only for a process jailed as root.
pub fn drop_to(id: u32) -> Result<(), HardenError> {
    // SAFETY: plain system calls with integer arguments (and no groups).
    unsafe {
        check(
            "dropping supplementary groups",
            libc::setgroups(0, std::ptr::null()),
        )?;
        check("the jail's gid", libc::setresgid(id, id, id))?;
        check("the jail's uid", libc::setresuid(id, id, id))?;
        rearm_parent_death()?;
        // Nothing else runs as this id: its threads are all there is to
        // count (one per vCPU, the event loop, a few of the monitor's own).
        let threads = libc::rlimit {
            rlim_cur: MAX_THREADS,
            rlim_max: MAX_THREADS,
        };
        check(
            "RLIMIT_NPROC",
            libc::setrlimit(libc::RLIMIT_NPROC, &threads),
        )?;
        // No way back, whatever the above left.
        if libc::setuid(0) == 0 {
            return Err(HardenError {
                step: "dropping root for good".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
    }
    Ok(())
}

/// `result`, or where it failed and [`UNJAILED_ENV`] allows, `instead`
/// after a warning that the monitor runs without `what`; otherwise the
/// error says how to allow that.
fn unless_unjailed<T>(
    result: Result<T, HardenError>,
    instead: T,
    what: &str,
) -> Result<T, HardenError> {
    match result {
        Err(e) if std::env::var(UNJAILED_ENV).is_ok_and(|v| v == "1") => {
            tracing::warn!(
                error = %e,
                "{UNJAILED_ENV}=1: this sandbox VM's monitor runs WITHOUT {what}"
            );
            Ok(instead)
        }
        Err(e) => Err(HardenError {
            step: format!(
                "the jail ({}; set {UNJAILED_ENV}=1 to run without it, not recommended)",
                e.step
            ),
            source: e.source,
        }),
        ok => ok,
    }
}

/// Which process [`pid_namespace`] returned in.
#[derive(Debug, PartialEq, Eq)]
pub enum Side {
    /// The monitor, now PID 1 of a PID namespace of its own: go on.
    Inner,
    /// The process the bridge started, which only waited for the monitor:
    /// exit with this code.
    Outer(i32),
}

/// Puts the monitor in a PID namespace of its own, where it cannot name
/// (so cannot signal or `ptrace`) the bridge or any other process of the
/// host. A process cannot enter one itself, only its children: this forks
/// (first thing, single-threaded, before any VM exists: KVM ties a VM to
/// the process that made it). The child goes on as the monitor, killed if
/// the parent dies (`PR_SET_PDEATHSIG`), so the bridge's `SIGKILL` of the
/// process it started still ends the VM; the parent closes its copy of
/// the bridge's socket and waits. When not run as root, a user namespace
/// comes first (it gives the rights to make the others). Fails unless
/// [`UNJAILED_ENV`] allows running without (then the caller goes on as
/// [`Side::Inner`] in the host's namespaces).
pub fn pid_namespace(ipc_fd: i32) -> Result<Side, HardenError> {
    unless_unjailed(
        enter_pid_namespace(ipc_fd, None),
        Side::Inner,
        "a PID namespace",
    )
}

/// As [`pid_namespace`], for a process that has no socket to its starter
/// to notice its end by: `lifeline` is the read end of a pipe whose write
/// end only the starter holds. The waiting parent kills the child once the
/// pipe closes (the starter is gone, or let it go); the child closes its
/// copy.
pub fn pid_namespace_with_lifeline(ipc_fd: i32, lifeline: i32) -> Result<Side, HardenError> {
    unless_unjailed(
        enter_pid_namespace(ipc_fd, Some(lifeline)),
        Side::Inner,
        "a PID namespace",
    )
}

fn enter_pid_namespace(ipc_fd: i32, lifeline: Option<i32>) -> Result<Side, HardenError> {
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid != 0 {
        user_namespace(uid, gid)?;
    }
    // SAFETY: a plain system call.
    check("a PID namespace", unsafe {
        libc::unshare(libc::CLONE_NEWPID)
    })?;
    // The child learns that the parent is gone, should it die before the
    // child asked to be killed with it, from the pipe's closing.
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    check("a pipe", unsafe {
        libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC)
    })?;
    // SAFETY: this process is single-threaded here (the monitor's first
    // step), so the child is a complete copy.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HardenError {
            step: "fork into the PID namespace".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if pid > 0 {
        // SAFETY: closes descriptors this process owns and no longer
        // uses; the read end is the child's.
        unsafe {
            libc::close(ipc_fd);
            libc::close(pipe[0]);
        }
        if let Some(fd) = lifeline {
            super::lifeline::wait_or_kill(pid, fd);
        }
        let mut status = 0;
        loop {
            // SAFETY: waits for the child just forked.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Ok(Side::Outer(1));
            }
        }
        return Ok(Side::Outer(exit_code(status)));
    }
    // SAFETY: closes the write end, which only the parent keeps, and the
    // lifeline, which the parent watches.
    unsafe {
        libc::close(pipe[1]);
        if let Some(fd) = lifeline {
            libc::close(fd);
        }
    }
    die_with_parent(pipe[0])?;
    // Kept for [`become_id`], whose change of credentials clears the
    // parent-death signal.
    PARENT_PIPE.store(pipe[0], Ordering::Relaxed);
    Ok(Side::Inner)
}

/// A `waitpid` status as an exit code: the process's own, or 128 plus
/// the signal that ended it (as shells report it).
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Asks to be killed when the parent dies, and ends this process now if
/// it has died already: `pipe` is the read end of a pipe whose write end
/// only the parent holds, so it polls readable (closed) once it is gone.
fn die_with_parent(pipe: libc::c_int) -> Result<(), HardenError> {
    // SAFETY: plain system calls on a descriptor this process owns.
    unsafe {
        check(
            "dying with the parent",
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL),
        )?;
        let mut fd = libc::pollfd {
            fd: pipe,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut fd, 1, 0) != 0 {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// The read end of the pipe whose write end only the waiting parent of a
/// PID namespace's monitor holds (-1: none).
static PARENT_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Asks again to be killed with the parent (a change of credentials
/// cleared the request), and ends this process if the parent is gone
/// already (it may have died in between).
fn rearm_parent_death() -> Result<(), HardenError> {
    let pipe = PARENT_PIPE.swap(-1, Ordering::Relaxed);
    if pipe < 0 {
        return Ok(());
    }
    die_with_parent(pipe)?;
    // SAFETY: closes a descriptor this process owns and no longer needs.
    unsafe { libc::close(pipe) };
    Ok(())
}

/// A user namespace of this process's own, mapping only its uid and gid
/// (as themselves).
fn user_namespace(uid: libc::uid_t, gid: libc::gid_t) -> Result<(), HardenError> {
    // SAFETY: a plain system call.
    check("a user namespace", unsafe {
        libc::unshare(libc::CLONE_NEWUSER)
    })?;
    // Writing the maps needs /proc/self to be ours: a process whose
    // credentials changed is not dumpable, which makes it root's.
    // SAFETY: a plain system call.
    check("dumpable for the id maps", unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0)
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|source| HardenError {
            step: format!("writing {file}"),
            source,
        })
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))
}

fn enter(root: &Path) -> Result<(), HardenError> {
    namespaces()?;
    let root =
        std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).map_err(|_| HardenError {
            step: "chroot".into(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
    // SAFETY: NUL-terminated paths that live across the calls.
    check("chroot", unsafe { libc::chroot(root.as_ptr()) })?;
    // SAFETY: as above.
    check("chdir", unsafe { libc::chdir(c"/".as_ptr()) })
}

/// Moves this process into mount, network, IPC and UTS namespaces of its
/// own, its mounts private: nothing it mounts reaches the host, and
/// nothing the host mounts reaches it.
pub fn namespaces() -> Result<(), HardenError> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // SAFETY: a plain system call.
    check("namespaces", unsafe { libc::unshare(flags) })?;
    // Nothing mounted here reaches the host's mount table, and back.
    // SAFETY: null source, type and data are allowed for a propagation
    // change; the target is a NUL-terminated literal.
    check("a private mount tree", unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
}

/// Applies the steps after the jail to this process, in order; the first
/// failure is an error (the monitor then refuses to run its VM). No file
/// it writes may grow past `file_size` bytes (`RLIMIT_FSIZE`; such a write
/// fails with `EFBIG`, and the `SIGXFSZ` that comes with it does not reach
/// a PID namespace's init, which a monitor is): 0 for a monitor that
/// writes no file, a snapshot's size for one that writes snapshots.
pub fn harden(file_size: u64) -> Result<(), HardenError> {
    rearm_parent_death()?;
    // SAFETY: plain system calls with integer arguments or pointers to
    // locals that live across the call.
    unsafe {
        libc::umask(0o077);
        check(
            "no_new_privs",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
        check(
            "not dumpable",
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0),
        )?;
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check("RLIMIT_CORE", libc::setrlimit(libc::RLIMIT_CORE, &core))?;
        let size = libc::rlimit {
            rlim_cur: file_size,
            rlim_max: file_size,
        };
        check("RLIMIT_FSIZE", libc::setrlimit(libc::RLIMIT_FSIZE, &size))?;
        let mut files = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check(
            "RLIMIT_NOFILE",
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut files),
        )?;
        files.rlim_cur = files.rlim_cur.min(MAX_FILES);
        files.rlim_max = files.rlim_max.min(MAX_FILES);
        check(
            "RLIMIT_NOFILE",
            libc::setrlimit(libc::RLIMIT_NOFILE, &files),
        )?;
    }
    drop_capabilities()
}

/// Empties this thread's effective, permitted and inheritable capability
/// sets (`capset(2)`, version 3: two 32-bit words per set).
fn drop_capabilities() -> Result<(), HardenError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data words, both
    // live locals of the layout the kernel expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    check("dropping capabilities", rc as libc::c_int)
}

/// Runs `child` in a forked child of this test process and exits with its
/// exit code, or 128 plus the signal that ended it. A user namespace and
/// a thread-wide seccomp filter want a single-threaded process, which a
/// test harness is not; its fork is (`child` must leave with `_exit` or
/// by returning).
#[cfg(test)]
pub(crate) fn exit_after_forked(child: impl FnOnce() -> i32) -> ! {
    // SAFETY: fork in the harness's test thread; the child only runs
    // `child` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = child();
        // SAFETY: ends the forked child without running the harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    std::process::exit(exit_code(status))
}

#[cfg(test)]
mod tests {
    //! The jail on a real process: each case runs in a child (this test
    //! binary again, running only [`probe`]), since namespaces, a root and
    //! dropped capabilities cannot be undone.

    use super::*;
    use std::process::Command;

    const PROBE: &str = "REFLOW_JAIL_PROBE";

    /// The child's half: optionally becomes `nobody`, jails itself in the
    /// directory named by the probe and checks what it can still reach;
    /// exits 0 only if every check held, else with the number of the first
    /// that failed. The parent's run does nothing. A user namespace can
    /// only be made by a single-threaded process, which a test harness is
    /// not: the checks run in a forked child (as in a monitor, where the
    /// jail comes before any other thread).
    #[test]
    #[ignore = "the child process's half, run by the test beside it"]
    fn probe() {
        let Ok(spec) = std::env::var(PROBE) else {
            return;
        };
        let (who, rest) = spec.split_once(':').unwrap();
        let (dir, port) = rest.rsplit_once(':').unwrap();
        let port: u16 = port.parse().unwrap();
        exit_after_forked(|| checks(who, Path::new(dir), port));
    }

    fn checks(who: &str, dir: &Path, port: u16) -> i32 {
        if who == "nobody" {
            // SAFETY: plain system calls; ids of the standard nobody user.
            let dropped = unsafe {
                libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setgid(65534) == 0
                    && libc::setuid(65534) == 0
            };
            if !dropped {
                return 10;
            }
        }
        match pid_namespace(-1) {
            Ok(Side::Outer(code)) => return code,
            Ok(Side::Inner) => {}
            Err(_) => return 18,
        }
        // PID 1 of its own namespace: the host's processes are out of sight.
        // SAFETY: getpid and getppid have no preconditions.
        if unsafe { (libc::getpid(), libc::getppid()) } != (1, 0) {
            return 19;
        }
        if let Err(e) = jail(dir) {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("{e}: {:?}\n", e.source).as_bytes(),
            );
            return 11;
        }
        if harden(0).is_err() {
            return 12;
        }
        // Only the jail's own directory is visible.
        let names: Vec<String> = match std::fs::read_dir("/") {
            Ok(d) => d
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => return 13,
        };
        if names != ["marker"] || std::fs::metadata("/etc/passwd").is_ok() {
            return 14;
        }
        // No network: the host's loopback listener is out of reach.
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return 15;
        }
        // No way back: no chroot (no capability), no root for nobody.
        // SAFETY: plain system calls with literal paths.
        if unsafe { libc::chroot(c"/".as_ptr()) } == 0 {
            return 16;
        }
        // SAFETY: as above.
        if who == "nobody" && unsafe { libc::setuid(0) } == 0 {
            return 17;
        }
        // A Unix socket outside the jail, by its absolute path.
        let outside = std::env::var("REFLOW_JAIL_PROBE_SOCKET").unwrap_or_default();
        if std::os::unix::net::UnixStream::connect(&outside).is_ok() {
            return 20;
        }
        // The process that started the test, by its host pid: not there.
        let parent: i32 = std::env::var("REFLOW_JAIL_PROBE_PARENT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // SAFETY: plain system calls with integer arguments.
        let (attached, signalled) = unsafe {
            (
                libc::ptrace(libc::PTRACE_ATTACH, parent, 0, 0),
                libc::kill(parent, 0),
            )
        };
        if parent == 0 || attached == 0 || signalled == 0 {
            return 21;
        }
        // Nothing to execute, and no raising the descriptor limit.
        if std::process::Command::new("/bin/sh").status().is_ok() {
            return 22;
        }
        let more = libc::rlimit {
            rlim_cur: MAX_FILES * 4,
            rlim_max: MAX_FILES * 4,
        };
        // SAFETY: a plain system call with a pointer to a local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &more) } == 0 {
            return 23;
        }
        0
    }

    fn run(who: &str) -> std::process::ExitStatus {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), b"").unwrap();
        // The nobody case enters it as another user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sockets = tempfile::tempdir().unwrap();
        let socket = sockets.path().join("outside.sock");
        let _unix = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(sockets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "monitor::harden::tests::probe",
                "--ignored",
                "--test-threads=1",
            ])
            .env(PROBE, format!("{who}:{}:{port}", dir.path().display()))
            .env("REFLOW_JAIL_PROBE_SOCKET", &socket)
            .env("REFLOW_JAIL_PROBE_PARENT", std::process::id().to_string())
            .status()
            .unwrap()
    }

    #[test]
    fn a_jailed_process_sees_only_its_root_and_no_network() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let status = run("self");
        assert!(
            status.success(),
            "as {}: {status:?}",
            if root { "root" } else { "this user" }
        );
    }

    /// Without root, the jail is built in a user namespace of its own.
    #[test]
    fn an_unprivileged_process_is_jailed_in_a_user_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Already unprivileged: the case above covered it.
            return;
        }
        let status = run("nobody");
        assert!(status.success(), "as nobody: {status:?}");
    }
}
