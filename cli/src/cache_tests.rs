//! The cache listing and pruning on a cache tree of files made here, with
//! access and modification times set by hand.

use std::fs::{File, FileTimes};
use std::time::{Duration, SystemTime};

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

/// Writes `len` bytes at `path` (under `root`), last read `read_ago` and
/// last written `written_ago` before `now`.
fn file(root: &Path, path: &str, len: usize, read_ago: Duration, written_ago: Duration) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![7u8; len]).unwrap();
    let now = SystemTime::now();
    let times = FileTimes::new()
        .set_accessed(now - read_ago)
        .set_modified(now - written_ago);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(times)
        .unwrap();
}

/// A cache of one kernel (read yesterday), an old image (a file), a
/// snapshot read an hour ago though written a month ago, an old snapshot
/// and a lock file.
fn cache() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    file(r, "kernels/k1/vmlinux", 5000, DAY, 30 * DAY);
    file(r, "images/debian-old.tar", 9000, 40 * DAY, 40 * DAY);
    file(r, "snapshots/fresh/state.bin", 100, DAY / 24, 30 * DAY);
    file(r, "snapshots/fresh/memory.bin", 20_000, 30 * DAY, 30 * DAY);
    file(r, "snapshots/old/state.bin", 100, 20 * DAY, 20 * DAY);
    file(r, "snapshots/.old.lock", 0, 90 * DAY, 90 * DAY);
    root
}

#[test]
fn entries_are_listed_by_kind_with_their_latest_use_and_size() {
    let root = cache();
    let all = entries(root.path()).unwrap();
    let keys: Vec<(Kind, String)> = all.iter().map(|e| (e.kind, e.key())).collect();
    assert_eq!(
        keys,
        [
            (Kind::Kernel, "k1".to_string()),
            (Kind::Image, "debian-old.tar".to_string()),
            (Kind::Snapshot, "old".to_string()),
            (Kind::Snapshot, "fresh".to_string()),
        ],
        "least recently used first within a kind; no lock files"
    );
    let fresh = &all[3];
    let age = SystemTime::now().duration_since(fresh.last_used).unwrap();
    assert!(age < DAY / 12, "the read an hour ago counts: {age:?}");
    assert!(fresh.bytes >= 20_100, "{} bytes", fresh.bytes);
    let text = table(&all, SystemTime::now());
    assert!(
        text.contains("snapshot") && text.contains("fresh"),
        "{text}"
    );
    assert!(text.ends_with("in all"), "{text}");
    assert!(entries(&root.path().join("nothing-here"))
        .unwrap()
        .is_empty());
}

#[test]
fn pruning_removes_only_what_was_not_used_for_the_given_time() {
    let root = cache();
    let all = entries(root.path()).unwrap();
    let old: Vec<String> = stale(&all, 7 * DAY, SystemTime::now())
        .iter()
        .map(|e| e.key())
        .collect();
    assert_eq!(old, ["debian-old.tar", "old"]);
    for e in stale(&all, 7 * DAY, SystemTime::now()) {
        remove(e).unwrap();
    }
    let left: Vec<String> = entries(root.path())
        .unwrap()
        .iter()
        .map(|e| e.key())
        .collect();
    assert_eq!(left, ["k1", "fresh"]);
    assert!(root.path().join("snapshots/.old.lock").exists());
}

#[test]
fn a_snapshot_in_use_is_not_pruned() {
    let root = cache();
    let all = entries(root.path()).unwrap();
    let old = all.iter().find(|e| e.key() == "old").unwrap();
    let lock = root.path().join("snapshots/.old.lock");
    let held = reflow_vmm::snapshot::lock::EntryLock::shared(&lock).unwrap();
    assert!(!remove(old).unwrap(), "removed while in use");
    assert!(old.path.exists());
    drop(held);
    assert!(remove(old).unwrap());
    assert!(!old.path.exists());
}

#[test]
fn durations_take_hours_days_and_weeks_of_at_least_a_day() {
    assert_eq!(parse_unused_for("7d").unwrap(), 7 * DAY);
    assert_eq!(parse_unused_for("36h").unwrap(), DAY + DAY / 2);
    assert_eq!(parse_unused_for("2w").unwrap(), 14 * DAY);
    for bad in [
        "7",
        "d",
        "3h",
        "0d",
        "1.5d",
        "7y",
        "-1d",
        "99999999999999999999w",
    ] {
        assert!(parse_unused_for(bad).is_err(), "{bad}");
    }
    assert_eq!(human(512), "512 B");
    assert_eq!(human(3 << 29), "1.5 GiB");
}
