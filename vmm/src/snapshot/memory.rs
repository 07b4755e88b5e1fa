//! Guest RAM to and from the snapshot's memory file.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use crate::arch::bootparams::ram_regions;

use super::digest::{PageHasher, Sha256Digest, PAGE};

/// What writing a memory file produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedMemory {
    /// Bytes of guest RAM written.
    pub size: u64,
    /// The file's digest ([`super::digest`]).
    pub digest: Sha256Digest,
}

/// Errors saving or mapping guest memory.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotMemoryError {
    /// Creating or writing the memory file failed.
    #[error("writing memory file {path}: {source}")]
    Write {
        /// The memory file's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading guest memory to save it failed.
    #[error("reading guest memory: {0}")]
    Read(vm_memory::GuestMemoryError),
    /// The memory file could not be opened or its size read.
    #[error("opening memory file {path}: {source}")]
    Open {
        /// The memory file's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The memory file's size differs from the guest memory size.
    #[error("memory file {path} is {found} bytes, the snapshot's guest memory is {expected}: truncated or wrong file")]
    Size {
        /// The memory file's path.
        path: PathBuf,
        /// The guest memory size in bytes.
        expected: u64,
        /// The file's size in bytes.
        found: u64,
    },
    /// The memory file's digest is not the one its snapshot recorded.
    #[error("memory file {path} does not match the digest its snapshot recorded: it is damaged; delete the snapshot's directory to have it made again")]
    Digest {
        /// The memory file's path.
        path: PathBuf,
    },
    /// Mapping the memory file as guest memory failed.
    #[error("mapping memory file {path}: {reason}")]
    Map {
        /// The memory file's path.
        path: PathBuf,
        /// The mapping error, as text.
        reason: String,
    },
}

/// Writes every region of `mem`, in address order, to `path`. All-zero
/// pages are left as holes: a freshly booted guest's RAM is mostly zeros.
pub fn save(mem: &GuestMemoryMmap, path: &Path) -> Result<SavedMemory, SnapshotMemoryError> {
    let file = super::private::create_file(path).map_err(|source| SnapshotMemoryError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    save_into(mem, &file, path)
}

/// Writes every region of `mem` as [`save`] does, into `file` (empty and
/// open for writing; `path` names it in errors): for a process that may
/// not create files, handed one by a process that may.
pub fn save_into(
    mem: &GuestMemoryMmap,
    file: &std::fs::File,
    path: &Path,
) -> Result<SavedMemory, SnapshotMemoryError> {
    let werr = |source| SnapshotMemoryError::Write {
        path: path.to_path_buf(),
        source,
    };
    // `&File` writes and seeks as the file does.
    let mut file = file;
    let mut page = vec![0u8; PAGE];
    let mut total = 0u64;
    let mut hasher = PageHasher::default();
    for region in mem.iter() {
        let start = region.start_addr().0;
        let len = region.len();
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(PAGE as u64) as usize;
            mem.read_slice(&mut page[..n], GuestAddress(start + off))
                .map_err(SnapshotMemoryError::Read)?;
            hasher.page(&page[..n]);
            if page[..n].iter().all(|&b| b == 0) {
                file.seek(SeekFrom::Current(n as i64)).map_err(werr)?;
            } else {
                file.write_all(&page[..n]).map_err(werr)?;
            }
            off += n as u64;
        }
        total += len;
    }
    file.set_len(total).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(SavedMemory {
        size: total,
        digest: hasher.finish(),
    })
}

/// Checks that the memory file at `path` has `digest` (hashed once per
/// process and file version; see [`super::digest`]).
pub fn verify(path: &Path, digest: &Sha256Digest) -> Result<(), SnapshotMemoryError> {
    let file = super::private::open_read(path).map_err(|source| SnapshotMemoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    check_digest(&file, path, digest)
}

/// Checks that `file` (opened from `path`) has `digest`.
fn check_digest(
    file: &std::fs::File,
    path: &Path,
    digest: &Sha256Digest,
) -> Result<(), SnapshotMemoryError> {
    let intact =
        super::digest::matches(file, digest).map_err(|source| SnapshotMemoryError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if intact {
        Ok(())
    } else {
        Err(SnapshotMemoryError::Digest {
            path: path.to_path_buf(),
        })
    }
}

/// Maps `path` as guest RAM of `mem_size` bytes, copy-on-write
/// (`MAP_PRIVATE`): the guest's writes stay in this process, the file and
/// every other clone's view are untouched, and unwritten pages are shared
/// through the page cache. The file must have `digest`, if given (checked
/// the first time this process maps this file; see [`super::digest`]).
pub fn map_private(
    path: &Path,
    mem_size: u64,
    digest: Option<&Sha256Digest>,
) -> Result<GuestMemoryMmap, SnapshotMemoryError> {
    let file = super::private::open_read(path).map_err(|source| SnapshotMemoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let found = file
        .metadata()
        .map_err(|source| SnapshotMemoryError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if found != mem_size {
        return Err(SnapshotMemoryError::Size {
            path: path.to_path_buf(),
            expected: mem_size,
            found,
        });
    }
    if let Some(digest) = digest {
        check_digest(&file, path, digest)?;
    }
    let map_err = |reason: String| SnapshotMemoryError::Map {
        path: path.to_path_buf(),
        reason,
    };
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for (start, size) in ram_regions(mem_size) {
        let file = file.try_clone().map_err(|e| map_err(e.to_string()))?;
        let mapping = MmapRegionBuilder::new(size as usize)
            .with_file_offset(FileOffset::new(file, offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| map_err(e.to_string()))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(start))
            .ok_or_else(|| map_err("region wraps the address space".into()))?;
        regions.push(region);
        offset += size;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| map_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_map_private_round_trips_and_never_writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.bin");
        let size = 4 << 20;
        let mem = crate::memory::create(size).unwrap();
        mem.write_slice(b"hello", GuestAddress(0x1234)).unwrap();
        mem.write_slice(b"world", GuestAddress(size - 5)).unwrap();
        let saved = save(&mem, &path).unwrap();
        assert_eq!(saved.size, size);
        assert_eq!(super::super::digest::of_path(&path).unwrap(), saved.digest);
        let before = std::fs::read(&path).unwrap();
        assert_eq!(before.len() as u64, size);

        let a = map_private(&path, size, Some(&saved.digest)).unwrap();
        let b = map_private(&path, size, Some(&saved.digest)).unwrap();
        let mut buf = [0u8; 5];
        a.read_slice(&mut buf, GuestAddress(0x1234)).unwrap();
        assert_eq!(&buf, b"hello");
        a.write_slice(b"HELLO", GuestAddress(0x1234)).unwrap();
        b.read_slice(&mut buf, GuestAddress(0x1234)).unwrap();
        assert_eq!(&buf, b"hello", "a clone's write leaked into another clone");
        b.read_slice(&mut buf, GuestAddress(size - 5)).unwrap();
        assert_eq!(&buf, b"world");
        drop((a, b));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the snapshot changed"
        );
    }

    #[test]
    fn wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.bin");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        assert!(matches!(
            map_private(&path, 8192, Some(&[0; 32])),
            Err(SnapshotMemoryError::Size {
                expected: 8192,
                found: 4096,
                ..
            })
        ));
        assert!(matches!(
            map_private(&dir.path().join("none"), 8192, Some(&[0; 32])),
            Err(SnapshotMemoryError::Open { .. })
        ));
    }

    #[test]
    fn a_damaged_memory_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.bin");
        let size = 1 << 20;
        let mem = crate::memory::create(size).unwrap();
        mem.write_slice(b"guest", GuestAddress(0x2000)).unwrap();
        let saved = save(&mem, &path).unwrap();
        // One flipped byte in a page that was a hole.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0x9_0000] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            map_private(&path, size, Some(&saved.digest)),
            Err(SnapshotMemoryError::Digest { .. })
        ));
        // Mended (a new version of the file), it maps again.
        bytes[0x9_0000] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        map_private(&path, size, Some(&saved.digest)).unwrap();
    }
}
