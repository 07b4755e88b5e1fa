//! `reflow-sandbox cache`: what the host cache holds (guest kernels,
//! initramfs, language images, golden snapshots; see
//! [`reflow_vmm::cache::cache_root`]) and removing what has not been used
//! for a while. Every entry is keyed by the hash of its inputs, so an
//! entry of an older build is never used again and only takes space.
//!
//! When an entry was last used comes from its files' access and
//! modification times: restoring a clone reads its golden's files, and
//! building a golden reads its kernel, initramfs and image. Most file
//! systems are mounted `relatime`, which keeps access times to about a
//! day, so nothing used in the last day is ever pruned.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The shortest `--unused-for` accepted: access times are only kept to
/// about a day (`relatime`).
pub const MIN_UNUSED_FOR: Duration = Duration::from_secs(24 * 3600);

/// What went wrong reading or pruning the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A directory or file could not be read (which, why).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An entry could not be removed (which, why).
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--unused-for` is not a duration this command takes.
    #[error("--unused-for {0:?}: {1}")]
    Duration(String, String),
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Kernel,
    Initramfs,
    Image,
    Snapshot,
}

impl Kind {
    /// The cache's directory of this kind, and the kind's name.
    const ALL: [(&'static str, Kind); 4] = [
        ("kernels", Kind::Kernel),
        ("initramfs", Kind::Initramfs),
        ("images", Kind::Image),
        ("snapshots", Kind::Snapshot),
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::Initramfs => "initramfs",
            Kind::Image => "image",
            Kind::Snapshot => "snapshot",
        }
    }
}

/// One cached thing: a directory (or file) of its kind's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub path: PathBuf,
    /// Space it takes on disk (allocated blocks: a snapshot's memory file
    /// is sparse).
    pub bytes: u64,
    /// The latest access or modification time of its files.
    pub last_used: SystemTime,
}

impl Entry {
    /// Its name in its kind's directory.
    pub fn key(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Every entry under `root`, by kind, least recently used first. Names
/// starting with `.` (build locks, entries still being written) are not
/// entries.
pub fn entries(root: &Path) -> Result<Vec<Entry>, CacheError> {
    let mut all = Vec::new();
    for (dir, kind) in Kind::ALL {
        let dir = root.join(dir);
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err(&dir)(e)),
        };
        for item in listing {
            let item = item.map_err(read_err(&dir))?;
            if item.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = item.path();
            let (bytes, last_used) = usage(&path)?;
            all.push(Entry {
                kind,
                path,
                bytes,
                last_used,
            });
        }
    }
    all.sort_by_key(|e| (e.kind, e.last_used));
    Ok(all)
}

/// Disk space of `path` and everything under it (allocated blocks, as
/// `du` counts them; links are not followed).
pub fn disk_usage(path: &Path) -> Result<u64, CacheError> {
    usage(path).map(|(bytes, _)| bytes)
}

/// Disk space and latest use of `path` and everything under it (links
/// are not followed). Only files' times count: listing a directory (as
/// this does) is not a use. A directory without files was last used when
/// it last changed.
fn usage(path: &Path) -> Result<(u64, SystemTime), CacheError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).map_err(read_err(path))?;
    let mut bytes = meta.blocks() * 512;
    if !meta.is_dir() {
        return Ok((bytes, latest(&meta)));
    }
    let mut last = None;
    for item in std::fs::read_dir(path).map_err(read_err(path))? {
        let item = item.map_err(read_err(path))?;
        let (b, l) = usage(&item.path())?;
        bytes += b;
        last = last.max(Some(l));
    }
    let changed = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Ok((bytes, last.unwrap_or(changed)))
}

fn latest(meta: &std::fs::Metadata) -> SystemTime {
    let times = [meta.accessed(), meta.modified()];
    times
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The entries not used for `unused_for` as of `now`.
pub fn stale(entries: &[Entry], unused_for: Duration, now: SystemTime) -> Vec<&Entry> {
    entries
        .iter()
        .filter(|e| now.duration_since(e.last_used).unwrap_or_default() > unused_for)
        .collect()
}

/// Removes `entry` from the cache; `Ok(false)` leaves a snapshot that a
/// running process uses or builds (it holds the lock file beside it,
/// `.<name>.lock`; see `reflow_vmm::snapshot::lock`).
pub fn remove(entry: &Entry) -> Result<bool, CacheError> {
    let _held = match entry.kind {
        Kind::Snapshot => {
            let lock = entry.path.with_file_name(format!(".{}.lock", entry.key()));
            match reflow_vmm::snapshot::lock::EntryLock::try_exclusive(&lock) {
                Ok(Some(held)) => Some(held),
                Ok(None) => return Ok(false),
                Err(source) => return Err(CacheError::Remove { path: lock, source }),
            }
        }
        _ => None,
    };
    let removed = if entry.path.is_dir() {
        std::fs::remove_dir_all(&entry.path)
    } else {
        std::fs::remove_file(&entry.path)
    };
    removed.map_err(|source| CacheError::Remove {
        path: entry.path.clone(),
        source,
    })?;
    Ok(true)
}

/// A duration as `--unused-for` takes it: a whole number of hours (`36h`),
/// days (`7d`) or weeks (`2w`), at least [`MIN_UNUSED_FOR`].
pub fn parse_unused_for(text: &str) -> Result<Duration, CacheError> {
    let bad = |why: &str| CacheError::Duration(text.to_string(), why.to_string());
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("give a unit: h, d or w (7d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| bad("not a whole number of h, d or w"))?;
    let hours = match unit {
        "h" => 1,
        "d" => 24,
        "w" => 24 * 7,
        _ => return Err(bad("the unit is h, d or w")),
    };
    let secs = n.checked_mul(hours * 3600).ok_or_else(|| bad("too long"))?;
    let d = Duration::from_secs(secs);
    if d < MIN_UNUSED_FOR {
        return Err(bad(
            "at least 1d: access times are only kept to about a day (relatime)",
        ));
    }
    Ok(d)
}

/// Bytes as a short human figure (`1.5 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// How long ago `t` was, roughly (`3 d`, `5 h`, `12 min`).
fn ago(t: SystemTime, now: SystemTime) -> String {
    let s = now.duration_since(t).unwrap_or_default().as_secs();
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// The entries as a table (kind, key, size, last used), with the total.
pub fn table(entries: &[Entry], now: SystemTime) -> String {
    let mut out = format!("{:<10} {:<28} {:>10}  last used\n", "kind", "key", "size");
    for e in entries {
        let _ = writeln!(
            out,
            "{:<10} {:<28} {:>10}  {} ago",
            e.kind.name(),
            e.key(),
            human(e.bytes),
            ago(e.last_used, now)
        );
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    let _ = write!(out, "{} entries, {} in all", entries.len(), human(total));
    out
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
