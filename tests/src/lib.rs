//! Shared helpers for the integration tests and benches: where the guest
//! kernel and initramfs are, and whether this machine can run VMs.
//!
//! `./dev.sh test` builds both (cached) and exports their paths as
//! `REFLOW_KERNEL` and `REFLOW_INITRAMFS`.

use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use reflow_vmm::protocol::AgentLine;
use reflow_vmm::GuestEvent;

/// Paths of the boot images.
#[derive(Debug, Clone)]
pub struct GuestImages {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

fn from_env(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: run the tests with `./dev.sh test`, which builds the guest \
             kernel and initramfs (cached) and sets REFLOW_KERNEL and REFLOW_INITRAMFS"
        )
    });
    assert!(path.is_file(), "{var}={} does not exist", path.display());
    path
}

/// The boot images, from the environment. Panics with instructions when
/// they are missing: a VM test that cannot find its kernel must fail, not
/// pass silently.
pub fn guest_images() -> GuestImages {
    GuestImages {
        kernel: from_env("REFLOW_KERNEL"),
        initramfs: from_env("REFLOW_INITRAMFS"),
    }
}

/// Whether /dev/kvm exists. Tests that need it print a loud message and
/// return early where it does not; every development and CI machine of this
/// project has it.
pub fn kvm_available() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("\n!!!!!!!!!! SKIPPED: /dev/kvm is absent on this machine; VM tests did not run !!!!!!!!!!\n");
    false
}

/// The next agent protocol line, failing the test on a kernel panic or when
/// `deadline` passes.
pub fn next_agent_line(rx: &Receiver<GuestEvent>, deadline: Instant) -> AgentLine {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(GuestEvent::Agent(line)) => return line,
            Ok(GuestEvent::KernelPanic(line)) => panic!("guest kernel panicked: {line}"),
            Ok(GuestEvent::Ready(_)) => {}
            Err(e) => panic!("no agent line before the deadline: {e}"),
        }
    }
}
