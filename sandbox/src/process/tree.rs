//! A root image's files as a directory beside it, for workers run as host
//! processes: unpacked once with e2fsprogs' `debugfs` (no mount, no loop
//! device, no root needed) into `root/` next to the image's
//! `rootfs.ext4`, through a temporary name and a `rename`, so a reader
//! sees the whole tree or none. Cached images are keyed by the hash of
//! their inputs, so a tree is never stale.

use std::path::{Path, PathBuf};
use std::process::Command;

use parking_lot::Mutex;

/// Why an image's tree cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// `debugfs` is not installed.
    #[error("debugfs is not installed (apt-get install e2fsprogs): {0}")]
    Missing(std::io::Error),
    /// The image has no directory to put the tree in.
    #[error("the image {} has no parent directory", .0.display())]
    NoParent(PathBuf),
    /// `debugfs` failed, or said a file was not unpacked.
    #[error("unpacking {} with debugfs: {detail}", image.display())]
    Unpack {
        /// The image.
        image: PathBuf,
        /// What debugfs said.
        detail: String,
    },
    /// A file operation on the tree failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS's error.
        source: std::io::Error,
    },
}

/// Name of the tree's directory beside the image.
pub const TREE_DIR: &str = "root";

/// The directory holding `image`'s files, unpacked now if it is not yet.
pub fn image_tree(image: &Path) -> Result<PathBuf, TreeError> {
    let parent = image
        .parent()
        .ok_or_else(|| TreeError::NoParent(image.to_path_buf()))?;
    let tree = parent.join(TREE_DIR);
    if tree.is_dir() {
        return Ok(tree);
    }
    // One unpacking at a time in this process (workers started together
    // wait for the first); other processes use names of their own.
    static UNPACKING: Mutex<()> = Mutex::new(());
    let _one = UNPACKING.lock();
    if tree.is_dir() {
        return Ok(tree);
    }
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| TreeError::Io { what, path, source }
    };
    let partial = parent.join(format!(".{TREE_DIR}.tmp.{}", std::process::id()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io("removing", &partial))?;
    }
    std::fs::create_dir(&partial).map_err(io("creating", &partial))?;
    let unpacked = unpack(image, &partial).and_then(|()| {
        match std::fs::rename(&partial, &tree) {
            Ok(()) => Ok(()),
            // Another process unpacked it first: theirs is as good.
            Err(_) if tree.is_dir() => Ok(()),
            Err(e) => Err(io("renaming the unpacked tree to", &tree)(e)),
        }
    });
    if partial.exists() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    unpacked.map(|()| tree)
}

/// Unpacks every file of `image` into `root` (which must exist and be
/// empty), keeping modes, times, links and (run as root) owners; run by
/// another user, every file is that user's (the jail mounts the tree
/// read-only either way).
pub fn unpack(image: &Path, root: &Path) -> Result<(), TreeError> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", root.display()))
        .arg(image)
        .output()
        .map_err(TreeError::Missing)?;
    let fail = |detail: String| TreeError::Unpack {
        image: image.to_path_buf(),
        detail,
    };
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // debugfs reports per-file failures on stderr and still exits 0.
    let errors = String::from_utf8_lossy(&out.stderr);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let as_root = unsafe { libc::geteuid() } == 0;
    match first_failure(&errors, as_root) {
        Some(line) => Err(fail(line.to_string())),
        None => Ok(()),
    }
}

/// The first line of debugfs's `errors` that says a file was not
/// unpacked. Its banner is not one; nor, when not run as root, is a
/// refused `chown` to the image's owners (the file is there, the user's).
fn first_failure(errors: &str, as_root: bool) -> Option<&str> {
    errors.lines().find(|l| {
        let refused_owner = l.contains("Operation not permitted while changing ownership of ");
        !l.starts_with("debugfs ") && !l.trim().is_empty() && (as_root || !refused_owner)
    })
}

#[cfg(test)]
mod tests {
    use super::first_failure;

    #[test]
    fn only_real_failures_count_and_owners_only_for_root() {
        let log = "debugfs 1.47.0 (5-Feb-2023)\n\
                   dump_file: Operation not permitted while changing ownership of /t/x\n\
                   rdump: Operation not permitted while changing ownership of /t/d\n";
        assert_eq!(first_failure(log, false), None);
        assert_eq!(
            first_failure(log, true),
            Some("dump_file: Operation not permitted while changing ownership of /t/x")
        );
        let full = format!("{log}dump_file: No space left on device while writing /t/y\n");
        assert_eq!(
            first_failure(&full, false),
            Some("dump_file: No space left on device while writing /t/y")
        );
        assert_eq!(first_failure("debugfs 1.47.0\n\n", true), None);
    }
}
