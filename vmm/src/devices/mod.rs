//! Emulated devices: the I/O buses and the devices on them.

pub mod bus;
pub mod i8042;
pub mod serial;
pub mod trigger;
pub mod virtio;

pub use bus::{Bus, BusDevice, DeviceEvent};
