//! Holding an idle process worker: what holding a VM's vCPUs is to a VM.
//! An idle worker polls its ring, sleeping up to 10 ms between looks;
//! a held one is stopped (`SIGSTOP`) and costs the host nothing until it
//! is let go (`SIGCONT`) for its next message.
//!
//! The signals go to the worker itself, the jail's PID 1 (a namespace's
//! init takes `SIGSTOP` and `SIGCONT` from an ancestor namespace whatever
//! it asks), through a pidfd: a pid alone could by then name another
//! process. Processes the worker started are not stopped (an idle worker
//! has none; a script's own children stay within its cgroups).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A handle on a running worker that can stop and continue it.
#[derive(Debug)]
pub(crate) struct Hold {
    pidfd: OwnedFd,
}

impl Hold {
    /// The handle on the child of the jail's outer process `outer` (the
    /// worker), or `None` if it cannot be had: no such child (yet, or any
    /// more), or no pidfds (Linux before 5.3). Without one, an idle worker
    /// is left polling.
    pub(crate) fn find(outer: u32) -> Option<Hold> {
        let child = only_child(outer)?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor was just made and is owned by no one else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Still `outer`'s child now that the pidfd is open: the pidfd is
        // that child's, not a later process's that got its pid (`outer`
        // starts one child only).
        (only_child(outer) == Some(child)).then_some(Hold { pidfd })
    }

    /// Stops the worker; `false` if it could not be signalled (it ended).
    pub(crate) fn stop(&self) -> bool {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a stopped worker run again.
    pub(crate) fn go(&self) -> bool {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: i32) -> bool {
        // SAFETY: pidfd_send_signal on a pidfd this handle owns, with no
        // siginfo and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    }
}

/// The one child of process `pid`, from `/proc/<pid>/task/<pid>/children`.
fn only_child(pid: u32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let mut children = text.split_whitespace();
    let child = children.next()?.parse().ok()?;
    children.next().is_none().then_some(child)
}
