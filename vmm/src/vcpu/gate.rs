//! Holding a running VM's vCPUs out of the guest without stopping the VM:
//! a held vCPU thread waits on a condition variable instead of entering
//! KVM_RUN, so an idle guest (a pooled clone waiting to be lent) costs no
//! host CPU at all, not even for its timer ticks, which hosts that emulate
//! the guest kernel pay dearly for. Devices and the event loop keep
//! running; on release the guest goes on and sees the time that passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::kick_signal;

/// Why the vCPUs could not be held.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// No vCPU thread is running the guest.
    #[error("the VM has no running vCPUs")]
    NotRunning,
    /// Not every vCPU left the guest in time; they were released again.
    #[error("{parked} of {running} vCPUs left the guest within {0:?}", .waited)]
    Stuck {
        /// vCPUs that did leave the guest.
        parked: usize,
        /// vCPU threads running.
        running: usize,
        /// How long the hold waited.
        waited: Duration,
    },
}

#[derive(Default)]
struct State {
    /// vCPU threads running the guest (they deregister before they end,
    /// so every thread listed here may be signalled).
    threads: Vec<libc::pthread_t>,
    parked: usize,
}

/// The hold gate of one VM's vCPUs.
#[derive(Default)]
pub struct Gate {
    held: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

impl Gate {
    /// Registers the calling vCPU thread; [`Gate::leave`] before it ends.
    pub(crate) fn enter(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.state.lock().threads.push(me);
    }

    /// Deregisters the calling vCPU thread.
    pub(crate) fn leave(&self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let mut s = self.state.lock();
        if let Some(at) = s.threads.iter().position(|t| *t == me) {
            s.threads.swap_remove(at);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Called by a vCPU thread before each KVM_RUN: waits while the gate
    /// is held (and the VM is not stopping).
    pub(crate) fn pass(&self, stop: &AtomicBool) {
        if !self.held.load(Ordering::SeqCst) {
            return;
        }
        let mut s = self.state.lock();
        s.parked += 1;
        self.changed.notify_all();
        // No tick: a held vCPU sleeps until the gate is released, which
        // whoever stops the VM does after setting `stop`.
        while self.held.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            self.changed.wait(&mut s);
        }
        s.parked -= 1;
    }

    /// Holds every vCPU out of the guest; returns once all of them wait
    /// (at most `timeout`, kicking them out of KVM_RUN meanwhile).
    pub fn hold(&self, timeout: Duration) -> Result<(), GateError> {
        self.held.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock();
        loop {
            let running = s.threads.len();
            if running == 0 {
                drop(s);
                self.release();
                return Err(GateError::NotRunning);
            }
            if s.parked >= running {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let parked = s.parked;
                drop(s);
                self.release();
                return Err(GateError::Stuck {
                    parked,
                    running,
                    waited: timeout,
                });
            }
            for t in &s.threads {
                // SAFETY: every listed thread is alive (threads deregister
                // under this lock before they end); the kick signal has a
                // handler that does nothing but interrupt KVM_RUN.
                unsafe { libc::pthread_kill(*t, kick_signal()) };
            }
            self.changed.wait_for(&mut s, Duration::from_millis(1));
        }
    }

    /// Lets the vCPUs run the guest again.
    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        let _s = self.state.lock();
        self.changed.notify_all();
    }

    /// Whether the gate is held.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Threads standing in for vCPUs: each counts its "guest entries"
    /// and sleeps in a way the kick signal interrupts.
    #[test]
    fn held_threads_stop_entering_and_go_on_after_release() {
        super::super::install_kick_handler().unwrap();
        let gate = Arc::new(Gate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let entries = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (gate, stop, entries) = (gate.clone(), stop.clone(), entries.clone());
                std::thread::spawn(move || {
                    gate.enter();
                    while !stop.load(Ordering::SeqCst) {
                        gate.pass(&stop);
                        entries.fetch_add(1, Ordering::SeqCst);
                        // SAFETY: a plain sleep; EINTR ends it early.
                        unsafe { libc::usleep(200_000) };
                    }
                    gate.leave();
                })
            })
            .collect();
        while gate.state.lock().threads.len() < 2 {
            std::thread::yield_now();
        }
        let t = Instant::now();
        gate.hold(Duration::from_secs(5)).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(150),
            "kicked, not waited out"
        );
        let held_at = entries.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(entries.load(Ordering::SeqCst), held_at, "a held thread ran");
        gate.release();
        let t = Instant::now();
        while entries.load(Ordering::SeqCst) == held_at {
            assert!(t.elapsed() < Duration::from_secs(5), "never released");
            std::thread::yield_now();
        }
        // Stopping (the flag, then a release) wakes held threads too.
        gate.hold(Duration::from_secs(5)).unwrap();
        stop.store(true, Ordering::SeqCst);
        gate.release();
        for t in threads {
            t.join().unwrap();
        }
        assert!(matches!(
            gate.hold(Duration::from_millis(10)),
            Err(GateError::NotRunning)
        ));
        assert!(!gate.is_held());
    }
}
