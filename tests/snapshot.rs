//! Golden snapshots on /dev/kvm: boot once, restore several clones, and show
//! each is live, isolated and reseeded; damaged snapshots are refused.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reflow_integration_tests::{guest_images, kvm_available};
use reflow_vmm::protocol::{encode_hex, AgentLine};
use reflow_vmm::snapshot::{golden, MEMORY_FILE, STATE_FILE};
use reflow_vmm::{GuestEvent, StopReason, Vm, VmConfig, VmError, VmIo, VmOutcome};

const LIMIT: Duration = Duration::from_secs(900);
const MARKER: &[u8] = b"REFLOW-SNAPSHOT-DISK";

/// A restored clone running on its own thread, driven over its console.
struct Clone {
    input: UnixStream,
    events: Receiver<GuestEvent>,
    handle: JoinHandle<Result<VmOutcome, VmError>>,
}

impl Clone {
    fn restore(dir: &Path, config: &VmConfig, console: &Path) -> Clone {
        let (input, guest_end) = UnixStream::pair().unwrap();
        let (tx, events) = mpsc::channel();
        let io = VmIo {
            console: Box::new(std::fs::File::create(console).unwrap()),
            input: Some(guest_end.into()),
            events: Some(tx),
        };
        let vm = Vm::restore(dir, config.clone(), io).expect("restore");
        let handle = std::thread::spawn(move || vm.run());
        Clone {
            input,
            events,
            handle,
        }
    }

    fn wait_ready(&self) -> Duration {
        let deadline = Instant::now() + LIMIT;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(GuestEvent::Ready(r)) => return r.host_elapsed,
                Ok(GuestEvent::Agent(AgentLine::Err { command, message })) => {
                    panic!("restored clone refused {command}: {message}")
                }
                Ok(GuestEvent::KernelPanic(l)) => panic!("clone panicked: {l}"),
                Ok(_) => {}
                Err(e) => panic!("clone never became ready: {e}"),
            }
        }
    }

    /// Sends one request and returns the agent's answer to it.
    fn request(&mut self, line: &str) -> AgentLine {
        let command = line.split_whitespace().next().unwrap().to_string();
        self.input
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let deadline = Instant::now() + LIMIT;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(GuestEvent::Agent(a @ AgentLine::Ok { .. }))
                | Ok(GuestEvent::Agent(a @ AgentLine::Err { .. }))
                    if matches!(&a, AgentLine::Ok { command: c, .. } | AgentLine::Err { command: c, .. } if *c == command) =>
                {
                    return a
                }
                Ok(GuestEvent::KernelPanic(l)) => panic!("clone panicked: {l}"),
                Ok(_) => {}
                Err(e) => panic!("no answer to {line:?}: {e}"),
            }
        }
    }

    fn ok(&mut self, line: &str) -> String {
        match self.request(line) {
            AgentLine::Ok { result, .. } => result,
            other => panic!("{line:?} answered {other:?}"),
        }
    }

    fn power_off(mut self) -> VmOutcome {
        self.input.write_all(b"poweroff 0\n").unwrap();
        self.handle.join().unwrap().expect("clone ran")
    }
}

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

    let mut clones: Vec<Clone> = (0..3)
        .map(|i| {
            Clone::restore(
                &golden.dir,
                &config,
                &work.path().join(format!("console{i}.log")),
            )
        })
        .collect();
    for (i, c) in clones.iter().enumerate() {
        let t = c.wait_ready();
        eprintln!(
            "clone {i} ready {:.3} s after restore began",
            t.as_secs_f64()
        );
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
        assert!(matches!(
            c.request("read-file /tmp/isolation"),
            AgentLine::Err { .. }
        ));
    }
    for c in clones {
        let outcome = c.power_off();
        assert_eq!(outcome.stop, StopReason::Reset);
        assert_eq!(outcome.exit_code(), 0);
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
