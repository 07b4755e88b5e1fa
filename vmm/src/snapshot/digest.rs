//! The digest of a snapshot's memory file, recorded in its state file when
//! the snapshot is written and checked the first time this process
//! restores from it, so a memory file damaged on disk (a bad sector, a
//! copy cut short, a stray write) is refused rather than run as a guest.
//! It guards against damage, not tampering: whoever can write a snapshot
//! can write its digest too, which is why snapshots are private to their
//! user ([`super::private`]).
//!
//! SHA-256 over the file page by page: an all-zero page (a hole, most of a
//! fresh guest's RAM) counts as the tag `0`, any other as the tag `1` and
//! its bytes, so writing and checking skip hashing zeros alike.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// Bytes per page, as the memory file is written.
pub const PAGE: usize = 4096;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// Hashes a memory file's pages as they are written or read.
#[derive(Default)]
pub struct PageHasher(Sha256);

impl PageHasher {
    /// Adds one page (the last may be shorter).
    pub fn page(&mut self, page: &[u8]) {
        if page.iter().all(|&b| b == 0) {
            self.0.update([0u8]);
        } else {
            self.0.update([1u8]);
            self.0.update(page);
        }
    }

    /// The digest of the pages added.
    pub fn finish(self) -> Sha256Digest {
        self.0.finalize().into()
    }
}

/// The digest of the file at `file`'s current position onward.
pub fn of_file(file: &mut impl Read) -> std::io::Result<Sha256Digest> {
    let mut hasher = PageHasher::default();
    let mut buf = vec![0u8; 256 * PAGE];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        for page in buf[..filled].chunks(PAGE) {
            hasher.page(page);
        }
        if filled < buf.len() {
            return Ok(hasher.finish());
        }
    }
}

/// One version of one file, with the digest it was checked against:
/// device, inode, size, change time (s, ns), digest.
type FileVersion = (u64, u64, u64, i64, i64, Sha256Digest);

/// File versions this process has already found intact.
fn verified() -> &'static Mutex<HashSet<FileVersion>> {
    static VERIFIED: OnceLock<Mutex<HashSet<FileVersion>>> = OnceLock::new();
    VERIFIED.get_or_init(Mutex::default)
}

/// Whether the file open as `file` has digest `expected` (read from its
/// start; the file's position is left at its end):
/// hashed once per process per file version, remembered after that.
pub fn matches(file: &std::fs::File, expected: &Sha256Digest) -> std::io::Result<bool> {
    let m = file.metadata()?;
    let id = (
        m.dev(),
        m.ino(),
        m.size(),
        m.ctime(),
        m.ctime_nsec(),
        *expected,
    );
    if verified()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&id)
    {
        return Ok(true);
    }
    let mut reader = file;
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(0))?;
    let ok = of_file(&mut reader)? == *expected;
    if ok {
        verified()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }
    Ok(ok)
}

/// The digest of the memory file at `path` (for tools and tests).
pub fn of_path(path: &Path) -> std::io::Result<Sha256Digest> {
    of_file(&mut super::private::open_read(path)?)
}
