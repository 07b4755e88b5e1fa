//! Finding the cpu hierarchy in mountinfo texts, a group's files on a fake
//! cgroup v2 tree, and a real limit where this host has a cpu controller.

use std::path::Path;
use std::time::{Duration, Instant};

use super::probe::real_group;
use super::*;

/// This development machine's (a v1 `cpu` hierarchy next to a v2 mount
/// without controllers).
const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
";
const HYBRID_CGROUP: &str = "4:memory:/x\n2:cpuacct:/\n1:cpu:/jobs/a\n0::/\n";

/// A container on a v2-only host: its own group is the mount's root.
const V2: &str = "\
40 35 0:30 /user.slice/box /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
";
const V2_CGROUP: &str = "0::/user.slice/box/inner\n";

fn controllers(list: &'static str) -> impl Fn(&Path) -> Option<String> {
    move |_| Some(list.to_string())
}

#[test]
fn finds_the_v1_cpu_hierarchy_before_a_v2_mount() {
    let h = CpuHierarchy::parse(HYBRID, HYBRID_CGROUP, controllers("hugetlb")).unwrap();
    assert_eq!(h.version, Version::V1);
    assert_eq!(h.own, Path::new("/sys/fs/cgroup/cpu/jobs/a"));
}

#[test]
fn finds_a_v2_hierarchy_with_cpu_relative_to_the_mount_root() {
    let h = CpuHierarchy::parse(V2, V2_CGROUP, controllers("cpuset cpu io memory")).unwrap();
    assert_eq!(h.version, Version::V2);
    assert_eq!(h.own, Path::new("/sys/fs/cgroup/inner"));
}

#[test]
fn no_cpu_controller_is_an_error() {
    let e = CpuHierarchy::parse(V2, V2_CGROUP, controllers("memory pids")).unwrap_err();
    assert!(matches!(e, CgroupError::NoController("cpu")), "{e}");
    let only_acct = "33 30 0:29 / /c rw - cgroup cgroup rw,cpuacct\n";
    let e = CpuHierarchy::parse(only_acct, HYBRID_CGROUP, controllers("")).unwrap_err();
    assert!(matches!(e, CgroupError::NoController("cpu")), "{e}");
}

#[test]
fn a_v2_group_is_threaded_with_cpu_max_and_threads_join_it() {
    let tmp = std::env::temp_dir().join(format!("reflow-cgroup-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let h = CpuHierarchy {
        version: Version::V2,
        own: tmp.clone(),
    };
    let group = CpuGroup::create_in(&h, 0.25).unwrap();
    let dir = group.dir().to_path_buf();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read("cgroup.type"), "threaded");
    assert_eq!(read("cpu.max"), "25000 100000");
    assert_eq!(
        std::fs::read_to_string(tmp.join("cgroup.subtree_control")).unwrap(),
        "+cpu"
    );
    group.join_current_thread().unwrap();
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    assert_eq!(read("cgroup.threads"), tid.to_string());
    // A real cgroup directory's files go with it; these are plain files.
    for f in ["cgroup.type", "cpu.max", "cgroup.threads"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    drop(group);
    assert!(!dir.exists(), "the group is removed when dropped");
    assert!(CpuGroup::create_in(&h, 0.0).is_err());
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn a_real_group_throttles_a_spinning_thread() {
    let Some(group) = real_group("cpu", CpuGroup::create(0.2)) else {
        return;
    };
    let dir = group.dir().to_path_buf();
    let used = std::thread::scope(|s| {
        s.spawn(|| {
            group.join_current_thread().unwrap();
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1500) {
                std::hint::spin_loop();
            }
            thread_cpu_time()
        })
        .join()
        .unwrap()
    });
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(throttled > 0, "never throttled: {stat}");
    // 0.2 CPUs over 1.5 s is 0.3 s; an unlimited spin on an idle core
    // would use all 1.5 s (and a busy host can only lower it).
    assert!(
        used < Duration::from_millis(750),
        "used {used:?} of CPU time"
    );
    drop(group);
    assert!(!dir.exists(), "the group is removed when dropped");
}

#[test]
fn sweeping_removes_only_the_groups_of_processes_that_are_gone() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let me = std::process::id();
    let own = tempfile::tempdir().unwrap();
    let names = [
        format!("reflow-vm-{gone}-0"),
        format!("reflow-vm-{gone}-7"),
        format!("reflow-vm-{me}-0"),
        format!("reflow-vm-mem-{gone}-0"),
        format!("reflow-vm-{gone}"),
        format!("other-{gone}-0"),
    ];
    for n in &names {
        std::fs::create_dir(own.path().join(n)).unwrap();
    }
    // A group that still holds something is not removed.
    let busy = own.path().join(format!("reflow-vm-{gone}-9"));
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("cgroup.procs"), "1").unwrap();

    assert_eq!(sweep_stale(own.path(), "reflow-vm"), 2);
    let mut left: Vec<String> = std::fs::read_dir(own.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = vec![
        format!("reflow-vm-{gone}-9"),
        format!("reflow-vm-{me}-0"),
        format!("reflow-vm-mem-{gone}-0"),
        format!("reflow-vm-{gone}"),
        format!("other-{gone}-0"),
    ];
    want.sort();
    assert_eq!(left, want);
}
