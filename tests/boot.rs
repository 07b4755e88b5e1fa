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
    config.extra_cmdline = format!("reflow.cmd=\"read-block /dev/vda 0 {}\"", marker.len());
    let console = Box::new(std::fs::File::create(&console_path).unwrap());
    // 1. The agent connects over vsock and completes the handshake, in a
    //    monitor process that is not this one.
    let mut vm = TestVm::boot(config, console);
    assert_ne!(vm.monitor.pid(), std::process::id());
    assert!(
        reflow_integration_tests::processes().contains(&(vm.monitor.pid(), std::process::id())),
        "the monitor is a child of this test"
    );
    let hello = vm.control.hello().clone();
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.connection, 1);
    assert!(hello.uptime_ms > 0 && hello.ready_uptime_ms >= hello.uptime_ms);
    // 2. The boot request read the disk through virtio-blk (its answer is on
    //    the console, where boot requests report; the agent printed it
    //    before it connected, and it crosses from the monitor's pipe to the
    //    file on a thread of ours, so it may still be on its way).
    let answer = format!("REFLOW-AGENT-OK read-block {}", encode_hex(marker));
    let console_text = wait_for_console(&console_path, &answer);
    assert!(console_text.contains(&answer), "console:\n{console_text}");
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

#[test]
fn reflow_vmm_by_hand_runs_its_vm_in_a_monitor_process_of_its_own() {
    if !kvm_available() {
        return;
    }
    use std::io::Read;
    let images = guest_images();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("vm.vsock");
    let program = reflow_vmm::monitor::MonitorProgram::get().expect("the reflow-vmm binary");
    // No poweroff among the requests: the VM runs until we end it.
    let mut cli = std::process::Command::new(&program.path)
        .arg("--kernel")
        .arg(&images.kernel)
        .arg("--initrd")
        .arg(&images.initramfs)
        .arg("--vsock")
        .arg(&link)
        .args(["--request", "ping"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = cli.stdout.take().unwrap();
    let mut stderr = cli.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Standard output carries the guest's console (through the monitor's
    // pipe) and the answers.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("ping -> pong") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "reflow-vmm ended: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    // The vCPUs run in a process below the command, not in it.
    let below = reflow_integration_tests::process_tree(cli.id())[1..].to_vec();
    assert!(!below.is_empty(), "no monitor process");
    assert!(!reflow_integration_tests::thread_names(cli.id())
        .iter()
        .any(|t| t.starts_with("vcpu")));
    let vcpus: Vec<u32> = below
        .iter()
        .copied()
        .filter(|&p| {
            reflow_integration_tests::thread_names(p)
                .iter()
                .any(|t| t == "vcpu0")
        })
        .collect();
    assert_eq!(vcpus.len(), 1, "{below:?}");
    // `--vsock` links to the VM's socket: nobody listens on guest port
    // 9999, so the guest resets the connection and it just closes.
    let mut s = UnixStream::connect(&link).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"CONNECT 9999\n").unwrap();
    let mut line = String::new();
    let n = BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!((n, line.as_str()), (0, ""));
    // A monitor killed from outside: the command says so (72) and cleans up.
    let children: Vec<u32> = reflow_integration_tests::processes()
        .into_iter()
        .filter(|&(_, parent)| parent == cli.id())
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(children.len(), 1, "{children:?}");
    // SAFETY: a plain system call; the pid is the command's child, which
    // stays unreaped (so not reused) until the command waits for it.
    unsafe { libc::kill(children[0] as i32, libc::SIGKILL) };
    let status = cli.wait().unwrap();
    let errors = errors.join().unwrap();
    assert_eq!(status.code(), Some(72), "{errors}");
    assert!(errors.contains("in monitor process"), "{errors}");
    assert!(errors.contains("ended without an outcome"), "{errors}");
    assert!(
        !link.exists() && link.symlink_metadata().is_err(),
        "the link stayed"
    );
}

/// A console writer that takes nothing until `release` is dropped, then
/// counts what it is given.
struct Stuck {
    release: std::sync::mpsc::Receiver<()>,
    taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Write for Stuck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.release.recv();
        self.taken
            .fetch_add(buf.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_console_nobody_reads_never_stalls_the_guest() {
    if !kvm_available() {
        return;
    }
    let images = guest_images();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0x5a; 4096]).unwrap();
    let mut config = VmConfig::new(&images.kernel);
    config.initrd = Some(images.initramfs.clone());
    config.disks = vec![disk];
    config.timeout = Some(LIMIT);
    // Each answer is 8 KiB of hex on the console: 192 KiB in all, three
    // times what the console's pipe and the one chunk our stuck writer
    // took can hold. A monitor that waited for room would never let the
    // agent get past them to connect.
    const READS: usize = 24;
    let reads = vec!["read-block /dev/vda 0 4096"; READS].join(";");
    config.extra_cmdline = format!("reflow.cmd=\"{reads}\"");
    let (hold, release) = std::sync::mpsc::channel();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let console = Stuck {
        release,
        taken: taken.clone(),
    };
    let mut vm = TestVm::boot(config, Box::new(console));
    assert_eq!(vm.ok("ping"), "pong");
    drop(hold);
    let outcome = vm.power_off();
    // The monitor saw the answers (its outcome keeps the last lines, cut
    // at 4 KiB)...
    let answered = outcome
        .console_tail
        .iter()
        .filter(|l| l.starts_with("REFLOW-AGENT-OK read-block 5a5a5a5a"))
        .count();
    assert!(answered >= 1, "{:?}", outcome.console_tail);
    // ...while what did not fit in the pipe was dropped, not queued.
    let printed = READS * (2 * 4096 + "REFLOW-AGENT-OK read-block \n".len());
    let taken = taken.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        taken < printed,
        "{taken} of {printed} bytes reached the writer"
    );
    assert_eq!(outcome.exit_code(), 0);
}

/// The console file's text once it holds `needle`, or after 10 s without.
fn wait_for_console(path: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap();
        if text.contains(needle) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
