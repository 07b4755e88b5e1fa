//! The VM's devices: buses for the vCPUs, subscribers for the event loop.
//! Built the same way for a fresh boot and for a restored snapshot.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::kvm::kvm_err;
use super::{VmError, VmIo};
use crate::arch::layout::{SERIAL_IRQ, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use crate::console::{ConsoleSink, ConsoleState, ReadyOn};
use crate::devices::bus::{lock, Bus};
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{SerialDevice, SerialInput, COM1_BASE, COM1_LEN};
use crate::devices::trigger::EventFdTrigger;
use crate::devices::virtio::mmio::REG_QUEUE_NOTIFY;
use crate::devices::virtio::{Block, MmioTransport};
use crate::snapshot::state::{SerialSnapshot, TransportSnapshot};
use crate::vcpu::exit::ExitBus;

/// The port-I/O and MMIO buses, shared by all vCPU threads.
pub(super) struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

impl ExitBus for Buses {
    fn pio(&self) -> &Bus {
        &self.pio
    }
    fn mmio(&self) -> &Bus {
        &self.mmio
    }
}

/// Wakes the event loop when a vCPU stops or the host asks to stop.
struct Wake(Arc<EventFd>);

impl MutEventSubscriber for Wake {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.0.as_ref(), EventSet::IN)) {
            tracing::error!(error = ?e, "cannot watch the wake eventfd");
        }
    }
    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.0.read();
    }
}

/// Runs a virtio device's queues when the guest notifies them.
struct QueueNotifier {
    transport: Arc<Mutex<MmioTransport>>,
    evts: Vec<EventFd>,
}

impl MutEventSubscriber for QueueNotifier {
    fn init(&mut self, ops: &mut EventOps) {
        for (i, evt) in (0u32..).zip(&self.evts) {
            if let Err(e) = ops.add(Events::with_data(evt, i, EventSet::IN)) {
                tracing::error!(error = ?e, "cannot watch a virtio queue eventfd");
            }
        }
    }
    fn process(&mut self, events: Events, _: &mut EventOps) {
        let index = events.data() as usize;
        if let Some(evt) = self.evts.get(index) {
            let _ = evt.read();
            lock(&self.transport).process_queue(index);
        }
    }
}

pub(super) type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// A block device's transport and disk size (recorded in snapshots).
pub(super) struct Disk {
    pub transport: Arc<Mutex<MmioTransport>>,
    pub sectors: u64,
}

/// Everything device-side of a VM.
pub(super) struct Devices {
    pub buses: Arc<Buses>,
    pub events: EventManager<Subscriber>,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub disks: Vec<Disk>,
    pub console: Arc<Mutex<ConsoleState>>,
    pub wake: Arc<EventFd>,
    /// Signalled when the UART's receive FIFO has room (and once at start,
    /// to release typeahead).
    pub serial_room: Arc<EventFd>,
}

/// Device state to restore instead of power-on state.
pub(super) struct DeviceRestore<'a> {
    pub serial: &'a SerialSnapshot,
    pub transports: &'a [TransportSnapshot],
}

fn eventfd() -> Result<EventFd, VmError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)
}

/// The `virtio_mmio.device=` parameters for `count` devices.
pub(super) fn virtio_cmdline(count: usize) -> Vec<String> {
    (0..count as u64)
        .map(|i| {
            format!(
                "virtio_mmio.device=4K@{:#x}:{}",
                VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE,
                VIRTIO_IRQ_BASE + i as u32
            )
        })
        .collect()
}

/// Creates the serial console, i8042 and one virtio-blk per disk, wired to
/// KVM (irqfds, ioeventfds) and to the event loop. `typeahead` is typed into
/// the console before any host input.
pub(super) fn build(
    vm_fd: &VmFd,
    mem: &GuestMemoryMmap,
    disks: &[PathBuf],
    io: VmIo,
    started: Instant,
    restore: Option<DeviceRestore<'_>>,
    typeahead: Vec<u8>,
) -> Result<Devices, VmError> {
    let mut events = EventManager::<Subscriber>::new().map_err(VmError::EventManager)?;
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let serial_irq = eventfd()?;
    vm_fd
        .register_irqfd(&serial_irq, SERIAL_IRQ)
        .map_err(kvm_err("register serial irqfd"))?;
    let ready_on = if restore.is_some() {
        ReadyOn::RestoredUptime
    } else {
        ReadyOn::AgentReadyLine
    };
    let (sink, console) = ConsoleSink::new(io.console, io.events, started, ready_on);
    let room = Arc::new(eventfd()?);
    let irq = EventFdTrigger::new(serial_irq);
    let serial = match &restore {
        Some(r) => SerialDevice::from_snapshot(irq, sink, room.clone(), r.serial)?,
        None => SerialDevice::new(irq, sink, room.clone()),
    };
    let serial = Arc::new(Mutex::new(serial));
    pio.insert(COM1_BASE, COM1_LEN, serial.clone())?;
    if io.input.is_some() || !typeahead.is_empty() {
        events.add_subscriber(Box::new(SerialInput::new(
            serial.clone(),
            io.input,
            room.clone(),
            typeahead,
        )));
    }
    pio.insert(I8042_BASE, I8042_LEN, Arc::new(Mutex::new(I8042::new())))?;

    if let Some(r) = &restore {
        if r.transports.len() != disks.len() {
            return Err(VmError::SnapshotMismatch(format!(
                "the snapshot has {} disks, the VM config {}",
                r.transports.len(),
                disks.len()
            )));
        }
    }
    let mut out_disks = Vec::new();
    for (i, path) in disks.iter().enumerate() {
        let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_SIZE;
        let irq = eventfd()?;
        vm_fd
            .register_irqfd(&irq, VIRTIO_IRQ_BASE + i as u32)
            .map_err(kvm_err("register virtio irqfd"))?;
        let block = Block::open(path, &format!("reflow-disk-{i}"))?;
        let sectors = block.sectors();
        let mut transport =
            MmioTransport::new(Box::new(block), mem.clone(), EventFdTrigger::new(irq));
        if let Some(r) = &restore {
            let snap = &r.transports[i];
            if snap.disk_sectors != sectors {
                return Err(VmError::SnapshotMismatch(format!(
                    "disk {} has {sectors} sectors, the snapshot's had {}",
                    path.display(),
                    snap.disk_sectors
                )));
            }
            transport.restore(snap)?;
        }
        let mut evts = Vec::new();
        for q in 0..transport.queue_count() as u32 {
            let evt = eventfd()?;
            vm_fd
                .register_ioevent(&evt, &IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY), q)
                .map_err(kvm_err("register virtio ioeventfd"))?;
            evts.push(evt);
        }
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(base, VIRTIO_MMIO_SIZE, transport.clone())?;
        events.add_subscriber(Box::new(QueueNotifier {
            transport: transport.clone(),
            evts,
        }));
        out_disks.push(Disk { transport, sectors });
    }
    let wake = Arc::new(eventfd()?);
    events.add_subscriber(Box::new(Wake(wake.clone())));
    Ok(Devices {
        buses: Arc::new(Buses { pio, mmio }),
        events,
        serial,
        disks: out_disks,
        console,
        wake,
        serial_room: room,
    })
}
