//! A lifeline for a jail's waiting parent that has no socket to its
//! starter: the read end of a pipe whose write end only the starter holds.
//! The parent waits for its child or for the pipe to close, whichever comes
//! first, and kills the child in the second case, so the child never
//! outlives its starter, however the starter ends. The parent has entered
//! a PID namespace for its children, so it may not start a thread: one
//! `poll` over the pipe and a pidfd of the child waits for both.

/// How often the waiting parent looks at its child where the kernel has no
/// pidfds (Linux before 5.3).
const NO_PIDFD_POLL_MS: i32 = 100;

/// Returns once `child` has ended (not reaped: the caller reaps it), or
/// once `lifeline` polls closed or readable, after killing `child` with
/// SIGKILL.
pub(crate) fn wait_or_kill(child: libc::pid_t, lifeline: i32) {
    // SAFETY: a plain system call; the descriptor it returns is closed
    // below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) } as i32;
    let mut fds = [
        libc::pollfd {
            fd: lifeline,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let (count, timeout) = if pidfd >= 0 {
        (2, -1)
    } else {
        (1, NO_PIDFD_POLL_MS)
    };
    loop {
        // SAFETY: `fds` holds `count` valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout) };
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if r < 0 || fds[0].revents != 0 {
            kill(child, pidfd);
            break;
        }
        if fds[1].revents != 0 || (pidfd < 0 && ended(child)) {
            break;
        }
    }
    if pidfd >= 0 {
        // SAFETY: closes the pidfd opened above.
        unsafe { libc::close(pidfd) };
    }
}

/// SIGKILL to `child`, through its pidfd where there is one (which cannot
/// name another process, even once the child has been reaped).
fn kill(child: libc::pid_t, pidfd: i32) {
    // SAFETY: plain system calls with a signal number and no info.
    unsafe {
        if pidfd >= 0 {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        } else {
            // The caller has not reaped the child: its pid is still its.
            libc::kill(child, libc::SIGKILL);
        }
    }
}

/// Whether `child` has ended, without reaping it.
fn ended(child: libc::pid_t) -> bool {
    // SAFETY: `info` is a valid siginfo_t to fill; WNOWAIT leaves the
    // child to be reaped by the caller.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            child as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
            && info.si_pid() != 0
    }
}
