//! A memory group's files on a fake cgroup v2 tree, and a real limit (a
//! process that joins a group and goes past it is killed) where this host
//! has a memory controller.

use std::path::Path;

use super::*;
use crate::cgroup::probe::{real_group, run_probe};

const V1: &str = "\
32 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";
const V1_CGROUP: &str = "4:memory:/jobs/m\n1:cpu:/jobs/a\n0::/\n";

#[test]
fn finds_the_memory_hierarchy_of_its_own() {
    let h = Hierarchy::parse_for("memory", V1, V1_CGROUP, |_| None).unwrap();
    assert_eq!(h.version, Version::V1);
    assert_eq!(h.own, Path::new("/sys/fs/cgroup/memory/jobs/m"));
    let e = Hierarchy::parse_for("memory", &V1[..V1.find("34 ").unwrap()], V1_CGROUP, |_| {
        None
    })
    .unwrap_err();
    assert!(matches!(e, CgroupError::NoController("memory")), "{e}");
}

#[test]
fn a_v2_group_gets_memory_max_and_no_swap() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Hierarchy {
        version: Version::V2,
        own: tmp.path().to_path_buf(),
    };
    let dir = {
        let group = MemoryGroup::create_in(&h, 300 << 20).unwrap();
        let dir = group.dir().to_path_buf();
        assert_eq!(group.limit(), 300 << 20);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (300u64 << 20).to_string());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap(),
            "+memory"
        );
        // A real cgroup directory's files go with it; this one is plain.
        std::fs::remove_file(dir.join("memory.max")).unwrap();
        dir
    };
    assert!(!dir.exists(), "the group is removed when dropped");
}

#[test]
fn reads_the_oom_kill_count_of_either_version() {
    let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
    let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(oom_kill_count(v2), Some(2));
    assert_eq!(oom_kill_count(v1), Some(3));
    assert_eq!(oom_kill_count("oom_group_kill 4\n"), None);
    assert_eq!(oom_kill_count(""), None);
}

const PROBE: &str = "REFLOW_MEMCG_PROBE";

/// The child's half: joins the group named by the probe, then touches
/// 256 MiB; exits 0 if it could (the limit did not hold). The parent's
/// run does nothing.
#[test]
#[ignore = "the child process's half, run by the test beside it"]
fn probe() {
    let Ok(dir) = std::env::var(PROBE) else {
        return;
    };
    MemoryGroup::join(Path::new(&dir)).unwrap();
    let mut chunks = Vec::new();
    for _ in 0..256 {
        chunks.push(vec![1u8; 1 << 20]);
    }
    std::hint::black_box(&chunks);
    std::process::exit(0);
}

#[test]
fn a_real_group_ends_a_process_past_its_limit() {
    let Some(group) = real_group("memory", MemoryGroup::create(32 << 20)) else {
        return;
    };
    let status = run_probe("memcg::tests::probe", PROBE, group.dir());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "a process touching 256 MiB in a 32 MiB group: {status:?}"
    );
    assert!(
        group.oom_kills().is_some_and(|n| n >= 1),
        "the group counts the kill: {:?}",
        group.oom_kills()
    );
    let dir = group.dir().to_path_buf();
    drop(group);
    assert!(!dir.exists(), "the group is removed when dropped");
}
