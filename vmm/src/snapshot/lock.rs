//! Locks on snapshot cache entries (`flock` on a lock file beside the
//! entry): exclusive while an entry is built or removed, shared while a
//! process restores clones from it. flock locks belong to the open file,
//! so two threads of one process exclude each other as two processes do,
//! and the kernel drops a lock whose holder died.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct EntryLock {
    file: File,
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor the caller owns; no memory is
        // passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => return Ok(false),
            _ => return Err(e),
        }
    }
}

impl EntryLock {
    /// The exclusive lock on `path` (created 0600 if missing); `waiting` is
    /// called once if another holder makes this wait.
    pub fn exclusive(path: &Path, waiting: &dyn Fn()) -> std::io::Result<EntryLock> {
        let file = super::private::open_lock(path)?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
            waiting();
            flock(&file, libc::LOCK_EX)?;
        }
        Ok(EntryLock { file })
    }

    /// The exclusive lock on `path` if nobody holds it now.
    pub fn try_exclusive(path: &Path) -> std::io::Result<Option<EntryLock>> {
        let file = super::private::open_lock(path)?;
        Ok(flock(&file, libc::LOCK_EX | libc::LOCK_NB)?.then_some(EntryLock { file }))
    }

    /// A shared lock on `path` (waits while someone holds it exclusively).
    pub fn shared(path: &Path) -> std::io::Result<EntryLock> {
        let file = super::private::open_lock(path)?;
        flock(&file, libc::LOCK_SH)?;
        Ok(EntryLock { file })
    }

    /// Marks the locked entry as used now: the lock file's modification
    /// time (what a least-recently-used eviction orders by).
    pub fn touch(&self) {
        let _ = self.file.set_modified(std::time::SystemTime::now());
    }

    /// Turns an exclusive lock into a shared one.
    pub fn downgrade(&self) -> std::io::Result<()> {
        flock(&self.file, libc::LOCK_SH).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::EntryLock;

    #[test]
    fn shared_holders_keep_an_exclusive_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".k.lock");
        let a = EntryLock::shared(&path).unwrap();
        let b = EntryLock::shared(&path).unwrap();
        assert!(EntryLock::try_exclusive(&path).unwrap().is_none());
        drop(a);
        assert!(EntryLock::try_exclusive(&path).unwrap().is_none());
        drop(b);
        let x = EntryLock::try_exclusive(&path).unwrap().expect("free now");
        x.downgrade().unwrap();
        let _c = EntryLock::shared(&path).unwrap();
        assert!(EntryLock::try_exclusive(&path).unwrap().is_none());
    }
}
