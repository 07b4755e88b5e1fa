//! Virtio descriptor chains: a split queue (descriptor table, available
//! and used rings) and the buffers it points at, all in guest memory whose
//! bytes are the input, handed to the block device's queue processing. No
//! input may panic it, touch memory outside the guest's, or loop.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use reflow_vmm::devices::virtio::{Block, VirtioDevice};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory: the input covers its start, where the queue lives.
const MEM: usize = 0x10_000;
const DESC: u32 = 0x0;
const AVAIL: u32 = 0x100;
const USED: u32 = 0x200;

/// A small disk image, made once.
fn disk() -> &'static PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("reflow-fuzz-disk-{}", std::process::id()));
        let bytes: Vec<u8> = (0..16 * 512).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, bytes).expect("the fuzz disk image");
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, bytes)) = data.split_first() else {
        return;
    };
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let n = bytes.len().min(MEM);
    mem.write_slice(&bytes[..n], GuestAddress(0)).unwrap();
    let mut queue = Queue::new(16).unwrap();
    queue.set_size(1 << (shape % 5));
    queue.set_desc_table_address(Some(DESC), Some(0));
    queue.set_avail_ring_address(Some(AVAIL), Some(0));
    queue.set_used_ring_address(Some(USED), Some(0));
    queue.set_ready(true);
    let mut block = Block::open(disk(), "reflow-fuzz").unwrap();
    let _ = block.process_queue(0, std::slice::from_mut(&mut queue), &mem);
});
