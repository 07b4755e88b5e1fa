//! Making a restored clone unique: host entropy into the kernel RNG, the
//! host's wall clock into the guest.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

// From include/uapi/linux/random.h.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x0000_5207;

/// Why the RNG or the clock could not be set or read.
#[derive(Debug, thiserror::Error)]
pub enum EntropyError {
    #[error("/dev/urandom: {0}")]
    Urandom(std::io::Error),
    /// A system call (or ioctl) failed; `source` carries its errno.
    #[error("{call}: {source}")]
    Syscall {
        call: &'static str,
        source: std::io::Error,
    },
}

impl EntropyError {
    /// `call` failed just now: its errno.
    fn last(call: &'static str) -> EntropyError {
        EntropyError::Syscall {
            call,
            source: std::io::Error::last_os_error(),
        }
    }
}

/// Mixes `entropy` into the input pool (credited, so the CRNG counts as
/// seeded) and forces an immediate CRNG reseed: clones restored from one
/// snapshot share the CRNG state until this runs.
pub fn reseed(entropy: &[u8]) -> Result<(), EntropyError> {
    let urandom = OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(EntropyError::Urandom)?;
    // struct rand_pool_info { int entropy_count; int buf_size; u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    info.extend_from_slice(entropy);
    // Keep the buffer 4-byte aligned in length for the kernel's u32 view.
    info.resize(info.len().next_multiple_of(4), 0);
    // SAFETY: `info` is a valid rand_pool_info whose buf_size matches the
    // bytes that follow the header; the kernel only reads it.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    if rc != 0 {
        return Err(EntropyError::last("RNDADDENTROPY"));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG) };
    if rc != 0 {
        return Err(EntropyError::last("RNDRESEEDCRNG"));
    }
    Ok(())
}

/// Sets CLOCK_REALTIME.
pub fn set_time(unix_ns: u64) -> Result<(), EntropyError> {
    let ts = libc::timespec {
        tv_sec: (unix_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(EntropyError::last("clock_settime"));
    }
    Ok(())
}

/// Reads `len` bytes from the kernel CRNG.
pub fn random(len: usize) -> Result<Vec<u8>, EntropyError> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), len - done, 0) };
        if n < 0 {
            let source = std::io::Error::last_os_error();
            if source.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(EntropyError::Syscall {
                call: "getrandom",
                source,
            });
        }
        done += n as usize;
    }
    Ok(buf)
}
