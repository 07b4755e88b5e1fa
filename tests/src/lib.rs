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

/// A booted VM whose agent runs the ring echo service.
pub struct EchoVm {
    pub shared: std::sync::Arc<reflow_vmm::shm::SharedRegion>,
    input: std::os::unix::net::UnixStream,
    events: Receiver<GuestEvent>,
    runner: std::thread::JoinHandle<Result<reflow_vmm::VmOutcome, reflow_vmm::VmError>>,
}

impl EchoVm {
    /// Boots the agent-only guest with a `shm_mib` shared region and starts
    /// `ring-echo`.
    pub fn boot(shm_mib: u32) -> EchoVm {
        use std::io::Write;
        let images = guest_images();
        let (mut input, guest_end) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let (tx, events) = std::sync::mpsc::channel();
        let mut config = reflow_vmm::VmConfig::new(&images.kernel);
        config.initrd = Some(images.initramfs);
        config.timeout = Some(std::time::Duration::from_secs(3600));
        config.shm_mib = shm_mib;
        let vm = reflow_vmm::Vm::new(
            config,
            reflow_vmm::VmIo {
                console: Box::new(std::io::sink()),
                input: Some(guest_end.into()),
                events: Some(tx),
            },
        )
        .expect("create VM");
        let shared = vm.shared_region().expect("shared region");
        let runner = std::thread::spawn(move || vm.run());
        let deadline = Instant::now() + std::time::Duration::from_secs(900);
        let ready = next_agent_line(&events, deadline);
        assert!(matches!(ready, AgentLine::Ready { .. }), "{ready:?}");
        input.write_all(b"ring-echo\n").expect("console");
        let started = next_agent_line(&events, deadline);
        assert!(
            matches!(started, AgentLine::Ok { ref result, .. } if result == "started"),
            "{started:?}"
        );
        EchoVm {
            shared,
            input,
            events,
            runner,
        }
    }

    /// Powers the guest off and returns how the VM ended.
    pub fn power_off(mut self) -> reflow_vmm::VmOutcome {
        use std::io::Write;
        self.input.write_all(b"poweroff 0\n").expect("console");
        drop(self.events);
        self.runner.join().expect("VM thread").expect("VM ran")
    }
}
