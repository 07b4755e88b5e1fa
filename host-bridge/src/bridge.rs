//! The bridge: one host process's sandboxed actors, made from scripts,
//! sharing a VM pool per language runtime and VM shape, the state store,
//! the limits, and the reaper that gives back VMs of nodes that stayed
//! idle.

use std::sync::Arc;
use std::time::Duration;

use reflow_sandbox_core::pool::{PoolHooks, VmPool};
use reflow_sandbox_core::prepare::collect_garbage;
use reflow_sandbox_core::{Language, Script, VmShape, VmSpec};

use crate::actor::SandboxActor;
use crate::config::BridgeConfig;
use crate::metrics::{Metrics, MetricsError};
use crate::shared::{ShapedPool, Shared};
use crate::state::StateStore;

/// How often the reaper looks for idle nodes.
const REAP_EVERY: Duration = Duration::from_millis(500);

/// Why a sandboxed actor cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The bridge has no runtime for the script's language (given).
    #[error("no {0} runtime is configured in this bridge")]
    NoRuntime(Language),
    /// The bridge has no pool of the VM shape the script asks for.
    #[error(
        "{script} asks for {language} VMs of {shape}, and this bridge has none of that shape \
         (it has {have}); give the bridge a runtime of that shape"
    )]
    NoShape {
        /// The script's name.
        script: String,
        /// The script's language.
        language: Language,
        /// The shape it asks for (its runtime's, with its overrides).
        shape: VmShape,
        /// The shapes the bridge has for that language, `; `-separated.
        have: String,
    },
}

/// The bridge: makes [`SandboxActor`]s that share its pools and store.
/// Cheap to clone. Dropping the last clone (and every actor made from it)
/// shuts the pools down.
#[derive(Clone)]
pub struct Bridge {
    shared: Arc<Shared>,
}

impl Bridge {
    /// A bridge over `runtimes` (a golden snapshot per language and VM
    /// shape; a language's first one is its runtime's, the others serve
    /// actors that ask for their shapes) with state in `store`. Two of one
    /// language and shape make one pool. Must be called within a tokio
    /// runtime: state operations run on it. The pools start filling at
    /// once.
    pub fn new(
        runtimes: Vec<(Language, VmSpec)>,
        store: StateStore,
        config: BridgeConfig,
    ) -> Bridge {
        let metrics = Arc::new(Metrics::new().expect("fixed metric names and labels are valid"));
        let mut pools: Vec<ShapedPool> = Vec::new();
        for (language, spec) in runtimes {
            let shape = VmShape::of(&spec);
            if pools
                .iter()
                .any(|p| p.language == language && p.shape.same(&shape))
            {
                continue;
            }
            pools.push(ShapedPool {
                language,
                shape,
                pool: VmPool::with_hooks(
                    spec,
                    config.pool.clone(),
                    PoolHooks {
                        // A clone's first full collection happens here,
                        // not in the middle of its node's stream.
                        prepare: Some(collect_garbage(config.pool.restore_timeout)),
                        observer: Some(crate::metrics::observer(
                            metrics.clone(),
                            language,
                            shape,
                            "runtime",
                        )),
                    },
                ),
            });
        }
        let shared = Arc::new(Shared::new(pools, store, config, metrics));
        let weak = Arc::downgrade(&shared);
        let reaper = std::thread::Builder::new()
            .name("sandbox-reaper".into())
            .spawn(move || loop {
                std::thread::sleep(REAP_EVERY);
                match weak.upgrade() {
                    Some(shared) => shared.reap(),
                    None => return,
                }
            });
        if let Err(e) = reaper {
            tracing::warn!(error = %e, "no idle reaper: idle VMs are kept until their node ends");
        }
        Bridge { shared }
    }

    /// A sandboxed actor running `script`: a template whose every
    /// instance (graph node) gets its own VM and state scope, of the shape
    /// the script asks for over its runtime's.
    pub fn actor(&self, script: Script) -> Result<SandboxActor, BridgeError> {
        let shape = self
            .shape(script.language)
            .ok_or(BridgeError::NoRuntime(script.language))?
            .with(&script.shape);
        let pools = &self.shared.pools;
        let Some(at) = pools
            .iter()
            .position(|p| p.language == script.language && p.shape.same(&shape))
        else {
            let have: Vec<String> = pools
                .iter()
                .filter(|p| p.language == script.language)
                .map(|p| p.shape.to_string())
                .collect();
            return Err(BridgeError::NoShape {
                script: script.name.clone(),
                language: script.language,
                shape,
                have: have.join("; "),
            });
        };
        Ok(SandboxActor::new(
            self.shared.clone(),
            crate::versions::ScriptVersions::new(Arc::new(script)),
            at,
        ))
    }

    /// The pool of `language`'s runtime (its first VM shape).
    pub fn pool(&self, language: Language) -> Option<&VmPool> {
        self.shaped(language).map(|p| &p.pool)
    }

    /// The VM shape of `language`'s runtime.
    pub fn shape(&self, language: Language) -> Option<VmShape> {
        self.shaped(language).map(|p| p.shape)
    }

    /// Every pool: its language, VM shape and pool.
    pub fn pools(&self) -> impl Iterator<Item = (Language, VmShape, &VmPool)> {
        self.shared
            .pools
            .iter()
            .map(|p| (p.language, p.shape, &p.pool))
    }

    fn shaped(&self, language: Language) -> Option<&ShapedPool> {
        self.shared.pools.iter().find(|p| p.language == language)
    }

    /// Waits (at most `wait`) until every pool has its preloaded clones
    /// ready; returns how many are ready in all.
    pub fn wait_ready(&self, wait: Duration) -> usize {
        self.shared
            .pools
            .iter()
            .map(|p| p.pool.wait_ready(wait))
            .sum()
    }

    /// The bridge's metrics in the Prometheus text format (see
    /// [`crate::metrics`]), the VM gauges read now.
    pub fn metrics(&self) -> Result<String, MetricsError> {
        self.shared.render_metrics()
    }

    /// Stops the VM of one node that holds one, chosen by `pick` (modulo
    /// their number), as if it crashed: for chaos and soak testing. The
    /// message it runs is answered with an error and the node's next
    /// message gets a fresh VM. Returns whether a VM was stopped.
    #[cfg(feature = "testing")]
    pub fn kill_vm(&self, pick: usize) -> bool {
        self.shared.kill_vm(pick)
    }

    /// The pools of clones of scripts' component goldens made so far.
    #[cfg(feature = "testing")]
    pub fn component_pools(&self) -> Vec<VmPool> {
        self.shared.components.pools()
    }

    /// Messages being run by sandboxed actors right now.
    pub fn busy(&self) -> usize {
        self.shared.busy_count()
    }

    /// Messages answered with an error (on the `error` outport) so far.
    pub fn failures(&self) -> usize {
        self.shared.failures()
    }

    /// Stops every pool's waiting VMs; lent ones stop when their nodes
    /// end.
    pub fn shutdown(&self) {
        self.shared.components.shutdown();
        for p in &self.shared.pools {
            p.pool.shutdown();
        }
    }

    /// Waits (at most `wait`) until no script's component golden is being
    /// made; returns how many are ready (their nodes' new VMs come with the
    /// script loaded).
    pub fn wait_components(&self, wait: Duration) -> usize {
        self.shared.components.wait_built(wait)
    }
}
