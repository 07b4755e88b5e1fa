//! An address-range bus (one for port I/O, one for MMIO) dispatching guest
//! accesses to the device that owns the range.

use std::sync::Arc;

use parking_lot::Mutex;

/// Something a device asks of the VM as a result of a guest write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The guest asked for a machine reset (i8042 reset line).
    ResetRequested,
}

/// A device on a bus. Offsets are relative to the device's base address.
pub trait BusDevice: Send {
    /// Fills `data` for a guest read.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest write.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceEvent>;
}

/// A device shared between the vCPU threads and the event loop.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty, wraps around, or overlaps a device already on
    /// the bus.
    #[error("device range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap {
        /// First address of the range.
        base: u64,
        /// Length of the range in bytes.
        len: u64,
    },
}

struct Range {
    base: u64,
    len: u64,
    device: SharedDevice,
}

/// Devices by address range.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<Range>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Adds `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let overlaps = |r: &Range| base < r.base + r.len && r.base < base + len;
        if end.is_none() || self.ranges.iter().any(overlaps) {
            return Err(BusError::Overlap { base, len });
        }
        let at = self.ranges.partition_point(|r| r.base < base);
        self.ranges.insert(at, Range { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64, len: usize) -> Option<(&SharedDevice, u64)> {
        let i = self
            .ranges
            .partition_point(|r| r.base <= addr)
            .checked_sub(1)?;
        let r = &self.ranges[i];
        let offset = addr - r.base;
        (offset + len as u64 <= r.len).then_some((&r.device, offset))
    }

    /// Dispatches a read. Returns false (leaving `data` untouched) when no
    /// device owns the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((dev, offset)) => {
                dev.lock().read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write. Returns None when no device owns the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<Option<DeviceEvent>> {
        let (dev, offset) = self.find(addr, data.len())?;
        let event = dev.lock().write(offset, data);
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceEvent> {
            self.last_write = Some((offset, data.to_vec()));
            (data == [0xfe]).then_some(DeviceEvent::ResetRequested)
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x60, 5, b.clone()).unwrap();
        let mut d = [0u8; 1];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d, [5]);
        assert_eq!(
            bus.write(0x64, &[0xfe]),
            Some(Some(DeviceEvent::ResetRequested))
        );
        assert_eq!(b.lock().last_write, Some((4, vec![0xfe])));
        assert_eq!(bus.write(0x3f8, b"x"), Some(None));
    }

    #[test]
    fn unowned_and_straddling_accesses_miss() {
        let mut bus = Bus::new();
        bus.insert(0x100, 4, Arc::new(Mutex::new(Recorder::default())))
            .unwrap();
        let mut d = [0xaa; 2];
        assert!(!bus.read(0x80, &mut d));
        assert!(!bus.read(0x103, &mut d));
        assert_eq!(d, [0xaa; 2]);
        assert_eq!(bus.write(0x104, &[1]), None);
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let mut bus = Bus::new();
        let dev = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x100, 0x10, dev()).unwrap();
        assert!(bus.insert(0x10f, 1, dev()).is_err());
        assert!(bus.insert(0xf8, 0x10, dev()).is_err());
        assert!(bus.insert(0x200, 0, dev()).is_err());
        assert!(bus.insert(u64::MAX, 2, dev()).is_err());
        bus.insert(0x110, 1, dev()).unwrap();
    }
}
