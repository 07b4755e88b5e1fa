//! Golden snapshots on /dev/kvm: boot once, restore several clones, and show
//! each is live, isolated and reseeded; damaged snapshots are refused.

use std::path::Path;

use reflow_agent_protocol::request::encode_hex;
use reflow_integration_tests::{guest_images, kvm_available, TestVm, LIMIT};
use reflow_vmm::snapshot::{golden, MEMORY_FILE, STATE_FILE};
use reflow_vmm::{StopReason, Vm, VmConfig, VmIo};
const MARKER: &[u8] = b"REFLOW-SNAPSHOT-DISK";

fn config(dir: &Path) -> VmConfig {
    let images = guest_images();
    let disk = dir.join("disk.img");
    let mut contents = MARKER.to_vec();
    contents.resize(64 * 1024, 0);
    std::fs::write(&disk, contents).unwrap();
    let mut c = VmConfig::new(&images.kernel);
    c.initrd = Some(images.initramfs);
    c.disks = vec![disk];
    c.timeout = Some(LIMIT);
    c
}

fn checksum(path: &Path) -> u32 {
    crc32fast::hash(&std::fs::read(path).unwrap())
}

#[test]
fn clones_from_one_golden_snapshot_are_live_isolated_and_reseeded() {
    if !kvm_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let config = config(work.path());
    let cache = work.path().join("cache");
    let golden = golden::ensure(&config, &cache, &|m| eprintln!("[golden] {m}")).unwrap();
    assert!(golden.created);
    let again = golden::ensure(&config, &cache, &|_| {}).unwrap();
    assert!(!again.created, "second use must reuse the snapshot");
    assert_eq!(again.dir, golden.dir);
    let memory_sum = checksum(&golden.dir.join(MEMORY_FILE));
    let state_sum = checksum(&golden.dir.join(STATE_FILE));

    let mut clones: Vec<TestVm> = (0..3)
        .map(|i| {
            let console = work.path().join(format!("console{i}.log"));
            let clone = TestVm::restore(
                &golden.dir,
                config.clone(),
                Box::new(std::fs::File::create(console).unwrap()),
            );
            eprintln!(
                "clone {i} ready {:.3} s after restore began",
                clone.ready_after.as_secs_f64()
            );
            clone
        })
        .collect();
    for c in &clones {
        // The snapshot's connection was reset; the agent reconnected.
        assert_eq!(c.control.hello().connection, 2);
    }
    // Live: each answers, and reads the disk through the restored virtio queue.
    let hex = encode_hex(MARKER);
    for c in clones.iter_mut() {
        assert_eq!(c.ok("ping"), "pong");
        assert_eq!(
            c.ok(&format!("read-block /dev/vda 0 {}", MARKER.len())),
            hex
        );
    }
    // Reseeded: no two clones draw the same random bytes.
    let randoms: Vec<String> = clones.iter_mut().map(|c| c.ok("random 16")).collect();
    for i in 0..randoms.len() {
        for j in i + 1..randoms.len() {
            assert_ne!(randoms[i], randoms[j], "clones {i} and {j} share RNG state");
        }
    }
    // Isolated: a write in one clone is invisible in the others.
    assert_eq!(
        clones[0].ok("write-file /tmp/isolation written-by-clone-0"),
        "ok"
    );
    assert_eq!(
        clones[0].ok("read-file /tmp/isolation"),
        "written-by-clone-0"
    );
    for c in clones.iter_mut().skip(1) {
        assert!(c.request("read-file /tmp/isolation").is_err());
    }
    for c in clones {
        let outcome = c.power_off();
        assert_eq!(outcome.stop, StopReason::Reset);
        assert_eq!(outcome.exit_code(), 0);
        assert!(outcome.hostile.is_empty(), "{:?}", outcome.hostile);
    }
    // ... and invisible in the snapshot.
    assert_eq!(checksum(&golden.dir.join(MEMORY_FILE)), memory_sum);
    assert_eq!(checksum(&golden.dir.join(STATE_FILE)), state_sum);

    damaged_snapshots_are_refused(&golden.dir, &config, work.path());
}

fn damaged_snapshots_are_refused(good: &Path, config: &VmConfig, work: &Path) {
    let copy = |name: &str| {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in [STATE_FILE, MEMORY_FILE] {
            std::fs::copy(good.join(f), dir.join(f)).unwrap();
        }
        dir
    };
    let restore_err = |dir: &Path, config: VmConfig| {
        Vm::restore(dir, config, VmIo::console(Box::new(std::io::sink())))
            .err()
            .expect("a damaged snapshot was restored")
            .to_string()
    };

    let flipped = copy("flipped");
    let mut state = std::fs::read(flipped.join(STATE_FILE)).unwrap();
    let mid = state.len() / 2;
    state[mid] ^= 0x10;
    std::fs::write(flipped.join(STATE_FILE), &state).unwrap();
    let e = restore_err(&flipped, config.clone());
    assert!(e.contains("checksum"), "{e}");

    let truncated = copy("truncated");
    let state = std::fs::read(truncated.join(STATE_FILE)).unwrap();
    std::fs::write(truncated.join(STATE_FILE), &state[..state.len() - 100]).unwrap();
    let e = restore_err(&truncated, config.clone());
    assert!(e.contains("truncated"), "{e}");

    let short_mem = copy("short-memory");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(short_mem.join(MEMORY_FILE))
        .unwrap();
    f.set_len(1 << 20).unwrap();
    let e = restore_err(&short_mem, config.clone());
    assert!(e.contains("memory file"), "{e}");

    let not_snapshot = copy("not-a-snapshot");
    std::fs::write(
        not_snapshot.join(STATE_FILE),
        b"hello, world, this is not it",
    )
    .unwrap();
    let e = restore_err(&not_snapshot, config.clone());
    assert!(e.contains("bad magic"), "{e}");

    let mut bigger = config.clone();
    bigger.mem_mib *= 2;
    let e = restore_err(good, bigger);
    assert!(e.contains("MiB"), "{e}");
}

/// A clone's monotonic clock goes on from its golden snapshot: two clones
/// restored seconds apart report (almost) the same uptime, rather than
/// uptimes apart by the time between them (what a clock that kept running
/// while the snapshot sat on disk would show, and what made restores slow
/// down as goldens aged).
#[test]
fn a_clones_clock_continues_from_its_snapshot() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = reflow_integration_tests::golden_agent_vm(0);
    let uptime = || {
        let vm = TestVm::restore(&dir, config.clone(), Box::new(std::io::sink()));
        let ms = vm.control.hello().uptime_ms;
        assert_eq!(vm.power_off().exit_code(), 0);
        ms
    };
    let first = uptime();
    let apart = std::time::Duration::from_secs(15);
    std::thread::sleep(apart);
    let second = uptime();
    eprintln!("clones restored {apart:?} apart: guest uptime {first} ms and {second} ms");
    // Each clone's uptime is the snapshot's plus its own restore and
    // handshake; a clock that ran on would add the 15 s between them.
    assert!(
        second.abs_diff(first) < 3000,
        "the guest clock jumped: {first} ms, then {second} ms {apart:?} later"
    );
}
