//! The host<->guest shared-memory region, mapped from user space through
//! `/dev/mem` (write-back cacheable: the guest kernel has no PAT, and the
//! region is reserved, not RAM, in the e820 map).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use reflow_ring::Doorbell;
#[cfg(feature = "testing")]
use reflow_ring::{layout::LayoutError, Region};

/// Why the region could not be mapped or used (`source` carries the
/// errno where a system call failed).
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("no shared-memory region (reflow.shm= not set)")]
    NotConfigured,
    #[error("/dev/mem: {0}")]
    DevMem(std::io::Error),
    #[error("region too large")]
    TooLarge,
    #[error("mmap /dev/mem at {addr:#x}: {source}")]
    Mmap { addr: u64, source: std::io::Error },
    #[cfg(feature = "testing")]
    #[error("read back something other than what was written")]
    ReadBack,
    /// The ring layout the host wrote is not one we can use.
    #[cfg(feature = "testing")]
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The echo service's thread could not start.
    #[cfg(feature = "testing")]
    #[error("{0}")]
    Thread(std::io::Error),
    /// `ring-fault` named no fault we know.
    #[cfg(feature = "testing")]
    #[error("{0}")]
    UnknownFault(String),
    #[cfg(feature = "testing")]
    #[error(transparent)]
    Ring(#[from] reflow_ring::RingError),
}

/// A mapping of the region.
pub struct Mapping {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: the mapping is plain shared memory that lives until the last
// `Arc` drops it; every access goes through volatile, bounds-checked
// `Region` methods or the probe's own loops.
unsafe impl Send for Mapping {}
// SAFETY: as above; concurrent access is what shared memory is for.
unsafe impl Sync for Mapping {}

impl Mapping {
    #[cfg(feature = "testing")]
    pub(crate) fn region(&self) -> Region {
        // SAFETY: the mapping is `len` bytes, page-aligned, and outlives the
        // region (callers hold the `Arc<Mapping>` while using it).
        unsafe { Region::from_raw(self.ptr, self.len) }
    }
}

/// The guest->host doorbell: a write to the page KVM watches with an
/// ioeventfd wakes the host consumer (one VM exit, no guest kernel work).
pub struct MmioDoorbell(Mapping);

impl Doorbell for MmioDoorbell {
    fn ring(&self) {
        // SAFETY: the mapping is one page long; the write is the doorbell.
        unsafe { self.0.ptr.cast::<u32>().write_volatile(1) };
    }
}

/// The shared region, mapped on first use and kept: mapping `/dev/mem`
/// fills every page-table entry up front, which costs seconds per 100 MiB
/// where the guest kernel is emulated.
pub struct Shm {
    region: Option<(u64, u64)>,
    doorbell_addr: Option<u64>,
    mapping: Option<Arc<Mapping>>,
    doorbell: Option<Arc<MmioDoorbell>>,
}

impl Shm {
    /// `region` and `doorbell` are `reflow.shm=` and `reflow.doorbell=`
    /// from the command line.
    pub fn new(region: Option<(u64, u64)>, doorbell: Option<u64>) -> Shm {
        Shm {
            region,
            doorbell_addr: doorbell,
            mapping: None,
            doorbell: None,
        }
    }

    /// Whether the VM has a shared region.
    pub fn configured(&self) -> bool {
        self.region.is_some()
    }

    /// The doorbell, mapped on first use; `None` without `reflow.doorbell=`.
    pub fn doorbell(&mut self) -> Result<Option<Arc<MmioDoorbell>>, ShmError> {
        if let Some(d) = &self.doorbell {
            return Ok(Some(d.clone()));
        }
        let Some(addr) = self.doorbell_addr else {
            return Ok(None);
        };
        let d = Arc::new(MmioDoorbell(map(addr, 4096)?));
        self.doorbell = Some(d.clone());
        Ok(Some(d))
    }

    /// The mapping, created on first use.
    pub fn mapping(&mut self) -> Result<Arc<Mapping>, ShmError> {
        if let Some(m) = &self.mapping {
            return Ok(m.clone());
        }
        let (addr, size) = self.region.ok_or(ShmError::NotConfigured)?;
        let m = Arc::new(map(addr, size)?);
        self.mapping = Some(m.clone());
        Ok(m)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn map(addr: u64, size: u64) -> Result<Mapping, ShmError> {
    let mem = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mem")
        .map_err(ShmError::DevMem)?;
    let len = usize::try_from(size).map_err(|_| ShmError::TooLarge)?;
    // SAFETY: a fresh shared mapping of a device file; the kernel validates
    // the physical range.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            mem.as_raw_fd(),
            addr as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(ShmError::Mmap {
            addr,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Mapping {
        ptr: ptr.cast(),
        len,
    })
}
