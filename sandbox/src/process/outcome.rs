//! How a process worker ended, in words for a user's error message: what
//! a VM's [`reflow_vmm::VmOutcome`] is to a VM.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// How a process worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessOutcome {
    /// The kernel's OOM killer ended it: its memory cgroup reached its
    /// limit (MiB).
    OutOfMemory {
        /// The group's limit, MiB.
        limit_mib: u32,
    },
    /// The worker exited with this status.
    Exited(i32),
    /// The worker (or its jail) was ended by this signal.
    Signaled(i32),
}

impl ProcessOutcome {
    /// The outcome of a worker whose jail ended with `status` (the
    /// worker's own exit status, or 128 plus the signal that ended it, as
    /// `reflow-vmm __worker` passes it on), its memory group having counted
    /// `oom_kills` kills at `limit_mib`.
    pub fn from_status(status: ExitStatus, oom_kills: u64, limit_mib: u32) -> ProcessOutcome {
        if oom_kills > 0 {
            return ProcessOutcome::OutOfMemory { limit_mib };
        }
        match (status.code(), status.signal()) {
            (Some(code), _) if code > 128 => ProcessOutcome::Signaled(code - 128),
            (Some(code), _) => ProcessOutcome::Exited(code),
            (None, Some(signal)) => ProcessOutcome::Signaled(signal),
            // An ExitStatus is one or the other.
            (None, None) => ProcessOutcome::Exited(-1),
        }
    }
}

/// A signal's name and what it usually means for a worker.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV, a bad memory access",
        libc::SIGBUS => "SIGBUS, a bad memory access",
        libc::SIGABRT => "SIGABRT, the runtime aborted",
        libc::SIGILL => "SIGILL",
        libc::SIGSYS => "SIGSYS, a system call its seccomp filter forbids",
        libc::SIGXFSZ => "SIGXFSZ, a file past its size limit",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

impl std::fmt::Display for ProcessOutcome {
    /// Why the worker ended, in words.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessOutcome::OutOfMemory { limit_mib } => {
                write!(f, "it went past its {limit_mib} MiB memory limit")
            }
            ProcessOutcome::Exited(code) => write!(f, "it exited with status {code}"),
            ProcessOutcome::Signaled(signal) => match signal_name(*signal) {
                Some(name) => write!(f, "it was killed by signal {signal} ({name})"),
                None => write!(f, "it was killed by signal {signal}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn tells_an_exit_a_signal_and_the_memory_limit_apart() {
        let cases = [
            (exited(3), 0, "it exited with status 3"),
            (exited(128 + 9), 0, "it was killed by signal 9 (SIGKILL)"),
            (
                exited(128 + 31),
                0,
                "it was killed by signal 31 (SIGSYS, a system call its seccomp filter forbids)",
            ),
            (
                ExitStatus::from_raw(9),
                0,
                "it was killed by signal 9 (SIGKILL)",
            ),
            (exited(128 + 40), 0, "it was killed by signal 40"),
            (exited(137), 1, "it went past its 256 MiB memory limit"),
        ];
        for (status, ooms, said) in cases {
            let outcome = ProcessOutcome::from_status(status, ooms, 256);
            assert_eq!(outcome.to_string(), said, "{status:?}");
        }
    }
}
