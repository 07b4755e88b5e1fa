//! The Python language image on /dev/kvm: the agent mounts it read-only and
//! runs the image's python3 inside it, with a writable tmpfs /tmp.

use std::time::Instant;

use reflow_integration_tests::{guest_images, kvm_available, python_image, TestVm, LIMIT};
use reflow_vmm::protocol::Request;
use reflow_vmm::{ControlError, VmConfig};

fn run(vm: &mut TestVm, program: &str, args: &[&str]) -> Result<String, ControlError> {
    let request = Request::Run {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    vm.control.request(&request, LIMIT)
}

#[test]
fn python_runs_inside_the_read_only_image() {
    if !kvm_available() {
        return;
    }
    let images = guest_images();
    let mut config = VmConfig::new(&images.kernel);
    config.initrd = Some(images.initramfs);
    config.disks = vec![python_image()];
    config.mem_mib = 256;
    config.timeout = Some(LIMIT);
    config.extra_cmdline = "reflow.root=/dev/vda reflow.quiet=1".into();
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
    let outcome = vm.power_off();
    assert_eq!(outcome.exit_code(), 0);
    assert!(outcome.hostile.is_empty(), "{:?}", outcome.hostile);
}
