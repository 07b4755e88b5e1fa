//! A VM: KVM objects, memory, boot images or a snapshot, devices and vCPUs.
//! [`Vm::new`] boots from a kernel, [`Vm::restore`] from a snapshot; both
//! give a [`Vm`] that [`Vm::start`]s into a [`RunningVm`].

pub mod control;
mod deadline;
mod devices;
mod kvm;
pub use kvm::{kvm_unusable, NO_KVM_ENV};
mod outcome;
mod run;
mod snapshot_job;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

pub use control::{AgentHello, ControlChannel, ControlError, ControlHandle};
pub use outcome::{
    VmOutcome, EXIT_GUEST_CRASH, EXIT_KERNEL_PANIC, EXIT_MONITOR_ERROR, EXIT_TIMEOUT,
};
pub use run::{PausedVm, RunningVm, StopHandle};
pub use snapshot_job::{SnapshotFiles, SnapshotHandle};

use crate::arch::layout::{EBDA_START, ZERO_PAGE_START};
use crate::arch::{bootparams, mptable};
use crate::config::{ConfigError, VmConfig, BASE_CMDLINE};
use crate::console::GuestEvent;
use crate::devices::bus::BusError;
use crate::devices::serial::SerialRestoreError;
use crate::devices::virtio::block::BlockError;
use crate::devices::virtio::mmio::RestoreError;
use crate::devices::virtio::vsock::muxer::MuxerError;
use crate::host::HostKind;
use crate::hostile::HostileLog;
use crate::loader::{self, LoaderError};
use crate::memory::{self, MemoryError};
use crate::shm::{self, SharedRegion, ShmError};
use crate::snapshot::memory::SnapshotMemoryError;
use crate::snapshot::state::RingMarks;
use crate::snapshot::{file as snapfile, SnapshotFileError, MEMORY_FILE, STATE_FILE};
use crate::vcpu::{Vcpu, VcpuError};
use devices::{DeviceRestore, Devices, Links};

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The event-loop thread could not join the VM's CPU group (the reason).
    #[error("cannot join the VM's cgroup: {0}")]
    Cgroup(String),
    /// The seccomp mode is invalid or a filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// `/dev/kvm` does not exist.
    #[error(
        "/dev/kvm does not exist: this machine has no KVM (enable virtualization, load the \
         kvm_intel or kvm_amd module, or run on a host that exposes /dev/kvm)"
    )]
    NoKvm,
    /// [`kvm::NO_KVM_ENV`] hides `/dev/kvm` from this process.
    #[error(
        "{NO_KVM_ENV}=1 hides /dev/kvm from this process (a switch for testing a host without KVM)"
    )]
    KvmHidden,
    /// This user may not open `/dev/kvm`.
    #[error(
        "/dev/kvm is not accessible to this user ({0}): add the user to the owning group \
         (e.g. `sudo usermod -aG kvm $USER`, then log in again), or run as root"
    )]
    KvmPermission(kvm_ioctls::Error),
    /// A KVM operation failed: opening `/dev/kvm` (for another reason), or
    /// an ioctl on the system or VM fd.
    #[error("KVM {op}: {source}")]
    Kvm {
        /// The operation (such as "create VM").
        op: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be mapped or registered.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The kernel, initrd or command line could not be loaded.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The zero page could not be filled.
    #[error(transparent)]
    BootParams(#[from] bootparams::BootParamsError),
    /// The MP table could not be built.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    /// Writing a boot structure into guest memory failed.
    #[error("writing {what} into guest memory: {source}")]
    GuestWrite {
        /// Which structure ("zero page" or "MP table").
        what: &'static str,
        /// The guest memory error.
        source: vm_memory::GuestMemoryError,
    },
    /// A vCPU could not be created, configured, saved or restored.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A disk image could not be opened.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Device address ranges overlap.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The private directory for the VM's sockets could not be made.
    #[error("creating a private directory for the VM's sockets: {0}")]
    SocketDir(std::io::Error),
    /// Creating an eventfd failed.
    #[error("creating an eventfd: {0}")]
    EventFd(std::io::Error),
    /// The event loop could not be created or run, or a subscriber added.
    #[error("event loop: {0:?}")]
    EventManager(event_manager::Error),
    /// Installing the signal handler that kicks vCPUs out of `KVM_RUN` failed.
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    /// A vCPU thread could not be spawned.
    #[error("starting vCPU thread {id}: {source}")]
    Thread {
        /// The vCPU's index.
        id: u8,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A vCPU thread did not stop within 5 s of being asked to; it was left
    /// behind.
    #[error("a vCPU thread did not stop within 5 s")]
    VcpuStuck,
    /// A snapshot directory or file could not be created, read or written.
    #[error("reading snapshot {path}: {source}")]
    SnapshotIo {
        /// The path concerned.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A snapshot's state file could not be encoded or decoded.
    #[error("snapshot {path}: {source}")]
    SnapshotFile {
        /// The state file's path.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: SnapshotFileError,
    },
    /// A snapshot's memory file could not be written, opened or mapped.
    #[error(transparent)]
    SnapshotMemory(#[from] SnapshotMemoryError),
    /// The snapshot was taken of another kind of VM or host (what differs).
    #[error("snapshot does not match this VM: {0}")]
    SnapshotMismatch(String),
    /// The UART refused the snapshot's serial state.
    #[error(transparent)]
    SerialRestore(#[from] SerialRestoreError),
    /// A virtio-mmio transport refused the snapshot's state.
    #[error(transparent)]
    TransportRestore(#[from] RestoreError),
    /// The shared-memory region could not be set up.
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// The vsock device could not be set up or restored.
    #[error(transparent)]
    Vsock(#[from] MuxerError),
    /// The control channel failed.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Where the guest console goes and what the caller hears about the guest.
pub struct VmIo {
    /// Receives everything the guest prints on its serial console.
    pub console: Box<dyn Write + Send>,
    /// Bytes read from here are typed into the guest's console.
    pub input: Option<OwnedFd>,
    /// Receives agent lines and panics as they happen.
    pub events: Option<Sender<GuestEvent>>,
}

impl VmIo {
    /// Console to `out`, no input, no events.
    pub fn console(out: Box<dyn Write + Send>) -> VmIo {
        VmIo {
            console: out,
            input: None,
            events: None,
        }
    }
}

/// A VM ready to start.
pub struct Vm {
    config: VmConfig,
    kvm: Kvm,
    vm_fd: VmFd,
    mem: GuestMemoryMmap,
    vcpus: Vec<Vcpu>,
    devices: Devices,
    cmdline: String,
    host: HostKind,
    cpu_fingerprint: u64,
    shared: Option<Arc<SharedRegion>>,
    stop_requested: Arc<AtomicBool>,
    gate: Arc<crate::vcpu::gate::Gate>,
    owner: OwnerLinks,
    /// The cgroup the VM's threads join, when its CPU time is limited.
    cpu_group: Option<Arc<crate::cgroup::CpuGroup>>,
    /// Where the shared region's rings started (from the snapshot).
    rings: RingMarks,
    /// Snapshot requests, when the owner allowed them.
    snapshots: Option<snapshot_job::SnapshotSlot>,
}

/// What the VM's owner talks to it through: its vsock socket, the agent's
/// control channel and the hostile-input log.
struct OwnerLinks {
    vsock_uds: PathBuf,
    /// The private directory holding the sockets when the config names
    /// none; removed, sockets and all, with the VM.
    _socket_dir: Option<tempfile::TempDir>,
    control: ControlHandle,
    hostile: HostileLog,
}

impl OwnerLinks {
    fn new(config: &VmConfig) -> Result<OwnerLinks, VmError> {
        let (vsock_uds, socket_dir) = match &config.vsock_uds {
            Some(path) => (path.clone(), None),
            None => {
                let dir = private_socket_dir().map_err(VmError::SocketDir)?;
                (dir.path().join("vsock"), Some(dir))
            }
        };
        Ok(OwnerLinks {
            vsock_uds,
            _socket_dir: socket_dir,
            control: ControlHandle::default(),
            hostile: HostileLog::default(),
        })
    }

    fn links(&self, io: VmIo, started: Instant) -> Links<'_> {
        Links {
            io,
            started,
            vsock_uds: &self.vsock_uds,
            hostile: self.hostile.clone(),
            control: self.control.clone(),
        }
    }
}

/// The pieces of the guest command line for `config` on `host`, in order:
/// ours, the host's workaround switches, the shared region and doorbell,
/// the virtio devices (disks, then vsock), then the user's extra parameters.
pub fn cmdline_parts(config: &VmConfig, host: HostKind) -> Vec<String> {
    let mut parts = vec![BASE_CMDLINE.to_string(), host.cmdline_switches()];
    if config.shm_mib != 0 {
        let mem_size = u64::from(config.mem_mib) << 20;
        parts.push(shm::cmdline_param(
            shm::guest_base(mem_size),
            shm::region_size(config.shm_mib),
        ));
    }
    parts.extend(devices::virtio_cmdline(config.disks.len() + 1));
    parts.push(config.extra_cmdline.clone());
    parts
}

/// A fresh directory only this user can enter (0700, a random name, made
/// with `mkdir`, so it cannot already exist or be a planted symlink), for
/// the sockets of a VM without a configured path: no other user can
/// connect to the agent's listener or take its name first. Short, because
/// Unix socket paths hold 107 bytes and `_<port>` is appended to them.
pub(crate) fn private_socket_dir() -> std::io::Result<tempfile::TempDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir() && d.as_os_str().len() < 60)
        .unwrap_or_else(std::env::temp_dir);
    let base = if base.as_os_str().len() < 60 {
        base
    } else {
        PathBuf::from("/tmp")
    };
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("reflow-vm.")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
}

impl Vm {
    /// Creates the VM, loads the kernel and initrd, and sets up devices and
    /// vCPUs. Nothing runs until [`Vm::start`] or [`Vm::run`].
    pub fn new(config: VmConfig, io: VmIo) -> Result<Vm, VmError> {
        config.validate()?;
        let started = Instant::now();
        let host = config.host.unwrap_or_else(HostKind::detect);
        let kvm = kvm::open_kvm()?;
        let vm_fd = kvm::create_vm(&kvm)?;
        let mem_size = u64::from(config.mem_mib) << 20;
        let mem = memory::create(mem_size)?;
        memory::register(&vm_fd, &mem)?;

        let kernel = loader::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(loader::load_initrd(&mem, path, kernel.end, mem_size)?),
            None => None,
        };
        let shared = match config.shm_mib {
            0 => None,
            mib => {
                let region = SharedRegion::create(u64::from(mib) << 20, shm::guest_base(mem_size))?;
                region.register(&vm_fd, mem.num_regions() as u32)?;
                Some(Arc::new(region))
            }
        };
        let parts = cmdline_parts(&config, host);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let cmdline = loader::build_cmdline(&parts)?;
        let cmdline_len = loader::write_cmdline(&mem, &cmdline)?;
        let reserved: Vec<(u64, u64)> = shared.iter().map(|r| (r.guest_addr(), r.size())).collect();
        let params = bootparams::build(
            kernel.setup_header,
            mem_size,
            cmdline_len,
            initrd,
            &reserved,
        )?;
        mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
            .map_err(|source| VmError::GuestWrite {
                what: "zero page",
                source,
            })?;
        let mp = mptable::build(EBDA_START as u32, config.vcpus)?;
        mem.write_slice(&mp, GuestAddress(EBDA_START))
            .map_err(|source| VmError::GuestWrite {
                what: "MP table",
                source,
            })?;

        let owner = OwnerLinks::new(&config)?;
        let links = owner.links(io, started);
        let devices = devices::build(&vm_fd, &mem, &config.disks, links, None)?;
        let supported = kvm::supported_cpuid(&kvm)?;
        let vcpus = (0..config.vcpus)
            .map(|id| Vcpu::new(&vm_fd, id, config.vcpus, &supported))
            .collect::<Result<Vec<_>, _>>()?;
        vcpus[0].configure_boot(&mem, kernel.entry)?;

        let cmdline = cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::debug!(%cmdline, ?host, entry = kernel.entry, "VM ready to run");
        Ok(Vm {
            config,
            kvm,
            vm_fd,
            mem,
            vcpus,
            devices,
            cmdline,
            host,
            cpu_fingerprint: kvm::cpu_fingerprint(&supported),
            shared,
            stop_requested: Arc::new(AtomicBool::new(false)),
            gate: Arc::default(),
            owner,
            cpu_group: None,
            rings: RingMarks::default(),
            snapshots: None,
        })
    }

    /// Restores a clone from the snapshot in `dir`. `config` must describe
    /// the same VM (memory, vCPUs, disks, shared-memory size); its kernel,
    /// initrd and command line are not used. Guest RAM is mapped
    /// copy-on-write from the snapshot, which stays untouched. The clone's
    /// vsock connections are reset, so its agent reconnects to this VM's
    /// socket and gets fresh entropy and the host's time in the handshake;
    /// it counts as ready when it has taken them. A shared-memory region
    /// starts fresh (rings empty): map rings after the restore.
    pub fn restore(dir: &Path, config: VmConfig, io: VmIo) -> Result<Vm, VmError> {
        config.validate()?;
        let started = Instant::now();
        let state_path = dir.join(STATE_FILE);
        let bytes =
            crate::snapshot::private::read(&state_path).map_err(|source| VmError::SnapshotIo {
                path: state_path.clone(),
                source,
            })?;
        let state = snapfile::decode(&bytes).map_err(|source| VmError::SnapshotFile {
            path: state_path.clone(),
            source,
        })?;
        let mem_size = u64::from(config.mem_mib) << 20;
        if state.mem_size != mem_size {
            return Err(VmError::SnapshotMismatch(format!(
                "the snapshot has {} MiB of guest memory, the VM config {} MiB",
                state.mem_size >> 20,
                config.mem_mib
            )));
        }
        if state.vcpus.len() != usize::from(config.vcpus) {
            return Err(VmError::SnapshotMismatch(format!(
                "the snapshot has {} vCPUs, the VM config {}",
                state.vcpus.len(),
                config.vcpus
            )));
        }
        let host = config.host.unwrap_or_else(HostKind::detect);
        let kvm = kvm::open_kvm()?;
        let supported = kvm::supported_cpuid(&kvm)?;
        let fingerprint = kvm::cpu_fingerprint(&supported);
        if fingerprint != state.cpu_fingerprint {
            return Err(VmError::SnapshotMismatch(
                "it was taken on a host with different CPU features".into(),
            ));
        }
        let shm_size = u64::from(config.shm_mib) << 20;
        if state.shm_size != shm_size {
            return Err(VmError::SnapshotMismatch(format!(
                "the snapshot has a {} MiB shared-memory region, the VM config {} MiB",
                state.shm_size >> 20,
                config.shm_mib
            )));
        }
        if state.transports.len() != config.disks.len() {
            return Err(VmError::SnapshotMismatch(format!(
                "the snapshot has {} disks, the VM config {}",
                state.transports.len(),
                config.disks.len()
            )));
        }
        let vm_fd = kvm::create_vm(&kvm)?;
        let mem = crate::snapshot::memory::map_private(
            &dir.join(MEMORY_FILE),
            mem_size,
            config.verify_memory.then_some(&state.memory_sha256),
        )?;
        memory::register(&vm_fd, &mem)?;
        let shared = match shm_size {
            0 => None,
            size => {
                let region = SharedRegion::create(size, shm::guest_base(mem_size))?;
                if region.guest_addr() != state.shm_addr {
                    return Err(VmError::SnapshotMismatch(
                        "the shared-memory region would move in guest memory".into(),
                    ));
                }
                region.start_rings(&state.rings)?;
                region.register(&vm_fd, mem.num_regions() as u32)?;
                Some(Arc::new(region))
            }
        };
        kvm::restore_state(&vm_fd, &state.vm)?;
        let owner = OwnerLinks::new(&config)?;
        let links = owner.links(io, started);
        let devices = devices::build(
            &vm_fd,
            &mem,
            &config.disks,
            links,
            Some(DeviceRestore {
                serial: &state.serial,
                transports: &state.transports,
                vsock: &state.vsock,
            }),
        )?;
        let mut vcpus = Vec::new();
        for s in &state.vcpus {
            let vcpu = Vcpu::new_for_restore(&vm_fd, s.id)?;
            vcpu.restore_state(s)?;
            vcpu.match_tsc_khz(state.tsc_khz);
            vcpus.push(vcpu);
        }
        devices.deliver_pending();
        tracing::debug!(dir = %dir.display(), elapsed = ?started.elapsed(), "VM restored");
        Ok(Vm {
            config,
            kvm,
            vm_fd,
            mem,
            vcpus,
            devices,
            cmdline: state.cmdline,
            host,
            cpu_fingerprint: fingerprint,
            shared,
            stop_requested: Arc::new(AtomicBool::new(false)),
            gate: Arc::default(),
            owner,
            cpu_group: None,
            rings: state.rings,
            snapshots: None,
        })
    }

    /// The guest's kernel command line.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// The host<->guest shared-memory region, if the VM has one.
    pub fn shared_region(&self) -> Option<Arc<SharedRegion>> {
        self.shared.clone()
    }

    /// Where the shared region's rings started: where the snapshot this VM
    /// was restored from recorded them (zero for a booted VM).
    pub fn rings(&self) -> RingMarks {
        self.rings
    }

    /// Lets another thread ask this VM, once it runs, to snapshot itself
    /// into files it is handed (see [`SnapshotHandle`]); its event loop
    /// then runs under a filter that allows that.
    pub fn allow_snapshots(&mut self) -> SnapshotHandle {
        let slot = self.snapshots.get_or_insert_with(Default::default).clone();
        SnapshotHandle {
            slot,
            stop: self.stop_handle(),
        }
    }

    /// The host kind the VM was configured for.
    pub fn host(&self) -> HostKind {
        self.host
    }

    /// Where the agent's control channel will appear once the VM runs.
    pub fn control(&self) -> ControlHandle {
        self.owner.control.clone()
    }

    /// What the guest did that it must not (bad vsock packets, broken
    /// queues, protocol violations).
    pub fn hostile(&self) -> HostileLog {
        self.owner.hostile.clone()
    }

    /// The VM's vsock Unix socket (`CONNECT <port>` here reaches guest
    /// ports).
    pub fn vsock_uds(&self) -> &Path {
        &self.owner.vsock_uds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_parts_describe_the_region_the_vm_creates() {
        let mut config = VmConfig::new("k");
        config.shm_mib = 3;
        config.disks = vec!["d".into()];
        config.extra_cmdline = "reflow.quiet=1".into();
        let parts = cmdline_parts(&config, HostKind::Native);
        let region = SharedRegion::create(3 << 20, shm::guest_base(128 << 20)).unwrap();
        assert!(parts.contains(&region.cmdline_param()), "{parts:?}");
        // Disk, then vsock, then the user's parameters last (they win).
        assert_eq!(
            parts
                .iter()
                .filter(|p| p.starts_with("virtio_mmio"))
                .count(),
            2
        );
        assert_eq!(parts.last().unwrap(), "reflow.quiet=1");
    }

    #[test]
    fn sockets_without_a_configured_path_live_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let a = OwnerLinks::new(&VmConfig::new("k")).unwrap();
        let b = OwnerLinks::new(&VmConfig::new("k")).unwrap();
        let dir = a.vsock_uds.parent().unwrap().to_path_buf();
        assert_ne!(dir, b.vsock_uds.parent().unwrap());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{dir:?}");
        // Room for `_<port>` within a Unix socket path's 107 bytes.
        assert!(a.vsock_uds.as_os_str().len() < 90, "{:?}", a.vsock_uds);
        drop(a);
        assert!(!dir.exists(), "{dir:?} outlived its VM");
        let mut config = VmConfig::new("k");
        config.vsock_uds = Some("/run/given.vsock".into());
        let given = OwnerLinks::new(&config).unwrap();
        assert_eq!(given.vsock_uds, PathBuf::from("/run/given.vsock"));
    }
}
