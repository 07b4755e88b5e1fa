//! What a monitor process can still do once it is confined as the monitor
//! confines itself (PID namespace, jail, its own uid when root, hardening,
//! then the process-wide seccomp filter with kill as its default): each
//! escape a guest that took over the monitor would try, in a process of
//! its own (this test binary again, running only [`probe`]), whose end
//! says how the attempt went. This exists only in the test build: the
//! release monitor has no way to run these attempts.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use super::harden::{self, Side};
use crate::seccomp::{self, Mode};

const PROBE: &str = "REFLOW_SECCOMP_JAIL_PROBE";

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The system call failed with an error; the process went on.
    Refused,
    /// The kernel ended the process with this signal.
    Killed(i32),
    /// The attempt worked: the confinement has a hole.
    Allowed,
    /// The confinement itself could not be set up (which step).
    Setup(i32),
}

/// What the parent set up for the attempts to aim at.
struct Targets {
    /// A file in a directory standing for the snapshot cache.
    cache_file: String,
    /// A Unix socket listening outside the jail.
    socket: String,
    /// An abstract Unix socket listening in the host's network namespace.
    abstract_name: String,
    /// The test's own (host) pid.
    parent: i32,
}

/// `true` if the attempt named `name` worked.
fn attempt(name: &str, t: &Targets) -> bool {
    use std::os::unix::net::UnixStream;
    let ok = |rc: libc::c_long| rc >= 0;
    // SAFETY: (all the calls below) system calls with integer arguments,
    // null pointers where allowed, or pointers to locals that live across
    // the call; a forked child leaves at once with _exit.
    unsafe {
        match name {
            "open_host_file" => std::fs::File::open("/etc/passwd").is_ok(),
            "write_snapshot_cache" => std::fs::OpenOptions::new()
                .append(true)
                .open(&t.cache_file)
                .is_ok(),
            "plant_file_in_snapshot_cache" => {
                let dir = Path::new(&t.cache_file).parent().unwrap();
                std::fs::File::create(dir.join("planted")).is_ok()
            }
            "plant_file_in_own_root" => std::fs::File::create("/planted").is_ok(),
            "connect_unix_socket_outside" => UnixStream::connect(&t.socket).is_ok(),
            "connect_abstract_socket_outside" => {
                let addr = SocketAddr::from_abstract_name(t.abstract_name.as_bytes()).unwrap();
                UnixStream::connect_addr(&addr).is_ok()
            }
            "tcp_socket" => ok(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0).into()),
            "udp_socket" => ok(libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0).into()),
            "netlink_socket" => ok(libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0).into()),
            "execve" => {
                let argv = [c"/bin/sh".as_ptr(), std::ptr::null()];
                libc::execve(c"/bin/sh".as_ptr(), argv.as_ptr(), std::ptr::null());
                false
            }
            "fork" => match libc::fork() {
                0 => libc::_exit(0),
                pid => pid > 0,
            },
            "clone3_process" => {
                // struct clone_args with only exit_signal set: a new process.
                let mut args = [0u64; 11];
                args[4] = libc::SIGCHLD as u64;
                match libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 88usize) {
                    0 => libc::_exit(0),
                    pid => pid > 0,
                }
            }
            "ptrace_parent" => ok(libc::ptrace(libc::PTRACE_ATTACH, t.parent, 0, 0)),
            "signal_parent" => ok(libc::syscall(
                libc::SYS_tgkill,
                t.parent,
                t.parent,
                libc::SIGCONT,
            )),
            "map_executable" => anonymous_page(libc::PROT_READ | libc::PROT_EXEC).is_some(),
            "make_executable" => anonymous_page(libc::PROT_READ | libc::PROT_WRITE)
                .is_some_and(|p| libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) == 0),
            "raise_rlimit" => {
                let more = libc::rlimit {
                    rlim_cur: harden::MAX_FILES * 4,
                    rlim_max: harden::MAX_FILES * 4,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &more) == 0
            }
            "become_root" => libc::setuid(0) == 0,
            "new_user_namespace" => libc::unshare(libc::CLONE_NEWUSER) == 0,
            "chroot_out" => libc::chroot(c"/".as_ptr()) == 0,
            // Its standard error is a file here (a monitor's is a pipe).
            "grow_held_file" => libc::write(2, c"x".as_ptr().cast(), 1) == 1,
            other => panic!("no attempt named {other}"),
        }
    }
}

/// A fresh private anonymous page mapped with `prot`, if the mapping
/// worked.
fn anonymous_page(prot: libc::c_int) -> Option<*mut libc::c_void> {
    // SAFETY: a new anonymous mapping the kernel places; nothing else is
    // touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p)
}

/// The child's half: confines itself as a monitor does, then makes the
/// attempt named by the probe; exits 0 if it was refused, 1 if it worked
/// (a killed process says so by its signal). The parent's run does
/// nothing. The confinement runs in a forked child: a user namespace and
/// seccomp's thread-wide filter want a single-threaded process, which a
/// test harness is not.
#[test]
#[ignore = "the child process's half, run by the test beside it"]
fn probe() {
    let Ok(spec) = std::env::var(PROBE) else {
        return;
    };
    let mut parts = spec.split('\n');
    let mut next = || parts.next().unwrap().to_string();
    let (name, root) = (next(), next());
    let targets = Targets {
        cache_file: next(),
        socket: next(),
        abstract_name: next(),
        parent: next().parse().unwrap(),
    };
    harden::exit_after_forked(|| confined(&name, Path::new(&root), &targets));
}

fn confined(name: &str, root: &Path, targets: &Targets) -> i32 {
    let host_pid = std::process::id();
    match harden::pid_namespace(-1) {
        Ok(Side::Outer(code)) => return code,
        Ok(Side::Inner) => {}
        Err(_) => return 10,
    }
    if std::env::set_current_dir(root).is_err() {
        return 11;
    }
    if !matches!(harden::jail(root), Ok(true)) {
        return 12;
    }
    match harden::dedicated_id(host_pid) {
        Ok(Some(id)) if harden::become_id(id).is_err() => return 13,
        Err(_) => return 14,
        _ => {}
    }
    if harden::harden(0).is_err() {
        return 15;
    }
    if seccomp::install_monitor(Mode::Kill, false).is_err() {
        return 16;
    }
    i32::from(attempt(name, targets))
}

fn outcome(status: std::process::ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Refused,
        (Some(1), _) => Outcome::Allowed,
        (Some(n), _) if n > 128 => Outcome::Killed(n - 128),
        (Some(n), _) => Outcome::Setup(n),
        (None, Some(sig)) => Outcome::Killed(sig),
        (None, None) => Outcome::Setup(-1),
    }
}

#[test]
fn every_escape_from_a_confined_monitor_is_refused_or_killed() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // The jail: made as the bridge makes a VM's socket directory, with a
    // socket in it as the monitor's own.
    let jail = tempfile::tempdir().unwrap();
    std::fs::set_permissions(jail.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let _own = std::os::unix::net::UnixListener::bind(jail.path().join("vsock")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_file = cache.path().join("memory.bin");
    std::fs::write(&cache_file, b"golden").unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&cache_file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("outside.sock");
    let _unix = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(sockets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let abstract_name = format!("reflow-jail-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();

    const SIGSYS: Outcome = Outcome::Killed(libc::SIGSYS);
    let expected = [
        // Not in its root (ENOENT), whatever the file's mode.
        ("open_host_file", Outcome::Refused),
        ("write_snapshot_cache", Outcome::Refused),
        ("plant_file_in_snapshot_cache", Outcome::Refused),
        ("connect_unix_socket_outside", Outcome::Refused),
        // Another network namespace's abstract sockets are out of sight.
        ("connect_abstract_socket_outside", Outcome::Refused),
        // The filter allows Unix sockets only.
        ("tcp_socket", SIGSYS),
        ("udp_socket", SIGSYS),
        ("netlink_socket", SIGSYS),
        ("execve", SIGSYS),
        // clone without CLONE_THREAD is a new process: killed; clone3
        // (whose flags a filter cannot read) fails with ENOSYS.
        ("fork", SIGSYS),
        ("clone3_process", Outcome::Refused),
        ("ptrace_parent", SIGSYS),
        // tgkill is allowed (the runtime signals its own threads), but
        // the host's pids are not in its PID namespace (ESRCH).
        ("signal_parent", Outcome::Refused),
        ("map_executable", SIGSYS),
        ("make_executable", SIGSYS),
        ("raise_rlimit", SIGSYS),
        ("become_root", SIGSYS),
        ("new_user_namespace", SIGSYS),
        ("chroot_out", SIGSYS),
        // RLIMIT_FSIZE 0: a file it holds cannot grow by a byte (EFBIG;
        // SIGXFSZ does not reach its PID namespace's init).
        ("grow_held_file", Outcome::Refused),
    ];
    let mut cases: Vec<(&str, Outcome)> = expected.to_vec();
    // Its root is the VM's socket directory: root hands the monitor's
    // own uid only a way through it; a user's monitor owns it already.
    cases.push((
        "plant_file_in_own_root",
        if root {
            Outcome::Refused
        } else {
            Outcome::Allowed
        },
    ));
    let mut wrong = Vec::new();
    for (name, want) in cases {
        let spec = [
            name.to_string(),
            jail.path().display().to_string(),
            cache_file.display().to_string(),
            socket.display().to_string(),
            abstract_name.clone(),
            std::process::id().to_string(),
        ]
        .join("\n");
        let held = tempfile::tempfile().unwrap();
        let stderr = if name == "grow_held_file" {
            std::process::Stdio::from(held.try_clone().unwrap())
        } else {
            std::process::Stdio::inherit()
        };
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "monitor::jail_tests::probe",
                "--ignored",
                "--test-threads=1",
                "--quiet",
            ])
            .env(PROBE, spec)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .status()
            .unwrap();
        let got = outcome(status);
        assert_eq!(held.metadata().unwrap().len(), 0, "{name} grew a held file");
        if got != want {
            wrong.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        std::fs::read(&cache_file).unwrap(),
        b"golden",
        "the cache file is untouched"
    );
}
