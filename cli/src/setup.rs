//! Preparing a bridge: the runtime's golden snapshot (created on first use,
//! with progress), the pool and the state store.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use reflow_host_bridge::state::{StateError, StateStore};
use reflow_host_bridge::{Bridge, BridgeConfig, GuestImages, Language, Runtime, RuntimeError};

/// Guest memory of a Python actor VM.
pub const PYTHON_MEM_MIB: u32 = 256;
/// Shared region of a Python actor VM: room for 16 MiB messages each way.
pub const PYTHON_SHM_MIB: u32 = 40;

/// Why a bridge cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("state store: {0}")]
    State(#[from] StateError),
}

/// The state store at `url` (`redis://...`), or the embedded one.
pub async fn state_store(url: Option<&str>) -> Result<StateStore, StateError> {
    match url {
        Some(url) => StateStore::redis(url).await,
        None => Ok(StateStore::embedded()),
    }
}

/// A bridge with a Python runtime over `images`, its golden snapshot under
/// `cache_root` (created on first use: a spinner shows what happens when
/// `progress` is set). Call within a tokio runtime.
pub fn bridge(
    images: &GuestImages,
    cache_root: &Path,
    store: StateStore,
    config: BridgeConfig,
    progress: bool,
) -> Result<Bridge, SetupError> {
    bridge_sized(
        images,
        (PYTHON_MEM_MIB, PYTHON_SHM_MIB),
        cache_root,
        store,
        config,
        progress,
    )
}

/// [`bridge`] with Python VMs of `(memory, shared region)` MiB (a size
/// other than the defaults gets a golden snapshot of its own, created on
/// first use).
pub fn bridge_sized(
    images: &GuestImages,
    (mem_mib, shm_mib): (u32, u32),
    cache_root: &Path,
    store: StateStore,
    config: BridgeConfig,
    progress: bool,
) -> Result<Bridge, SetupError> {
    let runtime = Runtime::python(images, mem_mib, shm_mib);
    let spinner = progress.then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("preparing the python runtime");
        bar
    });
    let report = |m: &str| match &spinner {
        Some(bar) if bar.is_hidden() => eprintln!("[reflow-sandbox] {m}"),
        Some(bar) => bar.set_message(m.to_string()),
        None => tracing::info!("{m}"),
    };
    let spec = runtime.golden(cache_root, &report);
    if let Some(bar) = &spinner {
        bar.finish_and_clear();
    }
    Ok(Bridge::new(vec![(Language::Python, spec?)], store, config))
}
