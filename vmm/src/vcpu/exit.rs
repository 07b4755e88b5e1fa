//! What to do with each vCPU exit: a pure function over a bus abstraction,
//! unit-tested without KVM.

use kvm_ioctls::VcpuExit;

use crate::devices::bus::{Bus, DeviceEvent};

/// A vCPU exit, decoupled from kvm-ioctls so tests can build one.
#[derive(Debug)]
pub enum Exit<'a> {
    /// The guest read from an I/O port.
    IoIn {
        /// The port.
        port: u16,
        /// Where the device's answer goes (its length is the access size).
        data: &'a mut [u8],
    },
    /// The guest wrote to an I/O port.
    IoOut {
        /// The port.
        port: u16,
        /// The bytes written (their length is the access size).
        data: &'a [u8],
    },
    /// The guest read from an MMIO address no memory slot backs.
    MmioRead {
        /// The guest physical address.
        addr: u64,
        /// Where the device's answer goes (its length is the access size).
        data: &'a mut [u8],
    },
    /// The guest wrote to an MMIO address no memory slot backs.
    MmioWrite {
        /// The guest physical address.
        addr: u64,
        /// The bytes written (their length is the access size).
        data: &'a [u8],
    },
    /// The vCPU halted (never seen with the in-kernel LAPIC).
    Hlt,
    /// The guest triple-faulted.
    Shutdown,
    /// The guest raised a KVM system event (shutdown, reset or crash).
    SystemEvent {
        /// The event type (`KVM_SYSTEM_EVENT_*`).
        kind: u32,
    },
    /// KVM could not enter the guest.
    FailEntry {
        /// The hardware's entry failure reason.
        reason: u64,
    },
    /// KVM hit an internal error (typically an instruction it could not
    /// emulate).
    InternalError,
    /// Any other exit, as kvm-ioctls prints it.
    Other(String),
}

impl<'a> From<VcpuExit<'a>> for Exit<'a> {
    fn from(exit: VcpuExit<'a>) -> Exit<'a> {
        match exit {
            VcpuExit::IoIn(port, data) => Exit::IoIn { port, data },
            VcpuExit::IoOut(port, data) => Exit::IoOut { port, data },
            VcpuExit::MmioRead(addr, data) => Exit::MmioRead { addr, data },
            VcpuExit::MmioWrite(addr, data) => Exit::MmioWrite { addr, data },
            VcpuExit::Hlt => Exit::Hlt,
            VcpuExit::Shutdown => Exit::Shutdown,
            VcpuExit::SystemEvent(kind, _) => Exit::SystemEvent { kind },
            VcpuExit::FailEntry(reason, _) => Exit::FailEntry { reason },
            VcpuExit::InternalError => Exit::InternalError,
            other => Exit::Other(format!("{other:?}")),
        }
    }
}

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest reset the machine (i8042 reset line or a reset event): how
    /// a guest `reboot` ends the VM.
    Reset,
    /// The guest asked for power-off through a system event.
    PowerOff,
    /// Triple fault or a crash event.
    GuestCrash(String),
    /// The VM ran past its time limit.
    Timeout,
    /// The host asked the VM to stop.
    Stopped,
    /// KVM could not run the vCPU.
    Fatal(String),
}

/// What the run loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Enter the guest again.
    Continue,
    /// Stop the VM for this reason.
    Stop(StopReason),
}

/// The two buses a vCPU exit can be dispatched to.
pub trait ExitBus {
    /// The port-I/O bus.
    fn pio(&self) -> &Bus;
    /// The MMIO bus.
    fn mmio(&self) -> &Bus;
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

fn on_write(result: Option<Option<DeviceEvent>>, what: &str, addr: u64) -> ExitAction {
    match result {
        Some(Some(DeviceEvent::ResetRequested)) => ExitAction::Stop(StopReason::Reset),
        Some(None) => ExitAction::Continue,
        None => {
            tracing::trace!(addr, "{what} write to an address no device owns");
            ExitAction::Continue
        }
    }
}

/// Handles one exit. Reads of addresses no device owns return all ones, as
/// on real hardware; such writes are dropped.
pub fn handle_exit(exit: Exit<'_>, bus: &impl ExitBus) -> ExitAction {
    match exit {
        Exit::IoIn { port, data } => {
            if !bus.pio().read(u64::from(port), data) {
                data.fill(0xff);
            }
            ExitAction::Continue
        }
        Exit::IoOut { port, data } => on_write(
            bus.pio().write(u64::from(port), data),
            "port",
            u64::from(port),
        ),
        Exit::MmioRead { addr, data } => {
            if !bus.mmio().read(addr, data) {
                data.fill(0xff);
            }
            ExitAction::Continue
        }
        Exit::MmioWrite { addr, data } => on_write(bus.mmio().write(addr, data), "MMIO", addr),
        // With the in-kernel LAPIC, HLT never reaches us; if it does the
        // vCPU has nothing left to run.
        Exit::Hlt => ExitAction::Stop(StopReason::PowerOff),
        Exit::Shutdown => ExitAction::Stop(StopReason::GuestCrash("triple fault".into())),
        Exit::SystemEvent { kind } => ExitAction::Stop(match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => StopReason::PowerOff,
            KVM_SYSTEM_EVENT_RESET => StopReason::Reset,
            KVM_SYSTEM_EVENT_CRASH => StopReason::GuestCrash("crash system event".into()),
            other => StopReason::Fatal(format!("unknown system event {other}")),
        }),
        Exit::FailEntry { reason } => ExitAction::Stop(StopReason::Fatal(format!(
            "KVM_RUN failed to enter the guest (hardware reason {reason:#x})"
        ))),
        Exit::InternalError => ExitAction::Stop(StopReason::Fatal(
            "KVM internal error (an instruction KVM could not emulate?)".into(),
        )),
        Exit::Other(what) => {
            ExitAction::Stop(StopReason::Fatal(format!("unhandled vCPU exit {what}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::i8042::I8042;
    use crate::devices::BusDevice;
    use parking_lot::Mutex;
    use std::sync::Arc;

    struct Buses {
        pio: Bus,
        mmio: Bus,
    }

    impl ExitBus for Buses {
        fn pio(&self) -> &Bus {
            &self.pio
        }
        fn mmio(&self) -> &Bus {
            &self.mmio
        }
    }

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, _: u64, data: &mut [u8]) {
            data.fill(self.0);
        }
        fn write(&mut self, _: u64, data: &[u8]) -> Option<DeviceEvent> {
            self.0 = data[0];
            None
        }
    }

    fn buses() -> Buses {
        let mut pio = Bus::new();
        pio.insert(0x60, 5, Arc::new(Mutex::new(I8042::new())))
            .unwrap();
        pio.insert(0x3f8, 8, Arc::new(Mutex::new(Echo(7)))).unwrap();
        let mut mmio = Bus::new();
        mmio.insert(0xd000_0000, 0x1000, Arc::new(Mutex::new(Echo(9))))
            .unwrap();
        Buses { pio, mmio }
    }

    #[test]
    fn io_goes_to_devices_and_unowned_reads_are_all_ones() {
        let b = buses();
        let mut d = [0u8; 1];
        assert_eq!(
            handle_exit(
                Exit::IoIn {
                    port: 0x3f8,
                    data: &mut d
                },
                &b
            ),
            ExitAction::Continue
        );
        assert_eq!(d, [7]);
        handle_exit(
            Exit::IoOut {
                port: 0x3f8,
                data: &[5],
            },
            &b,
        );
        handle_exit(
            Exit::IoIn {
                port: 0x3f9,
                data: &mut d,
            },
            &b,
        );
        assert_eq!(d, [5]);
        let mut d2 = [0u8; 2];
        handle_exit(
            Exit::IoIn {
                port: 0x70,
                data: &mut d2,
            },
            &b,
        );
        assert_eq!(d2, [0xff, 0xff]);
        assert_eq!(
            handle_exit(
                Exit::IoOut {
                    port: 0x80,
                    data: &[1]
                },
                &b
            ),
            ExitAction::Continue
        );
        let mut m = [0u8; 4];
        handle_exit(
            Exit::MmioRead {
                addr: 0xd000_0010,
                data: &mut m,
            },
            &b,
        );
        assert_eq!(m, [9; 4]);
        handle_exit(
            Exit::MmioRead {
                addr: 0xe000_0000,
                data: &mut m,
            },
            &b,
        );
        assert_eq!(m, [0xff; 4]);
    }

    #[test]
    fn i8042_reset_stops_the_vm() {
        let b = buses();
        assert_eq!(
            handle_exit(
                Exit::IoOut {
                    port: 0x64,
                    data: &[0xfe]
                },
                &b
            ),
            ExitAction::Stop(StopReason::Reset)
        );
    }

    #[test]
    fn terminal_exits() {
        let b = buses();
        assert_eq!(
            handle_exit(Exit::SystemEvent { kind: 2 }, &b),
            ExitAction::Stop(StopReason::Reset)
        );
        assert_eq!(
            handle_exit(Exit::SystemEvent { kind: 1 }, &b),
            ExitAction::Stop(StopReason::PowerOff)
        );
        assert!(matches!(
            handle_exit(Exit::Shutdown, &b),
            ExitAction::Stop(StopReason::GuestCrash(_))
        ));
        assert!(matches!(
            handle_exit(Exit::FailEntry { reason: 7 }, &b),
            ExitAction::Stop(StopReason::Fatal(_))
        ));
        assert!(matches!(
            handle_exit(Exit::InternalError, &b),
            ExitAction::Stop(StopReason::Fatal(_))
        ));
        assert!(matches!(
            handle_exit(Exit::Other("Debug".into()), &b),
            ExitAction::Stop(StopReason::Fatal(_))
        ));
    }
}
