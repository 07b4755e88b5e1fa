//! Where the kernel, images and golden snapshots are cached on the host.
//!
//! The image build scripts (`guest-image/build-*.sh`, `kernels/build.sh`)
//! follow the same rule in shell.

use std::path::PathBuf;

/// The cache root shared by the kernel, images and snapshots:
/// `$REFLOW_CACHE_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/reflow-sandbox`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("REFLOW_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("reflow-sandbox")
}
