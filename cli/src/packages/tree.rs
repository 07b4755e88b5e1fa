//! A root image's files as a directory and back: unpacked with
//! e2fsprogs' `debugfs` (no mount, no loop device), added to, and packed
//! again as a read-only ext4 image the way `guest-image/rootfs.sh` packs
//! the base images. Also the external commands the builds run, with their
//! errors kept readable.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a step on an image tree failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A command the build needs is not installed.
    #[error("{program} is not installed ({hint})")]
    Missing { program: String, hint: String },
    /// A command failed; `detail` is the end of what it printed.
    #[error("{what} failed ({status}):\n{detail}")]
    Failed {
        what: String,
        status: String,
        detail: String,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The tree's size could not be read.
    #[error(transparent)]
    Usage(#[from] crate::cache::CacheError),
    /// The base image could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] reflow_sandbox_core::process::tree::TreeError),
    /// The package layer would replace a file of the base image.
    #[error("{} is in the base image already; a package may add files, not replace them", path.display())]
    Replaces { path: PathBuf },
}

/// An I/O error on `path` while doing `what`.
pub fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TreeError + 'a {
    move |source| TreeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The last lines of a command's output worth showing (at most 30, at most
/// 4 KiB).
pub fn tail(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut shown = lines[lines.len().saturating_sub(30)..].join("\n");
    if shown.len() > 4096 {
        let cut = shown.len() - 4096;
        let cut = (cut..shown.len())
            .find(|i| shown.is_char_boundary(*i))
            .unwrap_or(shown.len());
        shown = format!("...{}", &shown[cut..]);
    }
    shown
}

/// Runs `cmd` (named `what` in errors) to its end, its output captured;
/// a missing program is [`TreeError::Missing`] with `hint`.
pub fn output(cmd: &mut Command, what: &str, hint: &str) -> Result<Output, TreeError> {
    cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TreeError::Missing {
                program: cmd.get_program().to_string_lossy().into_owned(),
                hint: hint.into(),
            }
        } else {
            TreeError::Failed {
                what: what.into(),
                status: "did not start".into(),
                detail: e.to_string(),
            }
        }
    })
}

/// As [`output`], and a non-zero exit is [`TreeError::Failed`].
pub fn run(cmd: &mut Command, what: &str, hint: &str) -> Result<Output, TreeError> {
    let out = output(cmd, what, hint)?;
    if !out.status.success() {
        return Err(TreeError::Failed {
            what: what.into(),
            status: out.status.to_string(),
            detail: tail(&out),
        });
    }
    Ok(out)
}

const E2FS: &str = "apt-get install e2fsprogs";

/// Runs one debugfs `request` on `image` (read-only), named `what` in
/// errors.
fn debugfs(image: &Path, request: &str, what: &str) -> Result<Output, TreeError> {
    run(
        Command::new("debugfs").args(["-R", request]).arg(image),
        what,
        E2FS,
    )
}

/// The names in directory `dir` of `image` (without `.` and `..`), read
/// with `debugfs` without unpacking anything; empty when there is no such
/// directory.
pub fn list(image: &Path, dir: &str) -> Result<Vec<String>, TreeError> {
    let out = debugfs(image, &format!("ls -p {dir}"), "debugfs ls")?;
    // `ls -p`: one `/inode/mode/uid/gid/name/size/` line per entry.
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix('/')?.split('/').nth(4))
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .collect())
}

/// The contents of file `path` in `image` (empty when there is none).
pub fn cat(image: &Path, path: &str) -> Result<Vec<u8>, TreeError> {
    let out = debugfs(image, &format!("cat {path}"), "debugfs cat")?;
    Ok(out.stdout)
}

/// Unpacks every file of `image` into `root` (which must exist and be
/// empty), keeping modes, owners (as root), times and links.
pub fn unpack(image: &Path, root: &Path) -> Result<(), TreeError> {
    Ok(reflow_sandbox_core::process::tree::unpack(image, root)?)
}

/// Copies the files of `from` into `into`, directory by directory: new
/// directories and files are moved in; a file that exists in `into`
/// already is an error (a package may not replace the base image's files),
/// a directory that exists is merged into.
pub fn merge(from: &Path, into: &Path) -> Result<(), TreeError> {
    std::fs::create_dir_all(into).map_err(io("creating", into))?;
    let listing = std::fs::read_dir(from).map_err(io("reading", from))?;
    for entry in listing {
        let entry = entry.map_err(io("reading", from))?;
        let (src, dst) = (entry.path(), into.join(entry.file_name()));
        let kind = entry.file_type().map_err(io("reading", &src))?;
        match std::fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() && kind.is_dir() => merge(&src, &dst)?,
            Ok(_) => return Err(TreeError::Replaces { path: dst }),
            Err(_) => std::fs::rename(&src, &dst).map_err(io("moving", &src))?,
        }
    }
    Ok(())
}

/// Packs `root` as a read-only ext4 image (no journal, no reserved blocks,
/// owned by root) at `out`, labelled `label`, with a quarter of free
/// space over its files as `guest-image/rootfs.sh` sizes the base images.
pub fn pack(root: &Path, label: &str, out: &Path) -> Result<u64, TreeError> {
    let bytes = crate::cache::disk_usage(root)?;
    let kib = bytes / 1024 * 5 / 4 + 16384;
    let file = std::fs::File::create(out).map_err(io("creating", out))?;
    file.set_len(kib * 1024).map_err(io("sizing", out))?;
    drop(file);
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-O", "^has_journal", "-m", "0"])
            .args(["-E", "root_owner=0:0", "-d"])
            .arg(root)
            .arg(out)
            .arg(format!("{kib}k")),
        "packing the image with mkfs.ext4",
        E2FS,
    )?;
    Ok(kib * 1024)
}
