//! The host<->guest shared-memory region: a memfd registered with KVM as its
//! own memory slot above guest RAM and declared to the guest as reserved in
//! the e820 map, so the kernel never uses it as RAM and guest user space can
//! map it write-back cacheable through `/dev/mem`. The guest learns where it
//! is from `reflow.shm=<addr>:<size>` on its command line.
//!
//! The guest->host doorbell is a page in the MMIO gap that no device and no
//! memory slot claims ([`DOORBELL_ADDR`], `reflow.doorbell=<addr>`): a guest
//! write there is matched by a KVM ioeventfd and signals an eventfd inside
//! the host kernel, without the monitor running. A host consumer parked on
//! the guest->host ring ([`SharedRegion::guest_doorbell`]) wakes on it; a
//! guest producer rings it only when that consumer said it parked.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use reflow_ring::layout::{LayoutError, RegionLayout, HEAD_OFFSET, TAIL_OFFSET};
use reflow_ring::{Parker, Region};
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory, VolatileSlice};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::layout::{DOORBELL_ADDR, MMIO_GAP_END};
use crate::snapshot::state::{RingMark, RingMarks};

/// Alignment of the region's guest address and size.
pub const SHM_ALIGN: u64 = 2 << 20;

/// Errors setting up the shared region.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// Creating or sizing the memfd behind the region failed.
    #[error("creating the shared-memory memfd: {0}")]
    Memfd(std::io::Error),
    /// Mapping the memfd into this process failed.
    #[error("mapping {size} bytes of shared memory: {reason}")]
    Map {
        /// Size of the region in bytes (rounded up to [`SHM_ALIGN`]).
        size: u64,
        /// The mapping error, as text.
        reason: String,
    },
    /// KVM refused the region's memory slot.
    #[error("registering the shared-memory slot with KVM: {0}")]
    Register(kvm_ioctls::Error),
    /// Creating the doorbell's eventfd failed.
    #[error("creating the doorbell eventfd: {0}")]
    Doorbell(std::io::Error),
    /// KVM refused the doorbell's ioeventfd.
    #[error("registering the doorbell ioeventfd with KVM: {0}")]
    RegisterDoorbell(kvm_ioctls::Error),
    /// A region handed over by another process is not one to map (why).
    #[error("the monitor's shared region: {0}")]
    Attach(String),
    /// The region is too small to lay out the message rings in.
    #[error("laying out the message rings: {0}")]
    Layout(#[from] LayoutError),
}

/// Bytes of the region a VM config's `shm_mib` asks for, rounded up to
/// [`SHM_ALIGN`] as [`SharedRegion::create`] makes it.
pub fn region_size(shm_mib: u32) -> u64 {
    (u64::from(shm_mib) << 20).next_multiple_of(SHM_ALIGN)
}

/// Where the region goes for a guest with `mem_size` bytes of RAM: the first
/// aligned address above both 4 GiB and the end of RAM.
pub fn guest_base(mem_size: u64) -> u64 {
    let ram_end = crate::arch::bootparams::ram_regions(mem_size)
        .last()
        .map_or(0, |(start, size)| start + size);
    ram_end.max(MMIO_GAP_END).next_multiple_of(SHM_ALIGN)
}

/// The `reflow.shm=` and `reflow.doorbell=` parameters for a region of
/// `size` bytes at `guest_addr`.
pub fn cmdline_param(guest_addr: u64, size: u64) -> String {
    format!("reflow.shm={guest_addr:#x}:{size:#x} reflow.doorbell={DOORBELL_ADDR:#x}")
}

/// The shared region, mapped in the monitor, with the two message rings
/// laid out in it (see `reflow_ring::layout`).
pub struct SharedRegion {
    // `region` points into `mapping`: declared first so it is dropped first.
    region: Region,
    layout: RegionLayout,
    mapping: MmapRegion,
    guest_addr: u64,
    doorbell: GuestDoorbell,
}

/// The guest->host doorbell: an eventfd KVM signals on guest writes to
/// [`DOORBELL_ADDR`]. As a [`Parker`] it blocks until then (or a timeout).
pub struct GuestDoorbell(EventFd, AtomicU64);

impl GuestDoorbell {
    /// The eventfd's descriptor (to hand it to another process).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }

    /// How many times a park ended because the guest rang.
    pub fn wakeups(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }
}

impl Parker for GuestDoorbell {
    fn park(&self, timeout: Duration) {
        let mut fd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: one valid pollfd and a valid timespec; no signal mask.
        let n = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
        // Non-blocking: consume the count; a failure only means another
        // waiter took it.
        if n > 0 && self.0.read().is_ok() {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl SharedRegion {
    /// Creates a zeroed region of `size` bytes (rounded up to 2 MiB) at
    /// `guest_addr`.
    pub fn create(size: u64, guest_addr: u64) -> Result<SharedRegion, ShmError> {
        let size = size.next_multiple_of(SHM_ALIGN);
        // SAFETY: the name is a valid NUL-terminated string; flags are valid.
        let fd = unsafe {
            libc::memfd_create(
                c"reflow-shm".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(ShmError::Memfd(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size).map_err(ShmError::Memfd)?;
        // Sealed at this size: a process this memfd is handed to (the
        // bridge, from a monitor process) can map it knowing no one can
        // shrink it under its mapping (which would fault the bridge with
        // SIGBUS).
        // SAFETY: fcntl on a descriptor we own, with plain integer flags.
        let sealed = unsafe {
            libc::fcntl(
                file.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            )
        };
        if sealed != 0 {
            return Err(ShmError::Memfd(std::io::Error::last_os_error()));
        }
        let doorbell = EventFd::new(libc::EFD_NONBLOCK).map_err(ShmError::Doorbell)?;
        let shared = SharedRegion::map(file, doorbell, size, guest_addr)?;
        shared.layout.initialize(&shared.region)?;
        Ok(shared)
    }

    /// Maps `size` bytes of `memfd` with the rings' layout for that size.
    fn map(
        memfd: File,
        doorbell: EventFd,
        size: u64,
        guest_addr: u64,
    ) -> Result<SharedRegion, ShmError> {
        let mapping =
            MmapRegion::from_file(FileOffset::new(memfd, 0), size as usize).map_err(|e| {
                ShmError::Map {
                    size,
                    reason: e.to_string(),
                }
            })?;
        // SAFETY: the mapping is `size` bytes, page-aligned, readable and
        // writable, and lives in the same struct as the region, which never
        // outlives it.
        let region = unsafe { Region::from_raw(mapping.as_ptr(), mapping.size()) };
        let layout = RegionLayout::for_size(size)?;
        Ok(SharedRegion {
            region,
            layout,
            mapping,
            guest_addr,
            doorbell: GuestDoorbell(doorbell, AtomicU64::new(0)),
        })
    }

    /// Maps a region another process made (a monitor process's, handed
    /// over with its guest doorbell): `memfd` must be sealed against
    /// shrinking and hold at least `size` bytes, where `size` is the
    /// region the caller asked for (that process is not trusted to say).
    /// The rings are laid out as [`SharedRegion::create`] laid them out;
    /// their contents are the guest's, checked as they are read.
    pub fn attach(
        memfd: File,
        doorbell: EventFd,
        size: u64,
        guest_addr: u64,
    ) -> Result<SharedRegion, ShmError> {
        let bad = |why: String| ShmError::Attach(why);
        if size == 0 || size % SHM_ALIGN != 0 {
            return Err(bad(format!("{size} bytes is not a region size")));
        }
        // SAFETY: fcntl on a descriptor we own.
        let seals = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(bad("the memfd is not sealed against shrinking".into()));
        }
        let len = memfd.metadata().map_err(ShmError::Memfd)?.len();
        if len < size {
            return Err(bad(format!("the memfd holds {len} bytes, not {size}")));
        }
        SharedRegion::map(memfd, doorbell, size, guest_addr)
    }

    /// Leaves both rings empty at the positions a snapshot recorded (see
    /// [`RingMarks`]): a guest restored from it goes on from there.
    pub fn start_rings(&self, marks: &RingMarks) -> Result<(), ShmError> {
        self.layout.initialize_at(
            &self.region,
            marks.host_to_guest.offset,
            marks.guest_to_host.offset,
        )?;
        Ok(())
    }

    /// Whether both rings are empty with their ends at `marks` (what a
    /// snapshot must see: a record in flight would be lost, and ends
    /// elsewhere would not match the guest's).
    pub fn rings_idle_at(&self, marks: &RingMarks) -> bool {
        let idle = |ring: reflow_ring::layout::RingLayout, mark: RingMark| {
            let head = self.region.load_acquire(ring.control + HEAD_OFFSET);
            let tail = self.region.load_acquire(ring.control + TAIL_OFFSET);
            matches!((head, tail), (Ok(h), Ok(t)) if h == mark.offset && t == mark.offset)
        };
        idle(self.layout.host_to_guest, marks.host_to_guest)
            && idle(self.layout.guest_to_host, marks.guest_to_host)
    }

    /// The memfd behind the region (to hand it to another process).
    pub fn memfd(&self) -> &File {
        self.mapping
            .file_offset()
            .expect("the region is always mapped from its memfd")
            .file()
    }

    /// The region for ring producers and consumers.
    pub fn ring_region(&self) -> &Region {
        &self.region
    }

    /// Where the rings are.
    pub fn layout(&self) -> RegionLayout {
        self.layout
    }

    /// Registers the region with KVM as memory slot `slot`.
    pub fn register(&self, vm: &VmFd, slot: u32) -> Result<(), ShmError> {
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: self.guest_addr,
            memory_size: self.size(),
            userspace_addr: self.mapping.as_ptr() as u64,
        };
        // SAFETY: the mapping is owned by `self`, which the VM keeps alive as
        // long as the slot exists; the slot number is not used by RAM.
        unsafe { vm.set_user_memory_region(desc) }.map_err(ShmError::Register)?;
        vm.register_ioevent(
            &self.doorbell.0,
            &IoEventAddress::Mmio(DOORBELL_ADDR),
            NoDatamatch,
        )
        .map_err(ShmError::RegisterDoorbell)
    }

    /// What a host consumer of the guest->host ring parks on:
    /// `Consumer::new(..).with_parker(shared.guest_doorbell())`.
    pub fn guest_doorbell(&self) -> &GuestDoorbell {
        &self.doorbell
    }

    /// Guest physical address.
    pub fn guest_addr(&self) -> u64 {
        self.guest_addr
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.mapping.size() as u64
    }

    /// The region as seen by the host. Its contents are written by the guest
    /// concurrently: treat them as untrusted and read them volatile.
    pub fn as_slice(&self) -> VolatileSlice<'_, ()> {
        self.mapping
            .get_slice(0, self.mapping.size())
            .expect("the whole mapping is a valid slice of itself")
    }

    /// The `reflow.shm=` and `reflow.doorbell=` command-line parameters for
    /// the guest agent.
    pub fn cmdline_param(&self) -> String {
        cmdline_param(self.guest_addr, self.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn doorbell_parker_wakes_on_a_signal_and_times_out_without() {
        let r = SharedRegion::create(2 << 20, MMIO_GAP_END).unwrap();
        let bell = r.guest_doorbell();
        bell.0.write(1).unwrap();
        let t = std::time::Instant::now();
        bell.park(Duration::from_secs(60));
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "a rung doorbell must not block"
        );
        assert_eq!(bell.wakeups(), 1);
        // The count was consumed: the next park waits out its timeout.
        bell.park(Duration::from_millis(5));
        assert!(bell.0.read().is_err(), "nothing left to read");
    }

    #[test]
    fn base_is_above_ram_and_4g_and_aligned() {
        assert_eq!(guest_base(128 << 20), MMIO_GAP_END);
        let big = 5u64 << 30;
        let b = guest_base(big);
        assert!(b >= MMIO_GAP_END + (big - crate::arch::layout::MMIO_GAP_START));
        assert_eq!(b % SHM_ALIGN, 0);
    }

    #[test]
    fn region_is_zeroed_sized_and_writable() {
        let r = SharedRegion::create(3 << 20, MMIO_GAP_END).unwrap();
        assert_eq!(r.size(), 4 << 20);
        let s = r.as_slice();
        let mut b = [1u8; 8];
        s.read_slice(&mut b, 4096).unwrap();
        assert_eq!(b, [0; 8]);
        assert_eq!(RegionLayout::read(r.ring_region()).unwrap(), r.layout());
        s.write_slice(b"abc", 10).unwrap();
        s.read_slice(&mut b[..3], 10).unwrap();
        assert_eq!(&b[..3], b"abc");
        assert_eq!(
            r.cmdline_param(),
            "reflow.shm=0x100000000:0x400000 reflow.doorbell=0xd0080000"
        );
    }

    #[test]
    fn attach_maps_a_sealed_region_and_refuses_others() {
        let made = SharedRegion::create(2 << 20, MMIO_GAP_END).unwrap();
        made.as_slice().write_slice(b"ring", 64).unwrap();
        let bell = || EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let fd = made.memfd().try_clone().unwrap();
        let seen = SharedRegion::attach(fd, bell(), 2 << 20, MMIO_GAP_END).unwrap();
        let mut b = [0u8; 4];
        seen.as_slice().read_slice(&mut b, 64).unwrap();
        assert_eq!(&b, b"ring", "both map the same memory");
        assert_eq!(seen.layout(), made.layout());
        // The sealed memfd cannot be shrunk under a mapping.
        assert!(made.memfd().set_len(4096).is_err());
        // Not the size asked for, or not sealed: refused.
        let fd = made.memfd().try_clone().unwrap();
        assert!(SharedRegion::attach(fd, bell(), 4 << 20, MMIO_GAP_END).is_err());
        let plain = tempfile::tempfile().unwrap();
        plain.set_len(2 << 20).unwrap();
        match SharedRegion::attach(plain, bell(), 2 << 20, MMIO_GAP_END) {
            Err(e) => assert!(e.to_string().contains("not sealed"), "{e}"),
            Ok(_) => panic!("mapped an unsealed memfd"),
        }
    }
}
