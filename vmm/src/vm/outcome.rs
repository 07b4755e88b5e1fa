//! How a VM ended, and the exit code that tells it.

use std::time::Duration;

use crate::console::AgentReady;
use crate::vcpu::exit::StopReason;

/// How a VM ended.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// Why the vCPUs stopped.
    pub stop: StopReason,
    /// When the agent said it was ready, if it did.
    pub ready: Option<AgentReady>,
    /// The status the agent reported before powering off.
    pub agent_exit_status: Option<i32>,
    /// The kernel's panic line, if it panicked.
    pub kernel_panic: Option<String>,
    /// The last console lines.
    pub console_tail: Vec<String>,
    /// Host time from `run` to the stop.
    pub elapsed: Duration,
    /// The latest hostile-input reports (see [`crate::hostile`]).
    pub hostile: Vec<String>,
}

/// Exit codes of [`VmOutcome::exit_code`] that are not the guest's own.
pub const EXIT_KERNEL_PANIC: i32 = 70;
/// The guest crashed (triple fault or crash event).
pub const EXIT_GUEST_CRASH: i32 = 71;
/// The monitor could not run the guest (KVM failed).
pub const EXIT_MONITOR_ERROR: i32 = 72;
/// The VM ran past its time limit (as `timeout(1)` reports it).
pub const EXIT_TIMEOUT: i32 = 124;

impl VmOutcome {
    /// The process exit code for this outcome: the agent's reported status
    /// when the guest powered off cleanly; 0 for a reset without a status
    /// (a plain `reboot`); otherwise one of the `EXIT_*` codes.
    pub fn exit_code(&self) -> i32 {
        if self.kernel_panic.is_some() {
            return EXIT_KERNEL_PANIC;
        }
        match &self.stop {
            StopReason::Reset | StopReason::PowerOff => {
                self.agent_exit_status.map_or(0, |s| s.clamp(0, 255))
            }
            StopReason::GuestCrash(_) => EXIT_GUEST_CRASH,
            StopReason::Timeout => EXIT_TIMEOUT,
            StopReason::Stopped => 0,
            StopReason::Fatal(_) => EXIT_MONITOR_ERROR,
        }
    }
}

impl std::fmt::Display for VmOutcome {
    /// Why the VM ended, in words (for a user's error message).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(panic) = &self.kernel_panic {
            // Without the printk timestamp (`[   78.361415] `).
            let line = panic.trim_start();
            let line = match line.split_once("] ") {
                Some((stamp, rest)) if stamp.starts_with('[') => rest,
                _ => line,
            };
            return write!(f, "the guest kernel panicked: {line}");
        }
        match &self.stop {
            StopReason::Reset => f.write_str("the guest reset itself"),
            StopReason::PowerOff => f.write_str("the guest powered off"),
            StopReason::GuestCrash(why) => write!(f, "the guest crashed: {why}"),
            StopReason::Timeout => f.write_str("the VM ran past its time limit"),
            StopReason::Stopped => f.write_str("the host stopped it"),
            StopReason::Fatal(why) => write!(f, "the monitor could not run it: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stop: StopReason, status: Option<i32>, panic: bool) -> VmOutcome {
        VmOutcome {
            stop,
            ready: None,
            agent_exit_status: status,
            kernel_panic: panic.then(|| "Kernel panic - not syncing".into()),
            console_tail: vec![],
            elapsed: Duration::ZERO,
            hostile: vec![],
        }
    }

    #[test]
    fn says_why_in_words() {
        let panicked = outcome(StopReason::Reset, None, true);
        assert_eq!(
            panicked.to_string(),
            "the guest kernel panicked: Kernel panic - not syncing"
        );
        let mut stamped = outcome(StopReason::Reset, None, true);
        stamped.kernel_panic = Some("[   78.361415] Kernel panic - not syncing: x".into());
        assert_eq!(
            stamped.to_string(),
            "the guest kernel panicked: Kernel panic - not syncing: x"
        );
        let reset = outcome(StopReason::Reset, None, false);
        assert_eq!(reset.to_string(), "the guest reset itself");
        let stopped = outcome(StopReason::Stopped, None, false);
        assert_eq!(stopped.to_string(), "the host stopped it");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(outcome(StopReason::Reset, Some(0), false).exit_code(), 0);
        assert_eq!(outcome(StopReason::Reset, Some(7), false).exit_code(), 7);
        assert_eq!(outcome(StopReason::Reset, Some(-1), false).exit_code(), 0);
        assert_eq!(
            outcome(StopReason::Reset, Some(300), false).exit_code(),
            255
        );
        assert_eq!(outcome(StopReason::Reset, None, false).exit_code(), 0);
        assert_eq!(
            outcome(StopReason::Reset, None, true).exit_code(),
            EXIT_KERNEL_PANIC
        );
        assert_eq!(
            outcome(StopReason::Timeout, None, false).exit_code(),
            EXIT_TIMEOUT
        );
        assert_eq!(
            outcome(StopReason::GuestCrash("x".into()), None, false).exit_code(),
            EXIT_GUEST_CRASH
        );
        assert_eq!(
            outcome(StopReason::Fatal("x".into()), None, false).exit_code(),
            EXIT_MONITOR_ERROR
        );
    }
}
