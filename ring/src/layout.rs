//! Where the two rings live in the shared region.
//!
//! ```text
//! 0x0000  region header (4 KiB): magic "RFLWSHM1", version, size, ring table
//! 0x1000  host->guest control (4 KiB): head @+0 (producer), tail @+64
//!         (consumer), waiting @+128 (consumer parked: ring the doorbell)
//! 0x2000  host->guest data (capacity bytes)
//!  ...    guest->host control, then data
//! ```
//! The host writes the header once; the guest validates it. The host never
//! reads it back: it computes the layout from the region size itself.

use crate::region::{OutOfBounds, Region};

/// The magic bytes that start the region header.
pub const REGION_MAGIC: &[u8; 8] = b"RFLWSHM1";
/// The region header's layout version, checked by the guest.
pub const LAYOUT_VERSION: u32 = 1;
/// Page size in bytes: the unit of the header, control pages and capacities.
pub const PAGE: u64 = 4096;
/// Offsets of the positions inside a control page (own cache lines).
pub const HEAD_OFFSET: u64 = 0;
/// Offset of the consumer's `tail` inside a control page.
pub const TAIL_OFFSET: u64 = 64;
/// Set by a consumer that is about to park (see `Consumer::with_parker`).
pub const WAITING_OFFSET: u64 = 128;
/// Smallest data area per ring.
pub const MIN_CAPACITY: u64 = 16 * PAGE;

/// Errors laying out or validating a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The region (of this many bytes) cannot hold two rings of
    /// [`MIN_CAPACITY`].
    #[error("a {0}-byte region is too small for two rings (need {min})", min = PAGE * 5 + 2 * MIN_CAPACITY)]
    TooSmall(u64),
    /// The header does not start with [`REGION_MAGIC`].
    #[error("not a ring region (bad magic)")]
    BadMagic,
    /// The header's layout version (given) is not [`LAYOUT_VERSION`].
    #[error("ring layout version {0} is not supported (expected {LAYOUT_VERSION})")]
    Version(u32),
    /// The header or region disagrees with the computed layout (the reason).
    #[error("ring header does not match the region: {0}")]
    Mismatch(&'static str),
    /// An access fell outside the shared region.
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
}

/// One ring's place in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Offset of the control page.
    pub control: u64,
    /// Offset of the data area.
    pub data: u64,
    /// Data area size in bytes (a multiple of the page size).
    pub capacity: u64,
}

/// Both rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLayout {
    /// Size of the whole shared region in bytes.
    pub size: u64,
    /// The ring the host produces into and the guest consumes.
    pub host_to_guest: RingLayout,
    /// The ring the guest produces into and the host consumes.
    pub guest_to_host: RingLayout,
}

impl RegionLayout {
    /// Splits a region of `size` bytes into two equal rings.
    pub fn for_size(size: u64) -> Result<RegionLayout, LayoutError> {
        let capacity = (size.saturating_sub(3 * PAGE) / 2) / PAGE * PAGE;
        if capacity < MIN_CAPACITY {
            return Err(LayoutError::TooSmall(size));
        }
        let h2g = RingLayout {
            control: PAGE,
            data: 2 * PAGE,
            capacity,
        };
        let g2h = RingLayout {
            control: h2g.data + capacity,
            data: h2g.data + capacity + PAGE,
            capacity,
        };
        Ok(RegionLayout {
            size,
            host_to_guest: h2g,
            guest_to_host: g2h,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(64);
        h.extend_from_slice(REGION_MAGIC);
        h.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&self.size.to_le_bytes());
        for r in [self.host_to_guest, self.guest_to_host] {
            h.extend_from_slice(&r.control.to_le_bytes());
            h.extend_from_slice(&r.data.to_le_bytes());
            h.extend_from_slice(&r.capacity.to_le_bytes());
        }
        h
    }

    /// Writes the header and zeroes both rings' positions (host side).
    pub fn initialize(&self, region: &Region) -> Result<(), LayoutError> {
        self.initialize_at(region, 0, 0)
    }

    /// Writes the header and leaves both rings empty at the given byte
    /// positions (host to guest, guest to host): for a region restored
    /// under a guest whose ring ends were already that far along when its
    /// snapshot was taken (an empty ring has `head == tail`, wherever they
    /// are). Positions must be multiples of [`crate::record::ALIGN`], as
    /// every record boundary is.
    pub fn initialize_at(
        &self,
        region: &Region,
        host_to_guest: u64,
        guest_to_host: u64,
    ) -> Result<(), LayoutError> {
        if (region.size() as u64) < self.size {
            return Err(LayoutError::Mismatch("region smaller than its layout"));
        }
        if host_to_guest % crate::record::ALIGN != 0 || guest_to_host % crate::record::ALIGN != 0 {
            return Err(LayoutError::Mismatch(
                "a ring position that is not a record boundary",
            ));
        }
        for (r, at) in [
            (self.host_to_guest, host_to_guest),
            (self.guest_to_host, guest_to_host),
        ] {
            region.store_release(r.control + HEAD_OFFSET, at)?;
            region.store_release(r.control + TAIL_OFFSET, at)?;
            region.store_release(r.control + WAITING_OFFSET, 0)?;
        }
        region.write(0, &self.encode())?;
        Ok(())
    }

    /// Reads and validates the header (guest side): it must be exactly the
    /// layout this crate computes for the region's size.
    pub fn read(region: &Region) -> Result<RegionLayout, LayoutError> {
        let mut h = [0u8; 128];
        region.read(0, &mut h)?;
        if &h[..8] != REGION_MAGIC {
            return Err(LayoutError::BadMagic);
        }
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if version != LAYOUT_VERSION {
            return Err(LayoutError::Version(version));
        }
        let size = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
        if size != region.size() as u64 {
            return Err(LayoutError::Mismatch("size differs from the mapping"));
        }
        let expected = RegionLayout::for_size(size)?;
        let encoded = expected.encode();
        if h.get(..encoded.len()) != Some(&encoded[..]) {
            return Err(LayoutError::Mismatch(
                "ring table differs from the standard layout",
            ));
        }
        Ok(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::test_memory::TestMemory;

    #[test]
    fn rings_do_not_overlap_and_fit() {
        let l = RegionLayout::for_size(16 << 20).unwrap();
        let (a, b) = (l.host_to_guest, l.guest_to_host);
        assert!(a.data + a.capacity <= b.control);
        assert!(b.data + b.capacity <= l.size);
        assert_eq!(a.capacity % PAGE, 0);
        assert!(RegionLayout::for_size(PAGE * 4).is_err());
    }

    #[test]
    fn header_round_trips_and_damage_is_refused() {
        let mut m = TestMemory::new(1 << 20);
        let r = m.region();
        let l = RegionLayout::for_size(1 << 20).unwrap();
        l.initialize(&r).unwrap();
        assert_eq!(RegionLayout::read(&r).unwrap(), l);
        r.write(40, &[0xff]).unwrap();
        assert!(matches!(
            RegionLayout::read(&r),
            Err(LayoutError::Mismatch(_))
        ));
        r.write(8, &[9]).unwrap();
        assert_eq!(RegionLayout::read(&r), Err(LayoutError::Version(9)));
        r.write(0, b"X").unwrap();
        assert_eq!(RegionLayout::read(&r), Err(LayoutError::BadMagic));
    }
}
