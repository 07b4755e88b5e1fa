//! What every sandboxed actor of one bridge shares: the pools, the state
//! store, the settings, and the registry of nodes the idle reaper walks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use reflow_sandbox_core::pool::VmPool;
use reflow_sandbox_core::{Language, VmShape};

use crate::components::Components;
use crate::config::BridgeConfig;
use crate::state::StateStore;

/// A node as the shared registry sees it.
pub(crate) trait Tracked: Send + Sync {
    /// Gives the VM back if the node has been idle for `idle`.
    fn release_if_idle(&self, idle: Duration);
    /// Stops the node's VM as if it crashed; whether there was one.
    #[cfg(feature = "testing")]
    fn kill_vm(&self) -> bool;
    /// Whether the node has a VM it could stop.
    #[cfg(feature = "testing")]
    fn has_stop_handle(&self) -> bool;
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
    /// Each script's component golden pool, once made.
    pub components: Components,
    nodes: Mutex<Vec<Weak<dyn Tracked>>>,
    busy: AtomicUsize,
    failed: AtomicUsize,
}

impl Shared {
    /// Shared services over `pools`, with state in `store`; state
    /// operations run on the current tokio runtime.
    pub fn new(pools: Vec<ShapedPool>, store: StateStore, config: BridgeConfig) -> Shared {
        Shared {
            pools,
            store,
            config,
            tokio: tokio::runtime::Handle::current(),
            components: Components::default(),
            nodes: Mutex::new(Vec::new()),
            busy: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// Registers a node with the reaper.
    pub fn track(&self, node: Weak<dyn Tracked>) {
        let mut nodes = self.nodes.lock();
        nodes.retain(|n| n.strong_count() > 0);
        nodes.push(node);
    }

    fn tracked(&self) -> Vec<Arc<dyn Tracked>> {
        self.nodes.lock().iter().filter_map(Weak::upgrade).collect()
    }

    /// Messages being run right now.
    pub fn busy_count(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// Messages answered with an error so far.
    pub fn failures(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// Stops the VM of one node that holds one, chosen by `pick` modulo
    /// their number; whether one was stopped.
    #[cfg(feature = "testing")]
    pub fn kill_vm(&self, pick: usize) -> bool {
        let held: Vec<_> = self
            .tracked()
            .into_iter()
            .filter(|n| n.has_stop_handle())
            .collect();
        match held.len() {
            0 => false,
            n => held[pick % n].kill_vm(),
        }
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

    /// Where a node of the component `key` over runtime pool `pool` gets
    /// its VMs: the component's pool once its golden is ready, else the
    /// runtime's.
    pub fn pool_for(&self, pool: usize, key: &str) -> VmPool {
        self.components
            .pool(pool, key)
            .unwrap_or_else(|| self.pools[pool].pool.clone())
    }

    /// Gives back the VMs of nodes idle for the idle timeout.
    pub fn reap(&self) {
        for node in self.tracked() {
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
