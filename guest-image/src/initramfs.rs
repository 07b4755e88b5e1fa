//! The initramfs: a newc cpio archive with the guest agent as `/init`.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bumped whenever the archive layout below changes, so old cache entries are
/// not reused.
const LAYOUT_VERSION: &str = "initramfs-v1";

/// Errors building an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The guest agent binary could not be read.
    #[error("reading the agent binary {path}: {source}")]
    ReadAgent {
        /// The agent binary's path.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The agent binary does not start with the ELF magic.
    #[error("{path} is not an ELF executable; build the agent with guest-image/build-agent.sh")]
    NotElf {
        /// The agent binary's path.
        path: PathBuf,
    },
    /// The agent binary is too large for a newc cpio member (4 GiB).
    #[error("the agent binary {path} is {size} bytes, over the 4 GiB cpio limit")]
    TooLarge {
        /// The agent binary's path.
        path: PathBuf,
        /// Its size in bytes.
        size: usize,
    },
    /// Creating the cache directory or writing the archive failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The path of the initramfs being produced.
        path: PathBuf,
        /// Why writing failed.
        source: std::io::Error,
    },
}

/// A built (or reused) image.
#[derive(Debug, Clone)]
pub struct Built {
    /// Path of the image file.
    pub path: PathBuf,
    /// Whether it came from the cache.
    pub cached: bool,
    /// Its size in bytes.
    pub size: u64,
}

/// One archive member.
enum Member<'a> {
    Dir(&'a str),
    CharDev(&'a str, u32, u32),
    File(&'a str, u32, &'a [u8]),
}

/// Builds the initramfs for `agent` under `cache_root/initramfs/<key>/`, or
/// returns the cached one. The key is the hash of the layout and the agent.
pub fn build_initramfs(agent: &Path, cache_root: &Path) -> Result<Built, InitramfsError> {
    let bytes = fs::read(agent).map_err(|source| InitramfsError::ReadAgent {
        path: agent.to_path_buf(),
        source,
    })?;
    if !bytes.starts_with(b"\x7fELF") {
        return Err(InitramfsError::NotElf {
            path: agent.to_path_buf(),
        });
    }
    let size = u32::try_from(bytes.len()).map_err(|_| InitramfsError::TooLarge {
        path: agent.to_path_buf(),
        size: bytes.len(),
    })?;
    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_VERSION);
    hasher.update(&bytes);
    let key = hex::encode(&hasher.finalize()[..8]);
    let dir = cache_root.join("initramfs").join(&key);
    let path = dir.join("initramfs.cpio");
    if let Ok(meta) = fs::metadata(&path) {
        return Ok(Built {
            path,
            cached: true,
            size: meta.len(),
        });
    }
    let members = [
        Member::Dir("dev"),
        Member::CharDev("dev/console", 5, 1),
        Member::Dir("proc"),
        Member::Dir("sys"),
        Member::Dir("tmp"),
        Member::Dir("run"),
        Member::File("init", size, &bytes),
    ];
    let write_err = |source| InitramfsError::Write {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(&dir).map_err(write_err)?;
    let tmp = dir.join(format!("initramfs.cpio.tmp{}", std::process::id()));
    write_archive(&tmp, &members).map_err(write_err)?;
    fs::rename(&tmp, &path).map_err(write_err)?;
    let size = fs::metadata(&path).map_err(write_err)?.len();
    Ok(Built {
        path,
        cached: false,
        size,
    })
}

fn write_archive(path: &Path, members: &[Member<'_>]) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for (ino, member) in (1u32..).zip(members) {
        let entry = |name: &str, mode: u32| {
            cpio::NewcBuilder::new(name)
                .ino(ino)
                .mode(mode)
                .nlink(1)
                .uid(0)
                .gid(0)
                .mtime(0)
        };
        out = match *member {
            Member::Dir(name) => entry(name, 0o040_755).write(out, 0).finish()?,
            Member::CharDev(name, major, minor) => entry(name, 0o020_600)
                .rdev_major(major)
                .rdev_minor(minor)
                .write(out, 0)
                .finish()?,
            Member::File(name, size, data) => {
                let mut w = entry(name, 0o100_755).write(out, size);
                w.write_all(data)?;
                w.finish()?
            }
        };
    }
    let mut out = cpio::newc::trailer(out)?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_agent(dir: &Path, body: &[u8]) -> PathBuf {
        let p = dir.join("agent");
        let mut bytes = b"\x7fELF".to_vec();
        bytes.extend_from_slice(body);
        fs::write(&p, bytes).unwrap();
        p
    }

    fn members(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
        let mut r = File::open(path).unwrap();
        let mut out = Vec::new();
        loop {
            let mut reader = cpio::NewcReader::new(r).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let name = reader.entry().name().to_string();
            let mode = reader.entry().mode();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
            out.push((name, mode, data));
            r = reader.finish().unwrap();
        }
        out
    }

    #[test]
    fn builds_archive_with_agent_as_init() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = fake_agent(tmp.path(), b"agent-body");
        let built = build_initramfs(&agent, tmp.path()).unwrap();
        assert!(!built.cached);
        let m = members(&built.path);
        let names: Vec<&str> = m.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "dev/console", "proc", "sys", "tmp", "run", "init"]
        );
        let init = m.iter().find(|(n, _, _)| n == "init").unwrap();
        assert_eq!(init.1, 0o100_755);
        assert_eq!(init.2, b"\x7fELFagent-body");
        assert_eq!(built.size, fs::metadata(&built.path).unwrap().len());
    }

    #[test]
    fn cache_is_keyed_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = fake_agent(tmp.path(), b"one");
        let first = build_initramfs(&agent, tmp.path()).unwrap();
        let again = build_initramfs(&agent, tmp.path()).unwrap();
        assert!(again.cached);
        assert_eq!(first.path, again.path);
        let agent = fake_agent(tmp.path(), b"two");
        let other = build_initramfs(&agent, tmp.path()).unwrap();
        assert!(!other.cached);
        assert_ne!(first.path, other.path);
    }

    #[test]
    fn refuses_non_elf_and_missing_agent() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("script.sh");
        fs::write(&p, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            build_initramfs(&p, tmp.path()),
            Err(InitramfsError::NotElf { .. })
        ));
        assert!(matches!(
            build_initramfs(&tmp.path().join("missing"), tmp.path()),
            Err(InitramfsError::ReadAgent { .. })
        ));
    }
}
