//! The `reflow-vmm` binary refuses bad input with a clear message and a
//! non-zero exit, never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reflow-vmm"))
        .args(args)
        .output()
        .expect("run reflow-vmm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn missing_kernel_file() {
    let (code, err) = run(&["--kernel", "/nonexistent/vmlinux", "--no-input"]);
    assert_eq!(code, 1);
    assert!(err.contains("error:"), "{err}");
    assert!(
        err.contains("/nonexistent/vmlinux") || err.contains("/dev/kvm"),
        "{err}"
    );
}

#[test]
fn file_that_is_not_a_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, "hello").unwrap();
    let (code, err) = run(&["--kernel", p.to_str().unwrap(), "--no-input"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is not a kernel") || err.contains("/dev/kvm"),
        "{err}"
    );
}

#[test]
fn memory_too_small_and_too_many_vcpus() {
    let (code, err) = run(&["--kernel", "k", "--mem", "8", "--no-input"]);
    assert_eq!(code, 1);
    assert!(err.contains("guest memory of 8 MiB is too small"), "{err}");
    let (code, err) = run(&["--kernel", "k", "--vcpus", "64", "--no-input"]);
    assert_eq!(code, 1);
    assert!(err.contains("64 vCPUs requested"), "{err}");
}

#[test]
fn cmdline_too_long() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k");
    std::fs::write(&p, b"\x7fELF").unwrap();
    let long = "x".repeat(5000);
    let (code, err) = run(&[
        "--kernel",
        p.to_str().unwrap(),
        "--append",
        &long,
        "--no-input",
    ]);
    assert_eq!(code, 1);
    // The ELF is loaded before the command line is built; either refusal is
    // a clean error. A real kernel is tested in tests/boot.rs.
    assert!(err.contains("error:"), "{err}");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let (code, err) = run(&["--kernel", "k", "--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("--frobnicate"), "{err}");
}
