//! `reflow-vmm`: the virtual machine monitor of the Reflow sandbox.
//!
//! Boots a Linux guest on KVM with the rust-vmm crates: guest memory and the
//! 64-bit boot protocol ([`arch`], [`loader`], [`memory`]), a serial console
//! and i8042 reset line, virtio-mmio with a read-only block device
//! ([`devices`]), vCPU threads with a pure exit handler ([`vcpu`]), and an
//! event loop for device I/O ([`vm`]). The guest agent reports on the
//! console ([`console`]).
//!
//! ```no_run
//! use reflow_vmm::{Vm, VmConfig, VmIo};
//! let mut config = VmConfig::new("vmlinux");
//! config.initrd = Some("initramfs.cpio".into());
//! config.extra_cmdline = "reflow.cmd=poweroff".into();
//! let vm = Vm::new(config, VmIo::console(Box::new(std::io::stdout())))?;
//! let outcome = vm.run()?;
//! println!("agent ready after {:?}", outcome.ready.map(|r| r.host_elapsed));
//! # Ok::<(), reflow_vmm::VmError>(())
//! ```

#![warn(missing_docs)]

pub mod arch;
pub mod cache;
pub mod cgroup;
pub mod config;
pub mod console;
pub mod devices;
pub mod host;
pub mod hostile;
pub mod loader;
pub mod memcg;
pub mod memory;
pub mod monitor;
pub mod pidcg;
pub mod rate;
pub mod seccomp;
pub mod shm;
pub mod snapshot;
pub mod vcpu;
pub mod vm;
pub mod worker_jail;

pub use cache::cache_root;
pub use config::{ConfigError, VmConfig};
pub use console::{AgentReady, GuestEvent};
pub use host::HostKind;

pub use vcpu::exit::StopReason;
pub use vm::{
    kvm_unusable, AgentHello, ControlChannel, ControlError, ControlHandle, PausedVm, RunningVm,
    SnapshotFiles, SnapshotHandle, StopHandle, Vm, VmError, VmIo, VmOutcome, NO_KVM_ENV,
};
