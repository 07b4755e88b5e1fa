//! Each sandbox VM in a monitor process of its own: the bridge holds no
//! KVM descriptor of a clone, each monitor is jailed (namespaces, a root
//! of its own) and gave up what it does not need before running guest
//! code, and a monitor that dies takes only its own clone with it.

use std::time::{Duration, Instant};

use reflow_agent_protocol::request::Request;
use reflow_integration_tests::calls::{map, NoState};
use reflow_integration_tests::{kvm_available, warm_python_golden, LIMIT};
use reflow_sandbox_core::{Limits, SandboxVm, VmSpec, WorkerError};

fn spec() -> VmSpec {
    let (golden, config) = warm_python_golden(40, "run_worker.py", "worker.ready");
    VmSpec::new(golden, config)
}

/// The value of `field` in `/proc/<pid>/status`.
fn status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The soft and hard limits on the `/proc/<pid>/limits` line `name`.
fn limits(pid: u32, name: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/limits"));
    let mut values = line[name.len()..].split_whitespace();
    (
        values.next().unwrap().to_string(),
        values.next().unwrap().to_string(),
    )
}

/// The process that runs the VM: the one the bridge started forks it
/// into a PID namespace of its own and waits for it.
fn vm_process(started: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{started}/task/{started}/children")).unwrap();
    let pids: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "monitor {started} has children {pids:?}");
    pids[0]
}

/// The root directory of VM process `pid`, as root. Run by another user,
/// the monitor is not dumpable, so even its own user cannot look inside
/// it through /proc (checked): `None`.
fn vm_root(pid: u32) -> Option<std::path::PathBuf> {
    let root = std::fs::read_link(format!("/proc/{pid}/root"));
    if unsafe_euid() == 0 {
        return Some(root.unwrap());
    }
    let e = root.expect_err("a monitor's root is hidden from its own user");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    None
}

/// Where this process's descriptors point.
fn own_fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn each_clone_runs_in_a_hardened_monitor_process_of_its_own() {
    if !kvm_available() {
        return;
    }
    let spec = spec();
    let mut a = SandboxVm::restore(&spec, LIMIT).expect("a clone");
    let mut b = SandboxVm::restore(&spec, LIMIT).expect("another clone");
    let me = std::process::id();
    let pids = [vm_process(a.monitor_pid()), vm_process(b.monitor_pid())];
    assert!(
        pids[0] != pids[1] && !pids.contains(&me),
        "{pids:?} (bridge {me})"
    );
    let mut groups = Vec::new();
    let ns = |pid: &str, kind: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    for pid in pids {
        // Namespaces of its own: no network device, no host IPC, its own
        // mount table; and a root of its own (its socket directory).
        if let Some(root) = vm_root(pid) {
            for kind in ["net", "ipc", "uts", "mnt", "pid"] {
                assert_ne!(
                    ns(&pid.to_string(), kind),
                    ns("self", kind),
                    "monitor {pid} {kind}"
                );
            }
            assert_ne!(
                root,
                std::path::Path::new("/"),
                "monitor {pid} kept the host's root"
            );
            let inside: Vec<String> = std::fs::read_dir(&root)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let mut sorted = inside.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                ["vsock", "vsock_1024"],
                "monitor {pid}'s root holds {inside:?}"
            );
        }
        assert_eq!(status(pid, "NoNewPrivs:"), "1", "monitor {pid}");
        // A filter over the whole process (2: filter mode), on every
        // thread: the monitor's own and, on VM threads, theirs too.
        assert_eq!(status(pid, "Seccomp:"), "2", "monitor {pid}");
        let filters: u32 = status(pid, "Seccomp_filters:").parse().unwrap();
        assert!(filters >= 2, "monitor {pid} has {filters} filters");
        for set in ["CapEff:", "CapPrm:", "CapInh:"] {
            assert_eq!(status(pid, set), "0000000000000000", "monitor {pid} {set}");
        }
        // Started by root, it runs as a uid and gid of its own.
        if unsafe_euid() == 0 {
            let started = if pid == pids[0] {
                a.monitor_pid()
            } else {
                b.monitor_pid()
            };
            let id = (0x7000_0000 + started).to_string();
            for field in ["Uid:", "Gid:"] {
                let ids: Vec<String> = status(pid, field)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                assert_eq!(ids, [id.as_str(); 4], "monitor {pid} {field}");
            }
            assert_eq!(status(pid, "Groups:"), "", "monitor {pid}");
            assert_eq!(limits(pid, "Max processes"), ("64".into(), "64".into()));
        }
        // In a memory cgroup of its own, limited to its guest's RAM, the
        // shared region and the stated overhead.
        if let Some(dir) = memory_group(pid) {
            let limit: u64 = std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
                .or_else(|_| std::fs::read_to_string(dir.join("memory.max")))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let want = (u64::from(spec.config.mem_mib) << 20)
                + reflow_vmm::shm::region_size(spec.config.shm_mib)
                + reflow_vmm::memcg::MONITOR_OVERHEAD;
            assert_eq!(limit, want, "monitor {pid}'s memory limit");
            groups.push(dir);
        } else {
            // Run by root under CI, it must have one; another user may
            // not be allowed to make cgroups (the monitor then runs
            // without, after a warning).
            assert!(
                unsafe_euid() != 0 || std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true and monitor {pid} has no memory cgroup of its own"
            );
        }
        assert_eq!(limits(pid, "Max core file size"), ("0".into(), "0".into()));
        // A clone's monitor writes no file: none it holds may grow, and
        // its standard error is a pipe to the bridge, never a file.
        assert_eq!(limits(pid, "Max file size"), ("0".into(), "0".into()));
        match std::fs::read_link(format!("/proc/{pid}/fd/2")) {
            Ok(stderr) => assert!(
                stderr.to_string_lossy().starts_with("pipe:"),
                "monitor {pid}'s standard error is {stderr:?}"
            ),
            // Run by another user the monitor is not dumpable: its
            // descriptors are hidden even from that user (as its root is).
            Err(e) if unsafe_euid() != 0 => {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}")
            }
            Err(e) => panic!("monitor {pid}'s standard error: {e}"),
        }
        let (soft, hard) = limits(pid, "Max open files");
        assert!(soft.parse::<u64>().unwrap() <= 512 && hard.parse::<u64>().unwrap() <= 512);
    }
    // The guests run in their monitors; the bridge has no KVM descriptor
    // (the golden was built and closed before the clones).
    let kvm: Vec<String> = own_fd_targets()
        .into_iter()
        .filter(|t| t.contains("kvm"))
        .collect();
    assert!(kvm.is_empty(), "the bridge holds {kvm:?}");
    a.control()
        .expect("a VM")
        .request(&Request::Uptime, LIMIT)
        .expect("a answers");
    b.control()
        .expect("a VM")
        .request(&Request::Uptime, LIMIT)
        .expect("b answers");
    // The socket directory (the monitor's root) goes with the clone.
    let root = vm_root(pids[0]);
    drop(a);
    if let Some(root) = root {
        assert!(!root.exists(), "{root:?} outlived its clone");
    }
    drop(b);
    for dir in groups {
        assert!(!dir.exists(), "memory cgroup {dir:?} outlived its clone");
    }
}

fn unsafe_euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The directory of `pid`'s memory cgroup, if it is one a bridge made
/// for a monitor (`reflow-vm-mem-*`).
fn memory_group(pid: u32) -> Option<std::path::PathBuf> {
    let ours = reflow_vmm::cgroup::Hierarchy::find_for("memory").ok()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let v1 = controllers.split(',').any(|c| c == "memory");
        let v2 = controllers.is_empty() && ours.version == reflow_vmm::cgroup::Version::V2;
        (v1 || v2).then(|| path.to_string())
    })?;
    let name = path.rsplit('/').next()?;
    name.starts_with("reflow-vm-mem-")
        .then(|| ours.own.join(name))
}

#[test]
fn a_monitor_killed_from_outside_takes_only_its_clone() {
    if !kvm_available() {
        return;
    }
    let spec = spec();
    let mut doomed = SandboxVm::restore(&spec, LIMIT).expect("a clone");
    let mut other = SandboxVm::restore(&spec, LIMIT).expect("another clone");
    let pid = doomed.monitor_pid() as i32;
    let vm = vm_process(doomed.monitor_pid());
    let root = vm_root(vm);
    let group = memory_group(vm);
    // SAFETY: a plain kill(2) of a child process this test started.
    let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(killed, 0);
    let t = Instant::now();
    while doomed.is_alive() && t.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !doomed.is_alive(),
        "a killed monitor's clone still looks alive"
    );
    assert!(doomed
        .control()
        .expect("a VM")
        .request(&Request::Uptime, LIMIT)
        .is_err());
    // Ending it now returns at once (nothing said how it ended), and its
    // socket directory goes, though its monitor could not clean up.
    assert!(doomed.finish().is_none());
    drop(doomed);
    if let Some(root) = root {
        assert!(!root.exists(), "{root:?} outlived its killed monitor");
    }
    // The VM's process went with the one the bridge started.
    let gone = || !std::path::Path::new(&format!("/proc/{vm}")).exists();
    let t = Instant::now();
    while !gone() && t.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(gone(), "VM process {vm} lives on");
    if let Some(dir) = group {
        assert!(
            !dir.exists(),
            "memory cgroup {dir:?} outlived its killed monitor"
        );
    }
    other
        .control()
        .expect("a VM")
        .request(&Request::Uptime, LIMIT)
        .expect("the other clone is untouched");
    assert!(other.is_alive());
}

/// An actor that takes far longer than the test waits.
const SLEEPY: &str = r#"
import time

@actor(name="Sleepy", inports=[], outports=[])
def sleepy(context):
    time.sleep(60)
    return {}
"#;

#[test]
fn a_monitor_killed_mid_message_fails_it_at_once_and_leaves_nothing() {
    if !kvm_available() {
        return;
    }
    let spec = spec();
    let mut vm = SandboxVm::restore(&spec, LIMIT).expect("a clone");
    let started = vm.monitor_pid();
    let inner = vm_process(started);
    let root = vm_root(inner);
    let group = memory_group(inner);
    vm.with_worker(|c| c.load("sleepy", "sleepy.actor.py", SLEEPY, LIMIT))
        .expect("the actor loads");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let at = Instant::now();
        // SAFETY: a plain kill(2) of a child process this test started
        // (not reaped yet, so its pid is still its own).
        assert_eq!(unsafe { libc::kill(started as i32, libc::SIGKILL) }, 0);
        at
    });
    let timeout = Duration::from_secs(120);
    let result = vm.with_worker(|c| {
        c.invoke(
            "sleepy",
            map(vec![]),
            map(vec![]),
            &Limits::with_timeout(timeout),
            &mut NoState,
        )
    });
    let answered = Instant::now();
    let after = answered.saturating_duration_since(killer.join().unwrap());
    assert!(
        matches!(result, Err(WorkerError::Died)),
        "the message on a killed VM: {result:?}"
    );
    eprintln!(
        "a message whose monitor was killed failed {:.1} ms after the kill",
        after.as_secs_f64() * 1e3
    );
    // It failed because the VM went, not at its deadline.
    assert!(after < timeout / 8, "answered {after:?} after the kill");
    drop(vm);
    // Nothing left: neither process, nor the socket directory, nor the
    // memory cgroup.
    let gone = |pid: u32| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    let t = Instant::now();
    while !(gone(inner) && gone(started)) && t.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(gone(started), "monitor {started} lives on");
    assert!(gone(inner), "VM process {inner} lives on");
    if let Some(root) = root {
        assert!(!root.exists(), "{root:?} outlived its killed monitor");
    }
    if let Some(dir) = group {
        assert!(
            !dir.exists(),
            "memory cgroup {dir:?} outlived its killed monitor"
        );
    }
}

/// Context switches of every thread of process `pid` so far.
fn switches(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| {
            let text = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            text.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn a_held_clone_s_monitor_sleeps_until_something_happens() {
    if !kvm_available() {
        return;
    }
    let spec = spec();
    let mut vm = SandboxVm::restore(&spec, LIMIT).expect("a clone");
    vm.hold().expect("held");
    let pid = vm_process(vm.monitor_pid());
    std::thread::sleep(Duration::from_millis(500));
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(3));
    let woke = switches(pid) - before;
    eprintln!("a held clone's monitor: {woke} context switches in 3 s");
    // Any tick (the event loop, a held vCPU, the monitor's own loop, each
    // at 20 Hz before) would be 60 or more.
    assert!(woke <= 6, "{woke} context switches in 3 s while held");
    vm.release();
    vm.control()
        .expect("a VM")
        .request(&Request::Uptime, LIMIT)
        .expect("it answers once released");
}
