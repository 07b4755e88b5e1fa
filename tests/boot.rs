//! Boots the real guest kernel (2 vCPUs, so the MP table and SMP bring-up are
//! exercised) with the agent as PID 1 on /dev/kvm, and talks to it over the
//! vsock control channel.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use reflow_agent_protocol::request::{encode_hex, SHM_PROBE_MARKER};
use reflow_integration_tests::{guest_images, kvm_available, TestVm, LIMIT};
use reflow_vmm::{ControlError, StopReason, Vm, VmConfig, VmError, VmIo};
use vm_memory::Bytes;

#[test]
fn agent_boots_answers_over_vsock_reads_disk_and_powers_off() {
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

    let mut config = VmConfig::new(&images.kernel);
    config.initrd = Some(images.initramfs.clone());
    config.disks = vec![disk];
    config.vcpus = 2;
    config.shm_mib = 16;
    config.timeout = Some(LIMIT);
    config.vsock_uds = Some(dir.path().join("vm.vsock"));
    config.extra_cmdline = format!("reflow.cmd=\"read-block /dev/vda 0 {}\"", marker.len());
    let console = Box::new(std::fs::File::create(&console_path).unwrap());
    // 1. The agent connects over vsock and completes the handshake.
    let mut vm = TestVm::boot(config, console);
    let hello = vm.control.hello().clone();
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.connection, 1);
    assert!(hello.uptime_ms > 0 && hello.ready_uptime_ms >= hello.uptime_ms);
    // 2. The boot request read the disk through virtio-blk (its answer is on
    //    the console, where boot requests report).
    let console_text = std::fs::read_to_string(&console_path).unwrap();
    assert!(
        console_text.contains(&format!(
            "REFLOW-AGENT-OK read-block {}",
            encode_hex(marker)
        )),
        "console:\n{console_text}"
    );
    // 3. Requests over the control channel.
    assert_eq!(vm.ok("ping"), "pong");
    let health = vm.ok("health");
    assert!(
        health.contains("uptime_ms=") && health.contains("ring=idle"),
        "{health}"
    );
    assert_eq!(
        vm.ok(&format!("read-block /dev/vda 0 {}", marker.len())),
        encode_hex(marker)
    );
    // 4. Guest user space maps the shared region (write-back cacheable: the
    //    read bandwidth it reports is far above uncached memory's) and what
    //    it writes is what the host sees.
    let probe = vm.ok("shm-probe 165");
    eprintln!("shared memory, measured in the guest: {probe}");
    assert!(probe.starts_with(&format!("bytes={}", 16 << 20)), "{probe}");
    let shared = vm.shared.clone().expect("a shared region");
    let host_view = shared.as_slice();
    let mut head = vec![0u8; SHM_PROBE_MARKER.len()];
    host_view.read_slice(&mut head, 0).unwrap();
    assert_eq!(head, SHM_PROBE_MARKER);
    let mut tail = [0u8; 64];
    host_view.read_slice(&mut tail, (16 << 20) - 64).unwrap();
    assert_eq!(tail, [165u8; 64]);
    // 5. A refused request is an error, and the agent keeps serving.
    assert!(matches!(
        vm.request("read-file /no/such/file"),
        Err(ControlError::Refused { .. })
    ));
    assert_eq!(vm.ok("ping"), "pong");
    // 6. Firecracker's hybrid protocol: a host process reaches a guest port
    //    with `CONNECT`; nobody listens on port 9999 in the guest, so the
    //    guest resets it and the host socket just closes.
    let mut s = UnixStream::connect(&vm.vsock_uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"CONNECT 9999\n").unwrap();
    let mut line = String::new();
    let n = BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!((n, line.as_str()), (0, ""), "no OK for a closed guest port");
    assert_eq!(vm.hostile.count(), 0, "{:?}", vm.hostile.recent());
    // 7. Power off: the guest resets through the i8042 and the monitor ends.
    let outcome = vm.power_off();
    let console = std::fs::read_to_string(&console_path).unwrap();
    assert_eq!(outcome.stop, StopReason::Reset, "console:\n{console}");
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(outcome.agent_exit_status, Some(0));
    assert!(outcome.kernel_panic.is_none());
    assert!(outcome.hostile.is_empty(), "{:?}", outcome.hostile);
    let ready = outcome.ready.expect("ready recorded in the outcome");
    assert!(ready.host_elapsed <= outcome.elapsed + Duration::from_secs(1));
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
