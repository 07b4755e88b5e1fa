//! A memory limit for one VM's monitor process: a cgroup of its own under
//! the bridge's group in the memory hierarchy, which the monitor joins
//! (the whole process, by writing to `cgroup.procs`) before it maps any
//! guest memory, so every page its VM and its device models touch is
//! charged there. A monitor that goes past the limit (a guest cannot: its
//! RAM is fixed; a monitor taken over by one could) is ended by the
//! kernel's OOM killer, not the host.
//!
//! - v1 (a `cgroup` mount with the `memory` controller): a child group
//!   with `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, the
//!   same, where swap is accounted).
//! - v2 (a `cgroup2` mount whose `cgroup.controllers` has `memory`): a
//!   child with `memory.max` and `memory.swap.max` 0, after `+memory` in
//!   the parent's `cgroup.subtree_control`. The kernel allows that only if
//!   the bridge's own group holds no process ("no internal processes"):
//!   run the bridge in a group of its own below a delegated one for this.
//!
//! Where neither works, [`MemoryGroup::create`] fails with the reason; the
//! caller decides whether to run without the limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{new_group, remove_group, write, CgroupError, Hierarchy, Version, REMOVE_WAIT};

/// What a monitor process itself may use beyond its guest's RAM and the
/// shared region: its code and heap, thread stacks, KVM's per-vCPU pages,
/// device queues and the page-cache pages of the snapshot it reads.
pub const MONITOR_OVERHEAD: u64 = 64 << 20;

/// One monitor's memory group; removed when dropped (after its process
/// has been reaped).
#[derive(Debug)]
pub struct MemoryGroup {
    dir: PathBuf,
    limit: u64,
}

impl MemoryGroup {
    /// A new group on this host allowing `limit` bytes.
    pub fn create(limit: u64) -> Result<MemoryGroup, CgroupError> {
        MemoryGroup::create_in(&Hierarchy::find_for("memory")?, limit)
    }

    /// A new group under `hierarchy`'s own group allowing `limit` bytes.
    pub fn create_in(hierarchy: &Hierarchy, limit: u64) -> Result<MemoryGroup, CgroupError> {
        let (dir, ()) = new_group(hierarchy, "reflow-vm-mem", |dir| {
            configure(hierarchy, dir, limit)
        })?;
        Ok(MemoryGroup { dir, limit })
    }

    /// Moves the calling process (every thread of it, and every thread it
    /// starts later) into the group at `dir`.
    pub fn join(dir: &Path) -> Result<(), CgroupError> {
        crate::cgroup::join_process(dir)
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How many processes in the group the kernel's OOM killer ended
    /// (the group at its limit), where the host tells: the `oom_kill`
    /// line of `memory.events` (v2) or `memory.oom_control` (v1).
    pub fn oom_kills(&self) -> Option<u64> {
        ["memory.events", "memory.oom_control"]
            .iter()
            .find_map(|file| oom_kill_count(&std::fs::read_to_string(self.dir.join(file)).ok()?))
    }

    /// Removes the group, waiting up to `wait` for the processes in it to
    /// be gone (the kernel refuses to remove a group that holds one): a
    /// killed PID namespace takes its processes with it, but not at once.
    pub fn remove(self, wait: Duration) {
        remove_group(&self.dir, wait);
        // Drop finds it gone.
    }
}

/// The count on an `oom_kill N` line (not `oom_group_kill`).
fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
}

fn configure(hierarchy: &Hierarchy, dir: &Path, limit: u64) -> Result<(), CgroupError> {
    match hierarchy.version {
        Version::V1 => {
            write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
            // Only there where the kernel accounts swap.
            let swap = dir.join("memory.memsw.limit_in_bytes");
            if swap.exists() {
                write(&swap, &limit.to_string())?;
            }
        }
        Version::V2 => {
            write(&hierarchy.own.join("cgroup.subtree_control"), "+memory")?;
            write(&dir.join("memory.max"), &limit.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
    }
    Ok(())
}

impl Drop for MemoryGroup {
    fn drop(&mut self) {
        remove_group(&self.dir, REMOVE_WAIT);
    }
}

#[cfg(test)]
#[path = "memcg_tests.rs"]
mod tests;
