//! What a VM is made of, and checks on it before anything is created.

use std::path::PathBuf;
use std::time::Duration;

use crate::arch::layout::MAX_VCPUS;
use crate::host::HostKind;

/// Smallest guest memory we accept: the kernel loads at 16 MiB and needs
/// room above it to run.
pub const MIN_MEM_MIB: u32 = 64;
/// Largest guest memory we accept.
pub const MAX_MEM_MIB: u32 = 64 * 1024;
/// Default guest memory.
pub const DEFAULT_MEM_MIB: u32 = 128;

/// The command line every guest gets: serial console, reset through the
/// i8042 (so `reboot` ends the monitor), reboot at once on panic, a single
/// UART, a quiet boot, a trusted TSC (no watchdog work) and the
/// paravirtual clock as the clocksource. kvm-clock is what the monitor
/// saves and restores with a snapshot (`KVM_GET_CLOCK`/`KVM_SET_CLOCK`), so
/// a clone's monotonic clock goes on from its snapshot. With the TSC as
/// clocksource it jumped by the snapshot's age on `kvm_pvm` hosts (two
/// clones restored 20 s apart differed by 20 s of uptime, though the TSC
/// MSR is restored), and restores slowed down as goldens aged. There, a
/// clock read in guest user space costs the same with either (~30-40 us on
/// an Intel host, through the vDSO).
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 8250.nr_uarts=1 quiet \
     tsc=reliable no_timer_check clocksource=kvm-clock";

/// A VM to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel: ELF vmlinux (preferred) or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Read-only disks, in order: /dev/vda, /dev/vdb, ...
    pub disks: Vec<PathBuf>,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Appended to the command line (later parameters win in the kernel).
    pub extra_cmdline: String,
    /// Stop the VM after this long.
    pub timeout: Option<Duration>,
    /// Host kind; `None` detects it.
    pub host: Option<HostKind>,
    /// Size of the host<->guest shared-memory region in MiB (0: none).
    pub shm_mib: u32,
    /// The vsock Unix socket (Firecracker's hybrid vsock: host processes
    /// connect here and write `CONNECT <port>`; guest connections to host
    /// port P go to `<path>_P`). `None`: a private path under the runtime
    /// directory, removed with the VM.
    pub vsock_uds: Option<PathBuf>,
    /// Whether a restore checks the snapshot's memory file against the
    /// digest its state recorded (once per process and file version). A
    /// caller that checked it already (the bridge, before it starts a
    /// monitor process) turns it off.
    pub verify_memory: bool,
}

/// The guest's vsock CID (each VM has its own socket, so all can share it).
pub const GUEST_CID: u64 = 3;

impl VmConfig {
    /// A config with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> VmConfig {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            disks: Vec::new(),
            mem_mib: DEFAULT_MEM_MIB,
            vcpus: 1,
            extra_cmdline: String::new(),
            timeout: None,
            host: None,
            shm_mib: 0,
            vsock_uds: None,
            verify_memory: true,
        }
    }
}

/// A config that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Guest memory (MiB, given) is below [`MIN_MEM_MIB`].
    #[error("guest memory of {0} MiB is too small: at least {MIN_MEM_MIB} MiB is needed")]
    MemoryTooSmall(u32),
    /// Guest memory (MiB, given) is above [`MAX_MEM_MIB`].
    #[error("guest memory of {0} MiB is over the limit of {MAX_MEM_MIB} MiB")]
    MemoryTooLarge(u32),
    /// The vCPU count (given) is zero or above [`MAX_VCPUS`].
    #[error("{0} vCPUs requested: a VM has 1 to {MAX_VCPUS}")]
    VcpuCount(u8),
    /// The shared-memory region (MiB, given) is above [`MAX_SHM_MIB`].
    #[error("a shared-memory region of {0} MiB is over the limit of {MAX_SHM_MIB} MiB")]
    ShmTooLarge(u32),
    /// More disks (count given) than the virtio device limit (given) leaves
    /// beside the vsock device.
    #[error("{0} disks requested: at most {max} fit the interrupt lines beside the vsock device", max = .1 - 1)]
    TooManyDisks(usize, usize),
}

/// Largest shared-memory region.
pub const MAX_SHM_MIB: u32 = 16 * 1024;

/// Most virtio devices: one IRQ line each, from 5 to 23.
pub const MAX_VIRTIO_DEVICES: usize = 19;

impl VmConfig {
    /// Checks limits that need no I/O (files are checked when opened).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mem_mib < MIN_MEM_MIB {
            return Err(ConfigError::MemoryTooSmall(self.mem_mib));
        }
        if self.mem_mib > MAX_MEM_MIB {
            return Err(ConfigError::MemoryTooLarge(self.mem_mib));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(self.vcpus));
        }
        if self.shm_mib > MAX_SHM_MIB {
            return Err(ConfigError::ShmTooLarge(self.shm_mib));
        }
        // One virtio slot is the vsock device's.
        if self.disks.len() + 1 > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDisks(
                self.disks.len(),
                MAX_VIRTIO_DEVICES,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let ok = VmConfig::new("k");
        assert_eq!(ok.validate(), Ok(()));
        let c = |f: fn(&mut VmConfig)| {
            let mut c = VmConfig::new("k");
            f(&mut c);
            c.validate()
        };
        assert_eq!(c(|c| c.mem_mib = 16), Err(ConfigError::MemoryTooSmall(16)));
        assert!(matches!(
            c(|c| c.mem_mib = u32::MAX),
            Err(ConfigError::MemoryTooLarge(_))
        ));
        assert_eq!(c(|c| c.vcpus = 0), Err(ConfigError::VcpuCount(0)));
        assert_eq!(c(|c| c.vcpus = 33), Err(ConfigError::VcpuCount(33)));
        assert_eq!(
            c(|c| c.shm_mib = 1 << 20),
            Err(ConfigError::ShmTooLarge(1 << 20))
        );
        assert!(matches!(
            c(|c| c.disks = vec![PathBuf::from("d"); 19]),
            Err(ConfigError::TooManyDisks(19, _))
        ));
    }
}
