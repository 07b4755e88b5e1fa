//! The services every sandboxed actor of one host process shares: a VM pool
//! per language runtime and VM shape, the state store, the limits, and the
//! reaper that gives back VMs of nodes that stayed idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::actor::SandboxActor;
use crate::node::Node;
use crate::state::StateStore;
use reflow_sandbox_core::limits::{LimitOverrides, Limits};
use reflow_sandbox_core::pool::{PoolConfig, VmPool};
use reflow_sandbox_core::Language;
use reflow_sandbox_core::Script;
use reflow_sandbox_core::VmShape;
use reflow_sandbox_core::VmSpec;

/// How often the reaper looks for idle nodes.
const REAP_EVERY: Duration = Duration::from_millis(500);

/// Limits and sizes (defaults as documented in docs/configuration.md).
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Per pool (a runtime, or a VM shape some actor asks for): ready
    /// clones kept, most VMs alive, restore limit.
    pub pool: PoolConfig,
    /// A node whose VM served no message for this long gives the VM back
    /// (it gets a fresh one on its next message; its state stays in the
    /// store).
    pub idle_timeout: Duration,
    /// What one message may do (time, sizes, counts), for every actor.
    pub limits: Limits,
    /// Each runtime's own limits, over `limits` (an actor's own, in its
    /// [`Script`], go over these).
    pub runtime_limits: HashMap<Language, LimitOverrides>,
    /// Longest a node waits for a VM when the pool is at `max_size`.
    pub acquire_timeout: Duration,
    /// First part of every state key: `{namespace}:{node id}:{key}`.
    pub namespace: String,
}

impl BridgeConfig {
    /// The limits of one message of `script`: the bridge's, then its
    /// runtime's, then its own.
    pub fn limits_for(&self, script: &Script) -> Limits {
        let runtime = self
            .runtime_limits
            .get(&script.language)
            .copied()
            .unwrap_or_default();
        self.limits.with(&runtime.then(&script.limits))
    }
}

impl Default for BridgeConfig {
    fn default() -> BridgeConfig {
        BridgeConfig {
            pool: PoolConfig::default(),
            idle_timeout: Duration::from_secs(300),
            limits: Limits::default(),
            runtime_limits: HashMap::new(),
            acquire_timeout: Duration::from_secs(120),
            namespace: "reflow".into(),
        }
    }
}

/// Why a sandboxed actor cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("no {0} runtime is configured in this bridge")]
    NoRuntime(Language),
    #[error(
        "{script} asks for {language} VMs of {shape}, and this bridge has none of that shape \
         (it has {have}); give the bridge a runtime of that shape"
    )]
    NoShape {
        script: String,
        language: Language,
        shape: VmShape,
        have: String,
    },
}

/// The pool of one runtime's VMs of one shape.
pub(crate) struct ShapedPool {
    pub language: Language,
    pub shape: VmShape,
    pub pool: VmPool,
}

pub(crate) struct Shared {
    /// Each language's first pool is its runtime's (the shape actors get
    /// unless they ask for another).
    pub pools: Vec<ShapedPool>,
    pub store: StateStore,
    pub config: BridgeConfig,
    pub tokio: tokio::runtime::Handle,
    nodes: Mutex<Vec<Weak<Node>>>,
    busy: AtomicUsize,
    failed: AtomicUsize,
}

impl Shared {
    /// Registers a node with the reaper.
    pub fn track(&self, node: &Arc<Node>) {
        let mut nodes = self.nodes.lock();
        nodes.retain(|n| n.strong_count() > 0);
        nodes.push(Arc::downgrade(node));
    }

    /// Counts a message answered with an error.
    pub fn count_failure(&self) {
        self.failed.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a message in flight until the guard drops.
    pub fn busy(&self) -> BusyGuard<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        BusyGuard(&self.busy)
    }

    fn reap(&self) {
        let nodes: Vec<Arc<Node>> = {
            let nodes = self.nodes.lock();
            nodes.iter().filter_map(Weak::upgrade).collect()
        };
        for node in nodes {
            node.release_if_idle(self.config.idle_timeout);
        }
    }
}

pub(crate) struct BusyGuard<'a>(&'a AtomicUsize);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
                pool: VmPool::new(spec, config.pool.clone()),
            });
        }
        let shared = Arc::new(Shared {
            pools,
            store,
            config,
            tokio: tokio::runtime::Handle::current(),
            nodes: Mutex::new(Vec::new()),
            busy: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        });
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
        Ok(SandboxActor::new(self.shared.clone(), Arc::new(script), at))
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

    /// Stops the VM of one node that holds one, chosen by `pick` (modulo
    /// their number), as if it crashed: for chaos and soak testing. The
    /// message it runs is answered with an error and the node's next
    /// message gets a fresh VM. Returns whether a VM was stopped.
    pub fn kill_vm(&self, pick: usize) -> bool {
        let nodes: Vec<Arc<Node>> = {
            let nodes = self.shared.nodes.lock();
            nodes.iter().filter_map(Weak::upgrade).collect()
        };
        let held: Vec<&Arc<Node>> = nodes.iter().filter(|n| n.has_stop_handle()).collect();
        match held.len() {
            0 => false,
            n => held[pick % n].kill_vm(),
        }
    }

    /// Messages being run by sandboxed actors right now.
    pub fn busy(&self) -> usize {
        self.shared.busy.load(Ordering::SeqCst)
    }

    /// Messages answered with an error (on the `error` outport) so far.
    pub fn failures(&self) -> usize {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Stops every pool's waiting VMs; lent ones stop when their nodes
    /// end.
    pub fn shutdown(&self) {
        for p in &self.shared.pools {
            p.pool.shutdown();
        }
    }
}
