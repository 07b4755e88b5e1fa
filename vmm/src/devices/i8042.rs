//! The i8042 keyboard controller, present only for its reset line: the guest
//! kernel (booted with `reboot=k`) resets the machine by writing 0xfe to port
//! 0x64, which ends the VM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::I8042Device;

use super::bus::{BusDevice, DeviceEvent};

/// Base port and length of the controller's range (data 0x60, command 0x64).
pub const I8042_BASE: u64 = 0x60;
/// Length of the controller's port range.
pub const I8042_LEN: u64 = 5;

/// Records that the guest pulled the reset line.
#[derive(Clone, Default)]
pub struct ResetLine(Arc<AtomicBool>);

impl vm_superio::Trigger for ResetLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The i8042 on the port-I/O bus.
pub struct I8042 {
    device: I8042Device<ResetLine>,
    reset: ResetLine,
}

impl I8042 {
    /// A controller whose reset line has not been pulled.
    pub fn new() -> I8042 {
        let reset = ResetLine::default();
        I8042 {
            device: I8042Device::new(reset.clone()),
            reset,
        }
    }
}

impl Default for I8042 {
    fn default() -> Self {
        I8042::new()
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let [b] = data {
            *b = self.device.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<DeviceEvent> {
        if let [b] = data {
            // The only error vm-superio reports is the trigger's, which
            // cannot fail.
            let _ = self.device.write(offset as u8, *b);
        }
        self.reset
            .0
            .swap(false, Ordering::SeqCst)
            .then_some(DeviceEvent::ResetRequested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_reset() {
        let mut dev = I8042::new();
        let mut status = [0u8];
        dev.read(4, &mut status);
        assert_eq!(dev.write(4, &[0xfe]), Some(DeviceEvent::ResetRequested));
        // Reported once per reset command.
        assert_eq!(dev.write(0, &[0x00]), None);
    }

    #[test]
    fn other_commands_do_not_reset() {
        let mut dev = I8042::new();
        assert_eq!(dev.write(4, &[0x20]), None);
        assert_eq!(dev.write(0, &[0xfe]), None);
    }
}
