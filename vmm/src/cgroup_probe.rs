//! What the real-cgroup tests share: a group made on this host or a
//! visible skip (a failure under `CI=true`, where every machine has the
//! controllers), and a probe run in a child process of this test binary.

use std::path::Path;
use std::process::{Command, ExitStatus};

use crate::cgroup::CgroupError;

/// The group `made` for `controller`, or `None` after saying why it could
/// not be made here; under `CI=true` that is a failure.
pub(crate) fn real_group<G>(controller: &str, made: Result<G, CgroupError>) -> Option<G> {
    match made {
        Ok(group) => Some(group),
        Err(e) => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true and no usable cgroup {controller} controller: {e}"
            );
            eprintln!("skipped: no usable cgroup {controller} controller here: {e}");
            None
        }
    }
}

/// Runs the ignored test `name` of this test binary alone in a child
/// process, with `var` naming the group at `dir`; its exit status.
pub(crate) fn run_probe(name: &str, var: &str, dir: &Path) -> ExitStatus {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--ignored", "--test-threads=1"])
        .env(var, dir)
        .status()
        .expect("running the probe")
}
