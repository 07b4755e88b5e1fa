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
        "monitor-snapshot" => ThreadKind::MonitorSnapshot,
        "vmm-snapshot" => ThreadKind::VmmSnapshot,
        "worker" => ThreadKind::Worker,
        _ => ThreadKind::Vmm,
    };
    let event = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let scratch = tempfile::tempfile().unwrap();
    let call = call.to_string();
    std::thread::spawn(move || {
        if matches!(kind, ThreadKind::Monitor | ThreadKind::MonitorSnapshot) {
            install_monitor(mode, kind == ThreadKind::MonitorSnapshot).unwrap();
        } else if kind == ThreadKind::Worker {
            install_worker(mode).unwrap();
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
            "ftruncate" => {
                let e = scratch.set_len(4096).err();
                if e.and_then(|e| e.raw_os_error()) == Some(libc::EPERM) {
                    std::process::exit(3);
                }
            }
            "execve" => {
                if let Err(e) = Command::new("/bin/true").status() {
                    if e.raw_os_error() == Some(libc::EPERM) {
                        std::process::exit(3);
                    }
                    panic!("{e}");
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
                        // Calls probed with all-zero arguments, which
                        // fail harmlessly in the kernel when allowed.
                        "syscall" => libc::syscall(n as libc::c_long, 0, 0, 0, 0, 0) as i32,
                        _ => panic!("unknown probe {other}"),
                    }
                };
                let errno = std::io::Error::last_os_error().raw_os_error();
                if ret < 0 && errno == Some(libc::EPERM) {
                    std::process::exit(3);
                }
                if ret < 0 && errno == Some(libc::ENOSYS) {
                    std::process::exit(4);
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

/// A jailed script worker's filter: what interpreters do (threads, child
/// processes, programs, executable memory for a JIT, Unix sockets, a
/// non-blocking flag), and no network family, no device ioctl, none of
/// the calls that widen the kernel's reach.
#[test]
fn a_worker_runs_interpreters_but_no_network_device_or_kernel_extras() {
    let allowed = [
        "worker:allowed".to_string(),
        "worker:thread".into(),
        "worker:fork".into(),
        "worker:execve".into(),
        "worker:mmap-exec".into(),
        "worker:mprotect-exec".into(),
        format!("worker:socket={}", libc::AF_UNIX),
        format!("worker:ioctl={FIONBIO}"),
    ];
    for what in &allowed {
        let status = child(what, "kill");
        assert!(status.success(), "{what}: {status:?}");
    }
    // What libuv probes at start: answered ENOSYS in every mode (Node
    // falls back to epoll), never passed to the kernel.
    let io_uring = format!("worker:syscall={}", libc::SYS_io_uring_setup);
    for mode in ["enforce", "kill"] {
        assert_eq!(child(&io_uring, mode).code(), Some(4), "{mode}");
    }
    let refused = [
        format!("worker:socket={}", libc::AF_INET),
        format!("worker:socket={}", libc::AF_INET6),
        format!("worker:socket={}", libc::AF_NETLINK),
        format!("worker:socket={}", libc::AF_PACKET),
        format!("worker:ioctl={KVM_RUN}"),
        format!("worker:syscall={}", libc::SYS_ptrace),
        format!("worker:syscall={}", libc::SYS_mount),
        format!("worker:syscall={}", libc::SYS_unshare),
        format!("worker:syscall={}", libc::SYS_setns),
        format!("worker:syscall={}", libc::SYS_bpf),
        format!("worker:syscall={}", libc::SYS_perf_event_open),
        format!("worker:syscall={}", libc::SYS_keyctl),
        format!("worker:syscall={}", libc::SYS_io_uring_enter),
        format!("worker:syscall={}", libc::SYS_userfaultfd),
        format!("worker:syscall={}", libc::SYS_process_vm_readv),
        format!("worker:syscall={}", libc::SYS_init_module),
    ];
    for what in &refused {
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

/// Request numbers of the state-reading ioctls a snapshot makes, from
/// the kernel's encoding and kvm-bindings' struct sizes.
fn kvm_get_ioctls() -> Vec<(&'static str, u64)> {
    use kvm_bindings::*;
    use std::mem::size_of;
    const READ: u64 = 2;
    const WRITE: u64 = 1;
    let io = |dir: u64, nr: u64, size: usize| dir << 30 | (size as u64) << 16 | 0xae << 8 | nr;
    vec![
        (
            "KVM_GET_MSR_INDEX_LIST",
            io(READ | WRITE, 0x02, size_of::<u32>()),
        ),
        ("KVM_GET_CPUID2", io(READ | WRITE, 0x91, 8)),
        (
            "KVM_GET_MP_STATE",
            io(READ, 0x98, size_of::<kvm_mp_state>()),
        ),
        ("KVM_GET_REGS", io(READ, 0x81, size_of::<kvm_regs>())),
        ("KVM_GET_SREGS", io(READ, 0x83, size_of::<kvm_sregs>())),
        ("KVM_GET_XSAVE", io(READ, 0xa4, size_of::<kvm_xsave>())),
        ("KVM_GET_XCRS", io(READ, 0xa6, size_of::<kvm_xcrs>())),
        (
            "KVM_GET_DEBUGREGS",
            io(READ, 0xa1, size_of::<kvm_debugregs>()),
        ),
        (
            "KVM_GET_LAPIC",
            io(READ, 0x8e, size_of::<kvm_lapic_state>()),
        ),
        ("KVM_GET_MSRS", io(READ | WRITE, 0x88, 8)),
        (
            "KVM_GET_VCPU_EVENTS",
            io(READ, 0x9f, size_of::<kvm_vcpu_events>()),
        ),
        ("KVM_GET_TSC_KHZ", 0xaea3),
        (
            "KVM_GET_IRQCHIP",
            io(READ | WRITE, 0x62, size_of::<kvm_irqchip>()),
        ),
        ("KVM_GET_PIT2", io(READ, 0x9f, size_of::<kvm_pit_state2>())),
        ("KVM_GET_CLOCK", io(READ, 0x7c, size_of::<kvm_clock_data>())),
    ]
}

#[test]
fn the_snapshot_lists_name_the_right_ioctl_numbers() {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../../seccomp/x86_64.json")).unwrap();
    for list in ["vmm_snapshot", "monitor_snapshot"] {
        let rules = json[list]["filter"].as_array().unwrap();
        for (name, number) in kvm_get_ioctls() {
            let listed = rules.iter().any(|r| {
                r["syscall"] == "ioctl"
                    && r["args"][0]["val"] == number
                    && r["args"][0]["comment"] == name
            });
            assert!(listed, "{list} lacks {name} = {number:#x}");
        }
    }
}

/// Only a monitor allowed to snapshot may read KVM state or size files;
/// the snapshot lists keep everything else their bases refuse refused.
#[test]
fn only_snapshot_monitors_read_kvm_state_and_size_files() {
    let sregs = kvm_get_ioctls()[4].1;
    let cases = [
        (format!("vmm:ioctl={sregs}"), false),
        (format!("vmm-snapshot:ioctl={sregs}"), true),
        ("vmm:ftruncate".to_string(), false),
        ("vmm-snapshot:ftruncate".to_string(), true),
        (format!("vmm-snapshot:ioctl={KVM_RUN}"), false),
        (format!("vmm-snapshot:socket={}", libc::AF_INET), false),
        ("vmm-snapshot:execve".to_string(), false),
        (format!("monitor:ioctl={sregs}"), false),
        (format!("monitor-snapshot:ioctl={sregs}"), true),
        ("monitor-snapshot:ftruncate".to_string(), true),
        ("monitor-snapshot:fork".to_string(), false),
    ];
    for (what, allowed) in cases {
        let status = child(&what, "enforce");
        let want = if allowed { 0 } else { 3 };
        assert_eq!(status.code(), Some(want), "{what}: {status:?}");
    }
}
