//! A VM: KVM objects, memory, boot images or a snapshot, devices and vCPUs.
//! [`Vm::new`] boots from a kernel, [`Vm::restore`] from a snapshot; both
//! give a [`Vm`] that [`Vm::start`]s into a [`RunningVm`].

mod devices;
mod kvm;
mod outcome;
mod run;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

pub use outcome::{
    VmOutcome, EXIT_GUEST_CRASH, EXIT_KERNEL_PANIC, EXIT_MONITOR_ERROR, EXIT_TIMEOUT,
};
pub use run::{PausedVm, RunningVm, StopHandle};

use crate::arch::layout::{EBDA_START, ZERO_PAGE_START};
use crate::arch::{bootparams, mptable};
use crate::config::{ConfigError, VmConfig, BASE_CMDLINE};
use crate::console::GuestEvent;
use crate::devices::bus::BusError;
use crate::devices::serial::SerialRestoreError;
use crate::devices::virtio::block::BlockError;
use crate::devices::virtio::mmio::RestoreError;
use crate::host::HostKind;
use crate::loader::{self, LoaderError};
use crate::memory::{self, MemoryError};
use crate::shm::{self, SharedRegion, ShmError};
use crate::snapshot::memory::SnapshotMemoryError;
use crate::snapshot::{file as snapfile, SnapshotFileError, MEMORY_FILE, STATE_FILE};
use crate::vcpu::{Vcpu, VcpuError};
use devices::{DeviceRestore, Devices};

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "/dev/kvm does not exist: this machine has no KVM (enable virtualization, load the \
         kvm_intel or kvm_amd module, or run on a host that exposes /dev/kvm)"
    )]
    NoKvm,
    #[error(
        "/dev/kvm is not accessible to this user ({0}): add the user to the owning group \
         (e.g. `sudo usermod -aG kvm $USER`, then log in again), or run as root"
    )]
    KvmPermission(kvm_ioctls::Error),
    #[error("KVM {op}: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    BootParams(#[from] bootparams::BootParamsError),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error("writing {what} into guest memory: {source}")]
    GuestWrite {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("creating an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("event loop: {0:?}")]
    EventManager(event_manager::Error),
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error("starting vCPU thread {id}: {source}")]
    Thread { id: u8, source: std::io::Error },
    #[error("a vCPU thread did not stop within 5 s")]
    VcpuStuck,
    #[error("reading snapshot {path}: {source}")]
    SnapshotIo {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot {path}: {source}")]
    SnapshotFile {
        path: std::path::PathBuf,
        source: SnapshotFileError,
    },
    #[error(transparent)]
    SnapshotMemory(#[from] SnapshotMemoryError),
    #[error("snapshot does not match this VM: {0}")]
    SnapshotMismatch(String),
    #[error(transparent)]
    SerialRestore(#[from] SerialRestoreError),
    #[error(transparent)]
    TransportRestore(#[from] RestoreError),
    #[error(transparent)]
    Shm(#[from] ShmError),
    #[error("getting entropy for a restored clone: {0}")]
    Entropy(std::io::Error),
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
}

/// Fresh entropy for a restored clone.
fn host_entropy() -> Result<[u8; 32], VmError> {
    let mut buf = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(VmError::Entropy)?,
        &mut buf,
    )
    .map_err(VmError::Entropy)?;
    Ok(buf)
}

/// What the monitor types into a restored clone's console before anything
/// else: fresh entropy for the kernel RNG, the host's wall clock, and an
/// `uptime` whose answer marks the clone ready.
fn restore_typeahead() -> Result<Vec<u8>, VmError> {
    use crate::protocol::Request;
    let unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let lines = [
        Request::Reseed {
            entropy: host_entropy()?.to_vec(),
        },
        Request::SetTime { unix_ns },
        Request::Uptime,
    ];
    let text: String = lines.iter().map(|r| format!("{r}\n")).collect();
    Ok(text.into_bytes())
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
        let shm_param = shared
            .as_ref()
            .map(|r| r.cmdline_param())
            .unwrap_or_default();
        let host_switches = host.cmdline_switches();
        let virtio = devices::virtio_cmdline(config.disks.len());
        let mut parts = vec![BASE_CMDLINE, host_switches.as_str(), shm_param.as_str()];
        parts.extend(virtio.iter().map(String::as_str));
        parts.push(config.extra_cmdline.as_str());
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

        let devices = devices::build(&vm_fd, &mem, &config.disks, io, started, None, Vec::new())?;
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
        })
    }

    /// Restores a clone from the snapshot in `dir`. `config` must describe
    /// the same VM (memory, vCPUs, disks); its kernel, initrd and command
    /// line are not used. Guest RAM is mapped copy-on-write from the
    /// snapshot, which stays untouched. Before anything else, the clone is
    /// given fresh entropy and the host's time; it counts as ready when it
    /// has taken them.
    pub fn restore(dir: &Path, config: VmConfig, io: VmIo) -> Result<Vm, VmError> {
        config.validate()?;
        if config.shm_mib != 0 {
            return Err(VmError::SnapshotMismatch(
                "snapshots do not carry a shared-memory region yet".into(),
            ));
        }
        let started = Instant::now();
        let state_path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&state_path).map_err(|source| VmError::SnapshotIo {
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
        let vm_fd = kvm::create_vm(&kvm)?;
        let mem = crate::snapshot::memory::map_private(&dir.join(MEMORY_FILE), mem_size)?;
        memory::register(&vm_fd, &mem)?;
        kvm::restore_state(&vm_fd, &state.vm)?;
        let devices = devices::build(
            &vm_fd,
            &mem,
            &config.disks,
            io,
            started,
            Some(DeviceRestore {
                serial: &state.serial,
                transports: &state.transports,
            }),
            restore_typeahead()?,
        )?;
        let mut vcpus = Vec::new();
        for s in &state.vcpus {
            let vcpu = Vcpu::new_for_restore(&vm_fd, s.id)?;
            vcpu.restore_state(s)?;
            vcpu.match_tsc_khz(state.tsc_khz);
            vcpus.push(vcpu);
        }
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
            shared: None,
            stop_requested: Arc::new(AtomicBool::new(false)),
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

    /// The host kind the VM was configured for.
    pub fn host(&self) -> HostKind {
        self.host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_typeahead_reseeds_sets_time_and_asks_uptime() {
        // The console marks a restored clone ready on this `uptime` answer.
        let t = String::from_utf8(restore_typeahead().unwrap()).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("reseed ") && lines[0].len() == 7 + 64);
        assert!(lines[1].starts_with("settime "));
        assert_eq!(lines[2], "uptime");
        let other = String::from_utf8(restore_typeahead().unwrap()).unwrap();
        assert_ne!(t.lines().next(), other.lines().next(), "entropy repeated");
    }
}
