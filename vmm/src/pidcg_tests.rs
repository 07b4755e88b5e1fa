//! A pids group's files on a fake cgroup v2 tree, and a real bound (a
//! process that joins a group cannot start more tasks than it allows)
//! where this host has a pids controller.

use std::path::Path;

use super::*;
use crate::cgroup::probe::{real_group, run_probe};

#[test]
fn a_v2_group_gets_pids_max() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Hierarchy {
        version: Version::V2,
        own: tmp.path().to_path_buf(),
    };
    let dir = {
        let group = PidsGroup::create_in(&h, 64).unwrap();
        let dir = group.dir().to_path_buf();
        assert!(dir.starts_with(tmp.path()));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("pids.max"), "64");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        assert_eq!(group.refusals(), None, "a plain directory tells nothing");
        std::fs::write(dir.join("pids.events"), "max 5\n").unwrap();
        assert_eq!(group.refusals(), Some(5));
        // A real cgroup directory's files go with it; this one is plain.
        for f in ["pids.max", "pids.events"] {
            std::fs::remove_file(dir.join(f)).unwrap();
        }
        dir
    };
    assert!(!dir.exists(), "the group is removed when dropped");
}

#[test]
fn a_v1_group_writes_no_subtree_control() {
    let tmp = tempfile::tempdir().unwrap();
    let h = Hierarchy {
        version: Version::V1,
        own: tmp.path().to_path_buf(),
    };
    let group = PidsGroup::create_in(&h, 7).unwrap();
    assert_eq!(
        std::fs::read_to_string(group.dir().join("pids.max")).unwrap(),
        "7"
    );
    assert!(!tmp.path().join("cgroup.subtree_control").exists());
    std::fs::remove_file(group.dir().join("pids.max")).unwrap();
}

const PROBE: &str = "REFLOW_PIDCG_PROBE";
/// The probe's exit code when a thread could not be started.
const REFUSED: i32 = 3;

/// The child's half: joins the group named by the probe, then starts 32
/// threads that wait; exits [`REFUSED`] if one could not be started, 0 if
/// all were (the bound did not hold). The parent's run does nothing.
#[test]
#[ignore = "the child process's half, run by the test beside it"]
fn probe() {
    let Ok(dir) = std::env::var(PROBE) else {
        return;
    };
    PidsGroup::join(Path::new(&dir)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    for _ in 0..32 {
        let rx = rx.clone();
        let started = std::thread::Builder::new().spawn(move || {
            let _ = rx.lock().map(|r| r.recv());
        });
        if started.is_err() {
            std::process::exit(REFUSED);
        }
    }
    drop(tx);
    std::process::exit(0);
}

#[test]
fn a_real_group_bounds_a_process_tasks() {
    let Some(group) = real_group("pids", PidsGroup::create(8)) else {
        return;
    };
    let status = run_probe("pidcg::tests::probe", PROBE, group.dir());
    assert_eq!(
        status.code(),
        Some(REFUSED),
        "a process starting 32 threads in a group of 8 tasks: {status:?}"
    );
    assert!(
        group.refusals().is_some_and(|n| n >= 1),
        "the group counts the refusal: {:?}",
        group.refusals()
    );
    let dir = group.dir().to_path_buf();
    drop(group);
    assert!(!dir.exists(), "the group is removed when dropped");
}
