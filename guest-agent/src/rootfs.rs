//! The language image: a read-only ext4 root filesystem on a virtio disk
//! (`reflow.root=/dev/vda`), mounted at [`ROOT`] with writable, size-limited
//! tmpfs on `/tmp` and `/run` and the agent's `/dev`, `/proc` and `/sys`
//! bound in. Programs the agent starts run chrooted into it; the agent
//! itself stays in its initramfs.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::mounts::mount;

/// Where the image is mounted.
pub const ROOT: &str = reflow_agent_protocol::paths::IMAGE_ROOT;

/// Why the image could not be mounted (`source` carries the errno).
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{ROOT}: {0}")]
    MountPoint(std::io::Error),
    #[error("mounting {device}: {source}")]
    Image {
        device: String,
        source: std::io::Error,
    },
    /// A tmpfs or a bind mount inside the image.
    #[error("{target}: {source}")]
    Inner {
        target: String,
        source: std::io::Error,
    },
}

/// Mounts the ext4 image on `device` read-only at [`ROOT`].
pub fn mount_image(device: &str) -> Result<(), RootfsError> {
    std::fs::create_dir_all(ROOT).map_err(RootfsError::MountPoint)?;
    let ro = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID;
    mount(device, ROOT, "ext4", ro, "").map_err(|source| RootfsError::Image {
        device: device.into(),
        source,
    })?;
    let inner = |target: &str| {
        let target = target.to_string();
        move |source| RootfsError::Inner { target, source }
    };
    let tmpfs = libc::MS_NOSUID | libc::MS_NODEV;
    for (dir, data) in [("tmp", "mode=1777,size=64m"), ("run", "mode=0755,size=16m")] {
        let target = format!("{ROOT}/{dir}");
        mount("tmpfs", &target, "tmpfs", tmpfs, data).map_err(inner(&target))?;
    }
    for dir in ["dev", "proc", "sys"] {
        let target = format!("{ROOT}/{dir}");
        mount(
            &format!("/{dir}"),
            &target,
            "",
            libc::MS_BIND | libc::MS_REC,
            "",
        )
        .map_err(inner(&target))?;
    }
    Ok(())
}

/// Makes `command` run chrooted into the image.
pub fn enter(command: &mut Command) {
    // Made before the fork: the child must not allocate.
    let root = std::ffi::CString::new(ROOT).expect("the image root has no NUL byte");
    // SAFETY: the closure runs between fork and exec and only makes the
    // async-signal-safe calls chroot(2) and chdir(2) on strings allocated
    // before the fork (`root`, moved in) or static.
    unsafe {
        command.pre_exec(move || {
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
