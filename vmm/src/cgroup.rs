//! CPU time limits for one VM's threads with the cgroup cpu controller: a
//! group of its own under this process's cgroup, allowing `cpus` CPUs' worth
//! of time per period (`0.5`: half of one CPU), which the VM's vCPU and
//! event-loop threads join before they take their seccomp filters.
//!
//! Both cgroup versions are handled:
//! - v1 (a `cgroup` mount with the `cpu` controller): a child group with
//!   `cpu.cfs_period_us`/`cpu.cfs_quota_us`; threads join by writing their
//!   id to its `tasks`.
//! - v2 (a `cgroup2` mount whose `cgroup.controllers` has `cpu`): a
//!   `threaded` child with `cpu.max`, after `+cpu` in the parent's
//!   `cgroup.subtree_control`; threads join through `cgroup.threads`.
//!
//! Where neither is there (or writable), [`CpuGroup::create`] fails with
//! the reason; the caller decides whether to run without the limit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The scheduling period, microseconds (the kernel's default).
const PERIOD_US: u64 = 100_000;
/// How long removing a group waits for its last threads to leave.
pub(crate) const REMOVE_WAIT: Duration = Duration::from_millis(200);

/// Why a VM's CPU time cannot be limited.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No mounted cgroup hierarchy offers the controller (named).
    #[error("no cgroup {0} controller is mounted (neither cgroup v1 `{0}` nor cgroup v2 with `{0}` in cgroup.controllers)")]
    NoController(&'static str),
    /// `/proc/self/cgroup` names no group of this process in the
    /// hierarchy of the controller (named).
    #[error("this process's cgroup in the {0} hierarchy is unknown (/proc/self/cgroup)")]
    UnknownGroup(&'static str),
    /// The CPU time limit is below 0.01 CPUs or not a finite number.
    #[error("{cpus} CPUs is not a CPU time limit (more than 0.01)")]
    BadShare {
        /// The CPU count asked for.
        cpus: f64,
    },
    /// A cgroup file or directory could not be read, written, created or opened.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// The operation that failed ("read", "write", "create", "open").
        what: &'static str,
        /// The file or directory it was done on.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Which cgroup interface a hierarchy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// cgroup v1: a `cgroup` mount with the controller.
    V1,
    /// cgroup v2: a `cgroup2` mount with the controller in
    /// `cgroup.controllers`.
    V2,
}

/// Where this process's cgroup of the cpu hierarchy is.
pub type CpuHierarchy = Hierarchy;

/// Where this process's cgroup is in the hierarchy of one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Which interface the hierarchy speaks.
    pub version: Version,
    /// This process's own group (a directory of the mounted hierarchy).
    pub own: PathBuf,
}

/// One VM's group; removed when dropped (after the VM's threads ended).
#[derive(Debug)]
pub struct CpuGroup {
    dir: PathBuf,
    /// `tasks` (v1) or `cgroup.threads` (v2) of the group, opened before
    /// any seccomp filter: joining is one `write`.
    join: File,
    /// Made by this process, which removes it when dropped.
    owned: bool,
}

impl Hierarchy {
    /// The cpu hierarchy of this host and this process's group in it.
    pub fn find() -> Result<Hierarchy, CgroupError> {
        Hierarchy::find_for("cpu")
    }

    /// The hierarchy of `controller` on this host and this process's group
    /// in it.
    pub fn find_for(controller: &'static str) -> Result<Hierarchy, CgroupError> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
                what: "read",
                path: path.into(),
                source,
            })
        };
        let mountinfo = read("/proc/self/mountinfo")?;
        let cgroups = read("/proc/self/cgroup")?;
        Hierarchy::parse_for(controller, &mountinfo, &cgroups, |p| {
            std::fs::read_to_string(p.join("cgroup.controllers")).ok()
        })
    }

    /// [`Hierarchy::parse_for`] the cpu controller.
    pub fn parse(
        mountinfo: &str,
        cgroups: &str,
        controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<Hierarchy, CgroupError> {
        Hierarchy::parse_for("cpu", mountinfo, cgroups, controllers)
    }

    /// The hierarchy of `controller` described by a `mountinfo` and a
    /// `/proc/<pid>/cgroup` (v1 preferred, as the kernel does when the
    /// controller is bound to it); `controllers` reads a v2 mount's
    /// `cgroup.controllers`.
    pub fn parse_for(
        controller: &'static str,
        mountinfo: &str,
        cgroups: &str,
        controllers: impl Fn(&Path) -> Option<String>,
    ) -> Result<Hierarchy, CgroupError> {
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let theirs: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(point), Some(fstype)) =
                (fields.get(3), fields.get(4), theirs.first())
            else {
                continue;
            };
            let options = theirs.get(2).copied().unwrap_or("");
            if *fstype == "cgroup" && options.split(',').any(|o| o == controller) {
                let path = group_of(cgroups, controller, |c| {
                    c.split(',').any(|c| c == controller)
                })?;
                return Ok(Hierarchy {
                    version: Version::V1,
                    own: under(Path::new(point), root, &path),
                });
            }
            if *fstype == "cgroup2" && v2.is_none() {
                let has = controllers(Path::new(point))
                    .is_some_and(|c| c.split_whitespace().any(|c| c == controller));
                if has {
                    v2 = Some((point.to_string(), root.to_string()));
                }
            }
        }
        let (point, root) = v2.ok_or(CgroupError::NoController(controller))?;
        let path = group_of(cgroups, controller, str::is_empty)?;
        Ok(Hierarchy {
            version: Version::V2,
            own: under(Path::new(&point), &root, &path),
        })
    }
}

/// The group path of the hierarchy whose controller list satisfies `is`.
fn group_of(
    cgroups: &str,
    controller: &'static str,
    is: impl Fn(&str) -> bool,
) -> Result<String, CgroupError> {
    cgroups
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            is(controllers).then(|| path.to_string())
        })
        .next()
        .ok_or(CgroupError::UnknownGroup(controller))
}

/// The directory of group `path` in a hierarchy whose `root` is mounted at
/// `point` (a container sees its own group as the mount's root).
fn under(point: &Path, root: &str, path: &str) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or(path);
    point.join(rel.trim_start_matches('/'))
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.into(),
        source,
    }
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), CgroupError> {
    std::fs::write(path, text).map_err(io("write", path))
}

/// Moves the calling process (every thread) into the group at `dir`, of
/// any controller: "0" names the writer itself, whatever its pid in its
/// PID namespace.
pub(crate) fn join_process(dir: &Path) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.procs"), "0")
}

impl CpuGroup {
    /// A new group for one VM on this host, allowing `cpus` CPUs of time.
    pub fn create(cpus: f64) -> Result<CpuGroup, CgroupError> {
        CpuGroup::create_in(&CpuHierarchy::find()?, cpus)
    }

    /// A new group under `hierarchy`'s own group.
    pub fn create_in(hierarchy: &CpuHierarchy, cpus: f64) -> Result<CpuGroup, CgroupError> {
        if !(cpus >= 0.01 && cpus.is_finite()) {
            return Err(CgroupError::BadShare { cpus });
        }
        let quota = (cpus * PERIOD_US as f64).round() as u64;
        let (dir, join) = new_group(hierarchy, "reflow-vm", |dir| {
            CpuGroup::configure(hierarchy, dir, quota)
        })?;
        Ok(CpuGroup {
            dir,
            join,
            owned: true,
        })
    }

    fn configure(hierarchy: &CpuHierarchy, dir: &Path, quota: u64) -> Result<File, CgroupError> {
        let join = match hierarchy.version {
            Version::V1 => {
                write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                dir.join("tasks")
            }
            Version::V2 => {
                write(&dir.join("cgroup.type"), "threaded")?;
                write(&hierarchy.own.join("cgroup.subtree_control"), "+cpu")?;
                write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
                dir.join("cgroup.threads")
            }
        };
        // `create` only matters on a fake tree: cgroupfs has the file.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&join)
            .map_err(io("open", &join))
    }

    /// A group another process made (at `dir`), for this process's threads
    /// to join; it is left in place when dropped (its maker removes it).
    pub fn attach(dir: &Path) -> Result<CpuGroup, CgroupError> {
        // v2 threaded groups take threads through `cgroup.threads`, v1
        // groups through `tasks`.
        let v2 = dir.join("cgroup.threads");
        let join = if v2.exists() { v2 } else { dir.join("tasks") };
        let file = OpenOptions::new()
            .write(true)
            .open(&join)
            .map_err(io("open", &join))?;
        Ok(CpuGroup {
            dir: dir.to_path_buf(),
            join: file,
            owned: false,
        })
    }

    /// Moves the calling thread into the group (one `write`).
    pub fn join_current_thread(&self) -> std::io::Result<()> {
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        (&self.join).write_all(tid.to_string().as_bytes())
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        if self.owned {
            remove_group(&self.dir, REMOVE_WAIT);
        }
    }
}

/// Makes a group `<prefix>-<pid>-<n>` under `hierarchy`'s own group and
/// sets it up with `configure`; a group that could not be set up is
/// removed again. The first time in this process for a group and prefix,
/// removes the groups a process that is gone left there
/// ([`sweep_stale`]).
pub(crate) fn new_group<T>(
    hierarchy: &Hierarchy,
    prefix: &str,
    configure: impl FnOnce(&Path) -> Result<T, CgroupError>,
) -> Result<(PathBuf, T), CgroupError> {
    static SWEPT: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        let key = (hierarchy.own.clone(), prefix.to_string());
        if !swept.contains(&key) {
            let removed = sweep_stale(&hierarchy.own, prefix);
            if removed > 0 {
                tracing::info!(
                    removed,
                    under = %hierarchy.own.display(),
                    "removed cgroups left by sandbox processes that are gone"
                );
            }
            swept.push(key);
        }
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = hierarchy.own.join(name);
    std::fs::create_dir(&dir).map_err(io("create", &dir))?;
    match configure(&dir) {
        Ok(made) => Ok((dir, made)),
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            Err(e)
        }
    }
}

/// Removes the groups `<prefix>-<pid>-<n>` under `own` whose process
/// `pid` is gone (a bridge that was killed could not remove its VMs'
/// groups); returns how many. A group of a live process is left alone, as
/// is one that still holds a process (the kernel refuses to remove it).
pub(crate) fn sweep_stale(own: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(own) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix)?.strip_prefix('-'))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| Some((pid.parse::<i32>().ok()?, n.parse::<u64>().ok()?)))
            .map(|(pid, _)| pid)
        else {
            continue;
        };
        if pid > 0 && !alive(pid) && std::fs::remove_dir(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether process `pid` exists (as far as this process can tell).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes the group at `dir`, waiting up to `wait` for a thread or
/// process that just left (or was reaped, or killed) to be gone from it;
/// warns if it cannot.
pub(crate) fn remove_group(dir: &Path, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if std::time::Instant::now() > deadline => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a VM's cgroup");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cgroup_probe.rs"]
pub(crate) mod probe;
