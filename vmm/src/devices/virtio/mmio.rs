//! The virtio-mmio transport (virtio 1.x, register layout version 2).
//!
//! The guest finds each device from `virtio_mmio.device=` on its command
//! line, negotiates features, sets up queues through these registers and
//! notifies the device by writing the queue index to `QueueNotify`. That
//! write is caught by a KVM ioeventfd and handled on the event loop; the
//! transport also handles it directly if it ever arrives as an MMIO exit.

use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{VirtioDevice, Work, VIRTIO_F_VERSION_1};
use crate::snapshot::state::TransportSnapshot;

/// A transport snapshot that does not fit this device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    /// The snapshot is of another kind of virtio device.
    #[error("snapshot holds virtio device type {found}, this slot has type {expected}")]
    DeviceType {
        /// The device type of this slot's device.
        expected: u32,
        /// The device type the snapshot holds.
        found: u32,
    },
    /// The snapshot's queue count (given), or a queue's maximum size, differs
    /// from the device's.
    #[error("snapshot holds {0} virtio queues that do not match the device")]
    QueueCount(usize),
    /// A snapshot queue's state is invalid (the reason).
    #[error("snapshot virtio queue is invalid: {0}")]
    Queue(String),
}
use crate::devices::bus::{BusDevice, DeviceEvent};
use crate::devices::trigger::EventFdTrigger;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5246_4c57; // "RFLW"

/// Register offsets.
pub const REG_MAGIC: u64 = 0x000;
/// `Version` (read-only): the register layout version, 2.
pub const REG_VERSION: u64 = 0x004;
/// `DeviceID` (read-only): the virtio device type.
pub const REG_DEVICE_ID: u64 = 0x008;
/// `VendorID` (read-only): "RFLW".
pub const REG_VENDOR_ID: u64 = 0x00c;
/// `DeviceFeatures` (read-only): the 32 feature bits that
/// `DeviceFeaturesSel` selects.
pub const REG_DEVICE_FEATURES: u64 = 0x010;
/// `DeviceFeaturesSel`: which 32 device feature bits to read (0: low, 1: high).
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
/// `DriverFeatures` (write-only): the 32 feature bits the driver accepts,
/// per `DriverFeaturesSel`.
pub const REG_DRIVER_FEATURES: u64 = 0x020;
/// `DriverFeaturesSel`: which 32 driver feature bits to write (0: low, 1: high).
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
/// `QueueSel` (write-only): the queue the queue registers address.
pub const REG_QUEUE_SEL: u64 = 0x030;
/// `QueueNumMax` (read-only): the selected queue's maximum size (0: no such
/// queue).
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
/// `QueueNum` (write-only): the selected queue's size.
pub const REG_QUEUE_NUM: u64 = 0x038;
/// `QueueReady`: whether the selected queue is in use.
pub const REG_QUEUE_READY: u64 = 0x044;
/// `QueueNotify` (write-only): the driver has new buffers in the queue
/// whose index it writes.
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
/// `InterruptStatus` (read-only): pending interrupt causes, such as
/// [`INT_VRING`].
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
/// `InterruptACK` (write-only): clears the interrupt causes written.
pub const REG_INTERRUPT_ACK: u64 = 0x064;
/// `Status`: the device status bits (`STATUS_*`); writing 0 resets the
/// device.
pub const REG_STATUS: u64 = 0x070;
/// `QueueDescLow` (write-only): low 32 bits of the descriptor table's
/// address.
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
/// `QueueDescHigh` (write-only): high 32 bits of the descriptor table's
/// address.
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
/// `QueueDriverLow` (write-only): low 32 bits of the available ring's
/// address.
pub const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
/// `QueueDriverHigh` (write-only): high 32 bits of the available ring's
/// address.
pub const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
/// `QueueDeviceLow` (write-only): low 32 bits of the used ring's address.
pub const REG_QUEUE_USED_LOW: u64 = 0x0a0;
/// `QueueDeviceHigh` (write-only): high 32 bits of the used ring's address.
pub const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
/// `ConfigGeneration` (read-only): the configuration space's generation
/// (our devices' configuration never changes, so neither does it).
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
/// Start of the device-specific configuration space.
pub const REG_CONFIG: u64 = 0x100;

/// Device status bits.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// `DRIVER`: the guest has a driver for the device.
pub const STATUS_DRIVER: u32 = 2;
/// `DRIVER_OK`: the driver is set up; the device may be used.
pub const STATUS_DRIVER_OK: u32 = 4;
/// `FEATURES_OK`: feature negotiation is done (refused to drivers without
/// `VIRTIO_F_VERSION_1`).
pub const STATUS_FEATURES_OK: u32 = 8;
/// `DEVICE_NEEDS_RESET`: set by the device when the driver broke a queue
/// or set it up wrong.
pub const STATUS_NEEDS_RESET: u32 = 0x40;
/// `FAILED`: the driver gave up on the device (also set by the device when
/// the driver clears status bits).
pub const STATUS_FAILED: u32 = 0x80;

/// Interrupt status bit: used buffers were added.
pub const INT_VRING: u32 = 1;

/// The transport: registers, queues and the device behind them.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    irq: EventFdTrigger,
    interrupt_status: AtomicU32,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    config_generation: u32,
}

impl MmioTransport {
    /// Wraps `device`; `irq` raises its interrupt line.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap, irq: EventFdTrigger) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("device queue sizes are valid powers of two"))
            .collect();
        MmioTransport {
            device,
            mem,
            queues,
            irq,
            interrupt_status: AtomicU32::new(0),
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            config_generation: 0,
        }
    }

    /// The transport's registers and queue positions, for a snapshot.
    pub fn snapshot(&self, disk_sectors: u64) -> TransportSnapshot {
        TransportSnapshot {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt_status.load(Ordering::SeqCst),
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
            disk_sectors,
        }
    }

    /// Loads a snapshot's registers and queues. Snapshot files are
    /// checksummed, but the values are still validated like guest input.
    pub fn restore(&mut self, snap: &TransportSnapshot) -> Result<(), RestoreError> {
        if snap.device_type != self.device.device_type() {
            return Err(RestoreError::DeviceType {
                expected: self.device.device_type(),
                found: snap.device_type,
            });
        }
        if snap.queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount(snap.queues.len()));
        }
        for (q, s) in self.queues.iter_mut().zip(&snap.queues) {
            if s.max_size != q.max_size() {
                return Err(RestoreError::QueueCount(snap.queues.len()));
            }
            *q = Queue::try_from(virtio_queue::QueueState::from(*s))
                .map_err(|e| RestoreError::Queue(e.to_string()))?;
        }
        self.status = snap.status;
        self.device_features_sel = snap.device_features_sel;
        self.driver_features_sel = snap.driver_features_sel;
        self.acked_features = snap.acked_features & self.device.features();
        self.queue_sel = snap.queue_sel;
        self.interrupt_status
            .store(snap.interrupt_status, Ordering::SeqCst);
        self.config_generation = snap.config_generation;
        Ok(())
    }

    /// Number of queues (each gets an ioeventfd with its index as datamatch).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Device status as the driver last set it (plus our NEEDS_RESET/FAILED).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn active(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_NEEDS_RESET == 0
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Handles a notification for queue `index`: lets the device consume the
    /// available buffers and interrupts the guest if it should. Returns
    /// whether the device's work budget ran out with buffers left, so the
    /// queue must be handled again.
    pub fn process_queue(&mut self, index: usize) -> bool {
        if !self.active() {
            return false;
        }
        let Some(queue) = self.queues.get(index) else {
            tracing::warn!(index, "notification for a queue that does not exist");
            return false;
        };
        if !queue.ready() {
            return false;
        }
        let result = self
            .device
            .process_queue(index, &mut self.queues, &self.mem);
        let more = matches!(result, Ok(Work { more: true, .. }));
        self.after_processing(result.map(|w| w.interrupt));
        more
    }

    /// Lets the device handle host-side readiness (its
    /// [`VirtioDevice::backend_fd`]) and interrupts the guest if it should.
    pub fn process_backend(&mut self) {
        if !self.active() {
            return;
        }
        let result = self.device.process_backend(&mut self.queues, &self.mem);
        self.after_processing(result);
    }

    /// The device's host-side fd, if it has one.
    pub fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.backend_fd()
    }

    fn after_processing(&mut self, result: Result<bool, super::QueueError>) {
        match result {
            Ok(true) => self.raise(INT_VRING),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "guest broke a virtio queue; device needs reset");
                self.status |= STATUS_NEEDS_RESET;
            }
        }
    }

    fn raise(&self, bit: u32) {
        self.interrupt_status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = vm_superio::Trigger::trigger(&self.irq) {
            tracing::error!(error = %e, "raising a virtio interrupt failed");
        }
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.acked_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt_status.store(0, Ordering::SeqCst);
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // The driver may only add bits, in the order the spec gives.
        let added = value & !self.status;
        if value & self.status != self.status {
            tracing::warn!(old = self.status, new = value, "driver cleared status bits");
            self.status |= STATUS_FAILED;
            return;
        }
        if added & STATUS_FEATURES_OK != 0 && self.acked_features & VIRTIO_F_VERSION_1 == 0 {
            // Legacy drivers are not supported: refuse FEATURES_OK.
            self.status = value & !STATUS_FEATURES_OK;
            return;
        }
        if added & STATUS_DRIVER_OK != 0 {
            let valid = self
                .queues
                .iter()
                .all(|q| !q.ready() || q.is_valid(&self.mem));
            if self.status & STATUS_FEATURES_OK == 0 || !valid {
                tracing::warn!("driver set DRIVER_OK with invalid queues or features");
                self.status = value | STATUS_NEEDS_RESET;
                return;
            }
        }
        self.status = value;
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => {
                tracing::debug!(offset, "read of unknown virtio-mmio register");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        // Queue layout may change only before DRIVER_OK.
        let configuring = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES if configuring => {
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let mask = 0xffff_ffffu64 << shift;
                let offered = self.device.features() & mask;
                let wanted = (u64::from(value) << shift) & mask;
                // Bits we did not offer are ignored.
                self.acked_features = (self.acked_features & !mask) | (wanted & offered);
            }
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM if configuring => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            REG_QUEUE_READY if configuring => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            // Only reached without an ioeventfd (unit tests): what is left
            // beyond the budget waits for the driver's next notification.
            REG_QUEUE_NOTIFY => {
                let _ = self.process_queue(value as usize);
            }
            REG_INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!value, Ordering::SeqCst);
            }
            REG_STATUS => self.set_status(value),
            REG_QUEUE_DESC_LOW if configuring => {
                self.set_queue_addr(|q| q.set_desc_table_address(Some(value), None))
            }
            REG_QUEUE_DESC_HIGH if configuring => {
                self.set_queue_addr(|q| q.set_desc_table_address(None, Some(value)))
            }
            REG_QUEUE_AVAIL_LOW if configuring => {
                self.set_queue_addr(|q| q.set_avail_ring_address(Some(value), None))
            }
            REG_QUEUE_AVAIL_HIGH if configuring => {
                self.set_queue_addr(|q| q.set_avail_ring_address(None, Some(value)))
            }
            REG_QUEUE_USED_LOW if configuring => {
                self.set_queue_addr(|q| q.set_used_ring_address(Some(value), None))
            }
            REG_QUEUE_USED_HIGH if configuring => {
                self.set_queue_addr(|q| q.set_used_ring_address(None, Some(value)))
            }
            _ => tracing::debug!(offset, value, "ignored virtio-mmio register write"),
        }
    }

    fn set_queue_addr(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
        } else if data.len() == 4 {
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        } else {
            tracing::debug!(
                offset,
                len = data.len(),
                "non 32-bit virtio-mmio register read"
            );
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceEvent> {
        if offset >= REG_CONFIG {
            tracing::debug!(offset, "write to read-only virtio config space ignored");
        } else if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        } else {
            tracing::debug!(
                offset,
                len = data.len(),
                "non 32-bit virtio-mmio register write"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    struct Dummy {
        processed: usize,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 0b101
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn process_queue(
            &mut self,
            _index: usize,
            _queues: &mut [Queue],
            _mem: &GuestMemoryMmap,
        ) -> Result<Work, super::super::QueueError> {
            self.processed += 1;
            Ok(Work::done(true))
        }
    }

    fn transport() -> (MmioTransport, EventFdTrigger) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let irq = EventFdTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        (
            MmioTransport::new(Box::new(Dummy { processed: 0 }), mem, irq.clone()),
            irq,
        )
    }

    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut d = [0u8; 4];
        t.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn set_up_queue(t: &mut MmioTransport, index: u32) {
        wr(t, REG_QUEUE_SEL, index);
        wr(t, REG_QUEUE_NUM, 8);
        wr(t, REG_QUEUE_DESC_LOW, 0x1000);
        wr(t, REG_QUEUE_AVAIL_LOW, 0x2000);
        wr(t, REG_QUEUE_USED_LOW, 0x3000);
        wr(t, REG_QUEUE_READY, 1);
    }

    fn negotiate(t: &mut MmioTransport) {
        wr(t, REG_STATUS, STATUS_ACKNOWLEDGE);
        wr(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(t, REG_DRIVER_FEATURES_SEL, 0);
        wr(t, REG_DRIVER_FEATURES, 0xffff_ffff);
        wr(t, REG_DRIVER_FEATURES_SEL, 1);
        wr(t, REG_DRIVER_FEATURES, 1);
        wr(
            t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
    }

    #[test]
    fn identification_registers() {
        let (mut t, _) = transport();
        assert_eq!(rd(&mut t, REG_MAGIC), MAGIC_VALUE);
        assert_eq!(rd(&mut t, REG_VERSION), 2);
        assert_eq!(rd(&mut t, REG_DEVICE_ID), 42);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 1);
        wr(&mut t, REG_QUEUE_SEL, 1);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 8);
        wr(&mut t, REG_QUEUE_SEL, 7);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 0);
        let mut cfg = [0u8; 8];
        t.read(REG_CONFIG + 2, &mut cfg);
        assert_eq!(cfg, [3, 4, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn only_offered_features_are_acked() {
        let (mut t, _) = transport();
        negotiate(&mut t);
        assert_eq!(t.acked_features(), VIRTIO_F_VERSION_1 | 0b101);
        assert_ne!(t.status() & STATUS_FEATURES_OK, 0);
    }

    #[test]
    fn legacy_driver_cannot_set_features_ok() {
        let (mut t, _) = transport();
        wr(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(&mut t, REG_DRIVER_FEATURES, 0b1);
        wr(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(rd(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);
    }

    #[test]
    fn notify_processes_and_interrupts_only_when_active() {
        let (mut t, irq) = transport();
        set_up_queue(&mut t, 0);
        wr(&mut t, REG_QUEUE_NOTIFY, 0);
        assert!(irq.0.read().is_err(), "no interrupt before DRIVER_OK");
        negotiate(&mut t);
        wr(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_eq!(t.status() & STATUS_NEEDS_RESET, 0);
        wr(&mut t, REG_QUEUE_NOTIFY, 0);
        assert_eq!(irq.0.read().unwrap(), 1);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), INT_VRING);
        wr(&mut t, REG_INTERRUPT_ACK, INT_VRING);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), 0);
        // A queue that does not exist is ignored, not a panic.
        wr(&mut t, REG_QUEUE_NOTIFY, 99);
    }

    #[test]
    fn queue_outside_memory_needs_reset() {
        let (mut t, _) = transport();
        wr(&mut t, REG_QUEUE_SEL, 0);
        wr(&mut t, REG_QUEUE_NUM, 8);
        wr(&mut t, REG_QUEUE_DESC_LOW, 0xffff_0000);
        wr(&mut t, REG_QUEUE_READY, 1);
        negotiate(&mut t);
        wr(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_ne!(t.status() & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn status_zero_resets() {
        let (mut t, _) = transport();
        set_up_queue(&mut t, 0);
        negotiate(&mut t);
        wr(&mut t, REG_STATUS, 0);
        assert_eq!(t.status(), 0);
        assert_eq!(t.acked_features(), 0);
        wr(&mut t, REG_QUEUE_SEL, 0);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
    }

    #[test]
    fn snapshot_restores_registers_and_queues() {
        let (mut t, _) = transport();
        set_up_queue(&mut t, 1);
        negotiate(&mut t);
        let snap = t.snapshot(0);
        let (mut fresh, _) = transport();
        fresh.restore(&snap).unwrap();
        assert_eq!(fresh.snapshot(0), snap);
        let mut wrong = snap.clone();
        wrong.device_type = 2;
        assert!(matches!(
            fresh.restore(&wrong),
            Err(RestoreError::DeviceType { .. })
        ));
        let mut wrong = snap.clone();
        wrong.queues.pop();
        assert!(matches!(
            fresh.restore(&wrong),
            Err(RestoreError::QueueCount(1))
        ));
    }

    #[test]
    fn odd_sized_register_accesses_are_harmless() {
        let (mut t, _) = transport();
        let mut one = [0xaau8];
        t.read(REG_MAGIC, &mut one);
        assert_eq!(one, [0]);
        t.write(REG_STATUS, &[1]);
        assert_eq!(t.status(), 0);
    }
}
