//! The services every sandboxed actor of one host process shares: a VM pool
//! per language runtime, the state store, the limits, and the reaper that
//! gives back VMs of nodes that stayed idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::actor::SandboxActor;
use crate::limits::{LimitOverrides, Limits};
use crate::node::Node;
use crate::pool::{PoolConfig, VmPool};
use crate::runtime::Language;
use crate::sandbox::VmSpec;
use crate::script::Script;
use crate::state::StateStore;

/// How often the reaper looks for idle nodes.
const REAP_EVERY: Duration = Duration::from_millis(500);

/// Limits and sizes (defaults from the seed).
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Per runtime: ready clones kept, most VMs alive, restore limit.
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
}

pub(crate) struct Shared {
    pub pools: HashMap<Language, VmPool>,
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
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
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
            let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
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
    /// A bridge over `runtimes` (one golden snapshot per language) with
    /// state in `store`. Must be called within a tokio runtime: state
    /// operations run on it. The pools start filling at once.
    pub fn new(
        runtimes: Vec<(Language, VmSpec)>,
        store: StateStore,
        config: BridgeConfig,
    ) -> Bridge {
        let pools = runtimes
            .into_iter()
            .map(|(lang, spec)| (lang, VmPool::new(spec, config.pool.clone())))
            .collect();
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
    /// instance (graph node) gets its own VM and state scope.
    pub fn actor(&self, script: Script) -> Result<SandboxActor, BridgeError> {
        if !self.shared.pools.contains_key(&script.language) {
            return Err(BridgeError::NoRuntime(script.language));
        }
        Ok(SandboxActor::new(self.shared.clone(), Arc::new(script)))
    }

    /// The pool of `language`'s VMs.
    pub fn pool(&self, language: Language) -> Option<&VmPool> {
        self.shared.pools.get(&language)
    }

    /// Waits (at most `wait`) until every pool has its preloaded clones
    /// ready; returns how many are ready in all.
    pub fn wait_ready(&self, wait: Duration) -> usize {
        self.shared.pools.values().map(|p| p.wait_ready(wait)).sum()
    }

    /// Stops the VM of one node that holds one, chosen by `pick` (modulo
    /// their number), as if it crashed: for chaos and soak testing. The
    /// message it runs is answered with an error and the node's next
    /// message gets a fresh VM. Returns whether a VM was stopped.
    pub fn kill_vm(&self, pick: usize) -> bool {
        let nodes: Vec<Arc<Node>> = {
            let nodes = self.shared.nodes.lock().unwrap_or_else(|p| p.into_inner());
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
        for pool in self.shared.pools.values() {
            pool.shutdown();
        }
    }
}
