//! The Python language image on /dev/kvm: the agent mounts it read-only and
//! runs the image's python3 inside it, with a writable tmpfs /tmp; the SDK's
//! ring codec (Python) echoes messages the host's (Rust) sends.

use std::time::Instant;

use reflow_ring::{Consumer, Metadata, Producer};

use reflow_agent_protocol::request::Request;
use reflow_integration_tests::{
    kvm_available, percentile, python_vm_config, timed_round_trips, warm_python_golden, TestVm,
    LIMIT, PYTHON_SHM_ADDR,
};
use reflow_vmm::ControlError;

fn run(vm: &mut TestVm, program: &str, args: &[&str]) -> Result<String, ControlError> {
    let request = Request::Run {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    vm.control.request(&request, LIMIT)
}

fn meta(id: u64) -> Metadata {
    Metadata {
        message_id: id,
        timestamp_ns: id * 3,
        actor_id: "python-echo".into(),
        port: "in".into(),
        kind: 7,
    }
}

/// The value of `key=0x...` in glibc's `ld.so --list-diagnostics`.
fn diagnostic(text: &str, key: &str) -> u32 {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} missing from ld.so --list-diagnostics:\n{text}"));
    u32::from_str_radix(line.trim().trim_start_matches("0x"), 16).expect(key)
}

/// Guest user code must use only the register state the guest kernel saves
/// when it switches between processes. On AMD kvm_pvm hosts user-mode
/// CPUID is not trapped and reports AVX, so without the environment the
/// monitor passes there (`reflow_vmm::host::NO_AVX_ENV`, kernels/README.md)
/// glibc used YMM registers that a `noxsave` kernel does not save, and one
/// process corrupted another's
/// (workers killed by SIGSEGV during golden warm-ups). glibc's view must
/// not go beyond the kernel's `/proc/cpuinfo` flags.
fn register_state_is_what_the_kernel_switches(vm: &mut TestVm) {
    let diag = run(vm, "/lib64/ld-linux-x86-64.so.2", &["--list-diagnostics"])
        .expect("ld.so --list-diagnostics");
    let cpuinfo = vm.ok("read-file /proc/cpuinfo");
    let flags: Vec<&str> = cpuinfo
        .split("flags\t\t: ")
        .nth(1)
        .expect("flags in /proc/cpuinfo")
        .split_whitespace()
        .take_while(|f| *f != "bugs")
        .collect();
    // glibc's active features: index 0 is CPUID leaf 1 (ECX is register
    // 2; AVX bit 28), index 1 leaf 7 (EBX is register 1; AVX2 bit 5).
    let leaf1_ecx = diagnostic(&diag, "x86.cpu_features.features[0x0].active[0x2]");
    let leaf7_ebx = diagnostic(&diag, "x86.cpu_features.features[0x1].active[0x1]");
    let glibc_avx = leaf1_ecx & (1 << 28) != 0;
    let glibc_avx2 = leaf7_ebx & (1 << 5) != 0;
    eprintln!(
        "guest glibc uses AVX: {glibc_avx}, AVX2: {glibc_avx2}; guest kernel switches AVX \
         state: {}",
        flags.contains(&"avx")
    );
    assert!(
        !glibc_avx || flags.contains(&"avx"),
        "guest user space uses AVX, whose registers the guest kernel does not save: {flags:?}"
    );
    assert!(
        !glibc_avx2 || flags.contains(&"avx2"),
        "guest user space uses AVX2, whose registers the guest kernel does not save: {flags:?}"
    );
}

#[test]
fn python_runs_inside_the_read_only_image_and_speaks_the_ring() {
    if !kvm_available() {
        return;
    }
    let config = python_vm_config(16);
    let mut vm = TestVm::boot(config, Box::new(std::io::sink()));

    let t = Instant::now();
    let version = run(&mut vm, "/usr/bin/python3", &["-V"]).expect("python3 -V");
    assert!(version.starts_with("Python 3."), "{version}");
    eprintln!(
        "python3 -V in the guest: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The standard library the SDK will need is there and works.
    let script = "import json, struct, zlib, mmap, asyncio, traceback; \
                  print(json.dumps({'crc': zlib.crc32(b'reflow'), 'n': struct.calcsize('<QI')}))";
    let t = Instant::now();
    let out = run(&mut vm, "/usr/bin/python3", &["-c", script]).expect("stdlib imports");
    assert_eq!(
        out.trim(),
        format!("{{\"crc\": {}, \"n\": 12}}", crc32fast::hash(b"reflow"))
    );
    eprintln!(
        "python3 importing json/struct/zlib/mmap/asyncio/traceback: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    register_state_is_what_the_kernel_switches(&mut vm);
    // /tmp is writable (tmpfs); the image is not.
    let write = "open('/tmp/x', 'w').write('written in the guest')";
    run(&mut vm, "/usr/bin/python3", &["-c", write]).expect("write /tmp");
    assert_eq!(
        run(&mut vm, "/bin/cat", &["/tmp/x"]).unwrap(),
        "written in the guest"
    );
    let refused = run(&mut vm, "/bin/touch", &["/usr/lib/evil"]).expect_err("read-only root");
    assert!(
        refused.to_string().contains("Read-only file system"),
        "{refused}"
    );
    // A failing script reports its status and stderr.
    let err = run(
        &mut vm,
        "/usr/bin/python3",
        &["-c", "raise SystemExit('boom')"],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("status 1") && err.to_string().contains("boom"),
        "{err}"
    );

    // The SDK's ring codec, in the guest's Python, echoes what the host's
    // Rust codec sends: every size back byte-identical, metadata intact.
    let shared = vm.shared.clone().expect("a shared region");
    let args = vec![
        "/opt/reflow/ring_echo.py".to_string(),
        format!("{:#x}", shared.guest_addr()),
        format!("{:#x}", shared.size()),
    ];
    let spawn = Request::Spawn {
        program: "/usr/bin/python3".into(),
        args,
    };
    let pid = vm.control.request(&spawn, LIMIT).expect("spawn the echo");
    assert!(pid.starts_with("pid="), "{pid}");
    let region = shared.ring_region();
    let layout = shared.layout();
    let mut to_guest = Producer::new(region, layout.host_to_guest);
    let mut from_guest = Consumer::new(region, layout.guest_to_host);
    let t = Instant::now();
    for (id, len) in [0usize, 64, 4096, 1 << 20, 4 << 20].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|i| (i * 13 + id) as u8).collect();
        to_guest.send(&meta(id as u64), &payload, LIMIT).unwrap();
        let echo = from_guest.recv(LIMIT).unwrap().expect("echo");
        assert_eq!(echo.metadata, meta(id as u64));
        assert!(echo.to_vec() == payload, "{len}-byte echo differs");
        from_guest.release(echo).unwrap();
    }
    eprintln!(
        "python ring echo answering (interpreter start included): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut id = 100;
    let rtts = timed_round_trips(
        &mut to_guest,
        &mut from_guest,
        meta,
        &mut id,
        1000,
        &[7u8; 64],
    );
    eprintln!(
        "64 B round trip through the Python echo: p50 {:.1} us, p99 {:.1} us",
        percentile(&rtts, 0.5).as_secs_f64() * 1e6,
        percentile(&rtts, 0.99).as_secs_f64() * 1e6
    );
    let outcome = vm.power_off();
    assert_eq!(outcome.exit_code(), 0);
    assert!(outcome.hostile.is_empty(), "{:?}", outcome.hostile);
}

/// Clones of a golden snapshot taken while a Python process polls the ring
/// all reconnect their agent and answer at once. (A regression test: the
/// transport-reset interrupt used to be raised before the clone's vCPU
/// state was loaded, which lost it in most restores.)
#[test]
fn clones_of_a_warm_python_golden_answer_at_once() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = warm_python_golden(16, "ring_echo.py", "ring_echo.ready");
    for clone in 0..4 {
        let restored = Instant::now();
        let mut vm = TestVm::restore(&dir, config.clone(), Box::new(std::io::sink()));
        let shared = vm.shared.clone().expect("a shared region");
        assert_eq!(shared.guest_addr(), PYTHON_SHM_ADDR);
        let region = shared.ring_region();
        let layout = shared.layout();
        let mut to_guest = Producer::new(region, layout.host_to_guest);
        let mut from_guest = Consumer::new(region, layout.guest_to_host);
        let t = Instant::now();
        to_guest.send(&meta(1), b"first message", LIMIT).unwrap();
        let echo = from_guest.recv(LIMIT).unwrap().expect("echo");
        let first = t.elapsed();
        assert_eq!(echo.to_vec(), b"first message");
        from_guest.release(echo).unwrap();
        eprintln!(
            "clone {clone}: ready {:.0} ms after restore began; first message through the warm \
             Python echo {:.2} ms (restore to first answer {:.0} ms)",
            vm.ready_after.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3,
            restored.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(vm.ok("ping"), "pong");
        let outcome = vm.power_off();
        assert_eq!(outcome.exit_code(), 0);
    }
}
