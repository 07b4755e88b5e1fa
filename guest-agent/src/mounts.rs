//! The pseudo filesystems PID 1 mounts.

use std::ffi::CString;

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
#[error("mounting {fstype} on {target}: {source}")]
pub struct MountError {
    fstype: &'static str,
    target: &'static str,
    source: std::io::Error,
}

const MOUNTS: &[(&str, &str, &str, libc::c_ulong)] = &[
    (
        "proc",
        "/proc",
        "",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    ),
    (
        "sysfs",
        "/sys",
        "",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    ),
    ("devtmpfs", "/dev", "mode=0755", libc::MS_NOSUID),
    (
        "tmpfs",
        "/tmp",
        "mode=1777",
        libc::MS_NOSUID | libc::MS_NODEV,
    ),
    (
        "tmpfs",
        "/run",
        "mode=0755",
        libc::MS_NOSUID | libc::MS_NODEV,
    ),
];

/// Mounts /proc, /sys, /dev, /tmp and /run, creating the directories.
pub fn mount_all() -> Result<(), MountError> {
    for &(fstype, target, data, flags) in MOUNTS {
        let err = |source| MountError {
            fstype,
            target,
            source,
        };
        match std::fs::create_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
        match mount(fstype, target, fstype, flags, data) {
            Ok(()) => {}
            // /dev may already be devtmpfs when the kernel mounted it.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

/// mount(2) with Rust strings.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    let c = |s: &str| {
        CString::new(s).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (src, tgt, ty, dat) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive
    // the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ptr(),
            flags,
            dat.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
