//! What a monitor process gives up once its VM is restored and before it
//! runs any guest code: the first layer of its jail (the rest, namespaces,
//! a private root and a uid of its own, is still to come; see
//! `docs/security.md`).
//!
//! - `no_new_privs`: nothing it could exec gains privileges (and seccomp
//!   filters need no capability);
//! - not dumpable: no core dump of guest memory, and no other process of
//!   the same user may `ptrace` it or read its memory through `/proc`;
//! - every capability dropped (effective, permitted, inheritable), so a
//!   monitor run as root keeps only what plain file ownership allows;
//! - resource limits: no core files, at most [`MAX_FILES`] descriptors;
//! - umask 077.
//!
//! Capabilities are per thread: this runs on the monitor's main thread
//! before it starts any other, so they inherit the empty sets.

/// Most descriptors a monitor may hold: its VM (KVM, one per vCPU,
/// eventfds per queue, the memfd, the epoll), the vsock connections its
/// muxer allows, and its socket to the bridge, with room to spare.
pub const MAX_FILES: u64 = 512;

/// Why hardening failed (which step, and the OS's error).
#[derive(Debug, thiserror::Error)]
#[error("hardening the monitor process: {step}: {source}")]
pub struct HardenError {
    step: &'static str,
    source: std::io::Error,
}

fn check(step: &'static str, rc: libc::c_int) -> Result<(), HardenError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(HardenError {
            step,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Applies every step above to this process, in order; the first failure
/// is an error (the monitor then refuses to run its VM).
pub fn harden() -> Result<(), HardenError> {
    // SAFETY: plain system calls with integer arguments or pointers to
    // locals that live across the call.
    unsafe {
        libc::umask(0o077);
        check(
            "no_new_privs",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
        check(
            "not dumpable",
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0),
        )?;
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check("RLIMIT_CORE", libc::setrlimit(libc::RLIMIT_CORE, &core))?;
        let mut files = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check(
            "RLIMIT_NOFILE",
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut files),
        )?;
        files.rlim_cur = files.rlim_cur.min(MAX_FILES);
        files.rlim_max = files.rlim_max.min(MAX_FILES);
        check(
            "RLIMIT_NOFILE",
            libc::setrlimit(libc::RLIMIT_NOFILE, &files),
        )?;
    }
    drop_capabilities()
}

/// Empties this thread's effective, permitted and inheritable capability
/// sets (`capset(2)`, version 3: two 32-bit words per set).
fn drop_capabilities() -> Result<(), HardenError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data words, both
    // live locals of the layout the kernel expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    check("dropping capabilities", rc as libc::c_int)
}
