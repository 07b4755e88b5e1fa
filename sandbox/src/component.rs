//! Component goldens: a snapshot per script, taken once the script is
//! loaded, so a node's first message on a fresh clone is an ordinary
//! invocation instead of compiling and running the script's top level
//! (tens of milliseconds) first.
//!
//! A component golden is made from a clone of its runtime's golden, in a
//! jailed monitor process like every clone (the script's top level runs
//! only inside that VM): the script is loaded, the worker goes idle, and
//! the monitor writes the VM's snapshot into files the host created. It is
//! cached beside the runtime golden (`snapshots/component-<key>/`), keyed
//! by the runtime golden and the script's name and source, so a changed
//! script gets a new one and an unchanged one is never rebuilt.
//!
//! Clones of it still get a LOAD for their node: the worker finds the same
//! script already loaded, reseeds every generator (the script's own
//! top-level ones included) and answers at once. What a script computed at
//! its top level is shared by every clone, as it would be by every actor
//! of a process that imported it once; only randomness is made per clone.
//!
//! The cache is bounded: after each build, the least recently used
//! component goldens are removed until the total is under the bound. One
//! in use by a live process (which holds a shared lock on it) is never
//! removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use reflow_vmm::snapshot::golden::{complete, remove_leftovers};
use reflow_vmm::snapshot::lock::EntryLock;
use reflow_vmm::snapshot::private;
use sha2::{Digest, Sha256};

use crate::sandbox::{SandboxError, SandboxVm, SnapshotError, VmSpec};
use crate::script::Script;
use crate::worker::WorkerError;

/// Prefix of a component golden's directory name in `snapshots/`.
pub const DIR_PREFIX: &str = "component-";

/// The actor id a component golden's script is loaded under.
const BUILD_ACTOR: &str = "component-golden";

/// Bumped whenever what a component golden holds changes.
const FORMAT: &str = "component-golden-1";

/// Longest the monitor may take to write a snapshot.
const WRITE_LIMIT: Duration = Duration::from_secs(600);

/// How component goldens are made and kept.
#[derive(Debug, Clone)]
pub struct ComponentSettings {
    /// Longest the script may take to load in the build VM.
    pub load_timeout: Duration,
    /// Longest the build VM may take to restore.
    pub restore_timeout: Duration,
    /// Most bytes (on disk) all component goldens beside one runtime
    /// golden may take together; the least recently used go first.
    pub max_cache_bytes: u64,
}

impl Default for ComponentSettings {
    fn default() -> ComponentSettings {
        ComponentSettings {
            load_timeout: Duration::from_secs(60),
            restore_timeout: Duration::from_secs(120),
            max_cache_bytes: 8 << 30,
        }
    }
}

/// Why a component golden could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The runtime golden's path has no parent directory.
    #[error("the runtime golden {} is not inside a snapshot cache", .0.display())]
    NoCache(PathBuf),
    /// A cache file or directory could not be made, read or locked.
    #[error("component golden cache {}: {source}", path.display())]
    Cache {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The build VM could not be restored.
    #[error("restoring the build VM: {0}")]
    Restore(#[from] SandboxError),
    /// The script did not load (its nodes will report why themselves).
    #[error("the script did not load: {0}")]
    Load(WorkerError),
    /// The build VM's snapshot could not be written.
    #[error("writing the component golden: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// A component golden in use: clones of [`ComponentGolden::spec`] have the
/// script loaded. While this lives, the cache never removes it.
#[derive(Debug)]
pub struct ComponentGolden {
    /// What to restore clones from.
    pub spec: VmSpec,
    /// Its cache key.
    pub key: String,
    /// Whether this call built it.
    pub created: bool,
    /// A shared lock on its entry.
    _in_use: EntryLock,
}

/// The cache key of `script`'s component golden over `runtime`'s golden.
pub fn key(runtime: &VmSpec, script: &Script) -> String {
    let mut h = Sha256::new();
    for part in [
        FORMAT,
        &runtime.golden.to_string_lossy(),
        &script.language.to_string(),
        &script.name,
        &script.source,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// `script`'s component golden over `runtime`'s golden, built on first use
/// (restore a clone, load the script, snapshot it; about a second plus
/// the script's load time); `progress` hears a build.
pub fn ensure(
    runtime: &VmSpec,
    script: &Script,
    settings: &ComponentSettings,
    progress: &dyn Fn(&str),
) -> Result<ComponentGolden, ComponentError> {
    let snapshots = runtime
        .golden
        .parent()
        .ok_or_else(|| ComponentError::NoCache(runtime.golden.clone()))?;
    let key = key(runtime, script);
    let dir = snapshots.join(format!("{DIR_PREFIX}{key}"));
    let lock_path = lock_path(snapshots, &key);
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ComponentError::Cache { path, source }
    };
    let found = |lock: EntryLock, created: bool| {
        lock.touch();
        ComponentGolden {
            spec: VmSpec {
                golden: dir.clone(),
                ..runtime.clone()
            },
            key: key.clone(),
            created,
            _in_use: lock,
        }
    };
    let lock = EntryLock::shared(&lock_path).map_err(cache_err(&lock_path))?;
    if complete(&dir) {
        return Ok(found(lock, false));
    }
    drop(lock);
    let waiting = || {
        progress(&format!(
            "waiting for {}'s component golden, which another build is making",
            script.name
        ))
    };
    let lock = EntryLock::exclusive(&lock_path, &waiting).map_err(cache_err(&lock_path))?;
    if complete(&dir) {
        lock.downgrade().map_err(cache_err(&lock_path))?;
        return Ok(found(lock, false));
    }
    let started = Instant::now();
    progress(&format!(
        "making {}'s component golden {key}: a clone with the script loaded",
        script.name
    ));
    // Builds of this key that died half-way (their process was killed)
    // left their directories; this one holds the key's lock, so nobody
    // writes them any more.
    remove_leftovers(snapshots, &format!(".{DIR_PREFIX}{key}.tmp"));
    let tmp = snapshots.join(format!(".{DIR_PREFIX}{key}.tmp{}", std::process::id()));
    private::create_dir(&tmp).map_err(cache_err(&tmp))?;
    let built = build(runtime, script, settings, &tmp);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(source) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(ComponentError::Cache { path: dir, source });
    }
    lock.downgrade().map_err(cache_err(&lock_path))?;
    progress(&format!(
        "{}'s component golden written in {:.1} s",
        script.name,
        started.elapsed().as_secs_f64()
    ));
    let golden = found(lock, true);
    evict(snapshots, settings.max_cache_bytes, &key);
    Ok(golden)
}

/// Restores a clone, loads the script, and writes the clone's snapshot
/// into `dir`.
fn build(
    runtime: &VmSpec,
    script: &Script,
    settings: &ComponentSettings,
    dir: &Path,
) -> Result<(), ComponentError> {
    let mut vm = SandboxVm::restore_to_snapshot(runtime, settings.restore_timeout)?;
    let loaded = vm
        .with_worker(|c| {
            c.load(
                BUILD_ACTOR,
                &script.name,
                &script.source,
                settings.load_timeout,
            )
        })
        .map_err(ComponentError::Load)?;
    // The script's top level runs here, once for every node of it: what it
    // printed is logged here too.
    for line in &loaded.logs.0 {
        let (actor, stream, text) = (&script.name, line.stream.name(), &line.text);
        tracing::info!(target: "reflow_sandbox::guest", actor, stream, golden = true, "{text}");
    }
    if vm.misbehaved() {
        return Err(ComponentError::Load(WorkerError::Hostile(
            "the guest sent its devices hostile input while the script loaded".into(),
        )));
    }
    vm.snapshot(dir, WRITE_LIMIT)?;
    Ok(())
}

fn lock_path(snapshots: &Path, key: &str) -> PathBuf {
    snapshots.join(format!(".{DIR_PREFIX}{key}.lock"))
}

/// One component golden in the cache.
struct Entry {
    key: String,
    bytes: u64,
    used: SystemTime,
}

/// The component goldens in `snapshots`, with their sizes on disk and
/// when each was last used.
fn entries(snapshots: &Path) -> Vec<Entry> {
    use std::os::unix::fs::MetadataExt;
    let Ok(read) = std::fs::read_dir(snapshots) else {
        return Vec::new();
    };
    read.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let key = name.strip_prefix(DIR_PREFIX)?.to_string();
            let bytes = std::fs::read_dir(e.path())
                .ok()?
                .flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum();
            let used = std::fs::metadata(lock_path(snapshots, &key))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            Some(Entry { key, bytes, used })
        })
        .collect()
}

/// Removes the least recently used component goldens in `snapshots`
/// until they take at most `max_bytes`, never `keep` nor one that a
/// process holds; returns the keys removed.
pub fn evict(snapshots: &Path, max_bytes: u64, keep: &str) -> Vec<String> {
    let mut all = entries(snapshots);
    let mut total: u64 = all.iter().map(|e| e.bytes).sum();
    all.sort_by_key(|e| e.used);
    let mut removed = Vec::new();
    for e in all {
        if total <= max_bytes {
            break;
        }
        if e.key == keep {
            continue;
        }
        let lock = lock_path(snapshots, &e.key);
        let Ok(Some(_held)) = EntryLock::try_exclusive(&lock) else {
            continue;
        };
        let dir = snapshots.join(format!("{DIR_PREFIX}{}", e.key));
        if std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(key = %e.key, bytes = e.bytes, "removed a least recently used component golden");
            total = total.saturating_sub(e.bytes);
            removed.push(e.key);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::Language;

    fn fake(snapshots: &Path, key: &str, mib: usize, age_s: u64) {
        let dir = snapshots.join(format!("{DIR_PREFIX}{key}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.bin"), vec![1u8; mib << 20]).unwrap();
        let lock = lock_path(snapshots, key);
        let f = std::fs::File::create(&lock).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
    }

    #[test]
    fn the_least_recently_used_go_first_but_never_one_in_use() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        fake(s, "old", 2, 300);
        fake(s, "held", 2, 200);
        fake(s, "mid", 2, 100);
        fake(s, "new", 2, 0);
        let _held = EntryLock::shared(&lock_path(s, "held")).unwrap();
        // 8 MiB in all, at most 5: two must go, "old" first; "held" is in
        // use, so "mid" goes next; "new" was just made.
        let removed = evict(s, 5 << 20, "new");
        assert_eq!(removed, ["old", "mid"]);
        assert!(s.join("component-held").is_dir());
        assert!(s.join("component-new").is_dir());
        // Under the bound: nothing goes.
        assert!(evict(s, 5 << 20, "new").is_empty());
    }

    #[test]
    fn the_key_follows_the_script_and_the_runtime() {
        let spec = |p: &str| VmSpec::new(PathBuf::from(p), reflow_vmm::VmConfig::new("k"));
        let a = Script::inline(Language::Python, "a.py", "x = 1");
        let mut b = a.clone();
        assert_eq!(key(&spec("/s/g1"), &a), key(&spec("/s/g1"), &b));
        b.source.push(' ');
        assert_ne!(key(&spec("/s/g1"), &a), key(&spec("/s/g1"), &b));
        assert_ne!(key(&spec("/s/g1"), &a), key(&spec("/s/g2"), &a));
        let mut c = a.clone();
        c.name = "c.py".into();
        assert_ne!(key(&spec("/s/g1"), &a), key(&spec("/s/g1"), &c));
    }
}
