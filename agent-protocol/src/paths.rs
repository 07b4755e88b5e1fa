//! The guest paths and addresses both the host and the guest rely on.
//!
//! The language workers (Python and Node SDKs under `guest-image/`) restate
//! [`RUN_DIR`], [`PROGRESS_FILE`] and [`WORKER_READY`] in their own
//! languages; the image checks in `guest-image/build-*.sh` hold them to it.

/// Where the agent mounts the language image; programs it starts run
/// chrooted there.
pub const IMAGE_ROOT: &str = "/rootfs";

/// The workers' run-time directory inside the image (a size-limited tmpfs).
pub const RUN_DIR: &str = "/run/reflow";

/// Where the `load` request stores actor sources, inside the image.
pub const ACTORS_DIR: &str = "/run/reflow/actors";

/// The JSON progress report a worker keeps while it starts up.
pub const PROGRESS_FILE: &str = "/run/reflow/progress";

/// The file a language worker writes (its pid) once it serves the ring.
pub const WORKER_READY: &str = "worker.ready";

/// Guest physical address of the host<->guest shared-memory region: right
/// above the 32-bit hole, clear of every guest RAM size we offer.
pub const SHM_ADDR: u64 = 1 << 32;

/// `path`, an absolute path inside the image, as the agent sees it.
pub fn in_image(path: &str) -> String {
    format!("{IMAGE_ROOT}{path}")
}

/// The ready file named `ready` (under [`RUN_DIR`]) as the agent sees it.
pub fn ready_file(ready: &str) -> String {
    in_image(&format!("{RUN_DIR}/{ready}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_are_seen_through_the_mount() {
        assert_eq!(in_image(PROGRESS_FILE), "/rootfs/run/reflow/progress");
        assert_eq!(ready_file(WORKER_READY), "/rootfs/run/reflow/worker.ready");
        assert!(ACTORS_DIR.starts_with(RUN_DIR));
    }
}
