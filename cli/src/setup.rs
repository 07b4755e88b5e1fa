//! Preparing a bridge: each runtime's golden snapshot (created on first use,
//! with progress), the pool and the state store.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use reflow_host_bridge::state::{StateError, StateStore};
use reflow_host_bridge::{Bridge, BridgeConfig};
use reflow_sandbox_core::{
    GuestImages, IsolationKind, Language, Runtime, RuntimeError, ShapeOverrides, VmShape, VmSpec,
};

use crate::graph::GraphFile;

/// Guest memory of a Python actor VM.
pub const PYTHON_MEM_MIB: u32 = 256;
/// Shared region of a Python actor VM: room for 16 MiB messages each way.
pub const PYTHON_SHM_MIB: u32 = 40;
/// Guest memory of a JavaScript actor VM.
pub const NODE_MEM_MIB: u32 = 256;
/// Shared region of a JavaScript actor VM: as for Python.
pub const NODE_SHM_MIB: u32 = 40;

/// Why a bridge cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Actors need VMs and this host cannot run one; nothing falls back
    /// to `process` unless the user said so.
    #[error(
        "{actors} need a VM, and this host cannot run one: {why}. To run them as jailed host \
         processes instead, set `isolation: process` in reflow.yaml \
         (workspace.sandbox.<language>.isolation, or workspace.sandbox.actors.<Component>.isolation) \
         or `\"isolation\": \"process\"` in a graph node's metadata, after reading what that lets \
         a script reach (README: VM or process)"
    )]
    NoKvm {
        /// The actors, `Component (language)`, comma-separated.
        actors: String,
        /// Why the host cannot run VMs.
        why: String,
    },
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

/// VM sizes of one language's actors: the VM's shape (guest memory,
/// vCPUs, CPU time) and its shared region (MiB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizes {
    pub shape: VmShape,
    pub shm_mib: u32,
}

impl Sizes {
    /// These sizes with what `o` sets in their place.
    pub fn with(self, o: &ShapeOverrides) -> Sizes {
        Sizes {
            shape: self.shape.with(o),
            ..self
        }
    }

    /// The defaults of `language`.
    pub fn default_for(language: Language) -> Sizes {
        let (mem_mib, shm_mib) = match language {
            Language::Python => (PYTHON_MEM_MIB, PYTHON_SHM_MIB),
            Language::JavaScript => (NODE_MEM_MIB, NODE_SHM_MIB),
        };
        Sizes {
            shape: VmShape {
                mem_mib,
                vcpus: 1,
                cpu: None,
                isolation: Default::default(),
            },
            shm_mib,
        }
    }
}

/// The sandbox sizes `graph`'s scripts need, each once, by language
/// (Python first): a language's runtime (`runtime` gives its sizes) first
/// where a script runs on it as it is, then each other size its scripts
/// ask for (their [`ShapeOverrides`] over their runtime's). A runtime no
/// script runs on as it is gets no pool (and no golden snapshot): a graph
/// whose nodes all choose `process` needs no VM.
pub fn shapes(graph: &GraphFile, runtime: impl Fn(Language) -> Sizes) -> Vec<(Language, Sizes)> {
    let mut scripts: Vec<_> = graph.scripts.iter().collect();
    scripts.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(Language, Sizes)> = Vec::new();
    for language in graph.languages() {
        let base = runtime(language);
        let mut wanted: Vec<Sizes> = scripts
            .iter()
            .filter(|(_, s)| s.language == language)
            .map(|(_, s)| base.with(&s.shape))
            .collect();
        // Stable: the runtime's own size first, the others as the scripts
        // are sorted.
        wanted.sort_by_key(|s| !s.shape.same(&base.shape));
        for sizes in wanted {
            if !out
                .iter()
                .any(|(l, s)| *l == language && s.shape.same(&sizes.shape))
            {
                out.push((language, sizes));
            }
        }
    }
    out
}

/// The script components of `graph` whose workers run in VMs (their
/// isolation over their runtime's, which `runtime` gives, is `vm`), as
/// `Component (language)`, sorted.
pub fn vm_actors(graph: &GraphFile, runtime: impl Fn(Language) -> Sizes) -> Vec<String> {
    let mut actors: Vec<String> = graph
        .scripts
        .iter()
        .filter(|(_, s)| runtime(s.language).with(&s.shape).shape.isolation == IsolationKind::Vm)
        .map(|(component, s)| format!("{component} ({})", s.language))
        .collect();
    actors.sort();
    actors
}

/// Refuses to go on when `graph` has actors that need VMs and the host
/// cannot run them (`unusable` says why; `None`: it can), naming them and
/// how to run them as processes instead.
pub fn refuse_vms_without_kvm(
    graph: &GraphFile,
    runtime: impl Fn(Language) -> Sizes,
    unusable: Option<String>,
) -> Result<(), SetupError> {
    let Some(why) = unusable else {
        return Ok(());
    };
    let actors = vm_actors(graph, runtime);
    if actors.is_empty() {
        return Ok(());
    }
    Err(SetupError::NoKvm {
        actors: actors.join(", "),
        why,
    })
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
    let sizes = Sizes::default_for(Language::Python);
    bridge_for(
        images,
        &[(Language::Python, sizes)],
        cache_root,
        store,
        config,
        progress,
    )
}

/// A bridge with a runtime for each of `languages`, VMs of the sizes given
/// (a size other than the defaults gets a golden snapshot of its own,
/// created on first use, as is each runtime's first golden).
pub fn bridge_for(
    images: &GuestImages,
    languages: &[(Language, Sizes)],
    cache_root: &Path,
    store: StateStore,
    config: BridgeConfig,
    progress: bool,
) -> Result<Bridge, SetupError> {
    let progress = Progress::new(progress);
    let report = |m: &str| progress.report(m);
    let mut runtimes = Vec::new();
    for &(language, sizes) in languages {
        report(&format!(
            "preparing the {language} runtime ({})",
            sizes.shape
        ));
        let shape = sizes.shape;
        let mut runtime = Runtime::for_language(images, language, shape.mem_mib, sizes.shm_mib)?;
        runtime.config.vcpus = shape.vcpus;
        runtime.cpu = shape.cpu;
        if shape.isolation == IsolationKind::Process {
            // No golden: each worker starts on the image's files, unpacked
            // beside it on first use.
            let image = runtime.image().ok_or(RuntimeError::NoImage {
                language,
                var: match language {
                    Language::Python => "REFLOW_PYTHON_IMAGE",
                    Language::JavaScript => "REFLOW_NODE_IMAGE",
                },
            })?;
            let mut spec =
                VmSpec::process(language, image.to_path_buf(), shape.mem_mib, sizes.shm_mib);
            spec.cpu = shape.cpu;
            runtimes.push((language, spec));
            continue;
        }
        match runtime.golden(cache_root, &report) {
            Ok(spec) => runtimes.push((language, spec)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Bridge::new(runtimes, store, config))
}

/// Progress of a long step on stderr: a spinner with the latest news on
/// a terminal, one `[reflow-sandbox]` line per message elsewhere; nothing
/// (but the log) when off. Cleared when dropped.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A spinner when `show`, else silence.
    pub fn new(show: bool) -> Progress {
        Progress(show.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        }))
    }

    /// News: one line replaces the spinner's message; a multi-line summary
    /// (a golden's step timings) is printed above it and stays.
    pub fn report(&self, m: &str) {
        match &self.0 {
            Some(bar) if bar.is_hidden() => eprintln!("[reflow-sandbox] {m}"),
            Some(bar) if m.contains('\n') => bar.println(format!("[reflow-sandbox] {m}")),
            Some(bar) => bar.set_message(m.to_string()),
            None => tracing::info!("{m}"),
        }
    }

    /// A line that stays (printed above the spinner).
    pub fn say(&self, m: &str) {
        match &self.0 {
            Some(bar) if !bar.is_hidden() => bar.println(format!("[reflow-sandbox] {m}")),
            Some(_) => eprintln!("[reflow-sandbox] {m}"),
            None => tracing::info!("{m}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
