//! The VM's devices: buses for the vCPUs, subscribers for the event loop.
//! Built the same way for a fresh boot and for a restored snapshot.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{IoEventAddress, VmFd};
use parking_lot::Mutex;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::control::{ControlHandle, ControlServer};
use super::kvm::kvm_err;
use super::{VmError, VmIo};
use crate::arch::layout::{SERIAL_IRQ, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use crate::config::GUEST_CID;
use crate::console::{ConsoleSink, ConsoleState};
use crate::devices::bus::Bus;
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{SerialDevice, SerialInput, COM1_BASE, COM1_LEN};
use crate::devices::trigger::EventFdTrigger;
use crate::devices::virtio::mmio::REG_QUEUE_NOTIFY;
use crate::devices::virtio::{Block, MmioTransport, Vsock};
use crate::hostile::HostileLog;
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
            if self.transport.lock().process_queue(index) {
                // Out of budget with buffers left: come back once the loop
                // has seen its other events (a stop request among them).
                if let Err(e) = evt.write(1) {
                    tracing::error!(error = %e, "cannot re-arm a virtio queue eventfd");
                }
            }
        }
    }
}

/// Runs a device's host side (its backend fd) on the event loop.
struct BackendNotifier {
    transport: Arc<Mutex<MmioTransport>>,
    fd: RawFd,
}

impl MutEventSubscriber for BackendNotifier {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data_raw(self.fd, 0, EventSet::IN)) {
            tracing::error!(error = ?e, "cannot watch a device backend");
        }
    }
    fn process(&mut self, _: Events, _: &mut EventOps) {
        self.transport.lock().process_backend();
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
    pub vsock: Arc<Mutex<MmioTransport>>,
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
    pub vsock: &'a TransportSnapshot,
}

/// What connects the VM's devices to its owner.
pub(super) struct Links<'a> {
    pub io: VmIo,
    pub started: Instant,
    pub vsock_uds: &'a Path,
    pub hostile: HostileLog,
    pub control: ControlHandle,
}

fn eventfd() -> Result<EventFd, VmError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)
}

/// The `virtio_mmio.device=` parameters for `count` devices (the disks,
/// then the vsock device).
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

/// Puts a virtio device on the MMIO bus at slot `slot`: its interrupt, its
/// queue ioeventfds and its event-loop subscribers.
fn attach(
    vm_fd: &VmFd,
    mem: &GuestMemoryMmap,
    slot: usize,
    device: Box<dyn crate::devices::virtio::VirtioDevice>,
    restore: Option<&TransportSnapshot>,
    mmio: &mut Bus,
    events: &mut EventManager<Subscriber>,
) -> Result<Arc<Mutex<MmioTransport>>, VmError> {
    let base = VIRTIO_MMIO_START + slot as u64 * VIRTIO_MMIO_SIZE;
    let irq = eventfd()?;
    vm_fd
        .register_irqfd(&irq, VIRTIO_IRQ_BASE + slot as u32)
        .map_err(kvm_err("register virtio irqfd"))?;
    let mut transport = MmioTransport::new(device, mem.clone(), EventFdTrigger::new(irq));
    if let Some(snap) = restore {
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
    let backend = transport.backend_fd();
    let transport = Arc::new(Mutex::new(transport));
    mmio.insert(base, VIRTIO_MMIO_SIZE, transport.clone())?;
    events.add_subscriber(Box::new(QueueNotifier {
        transport: transport.clone(),
        evts,
    }));
    if let Some(fd) = backend {
        events.add_subscriber(Box::new(BackendNotifier {
            transport: transport.clone(),
            fd,
        }));
    }
    Ok(transport)
}

/// Creates the serial console, i8042, one virtio-blk per disk and the
/// vsock device with the agent's control listener, wired to KVM (irqfds,
/// ioeventfds) and to the event loop.
pub(super) fn build(
    vm_fd: &VmFd,
    mem: &GuestMemoryMmap,
    disks: &[PathBuf],
    links: Links<'_>,
    restore: Option<DeviceRestore<'_>>,
) -> Result<Devices, VmError> {
    let Links {
        io,
        started,
        vsock_uds,
        hostile,
        control,
    } = links;
    let mut events = EventManager::<Subscriber>::new().map_err(VmError::EventManager)?;
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let serial_irq = eventfd()?;
    vm_fd
        .register_irqfd(&serial_irq, SERIAL_IRQ)
        .map_err(kvm_err("register serial irqfd"))?;
    let control_events = io.events.clone();
    let (sink, console) = ConsoleSink::new(io.console, io.events);
    let room = Arc::new(eventfd()?);
    let irq = EventFdTrigger::new(serial_irq);
    let serial = match &restore {
        Some(r) => SerialDevice::from_snapshot(irq, sink, room.clone(), r.serial)?,
        None => SerialDevice::new(irq, sink, room.clone()),
    };
    let serial = Arc::new(Mutex::new(serial));
    pio.insert(COM1_BASE, COM1_LEN, serial.clone())?;
    if io.input.is_some() {
        events.add_subscriber(Box::new(SerialInput::new(
            serial.clone(),
            io.input,
            room.clone(),
            Vec::new(),
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
        let block = Block::open(path, &format!("reflow-disk-{i}"))?;
        let sectors = block.sectors();
        let snap = restore.as_ref().map(|r| &r.transports[i]);
        if let Some(snap) = snap {
            if snap.disk_sectors != sectors {
                return Err(VmError::SnapshotMismatch(format!(
                    "disk {} has {sectors} sectors, the snapshot's had {}",
                    path.display(),
                    snap.disk_sectors
                )));
            }
        }
        let transport = attach(vm_fd, mem, i, Box::new(block), snap, &mut mmio, &mut events)?;
        out_disks.push(Disk { transport, sectors });
    }
    let vsock = Vsock::new(GUEST_CID, vsock_uds, hostile.clone(), restore.is_some())?;
    let vsock = attach(
        vm_fd,
        mem,
        disks.len(),
        Box::new(vsock),
        restore.as_ref().map(|r| r.vsock),
        &mut mmio,
        &mut events,
    )?;
    events.add_subscriber(Box::new(ControlServer::bind(
        vsock_uds,
        control,
        console.clone(),
        control_events,
        hostile,
        started,
    )?));
    let wake = Arc::new(eventfd()?);
    events.add_subscriber(Box::new(Wake(wake.clone())));
    Ok(Devices {
        buses: Arc::new(Buses { pio, mmio }),
        events,
        serial,
        disks: out_disks,
        vsock,
        console,
        wake,
        serial_room: room,
    })
}

impl Devices {
    /// Lets the devices deliver what they owe the driver since a restore (a
    /// vsock's transport reset). Call it only once the vCPUs' state is
    /// loaded: KVM injects an irqfd's interrupt asynchronously, and one that
    /// lands before `KVM_SET_LAPIC` is overwritten, which left the guest
    /// waiting for the reset forever.
    pub fn deliver_pending(&self) {
        self.vsock.lock().process_backend();
    }
}
