//! The golden-snapshot cache: one snapshot per set of boot inputs, created
//! by booting once (in a jailed monitor process of its own, like every
//! VM: [`crate::monitor::MonitorProcess::boot`]) and reused by every later
//! VM.
//!
//! The key hashes everything the snapshot depends on: the kernel, initrd and
//! disk images (their bytes), memory size, vCPU count, shared-memory size,
//! the whole guest command line the monitor builds (extra parameters
//! included), host kind, the host CPU's fingerprint (vendor, signature and
//! feature words), the snapshot format version and this monitor's
//! version. A
//! changed input gets a new key and a new snapshot; nothing stale is reused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::file::FORMAT_VERSION;
use super::state::RingMarks;
use super::{MEMORY_FILE, STATE_FILE};
use crate::arch::host_cpu::CpuFingerprint;
use crate::config::VmConfig;
use crate::host::HostKind;
use crate::monitor::{MonitorError, MonitorProcess, MonitorProgram, SpawnOptions};
use crate::vcpu::exit::StopReason;
use crate::vm::{ControlChannel, SnapshotFiles, VmError, VmOutcome};

/// Longest a golden boot may take before we give up.
const BOOT_LIMIT: Duration = Duration::from_secs(1800);

/// Errors producing a golden snapshot.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// An input file (kernel, initrd or disk image) could not be read for
    /// the cache key.
    #[error("hashing snapshot input {path}: {source}")]
    Hash {
        /// The file's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cache directory, its lock file or the finished snapshot's
    /// directory could not be created or written.
    #[error("cache directory {path}: {source}")]
    Cache {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Booting, running, pausing or snapshotting the golden VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The golden boot's monitor process failed.
    #[error("the golden boot's monitor process: {0}")]
    Monitor(#[from] MonitorError),
    /// The guest stopped before its agent was ready (or before the warm-up
    /// was done).
    #[error("the guest stopped ({stop:?}) before its agent was ready to snapshot; last console lines:\n{tail}")]
    NotReady {
        /// Why the guest stopped.
        stop: StopReason,
        /// The guest console's last lines.
        tail: String,
    },
    /// The warm-up failed: it returned an error, found no control channel
    /// or panicked.
    #[error("warming up the golden guest ({tag}): {message}\nlast console lines:\n{tail}")]
    Warmup {
        /// The warm-up's tag.
        tag: String,
        /// What the warm-up reported.
        message: String,
        /// The guest console's last lines (what the script printed).
        tail: String,
    },
}

/// Work done in the guest before its golden snapshot is written (start a
/// language worker and wait until it is warm), so every clone starts from
/// there. `tag` names the work in the cache key: change it whenever `run`
/// changes what it does.
pub struct Warmup<'a> {
    /// Names the warm-up in the cache key (part of the snapshot's identity).
    pub tag: &'a str,
    /// Does the work over the agent's control channel; an `Err` fails the
    /// golden boot with its message.
    pub run: &'a (dyn Fn(&mut ControlChannel) -> Result<(), String> + Sync),
}

/// A golden snapshot on disk.
#[derive(Debug, Clone)]
pub struct GoldenSnapshot {
    /// The snapshot directory (pass to [`Vm::restore`]).
    pub dir: PathBuf,
    /// Whether this call created it (booted a guest).
    pub created: bool,
    /// Its cache key.
    pub key: String,
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<(), GoldenError> {
    let err = |source| GoldenError::Hash {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    std::io::copy(&mut f, h).map_err(err)?;
    Ok(())
}

/// The cache key of the snapshot for `config` on `host` with CPU `cpu`,
/// after the warm-up named `warmup` (empty: none).
pub fn key(
    config: &VmConfig,
    host: HostKind,
    cpu: &CpuFingerprint,
    warmup: &str,
) -> Result<String, GoldenError> {
    let mut h = Sha256::new();
    h.update(format!("cpu={}\n", cpu.key()));
    if !warmup.is_empty() {
        h.update(format!("warmup={warmup}\n"));
    }
    // The whole command line the monitor builds covers the memory layout,
    // devices, shared region and host switches it encodes.
    h.update(format!(
        "format={FORMAT_VERSION} monitor={} mem={} vcpus={} shm={} host={host:?} cmdline={}\n",
        env!("CARGO_PKG_VERSION"),
        config.mem_mib,
        config.vcpus,
        config.shm_mib,
        crate::vm::cmdline_parts(config, host).join(" ")
    ));
    h.update(b"kernel\n");
    hash_file(&mut h, &config.kernel)?;
    if let Some(initrd) = &config.initrd {
        h.update(b"initrd\n");
        hash_file(&mut h, initrd)?;
    }
    for disk in &config.disks {
        h.update(b"disk\n");
        hash_file(&mut h, disk)?;
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

/// A VM's last console lines, as errors show them.
fn console_tail(outcome: &VmOutcome) -> String {
    outcome.console_tail.join("\n")
}

/// Removes the entries of `dir` whose names start with `prefix` (the
/// half-written snapshots of builds that died; call it holding the build
/// lock of their key).
pub fn remove_leftovers(dir: &Path, prefix: &str) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in listing.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            tracing::debug!(path = %entry.path().display(), "removing a half-written snapshot");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether `dir` holds a whole snapshot (both files; a snapshot is
/// written under another name and renamed into place when done).
pub fn complete(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file() && dir.join(MEMORY_FILE).is_file()
}

/// Returns the golden snapshot for `config` under `cache_root/snapshots/`,
/// creating it if needed: boot, wait until the agent's control handshake
/// is done, pause, write. `progress` hears what is going on (creating takes minutes
/// on hosts that emulate the guest kernel).
pub fn ensure(
    config: &VmConfig,
    cache_root: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<GoldenSnapshot, GoldenError> {
    ensure_warm(config, cache_root, None, progress)
}

/// [`ensure`], with `warmup` run over the agent's control channel before
/// the snapshot is written.
pub fn ensure_warm(
    config: &VmConfig,
    cache_root: &Path,
    warmup: Option<&Warmup<'_>>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<GoldenSnapshot, GoldenError> {
    let host = config.host.unwrap_or_else(HostKind::detect);
    let cpu = CpuFingerprint::detect();
    let key = key(config, host, &cpu, warmup.map_or("", |w| w.tag))?;
    let dir = cache_root.join("snapshots").join(&key);
    if complete(&dir) {
        return Ok(GoldenSnapshot {
            dir,
            created: false,
            key,
        });
    }
    // One builder per snapshot: others (threads or processes) wait for it
    // and then use its result.
    let _lock = BuildLock::acquire(&cache_root.join("snapshots"), &key, progress)?;
    if complete(&dir) {
        return Ok(GoldenSnapshot {
            dir,
            created: false,
            key,
        });
    }
    let started = Instant::now();
    progress(&format!(
        "creating golden snapshot {key} on {cpu} ({}): booting the guest once (seconds on \
         bare-metal KVM, a minute or more where the guest kernel is emulated)",
        host.describe()
    ));
    let mut boot = config.clone();
    boot.host = Some(host);
    boot.timeout = Some(BOOT_LIMIT);
    // A private socket: the snapshot must not depend on the caller's.
    boot.vsock_uds = None;
    // Builds that died half-way left their directories; this one holds
    // the build lock, so nobody writes them any more.
    remove_leftovers(&cache_root.join("snapshots"), &format!(".{key}.tmp"));
    let tmp = cache_root
        .join("snapshots")
        .join(format!(".{key}.tmp{}", std::process::id()));
    if let Err(e) = boot_and_snapshot(&boot, warmup, &tmp, started, progress) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(source) = std::fs::rename(&tmp, &dir) {
        // Another process may have finished the same snapshot first.
        let _ = std::fs::remove_dir_all(&tmp);
        if !complete(&dir) {
            return Err(GoldenError::Cache { path: dir, source });
        }
    }
    progress(&format!(
        "golden snapshot {key} written in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    ));
    Ok(GoldenSnapshot {
        dir,
        created: true,
        key,
    })
}

/// How long a golden boot's monitor may take to say how its VM ended.
const FINISH_GRACE: Duration = Duration::from_secs(10);

/// Boots `boot` in a jailed monitor process of its own (like every VM:
/// the golden boot gets no more of the host than a clone), waits for its
/// agent, runs `warmup` over the control channel, and has the monitor
/// write the snapshot into `dir` (created).
fn boot_and_snapshot(
    boot: &VmConfig,
    warmup: Option<&Warmup<'_>>,
    dir: &Path,
    started: Instant,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), GoldenError> {
    let program = MonitorProgram::get()?;
    let options = SpawnOptions {
        snapshots: true,
        ..SpawnOptions::default()
    };
    let monitor = MonitorProcess::boot(&program, boot, &options)?;
    let deadline = started + BOOT_LIMIT;
    // How the VM ended, for an error: its stop reason and last console
    // lines (the monitor is ended either way).
    let ended = |monitor: &MonitorProcess| monitor.finish(FINISH_GRACE);
    // Ready means the agent finished its control handshake and waits for
    // requests: where every clone starts (and reconnects from).
    let mut channel = match monitor.wait_ready(deadline) {
        Ok(c) => c,
        Err(e) => {
            return Err(match ended(&monitor) {
                Some(o) => GoldenError::NotReady {
                    tail: console_tail(&o),
                    stop: o.stop,
                },
                None => GoldenError::Monitor(e),
            })
        }
    };
    progress(&format!(
        "agent ready after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    if let Some(w) = warmup {
        if let Err(message) = (w.run)(&mut channel) {
            let tail = ended(&monitor)
                .map(|o| console_tail(&o))
                .unwrap_or_default();
            return Err(GoldenError::Warmup {
                tag: w.tag.to_string(),
                message,
                tail,
            });
        }
        progress(&format!(
            "warm-up {} done after {:.1} s",
            w.tag,
            started.elapsed().as_secs_f64()
        ));
    }
    progress("writing the snapshot");
    let cache_err = |path: PathBuf| move |source| GoldenError::Cache { path, source };
    super::private::create_dir(dir).map_err(cache_err(dir.to_path_buf()))?;
    let files =
        SnapshotFiles::create(dir).map_err(|(path, source)| GoldenError::Cache { path, source })?;
    // The warm-up's channel stays open until the snapshot is written.
    let written = monitor.snapshot(&files, RingMarks::default(), deadline);
    drop(channel);
    ended(&monitor);
    Ok(written?)
}

/// The exclusive lock on `<snapshots>/.<key>.lock` ([`super::lock`]),
/// held while one snapshot is built.
struct BuildLock {
    /// Dropping it releases the lock.
    _lock: super::lock::EntryLock,
}

impl BuildLock {
    fn acquire(
        snapshots: &Path,
        key: &str,
        progress: &dyn Fn(&str),
    ) -> Result<BuildLock, GoldenError> {
        let path = snapshots.join(format!(".{key}.lock"));
        let cache_err = |source| GoldenError::Cache {
            path: path.clone(),
            source,
        };
        super::private::create_dir(snapshots).map_err(cache_err)?;
        let waiting = || {
            progress(&format!(
                "waiting for golden snapshot {key}, which another build is creating"
            ))
        };
        let lock = super::lock::EntryLock::exclusive(&path, &waiting).map_err(cache_err)?;
        Ok(BuildLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::BuildLock;

    #[test]
    fn a_second_builder_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = BuildLock::acquire(dir.path(), "k", &|_| {}).unwrap();
        let got = AtomicBool::new(false);
        let said = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                let progress = |m: &str| said.lock().unwrap().push(m.to_string());
                let _second = BuildLock::acquire(dir.path(), "k", &progress).unwrap();
                got.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(200));
            assert!(!got.load(Ordering::SeqCst), "the lock was taken twice");
            drop(first);
        });
        assert!(got.load(Ordering::SeqCst));
        let said = said.into_inner().unwrap();
        assert_eq!(said.len(), 1);
        assert!(
            said[0].contains("waiting for golden snapshot k"),
            "{said:?}"
        );
        // Another key is independent.
        let _a = BuildLock::acquire(dir.path(), "a", &|_| {}).unwrap();
        let _b = BuildLock::acquire(dir.path(), "b", &|_| {}).unwrap();
    }
}
