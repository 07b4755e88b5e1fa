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

/// What handling a queue (or a device's backend) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Work {
    /// Used buffers were added and the driver should be interrupted.
    pub interrupt: bool,
    /// The work budget ran out with buffers still available: the queue
    /// must be handled again (after the event loop has seen its other
    /// events).
    pub more: bool,
}

impl Work {
    /// Work that is finished, interrupting the driver if `interrupt`.
    pub fn done(interrupt: bool) -> Work {
        Work {
            interrupt,
            more: false,
        }
    }
}

impl std::ops::BitOr for Work {
    type Output = Work;
    fn bitor(self, other: Work) -> Work {
        Work {
            interrupt: self.interrupt || other.interrupt,
            more: self.more || other.more,
        }
    }
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
    /// the device's queues; `index` is in range), within a bounded amount of
    /// work ([`drain_queue`]'s budget).
    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<Work, QueueError>;
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

/// Pops the available chains of `queue`, at most one queue's worth
/// (`queue.size()` chains), lets `handle` consume each (returning the
/// length it wrote), and marks it used. Notifications are off while
/// draining and the queue is checked again after turning them back on, so
/// a buffer added meanwhile is not missed.
///
/// The budget bounds what one event costs the event loop: a driver that
/// keeps re-publishing chains (another vCPU racing the available index)
/// would otherwise hold it here forever, and with it every other event of
/// the VM, stopping included. A well-behaved driver never has more than a
/// queue's worth available at once; when the budget runs out,
/// [`Work::more`] says the queue must be handled again.
pub fn drain_queue(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut handle: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) -> Result<Work, QueueError> {
    let mut budget = usize::from(queue.size()).max(1);
    let mut used = false;
    loop {
        queue.disable_notification(mem)?;
        let mut popped = false;
        while budget > 0 {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let len = handle(chain);
            queue.add_used(mem, head, len)?;
            used = true;
            popped = true;
            budget -= 1;
        }
        if budget == 0 {
            // Notifications stay off: the caller comes back for the rest.
            let interrupt = used && queue.needs_notification(mem)?;
            return Ok(Work {
                interrupt,
                more: true,
            });
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
    Ok(Work::done(used && queue.needs_notification(mem)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    /// A driver that re-publishes a chain every time the device takes one
    /// (what a second vCPU racing the available index does) gets one
    /// queue's worth handled per call, not an event loop that never
    /// returns.
    #[test]
    fn a_driver_that_keeps_publishing_gets_a_bounded_drain() {
        const SIZE: u16 = 8;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_000)]).unwrap();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x10_000), SIZE);
        let chain = [RawDescriptor::from(Descriptor::new(0x40_000, 16, 0, 0))];
        vq.build_desc_chain(&chain).unwrap();
        let mut queue: Queue = vq.create_queue().unwrap();
        let avail_idx = vq.avail_addr().unchecked_add(2);
        let mut handled = 0u32;
        let work = drain_queue(&mut queue, &mem, |_chain| {
            handled += 1;
            // Publish descriptor 0 again in the next available slot.
            let idx: u16 = mem.read_obj(avail_idx).unwrap();
            let slot = vq.avail_addr().unchecked_add(4 + 2 * u64::from(idx % SIZE));
            mem.write_obj(0u16, slot).unwrap();
            mem.write_obj(idx.wrapping_add(1), avail_idx).unwrap();
            0
        })
        .unwrap();
        assert!(work.more, "the budget must run out");
        assert_eq!(handled, u32::from(SIZE));
        // The next call goes on from where this one stopped.
        let mut again = 0u32;
        let work = drain_queue(&mut queue, &mem, |_chain| {
            again += 1;
            0
        })
        .unwrap();
        assert_eq!((again, work.more), (1, false));
    }
}
