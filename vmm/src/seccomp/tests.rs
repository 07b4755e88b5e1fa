//! The filters on real threads. A filter stays on its thread and a killed
//! call ends the whole process, so each case runs in a child process: this
//! test binary again, running only [`probe`] with
//! `REFLOW_SECCOMP_PROBE=<thread kind>:<what to do>`; the child exits 0
//! when the call went through, 3 when it was refused with EPERM.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use super::*;

const PROBE: &str = "REFLOW_SECCOMP_PROBE";

fn child(what: &str, mode: &str) -> ExitStatus {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "seccomp::tests::probe", "--test-threads=1"])
        .env(PROBE, what)
        .env(ENV, mode)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the child runs")
}

/// The child's half of the tests below: installs a filter on a fresh
/// thread and makes one kind of call there. Without `REFLOW_SECCOMP_PROBE`
/// (the parent's run) it does nothing.
#[test]
fn probe() {
    let Ok(what) = std::env::var(PROBE) else {
        return;
    };
    let mode = Mode::from_env().unwrap();
    let (kind, call) = what.split_once(':').unwrap();
    let kind = match kind {
        "vcpu" => ThreadKind::Vcpu,
        "monitor" => ThreadKind::Monitor,
        _ => ThreadKind::Vmm,
    };
    let event = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let call = call.to_string();
    std::thread::spawn(move || {
        if kind == ThreadKind::Monitor {
            install_monitor(mode).unwrap();
        } else {
            install(kind, mode).unwrap();
        }
        match call.as_str() {
            // A monitor starts its VM's threads under its filter.
            "thread" => {
                let t = std::thread::Builder::new()
                    .name("under-filter".into())
                    .spawn(|| vec![1u8; 1 << 20].len())
                    .unwrap();
                assert_eq!(t.join().unwrap(), 1 << 20);
            }
            "fork" => {
                // SAFETY: the child, if any, leaves at once with _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: ends the forked child.
                    unsafe { libc::_exit(0) };
                }
                if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                    std::process::exit(3);
                }
            }
            // What a monitor thread does all day: memory, locks, eventfds.
            "allowed" => {
                let v = vec![7u8; 4 << 20];
                let m = parking_lot::Mutex::new(v.len());
                event.write(*m.lock() as u64).unwrap();
                assert_eq!(event.read().unwrap(), 4 << 20);
            }
            "socket" => {
                // SAFETY: a plain system call; the fd, if any, is closed.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                let refused =
                    fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
                if fd >= 0 {
                    // SAFETY: closes the fd just made.
                    unsafe { libc::close(fd) };
                }
                if refused {
                    std::process::exit(3);
                }
            }
            "mmap-exec" | "mprotect-exec" => {
                // SAFETY: an anonymous private mapping of one page, made
                // and unmapped here; nothing else refers to it.
                let refused = unsafe {
                    let rw = libc::PROT_READ | libc::PROT_WRITE;
                    let exec = libc::PROT_READ | libc::PROT_EXEC;
                    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
                    let first = if call == "mmap-exec" { exec } else { rw };
                    let p = libc::mmap(std::ptr::null_mut(), 4096, first, flags, -1, 0);
                    let ok = if p == libc::MAP_FAILED {
                        false
                    } else {
                        let ok = call == "mmap-exec" || libc::mprotect(p, 4096, exec) == 0;
                        libc::munmap(p, 4096);
                        ok
                    };
                    !ok && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
                };
                if refused {
                    std::process::exit(3);
                }
            }
            "execve" => {
                let e = Command::new("/bin/true").status().unwrap_err();
                if e.raw_os_error() == Some(libc::EPERM) {
                    std::process::exit(3);
                }
            }
            other => {
                // `ioctl=<request>` on the eventfd, `socket=<family>`.
                let (call, n) = other.split_once('=').expect("a known probe");
                let n: u64 = n.parse().unwrap();
                let fd = std::os::fd::AsRawFd::as_raw_fd(&event);
                let mut arg = 0i32;
                // SAFETY: plain system calls with a valid fd and a valid
                // pointer to an int (what FIONBIO reads; other requests fail
                // on an eventfd before touching it); a socket made is closed.
                let ret = unsafe {
                    match call {
                        "ioctl" => libc::ioctl(fd, n as libc::Ioctl, &mut arg),
                        "socket" => {
                            let s = libc::socket(n as i32, libc::SOCK_STREAM, 0);
                            if s >= 0 {
                                libc::close(s);
                            }
                            s
                        }
                        _ => panic!("unknown probe {other}"),
                    }
                };
                if ret < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                    std::process::exit(3);
                }
            }
        }
    })
    .join()
    .unwrap();
}

#[test]
fn calls_outside_each_allowlist_are_refused() {
    for what in [
        "vcpu:socket",
        "vcpu:execve",
        "vmm:execve",
        "vcpu:mmap-exec",
        "vmm:mmap-exec",
        "vcpu:mprotect-exec",
        "vmm:mprotect-exec",
    ] {
        let status = child(what, "enforce");
        assert_eq!(status.code(), Some(3), "{what}: {status:?}");
        let status = child(what, "kill");
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{what}: {status:?}");
    }
}

/// A monitor process's own filter: it can start threads (through `clone`
/// with `CLONE_THREAD`, after `clone3` is answered ENOSYS) and do what its
/// threads do, but not make a process, run a program or open a network
/// socket.
#[test]
fn a_monitor_process_starts_threads_but_no_process() {
    for mode in ["enforce", "kill"] {
        for what in ["monitor:allowed", "monitor:thread"] {
            let status = child(what, mode);
            assert!(status.success(), "{what} ({mode}): {status:?}");
        }
    }
    for what in ["monitor:fork", "monitor:execve", "monitor:socket"] {
        let status = child(what, "enforce");
        assert_eq!(status.code(), Some(3), "{what}: {status:?}");
        let status = child(what, "kill");
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{what}: {status:?}");
    }
}

#[test]
fn allowed_calls_go_through() {
    for what in ["vcpu:allowed", "vmm:allowed"] {
        for mode in ["enforce", "kill"] {
            let status = child(what, mode);
            assert!(status.success(), "{what} ({mode}): {status:?}");
        }
    }
}

/// Request numbers of the ioctls probed.
const KVM_RUN: u64 = 0xae80;
const FIONBIO: u64 = 0x5421;
const TCGETS: u64 = 0x5401;

#[test]
fn ioctl_and_socket_arguments_are_filtered() {
    // A vCPU thread may only run the guest (KVM_RUN on an eventfd passes
    // the filter and fails in the kernel: not EPERM).
    let cases = [
        (format!("vcpu:ioctl={KVM_RUN}"), true),
        (format!("vcpu:ioctl={FIONBIO}"), false),
        (format!("vcpu:ioctl={TCGETS}"), false),
        (format!("vmm:ioctl={FIONBIO}"), true),
        (format!("vmm:ioctl={KVM_RUN}"), false),
        (format!("vmm:ioctl={TCGETS}"), false),
        (format!("vmm:socket={}", libc::AF_UNIX), true),
        (format!("vmm:socket={}", libc::AF_INET), false),
        (format!("vmm:socket={}", libc::AF_NETLINK), false),
    ];
    for (what, allowed) in cases {
        let status = child(&what, "enforce");
        let want = if allowed { 0 } else { 3 };
        assert_eq!(status.code(), Some(want), "{what}: {status:?}");
    }
}

#[test]
fn the_debug_switch_allows_and_logs_instead() {
    assert!(child("vcpu:socket", "log").success());
    let status = child("vcpu:allowed", "kill-everything");
    assert!(!status.success(), "a bad mode is refused");
}
