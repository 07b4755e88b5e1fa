//! Release builds carry no test hook: the host binaries resolve every
//! workspace crate without its `testing` feature, and the agent in the
//! release initramfs refuses every test-hook request.

use std::path::Path;
use std::process::Command;

use reflow_integration_tests::{guest_images, kvm_available, release_initramfs, TestVm, LIMIT};
use reflow_vmm::VmConfig;

/// The workspace crates `package`'s own build resolves, with their features.
fn resolved(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "-q", "--edges", "normal", "--prefix", "none"])
        .args(["-f", "{p} [{f}]", "-p", package, "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("reflow-"))
        .map(str::to_string)
        .collect()
}

fn has_test_hooks(lines: &[String]) -> bool {
    lines.iter().any(|l| l.contains("testing"))
}

#[test]
fn release_binaries_resolve_without_test_hooks() {
    // The check can see the feature: the test crate itself turns it on.
    assert!(has_test_hooks(&resolved("reflow-integration-tests")));
    for binary in ["reflow-sandbox", "reflow-vmm", "reflow-guest-agent"] {
        let lines = resolved(binary);
        assert!(lines.iter().any(|l| l.contains("reflow-ring")), "{lines:?}");
        assert!(!has_test_hooks(&lines), "{binary}: {lines:#?}");
    }
}

#[test]
fn the_release_agent_has_no_test_hooks() {
    if !kvm_available() {
        return;
    }
    let images = guest_images();
    let mut config = VmConfig::new(&images.kernel);
    config.initrd = Some(release_initramfs());
    config.shm_mib = 16;
    config.timeout = Some(LIMIT);
    let mut vm = TestVm::boot(config, Box::new(std::io::sink()));
    for hook in [
        "ring-fault magic",
        "ring-echo",
        "map-ring",
        "shm-probe 1",
        "echo hi",
    ] {
        let refused = vm
            .request(hook)
            .expect_err("a release agent has no test hooks");
        assert!(
            refused.to_string().contains("without the testing feature"),
            "{hook}: {refused}"
        );
    }
    assert_eq!(vm.ok("ping"), "pong");
    assert_eq!(vm.power_off().exit_code(), 0);
}
