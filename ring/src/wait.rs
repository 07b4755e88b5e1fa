//! How each side of a ring waits: the doorbell and parker a VM provides,
//! and the spin-then-sleep back-off used without them.

use std::time::{Duration, Instant};

/// Wakes the other side's consumer when it has parked (for example a write
/// to an MMIO doorbell that KVM turns into an eventfd signal).
pub trait Doorbell: Sync {
    /// Signals the parked consumer to wake up.
    fn ring(&self);
}

/// Blocks a consumer until its doorbell rings or `timeout` passes
/// (spurious and early wake-ups are fine).
pub trait Parker: Sync {
    /// Blocks until the doorbell rings or `timeout` passes.
    fn park(&self, timeout: Duration);
}

/// How a waiting side polls: spin for `spin` (reading the clock is a vDSO
/// call, no system call), then sleep with growing intervals up to
/// `max_sleep`. Where every system call is expensive (a guest whose kernel
/// is emulated), spin longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// How long to spin (re-checking without sleeping) before sleeping.
    pub spin: Duration,
    /// The longest single sleep; sleeps double from 20 µs up to it.
    pub max_sleep: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            spin: Duration::from_micros(100),
            max_sleep: Duration::from_millis(1),
        }
    }
}

pub(crate) struct Waiter {
    policy: Backoff,
    start: Instant,
    sleep: Duration,
}

impl Waiter {
    pub(crate) fn new(policy: Backoff) -> Waiter {
        Waiter {
            policy,
            start: Instant::now(),
            sleep: Duration::from_micros(20),
        }
    }

    /// Spins a little and returns `None` while in the spin phase; after
    /// it, returns how long to sleep next (growing up to `max_sleep`).
    pub(crate) fn next(&mut self) -> Option<Duration> {
        if self.start.elapsed() < self.policy.spin {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            return None;
        }
        let sleep = self.sleep;
        self.sleep = (self.sleep * 2).min(self.policy.max_sleep);
        Some(sleep)
    }

    pub(crate) fn wait(&mut self) {
        if let Some(sleep) = self.next() {
            std::thread::sleep(sleep);
        }
    }
}
