//! Guest RAM: anonymous host mappings registered with KVM as memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::bootparams::ram_regions;

/// Errors setting up guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Guest RAM could not be mapped, or a region's host address was not
    /// found.
    #[error("mapping {size} bytes of guest memory: {reason}")]
    Map {
        /// Size in bytes of the memory (or the region) concerned.
        size: u64,
        /// The mapping error, as text.
        reason: String,
    },
    /// KVM refused a memory slot.
    #[error("registering guest memory slot {slot} with KVM: {source}")]
    Register {
        /// The slot number.
        slot: u32,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
}

/// Maps `mem_size` bytes of guest RAM, split around the 32-bit MMIO gap.
pub fn create(mem_size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = ram_regions(mem_size)
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map {
        size: mem_size,
        reason: e.to_string(),
    })
}

/// Registers every region of `mem` with KVM, one slot each.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| MemoryError::Map {
                size: region.len(),
                reason: e.to_string(),
            })?;
        let desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the
        // caller keeps alive for as long as the VM exists; slots are unique.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}
