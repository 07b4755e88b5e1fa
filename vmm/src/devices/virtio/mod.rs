//! Virtio devices over the MMIO transport.

pub mod block;
pub mod mmio;
pub mod vsock;

use std::os::fd::RawFd;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;

pub use block::Block;
pub use mmio::MmioTransport;
pub use vsock::Vsock;

/// `VIRTIO_F_VERSION_1`: we only speak modern virtio.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Virtio device IDs.
pub const TYPE_BLOCK: u32 = 2;
/// Virtio device ID of a socket (vsock) device.
pub const TYPE_VSOCK: u32 = 19;

/// Errors a device reports while processing a queue. The guest controls the
/// queue memory, so these are guest bugs or attacks, never host bugs.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue's descriptors or rings are malformed.
    #[error("virtio queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    /// The driver's available index runs ahead of any buffer that can be
    /// popped (looping on it would spin the event loop).
    #[error(
        "virtio queue: the driver says buffers are available but none can be taken (an \
         available index more than a queue's worth ahead)"
    )]
    Stuck,
}

/// A virtio device behind an [`MmioTransport`].
pub trait VirtioDevice: Send {
    /// Virtio device ID.
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver.
    fn features(&self) -> u64;
    /// Reads device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Handles available buffers on queue `index` (`queues` holds all of
    /// the device's queues; `index` is in range). Returns whether used
    /// buffers were added and the driver should be interrupted.
    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError>;
    /// A host-side fd the event loop should watch for this device, if any.
    fn backend_fd(&self) -> Option<RawFd> {
        None
    }
    /// Handles host-side readiness (and, once at start, anything the device
    /// owes the driver). Returns whether the driver should be interrupted.
    fn process_backend(
        &mut self,
        _queues: &mut [Queue],
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        Ok(false)
    }
}

/// Pops every available chain of `queue`, lets `handle` consume it
/// (returning the length it wrote), and marks it used. Notifications are
/// off while draining and the queue is checked again after turning them
/// back on, so a buffer added meanwhile is not missed. Returns whether the
/// driver should be interrupted.
pub fn drain_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut handle: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) -> Result<bool, QueueError> {
    let mut used = false;
    loop {
        queue.disable_notification(mem)?;
        let mut popped = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = handle(chain);
            queue.add_used(mem, head, len)?;
            used = true;
            popped = true;
        }
        if !queue.enable_notification(mem)? {
            break;
        }
        // More is said to be available, yet nothing could be popped
        // (`pop_descriptor_chain` hides why): looping again would spin
        // forever on the event loop. Found by the descriptor_chain fuzz
        // target.
        if !popped {
            return Err(QueueError::Stuck);
        }
    }
    Ok(used && queue.needs_notification(mem)?)
}

/// Copies `src[offset..]` into `data`, filling what lies beyond `src` with
/// zeros: reads of configuration space past its end return 0.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start < src.len() {
        let n = data.len().min(src.len() - start);
        data[..n].copy_from_slice(&src[start..start + n]);
    }
}
