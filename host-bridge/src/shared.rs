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
use crate::metrics::Metrics;
use crate::state::StateStore;

/// A node as the shared registry sees it.
pub(crate) trait Tracked: Send + Sync {
    /// Gives the VM back if the node has been idle for `idle`.
    fn release_if_idle(&self, idle: Duration);
    /// The state of the node's VM, if it has one: `busy` (running
    /// messages), `idle` or `held` (metrics).
    fn vm_state(&self) -> Option<&'static str>;
    /// The node's script name and the content hash of the version it
    /// serves (metrics).
    fn serving(&self) -> (String, String);
    /// The node's runtime and its VM's process, if it has a VM.
    fn vm_process(&self) -> Option<(String, crate::node::VmProcess)>;
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
    pub metrics: Arc<Metrics>,
    nodes: Mutex<Vec<Weak<dyn Tracked>>>,
    busy: AtomicUsize,
    failed: AtomicUsize,
}

impl Shared {
    /// Shared services over `pools`, with state in `store`; state
    /// operations run on the current tokio runtime.
    pub fn new(
        pools: Vec<ShapedPool>,
        store: StateStore,
        config: BridgeConfig,
        metrics: Arc<Metrics>,
    ) -> Shared {
        Shared {
            metrics,
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
    /// runtime's; and which of the two (`component`, `runtime`).
    pub fn pool_for(&self, pool: usize, key: &str) -> (VmPool, &'static str) {
        match self.components.pool(pool, key) {
            Some(p) => (p, "component"),
            None => (self.pools[pool].pool.clone(), "runtime"),
        }
    }

    /// The metrics, their gauges set to what the pools and nodes hold now,
    /// in the Prometheus text format.
    pub fn render_metrics(&self) -> Result<String, crate::metrics::MetricsError> {
        let m = &self.metrics;
        m.vms.reset();
        let set = |language: Language, shape: &VmShape, pool: &str, p: &VmPool| {
            let (ready, live) = p.counts();
            let (runtime, shape) = (language.to_string(), crate::metrics::shape_label(shape));
            for (state, n) in [("ready", ready), ("live", live)] {
                m.vms
                    .with_label_values(&[&runtime, &shape, pool, state])
                    .add(n as i64);
            }
        };
        for p in &self.pools {
            set(p.language, &p.shape, "runtime", &p.pool);
        }
        for (index, pool) in self.components.indexed_pools() {
            let p = &self.pools[index];
            set(p.language, &p.shape, "component", &pool);
        }
        for state in ["busy", "idle", "held"] {
            m.node_vms.with_label_values(&[state]).set(0);
        }
        m.script_versions.reset();
        m.vm_memory.reset();
        m.vm_throttled.reset();
        for node in self.tracked() {
            if let Some((runtime, vm)) = node.vm_process() {
                let resident = crate::metrics::resident_bytes(vm.pid);
                m.vm_memory
                    .with_label_values(&[&runtime, "total"])
                    .add(resident as i64);
                let max = m.vm_memory.with_label_values(&[&runtime, "max"]);
                max.set(max.get().max(resident as i64));
                if let Some(dir) = &vm.cpu_group {
                    m.vm_throttled
                        .with_label_values(&[&runtime])
                        .add(crate::metrics::throttled_seconds(dir));
                }
            }
            if let Some(state) = node.vm_state() {
                m.node_vms.with_label_values(&[state]).inc();
            }
            let (actor, version) = node.serving();
            m.script_versions
                .with_label_values(&[&actor, &version])
                .inc();
        }
        m.busy.set(self.busy_count() as i64);
        m.render()
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
