//! Interrupt and notification triggers backed by eventfds.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// Raises a guest interrupt by writing to an eventfd registered with KVM as
/// an irqfd (or wakes the event loop, for other eventfds).
#[derive(Clone)]
pub struct EventFdTrigger(pub Arc<EventFd>);

impl EventFdTrigger {
    /// A trigger writing to `fd`.
    pub fn new(fd: EventFd) -> EventFdTrigger {
        EventFdTrigger(Arc::new(fd))
    }
}

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
