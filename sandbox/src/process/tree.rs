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
/// empty), keeping modes, owners (as root), times and links.
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
    match errors
        .lines()
        .find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
    {
        Some(line) => Err(fail(line.to_string())),
        None => Ok(()),
    }
}
