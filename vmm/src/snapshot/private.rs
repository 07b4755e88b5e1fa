//! Files and directories of snapshots and their cache, private to this
//! user: directories 0700, files 0600, and no open that follows a symlink
//! planted at a snapshot's file name (`O_NOFOLLOW`). A snapshot holds a
//! whole guest's memory, and restoring one runs whatever it holds.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

const FLAGS: i32 = libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Creates `dir` and any missing parents, each new one 0700.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens `path` for writing, created 0600 if missing, emptied if not;
/// refuses a symlink.
pub fn create_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(FLAGS)
        .open(path)
}

/// Opens `path` (created 0600 if missing, kept if not) for a lock;
/// refuses a symlink.
pub fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(FLAGS)
        .open(path)
}

/// Opens `path` for reading; refuses a symlink.
pub fn open_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(FLAGS).open(path)
}

/// Writes `bytes` to `path` as [`create_file`] opens it.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = create_file(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads all of `path`; refuses a symlink.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_read(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_private() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("state.bin");
        write(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(read(&f).unwrap(), b"x");
        open_lock(&dir.join(".lock")).unwrap();
        assert_eq!(mode(&dir.join(".lock")), 0o600);
    }

    #[test]
    fn a_planted_symlink_is_neither_read_nor_written_through() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("elsewhere");
        std::fs::write(&target, b"precious").unwrap();
        let link = t.path().join("memory.bin");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let loop_err = libc::ELOOP;
        assert_eq!(read(&link).unwrap_err().raw_os_error(), Some(loop_err));
        assert_eq!(
            write(&link, b"clobbered").unwrap_err().raw_os_error(),
            Some(loop_err)
        );
        assert_eq!(open_lock(&link).unwrap_err().raw_os_error(), Some(loop_err));
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }
}
