//! The host<->guest shared-memory region, mapped from user space through
//! `/dev/mem` (write-back cacheable: the guest kernel has no PAT, and the
//! region is reserved, not RAM, in the e820 map).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use reflow_agent_protocol::console::AgentLine;
use reflow_agent_protocol::request::SHM_PROBE_MARKER;
use reflow_ring::layout::{LayoutError, RegionLayout};
#[cfg(feature = "testing")]
use reflow_ring::Fault;
use reflow_ring::{Backoff, Consumer, Doorbell, Producer, Region};

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
    #[error("read back something other than what was written")]
    ReadBack,
    /// The ring layout the host wrote is not one we can use.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The echo service's thread could not start.
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
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory that lives until the last
// `Arc` drops it; every access goes through volatile, bounds-checked
// `Region` methods or the probe's own loops.
unsafe impl Send for Mapping {}
// SAFETY: as above; concurrent access is what shared memory is for.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn region(&self) -> Region {
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

fn mb_per_s(bytes: usize, secs: f64) -> u64 {
    (bytes as f64 / secs.max(1e-9) / 1e6) as u64
}

/// Touches the region once (first-touch faults are not bandwidth), then
/// fills it with `byte` four times and reads it back four times, timing
/// both, then writes the marker at offset 0.
pub fn probe(m: &Mapping, byte: u8) -> Result<String, ShmError> {
    let size = m.len;
    const PASSES: usize = 4;
    // SAFETY: the mapping is `m.len` bytes long and writable.
    unsafe { std::ptr::write_bytes(m.ptr, !byte, m.len) };
    let t = Instant::now();
    for _ in 0..PASSES {
        // SAFETY: the mapping is `m.len` bytes long and writable.
        unsafe { std::ptr::write_bytes(m.ptr, byte, m.len) };
    }
    let write = t.elapsed().as_secs_f64();
    let words = m.len / 8;
    let base = m.ptr.cast::<u64>();
    let t = Instant::now();
    let mut sum = 0u64;
    for _ in 0..PASSES {
        for i in 0..words {
            // SAFETY: `i < words` stays inside the mapping; the host may
            // write concurrently, so read volatile.
            sum = sum.wrapping_add(unsafe { base.add(i).read_volatile() });
        }
    }
    let read = t.elapsed().as_secs_f64();
    let expected = u64::from_ne_bytes([byte; 8]).wrapping_mul((words * PASSES) as u64);
    if sum != expected {
        return Err(ShmError::ReadBack);
    }
    // SAFETY: the marker is shorter than the mapping (at least 2 MiB).
    unsafe {
        std::ptr::copy_nonoverlapping(SHM_PROBE_MARKER.as_ptr(), m.ptr, SHM_PROBE_MARKER.len())
    };
    Ok(format!(
        "bytes={size} write_mb_s={} read_mb_s={}",
        mb_per_s(m.len * PASSES, write),
        mb_per_s(m.len * PASSES, read)
    ))
}

/// Maps the region and checks the ring layout the host wrote; answers its
/// geometry.
pub fn map_ring(m: &Mapping) -> Result<String, ShmError> {
    let shared = m.region();
    let layout = RegionLayout::read(&shared)?;
    Ok(format!(
        "bytes={} capacity={}",
        layout.size, layout.guest_to_host.capacity
    ))
}

/// Publishes one broken record on the guest->host ring (a fresh ring: no
/// echo service may be running). Only in agents built with the `testing`
/// feature.
#[cfg(feature = "testing")]
pub fn inject_fault(m: &Mapping, fault: &str) -> Result<String, ShmError> {
    let fault: Fault = fault.parse().map_err(ShmError::UnknownFault)?;
    let shared = m.region();
    let layout = RegionLayout::read(&shared)?;
    Producer::new(&shared, layout.guest_to_host).send_faulty(fault)?;
    Ok(format!("published a record with a bad {}", fault.name()))
}

/// Starts the echo service on its own thread: every record on the
/// host->guest ring goes back unchanged on the guest->host ring, copied
/// region to region. It polls with back-off and stops (reporting why on the
/// console) if the host breaks the ring protocol.
pub fn start_echo(m: Arc<Mapping>, doorbell: Option<Arc<MmioDoorbell>>) -> Result<(), ShmError> {
    let shared = m.region();
    let layout = RegionLayout::read(&shared)?;
    std::thread::Builder::new()
        .name("ring-echo".into())
        .spawn(move || {
            let _mapping = m;
            let doorbell = doorbell;
            // Every system call (a sleep included) is emulated kernel work in
            // some guests: spin for a while before sleeping.
            let backoff = Backoff {
                spin: std::time::Duration::from_millis(2),
                max_sleep: std::time::Duration::from_millis(1),
            };
            let mut rx = Consumer::new(&shared, layout.host_to_guest).with_backoff(backoff);
            let mut tx = Producer::new(&shared, layout.guest_to_host).with_backoff(backoff);
            if let Some(d) = doorbell.as_deref() {
                tx = tx.with_doorbell(d);
            }
            let forever = std::time::Duration::from_secs(3600);
            let result: Result<(), reflow_ring::RingError> = (|| loop {
                if let Some(v) = rx.recv(forever)? {
                    tx.forward(&v, forever)?;
                    rx.release(v)?;
                }
            })();
            if let Err(e) = result {
                crate::console::say(&AgentLine::Err {
                    command: "ring-echo".into(),
                    message: e.to_string(),
                });
            }
        })
        .map_err(ShmError::Thread)?;
    Ok(())
}
