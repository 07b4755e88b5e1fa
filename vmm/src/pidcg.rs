//! A bound on how many tasks (processes and threads) one jailed process
//! worker may have: a cgroup of its own under the bridge's group in the
//! pids hierarchy, which the worker joins before it runs anything, so the
//! script and everything it starts count against it. A fork bomb meets
//! `EAGAIN` at the bound whatever uid it runs as; `RLIMIT_NPROC` alone
//! counts a uid's processes across the host, which bounds one worker only
//! when it has a uid of its own (root-run bridges).
//!
//! - v1 (a `cgroup` mount with the `pids` controller): a child group with
//!   `pids.max`.
//! - v2 (a `cgroup2` mount whose `cgroup.controllers` has `pids`): a child
//!   with `pids.max`, after `+pids` in the parent's `cgroup.subtree_control`.
//!
//! Where neither works, [`PidsGroup::create`] fails with the reason; the
//! caller decides whether to run without the bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{new_group, remove_group, write, CgroupError, Hierarchy, Version, REMOVE_WAIT};

/// One worker's pids group; removed when dropped (after its processes
/// are gone).
#[derive(Debug)]
pub struct PidsGroup {
    dir: PathBuf,
}

impl PidsGroup {
    /// A new group on this host allowing `max` tasks.
    pub fn create(max: u64) -> Result<PidsGroup, CgroupError> {
        PidsGroup::create_in(&Hierarchy::find_for("pids")?, max)
    }

    /// A new group under `hierarchy`'s own group allowing `max` tasks.
    pub fn create_in(hierarchy: &Hierarchy, max: u64) -> Result<PidsGroup, CgroupError> {
        let (dir, ()) = new_group(hierarchy, "reflow-worker-pids", |dir| {
            if hierarchy.version == Version::V2 {
                write(&hierarchy.own.join("cgroup.subtree_control"), "+pids")?;
            }
            write(&dir.join("pids.max"), &max.to_string())
        })?;
        Ok(PidsGroup { dir })
    }

    /// Moves the calling process (and every task it starts later) into
    /// the group at `dir`.
    pub fn join(dir: &Path) -> Result<(), CgroupError> {
        crate::cgroup::join_process(dir)
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many times a fork or thread was refused at the bound, where
    /// the host tells (`pids.events`' `max` line).
    pub fn refusals(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.dir.join("pids.events")).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("max ")?.trim().parse().ok())
    }

    /// Removes the group, waiting up to `wait` for the processes in it to
    /// be gone.
    pub fn remove(self, wait: Duration) {
        remove_group(&self.dir, wait);
        // Drop finds it gone.
    }
}

impl Drop for PidsGroup {
    fn drop(&mut self) {
        remove_group(&self.dir, REMOVE_WAIT);
    }
}

#[cfg(test)]
#[path = "pidcg_tests.rs"]
mod tests;
