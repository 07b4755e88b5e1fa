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
pub const EXIT_GUEST_CRASH: i32 = 71;
pub const EXIT_MONITOR_ERROR: i32 = 72;
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
