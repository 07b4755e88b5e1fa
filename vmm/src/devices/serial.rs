//! The COM1 16550A UART (vm-superio) on port 0x3f8: the guest console.
//! Output goes to a [`ConsoleSink`]; input comes from a host file descriptor
//! through [`SerialInput`], an event-loop subscriber that only feeds the
//! UART as fast as the guest drains its FIFO.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use parking_lot::Mutex;
use vm_superio::serial::SerialEvents;
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::bus::{BusDevice, DeviceEvent};
use super::trigger::EventFdTrigger;
use crate::console::ConsoleSink;
use crate::snapshot::state::SerialSnapshot;

/// A snapshot's serial state that the UART refuses (e.g. an over-full FIFO).
#[derive(Debug, thiserror::Error)]
#[error("restoring the serial device: {0}")]
pub struct SerialRestoreError(String);

/// Base port and length of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Length of COM1's port range.
pub const COM1_LEN: u64 = 8;

/// Signals the input subscriber when the guest emptied the receive FIFO.
pub struct InputRoom(Arc<EventFd>);

impl SerialEvents for InputRoom {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        let _ = self.0.write(1);
    }
}

/// The UART on the port-I/O bus.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, InputRoom, ConsoleSink>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `sink`; `room` is signalled when
    /// its receive FIFO empties.
    pub fn new(irq: EventFdTrigger, sink: ConsoleSink, room: Arc<EventFd>) -> SerialDevice {
        SerialDevice {
            serial: Serial::with_events(irq, InputRoom(room), sink),
        }
    }

    /// A UART with registers and FIFO restored from a snapshot.
    pub fn from_snapshot(
        irq: EventFdTrigger,
        sink: ConsoleSink,
        room: Arc<EventFd>,
        snap: &SerialSnapshot,
    ) -> Result<SerialDevice, SerialRestoreError> {
        let serial = Serial::from_state(&snap.into(), irq, InputRoom(room), sink)
            .map_err(|e| SerialRestoreError(format!("{e:?}")))?;
        Ok(SerialDevice { serial })
    }

    /// The UART's registers and FIFO, for a snapshot.
    pub fn snapshot(&self) -> SerialSnapshot {
        (&self.serial.state()).into()
    }

    /// Queues as many of `bytes` as fit in the receive FIFO; returns how many.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.serial.fifo_capacity());
        if n == 0 {
            return 0;
        }
        match self.serial.enqueue_raw_bytes(&bytes[..n]) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = ?e, "serial input dropped");
                n
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match data {
            [b] => *b = self.serial.read(offset as u8),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceEvent> {
        if let [b] = data {
            if let Err(e) = self.serial.write(offset as u8, *b) {
                tracing::warn!(error = ?e, "serial write failed");
            }
        }
        None
    }
}

const INPUT_TOKEN: u32 = 0;
const ROOM_TOKEN: u32 = 1;

/// Feeds host input into the UART from the event loop: first `typeahead`
/// (what the monitor itself has to say, e.g. a restored clone's entropy),
/// then whatever arrives on the input file descriptor.
pub struct SerialInput {
    device: Arc<Mutex<SerialDevice>>,
    input: Option<File>,
    room: Arc<EventFd>,
    pending: Vec<u8>,
    reading: bool,
    eof: bool,
}

impl SerialInput {
    /// Feeds `device` `typeahead`, then what arrives on `input` (None: no
    /// input); `room` fires when the guest has emptied the receive FIFO.
    pub fn new(
        device: Arc<Mutex<SerialDevice>>,
        input: Option<OwnedFd>,
        room: Arc<EventFd>,
        typeahead: Vec<u8>,
    ) -> Self {
        SerialInput {
            device,
            eof: input.is_none(),
            input: input.map(File::from),
            room,
            pending: typeahead,
            reading: false,
        }
    }

    fn flush(&mut self) {
        let n = self.device.lock().enqueue_input(&self.pending);
        self.pending.drain(..n);
    }

    fn set_reading(&mut self, ops: &mut EventOps, on: bool) {
        let Some(input) = &self.input else {
            return;
        };
        if on == self.reading {
            return;
        }
        let ev = Events::with_data(input, INPUT_TOKEN, EventSet::IN);
        let r = if on { ops.add(ev) } else { ops.remove(ev) };
        match r {
            Ok(()) => self.reading = on,
            Err(e) => tracing::warn!(error = ?e, "serial input: epoll update failed"),
        }
    }
}

impl MutEventSubscriber for SerialInput {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            self.room.as_ref(),
            ROOM_TOKEN,
            EventSet::IN,
        )) {
            tracing::warn!(error = ?e, "serial input: cannot watch the FIFO");
        }
        // Typeahead waits for the first room signal (sent when the vCPUs
        // start): an interrupt raised before a restored LAPIC is loaded
        // would be lost, and the UART would never raise it again.
        let want = self.pending.is_empty() && !self.eof;
        self.set_reading(ops, want);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            INPUT_TOKEN => {
                let mut buf = [0u8; 64];
                let Some(input) = self.input.as_mut() else {
                    return;
                };
                match input.read(&mut buf) {
                    Ok(0) => {
                        self.eof = true;
                        self.set_reading(ops, false);
                    }
                    Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "serial input closed");
                        self.eof = true;
                        self.set_reading(ops, false);
                    }
                }
            }
            ROOM_TOKEN => {
                let _ = self.room.read();
            }
            _ => {}
        }
        self.flush();
        // Stop reading while input waits for FIFO room; resume when drained.
        let want = self.pending.is_empty() && !self.eof;
        self.set_reading(ops, want);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (SerialDevice, EventFdTrigger, Arc<EventFd>) {
        let irq = EventFdTrigger::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let room = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let (sink, _) = ConsoleSink::new(Box::new(std::io::sink()), None);
        (
            SerialDevice::new(irq.clone(), sink, room.clone()),
            irq,
            room,
        )
    }

    #[test]
    fn input_is_bounded_by_fifo_and_readable_by_guest() {
        let (mut dev, _irq, room) = device();
        let big = vec![b'a'; 1000];
        let n = dev.enqueue_input(&big);
        assert!(n > 0 && n < big.len());
        assert_eq!(dev.enqueue_input(b"more"), 0);
        let mut b = [0u8];
        dev.read(0, &mut b);
        assert_eq!(b, [b'a']);
        for _ in 1..n {
            dev.read(0, &mut b);
        }
        assert_eq!(room.read().unwrap(), 1, "guest drained the FIFO");
    }

    #[test]
    fn wide_accesses_are_harmless() {
        let (mut dev, _, _) = device();
        let mut d = [0u8; 4];
        dev.read(0, &mut d);
        assert_eq!(d, [0xff; 4]);
        assert_eq!(dev.write(0, &[1, 2]), None);
    }
}
