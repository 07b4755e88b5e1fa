//! A read-only virtio block device backed by a host file (the root image).
//!
//! Every descriptor chain comes from the guest and is validated: the header
//! must be device-readable and complete, the status byte device-writable,
//! data buffers writable for reads, and every sector range inside the disk.
//! A malformed request gets `VIRTIO_BLK_S_IOERR` (or nothing, when there is
//! no status byte to write), never a host panic.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestMemoryMmap};

use super::{
    drain_queue, read_config_bytes, QueueError, VirtioDevice, Work, TYPE_BLOCK, VIRTIO_F_VERSION_1,
};

/// `VIRTIO_BLK_F_RO`: the device is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Size of a virtio-blk sector in bytes; a trailing partial sector of the
/// image is not exposed.
pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
const ID_LEN: usize = 20;
const HEADER_LEN: u32 = 16;

/// Request types.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Write request; this read-only device fails it with
/// [`VIRTIO_BLK_S_IOERR`].
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Flush request; succeeds at once (nothing is ever written).
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Request for the device's serial (the `id` given to [`Block::open`]).
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Status codes.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// The request failed or was malformed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// The request type is not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Errors opening a disk image.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image could not be opened or its size read.
    #[error("opening disk image {path}: {source}")]
    Open {
        /// The image's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The image holds no whole sector.
    #[error("disk image {path} is smaller than one {SECTOR_SIZE}-byte sector")]
    TooSmall {
        /// The image's path.
        path: PathBuf,
    },
}

/// The read-only block device.
pub struct Block {
    file: File,
    sectors: u64,
    id: [u8; ID_LEN],
    config: [u8; 8],
}

impl Block {
    /// Opens `path` read-only. `id` is what the guest reads as the serial.
    pub fn open(path: &Path, id: &str) -> Result<Block, BlockError> {
        let open_err = |source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let sectors = len / SECTOR_SIZE;
        if sectors == 0 {
            return Err(BlockError::TooSmall {
                path: path.to_path_buf(),
            });
        }
        let mut id_bytes = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Block {
            file,
            sectors,
            id: id_bytes,
            config: sectors.to_le_bytes(),
        })
    }

    /// Disk size in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Executes one request; returns the status and how many bytes were
    /// written into data buffers.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        kind: u32,
        sector: u64,
        data: &[Descriptor],
    ) -> (u8, u32) {
        match kind {
            VIRTIO_BLK_T_IN => match self.read(mem, sector, data) {
                Some(n) => (VIRTIO_BLK_S_OK, n),
                None => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_OUT => (VIRTIO_BLK_S_IOERR, 0),
            VIRTIO_BLK_T_FLUSH => (VIRTIO_BLK_S_OK, 0),
            VIRTIO_BLK_T_GET_ID => match data.first() {
                Some(d) if d.is_write_only() => {
                    let n = (d.len() as usize).min(ID_LEN);
                    match mem.write_slice(&self.id[..n], d.addr()) {
                        Ok(()) => (VIRTIO_BLK_S_OK, n as u32),
                        Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                    }
                }
                _ => (VIRTIO_BLK_S_IOERR, 0),
            },
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }

    fn read(&mut self, mem: &GuestMemoryMmap, sector: u64, data: &[Descriptor]) -> Option<u32> {
        let total: u64 = data.iter().map(|d| u64::from(d.len())).sum();
        let start = sector.checked_mul(SECTOR_SIZE)?;
        let end = start.checked_add(total)?;
        if end > self.sectors * SECTOR_SIZE || data.iter().any(|d| !d.is_write_only()) {
            return None;
        }
        self.file.seek(SeekFrom::Start(start)).ok()?;
        for d in data {
            mem.read_exact_volatile_from(d.addr(), &mut self.file, d.len() as usize)
                .ok()?;
        }
        u32::try_from(total).ok()
    }

    /// Handles one descriptor chain; returns the used length.
    fn handle_chain(&mut self, mem: &GuestMemoryMmap, descs: &[Descriptor]) -> u32 {
        let (Some(header), Some(status)) = (descs.first(), descs.last()) else {
            return 0;
        };
        if descs.len() < 2 || !status.is_write_only() || status.len() < 1 {
            tracing::debug!("virtio-blk request without a status byte");
            return 0;
        }
        let data = &descs[1..descs.len() - 1];
        let (code, written) = if header.is_write_only() || header.len() < HEADER_LEN {
            (VIRTIO_BLK_S_IOERR, 0)
        } else {
            let kind = mem.read_obj::<u32>(header.addr());
            let sector = mem.read_obj::<u64>(header.addr().unchecked_add(8));
            match (kind, sector) {
                (Ok(kind), Ok(sector)) => self.execute(mem, kind, sector, data),
                _ => (VIRTIO_BLK_S_IOERR, 0),
            }
        };
        match mem.write_obj(code, status.addr()) {
            Ok(()) => written + 1,
            Err(_) => written,
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_RO
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<Work, QueueError> {
        drain_queue(&mut queues[index], mem, |chain| {
            // The chain iterator stops at the queue size and on loops.
            let descs: Vec<Descriptor> = chain.collect();
            self.handle_chain(mem, &descs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const HDR: u64 = 0x10_000;
    const DATA: u64 = 0x20_000;
    const STATUS: u64 = 0x30_000;

    fn disk(sectors: u64) -> (tempfile::NamedTempFile, Block) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for s in 0..sectors {
            f.write_all(&[s as u8; SECTOR_SIZE as usize]).unwrap();
        }
        let b = Block::open(f.path(), "reflow-test-disk").unwrap();
        (f, b)
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next))
    }

    /// Submits one request and returns (status byte, used length).
    fn submit(
        b: &mut Block,
        m: &GuestMemoryMmap,
        kind: u32,
        sector: u64,
        descs: &[RawDescriptor],
    ) -> (u8, u32) {
        m.write_obj(kind, GuestAddress(HDR)).unwrap();
        m.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let vq = MockSplitQueue::create(m, GuestAddress(0x80_000), 16);
        vq.build_desc_chain(descs).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(
            b.process_queue(0, std::slice::from_mut(&mut q), m)
                .unwrap()
                .interrupt
        );
        let used_len: u32 = m.read_obj(vq.used_addr().unchecked_add(4 + 4)).unwrap();
        (m.read_obj(GuestAddress(STATUS)).unwrap(), used_len)
    }

    fn read_request(len: u32) -> Vec<RawDescriptor> {
        vec![
            desc(HDR, 16, VRING_DESC_F_NEXT, 1),
            desc(DATA, len, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2),
            desc(STATUS, 1, VRING_DESC_F_WRITE, 0),
        ]
    }

    #[test]
    fn reads_sectors() {
        let (_f, mut b) = disk(4);
        let m = mem();
        let (status, used) = submit(&mut b, &m, VIRTIO_BLK_T_IN, 2, &read_request(1024));
        assert_eq!(status, VIRTIO_BLK_S_OK);
        assert_eq!(used, 1025);
        let mut got = [0u8; 1024];
        m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert!(got[..512].iter().all(|&x| x == 2));
        assert!(got[512..].iter().all(|&x| x == 3));
    }

    /// An available index far ahead of the device's (more than a queue's
    /// worth) is an error, not an endless loop on the event loop thread.
    #[test]
    fn an_available_index_far_ahead_is_an_error_not_a_hang() {
        let (_f, mut b) = disk(4);
        let m = mem();
        let vq = MockSplitQueue::create(&m, GuestAddress(0x80_000), 16);
        vq.build_desc_chain(&read_request(512)).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        // The available ring's idx: 2048 entries published on a 16-entry queue.
        m.write_obj(2048u16, vq.avail_addr().unchecked_add(2))
            .unwrap();
        let err = b
            .process_queue(0, std::slice::from_mut(&mut q), &m)
            .unwrap_err();
        assert!(matches!(err, super::super::QueueError::Stuck), "{err}");
    }

    #[test]
    fn read_past_the_end_is_an_io_error() {
        let (_f, mut b) = disk(4);
        let m = mem();
        let (status, used) = submit(&mut b, &m, VIRTIO_BLK_T_IN, 3, &read_request(1024));
        assert_eq!((status, used), (VIRTIO_BLK_S_IOERR, 1));
        let (status, _) = submit(&mut b, &m, VIRTIO_BLK_T_IN, u64::MAX, &read_request(512));
        assert_eq!(status, VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn writes_are_refused_and_unknown_types_unsupported() {
        let (f, mut b) = disk(2);
        let m = mem();
        let write = vec![
            desc(HDR, 16, VRING_DESC_F_NEXT, 1),
            desc(DATA, 512, VRING_DESC_F_NEXT, 2),
            desc(STATUS, 1, VRING_DESC_F_WRITE, 0),
        ];
        assert_eq!(
            submit(&mut b, &m, VIRTIO_BLK_T_OUT, 0, &write).0,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(std::fs::read(f.path()).unwrap()[0], 0);
        assert_eq!(
            submit(&mut b, &m, 99, 0, &read_request(512)).0,
            VIRTIO_BLK_S_UNSUPP
        );
        assert_eq!(
            submit(&mut b, &m, VIRTIO_BLK_T_FLUSH, 0, &read_request(512)).0,
            VIRTIO_BLK_S_OK
        );
    }

    #[test]
    fn read_into_device_readable_buffer_is_refused() {
        let (_f, mut b) = disk(2);
        let m = mem();
        let bad = vec![
            desc(HDR, 16, VRING_DESC_F_NEXT, 1),
            desc(DATA, 512, VRING_DESC_F_NEXT, 2),
            desc(STATUS, 1, VRING_DESC_F_WRITE, 0),
        ];
        assert_eq!(
            submit(&mut b, &m, VIRTIO_BLK_T_IN, 0, &bad).0,
            VIRTIO_BLK_S_IOERR
        );
    }

    #[test]
    fn short_header_and_buffers_outside_memory_are_io_errors() {
        let (_f, mut b) = disk(2);
        let m = mem();
        let short = vec![
            desc(HDR, 8, VRING_DESC_F_NEXT, 1),
            desc(STATUS, 1, VRING_DESC_F_WRITE, 0),
        ];
        assert_eq!(
            submit(&mut b, &m, VIRTIO_BLK_T_IN, 0, &short).0,
            VIRTIO_BLK_S_IOERR
        );
        let outside = vec![
            desc(HDR, 16, VRING_DESC_F_NEXT, 1),
            desc(0xfff_0000, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2),
            desc(STATUS, 1, VRING_DESC_F_WRITE, 0),
        ];
        assert_eq!(
            submit(&mut b, &m, VIRTIO_BLK_T_IN, 0, &outside).0,
            VIRTIO_BLK_S_IOERR
        );
    }

    #[test]
    fn get_id_and_config() {
        let (_f, mut b) = disk(3);
        let m = mem();
        let (status, used) = submit(&mut b, &m, VIRTIO_BLK_T_GET_ID, 0, &read_request(20));
        assert_eq!((status, used), (VIRTIO_BLK_S_OK, 21));
        let mut id = [0u8; 16];
        m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"reflow-test-disk");
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 3);
        assert_eq!(b.features() & VIRTIO_BLK_F_RO, VIRTIO_BLK_F_RO);
    }

    #[test]
    fn empty_disk_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            Block::open(f.path(), "x"),
            Err(BlockError::TooSmall { .. })
        ));
    }
}
