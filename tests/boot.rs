//! Boots the real guest kernel (2 vCPUs, so the MP table and SMP bring-up are
//! exercised) with the agent as PID 1 on /dev/kvm.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reflow_integration_tests::{guest_images, kvm_available, next_agent_line};
use reflow_vmm::protocol::{encode_hex, AgentLine, SHM_PROBE_MARKER};
use reflow_vmm::{StopReason, Vm, VmConfig, VmError, VmIo};
use vm_memory::Bytes;

/// Generous: a boot takes ~10-30 s on nested kvm_pvm hosts, ~0.1 s on bare
/// metal. Only a hung guest gets near it.
const BOOT_LIMIT: Duration = Duration::from_secs(900);

#[test]
fn agent_boots_answers_on_console_reads_disk_and_powers_off() {
    if !kvm_available() {
        return;
    }
    let images = guest_images();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let marker = b"REFLOW-TEST-DISK-0123456789abcdef";
    let mut contents = marker.to_vec();
    contents.resize(64 * 1024, 0);
    std::fs::write(&disk, &contents).unwrap();
    let console_path = dir.path().join("console.log");

    let (mut host_end, guest_end) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut config = VmConfig::new(&images.kernel);
    config.initrd = Some(images.initramfs.clone());
    config.disks = vec![disk];
    config.vcpus = 2;
    config.shm_mib = 16;
    config.timeout = Some(BOOT_LIMIT);
    config.extra_cmdline = format!("reflow.cmd=\"read-block /dev/vda 0 {}\"", marker.len());
    let vm = Vm::new(
        config,
        VmIo {
            console: Box::new(std::fs::File::create(&console_path).unwrap()),
            input: Some(guest_end.into()),
            events: Some(tx),
        },
    )
    .unwrap();
    let shared = vm.shared_region().expect("a shared-memory region");
    let runner = std::thread::spawn(move || vm.run());
    let deadline = Instant::now() + BOOT_LIMIT;

    // 1. The agent is up and says so first.
    let ready = next_agent_line(&rx, deadline);
    assert!(
        matches!(ready, AgentLine::Ready { ref version, uptime_ms } if version == env!("CARGO_PKG_VERSION") && uptime_ms > 0),
        "first agent line was {ready:?}"
    );
    // 2. The boot request read the disk through virtio-blk.
    let hex = encode_hex(marker);
    assert_eq!(
        next_agent_line(&rx, deadline),
        AgentLine::Ok {
            command: "read-block".into(),
            result: hex
        }
    );
    // 3. Requests typed on the serial console reach the agent.
    host_end.write_all(b"ping\n").unwrap();
    assert_eq!(
        next_agent_line(&rx, deadline),
        AgentLine::Ok {
            command: "ping".into(),
            result: "pong".into()
        }
    );
    // 4. Guest user space maps the shared region (write-back cacheable: the
    //    read bandwidth it reports is far above uncached memory's) and what
    //    it writes is what the host sees.
    host_end.write_all(b"shm-probe 165\n").unwrap();
    let probe = next_agent_line(&rx, deadline);
    let AgentLine::Ok { command, result } = probe else {
        panic!("shm-probe failed: {probe:?}")
    };
    assert_eq!(command, "shm-probe");
    eprintln!("shared memory, measured in the guest: {result}");
    assert!(
        result.starts_with(&format!("bytes={}", 16 << 20)),
        "{result}"
    );
    let host_view = shared.as_slice();
    let mut head = vec![0u8; SHM_PROBE_MARKER.len()];
    host_view.read_slice(&mut head, 0).unwrap();
    assert_eq!(head, SHM_PROBE_MARKER);
    let mut tail = [0u8; 64];
    host_view.read_slice(&mut tail, (16 << 20) - 64).unwrap();
    assert_eq!(tail, [165u8; 64]);
    // 5. A bad request is refused, and the agent keeps serving.
    host_end.write_all(b"launch-missiles\n").unwrap();
    assert!(matches!(
        next_agent_line(&rx, deadline),
        AgentLine::Err { ref command, .. } if command == "launch-missiles"
    ));
    // 6. Power off: the guest resets through the i8042 and the monitor ends.
    host_end.write_all(b"poweroff 0\n").unwrap();
    assert_eq!(
        next_agent_line(&rx, deadline),
        AgentLine::Exit { status: 0 }
    );
    let outcome = runner.join().unwrap().unwrap();
    let console = std::fs::read_to_string(&console_path).unwrap();
    assert_eq!(outcome.stop, StopReason::Reset, "console:\n{console}");
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(outcome.agent_exit_status, Some(0));
    assert!(outcome.kernel_panic.is_none());
    let ready = outcome.ready.expect("ready recorded in the outcome");
    assert!(ready.host_elapsed <= outcome.elapsed + Duration::from_secs(1));
    assert!(console.contains("REFLOW-AGENT-READY"));
    eprintln!(
        "agent ready after {:.3} s host time ({:.3} s guest uptime); VM ran {:.3} s",
        ready.host_elapsed.as_secs_f64(),
        ready.guest_uptime.as_secs_f64(),
        outcome.elapsed.as_secs_f64()
    );
}

#[test]
fn bad_boot_inputs_are_clear_errors() {
    if !kvm_available() {
        return;
    }
    let images = guest_images();
    let dir = tempfile::tempdir().unwrap();
    let new_vm = |f: &dyn Fn(&mut VmConfig)| {
        let mut c = VmConfig::new(&images.kernel);
        c.initrd = Some(images.initramfs.clone());
        f(&mut c);
        Vm::new(c, VmIo::console(Box::new(std::io::sink()))).err()
    };
    let text = dir.path().join("README.txt");
    std::fs::write(&text, "not a kernel").unwrap();

    let e = new_vm(&|c| c.kernel = dir.path().join("missing")).unwrap();
    assert!(e.to_string().contains("opening kernel"), "{e}");
    let e = new_vm(&|c| c.kernel = text.clone()).unwrap();
    assert!(e.to_string().contains("is not a kernel"), "{e}");
    let e = new_vm(&|c| c.mem_mib = 8).unwrap();
    assert!(matches!(e, VmError::Config(_)), "{e}");
    assert!(e.to_string().contains("too small"), "{e}");
    let e = new_vm(&|c| c.extra_cmdline = "x".repeat(4096)).unwrap();
    assert!(e.to_string().contains("command line"), "{e}");
    let e = new_vm(&|c| c.disks = vec![dir.path().join("no-disk.img")]).unwrap();
    assert!(e.to_string().contains("opening disk image"), "{e}");
    let e = new_vm(&|c| c.initrd = Some(dir.path().join("none"))).unwrap();
    assert!(e.to_string().contains("opening initrd"), "{e}");
}
