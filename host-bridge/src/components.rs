//! Each script's component golden and the pool of its clones (see
//! [`reflow_sandbox_core::component`]): made in the background the first
//! time the bridge makes an actor of a script, so a node's first message
//! on a fresh VM is an ordinary invocation. Until the golden is ready, or
//! if it cannot be made (a script that does not load, a host that cannot
//! write the snapshot), the script's nodes take clones of the runtime
//! golden and load the script there, as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use reflow_sandbox_core::component::{self, ComponentError};
use reflow_sandbox_core::pool::{PoolHooks, Prepare, VmPool};
use reflow_sandbox_core::prepare::{chain, collect_garbage};
use reflow_sandbox_core::{ComponentGolden, IsolationKind, SandboxVm, Script};

use crate::shared::Shared;

enum Slot {
    Building,
    /// The pool, and the golden it restores (held: its shared lock marks
    /// the golden in use).
    Ready {
        pool: VmPool,
        _golden: Arc<ComponentGolden>,
    },
    Failed,
}

/// Component pools by (runtime pool index, component key).
#[derive(Default)]
pub(crate) struct Components {
    slots: Mutex<HashMap<(usize, String), Slot>>,
    changed: Condvar,
    /// The bridge was shut down: a pool made after that is shut at once.
    closed: AtomicBool,
    /// Held by the build under way: one at a time, so a graph of many
    /// scripts does not take every core from the messages it runs.
    building: Arc<Mutex<()>>,
}

impl Components {
    /// The pool of the component `key` over runtime pool `pool`, if its
    /// golden is ready.
    pub fn pool(&self, pool: usize, key: &str) -> Option<VmPool> {
        match self.slots.lock().get(&(pool, key.to_string())) {
            Some(Slot::Ready { pool, .. }) => Some(pool.clone()),
            _ => None,
        }
    }

    /// Every ready component pool, with the index of its runtime pool.
    pub fn indexed_pools(&self) -> Vec<(usize, VmPool)> {
        self.slots
            .lock()
            .iter()
            .filter_map(|((index, _), slot)| match slot {
                Slot::Ready { pool, .. } => Some((*index, pool.clone())),
                _ => None,
            })
            .collect()
    }

    /// Starts making `script`'s component golden over runtime pool `pool`
    /// (once per bridge and script), unless the bridge's settings turned
    /// them off or the pool's workers are host processes (which have no
    /// snapshots: each loads its script when its node first runs).
    pub fn start(shared: &Arc<Shared>, pool: usize, script: &Arc<Script>, key: &str) {
        let Some(settings) = shared.config.components.clone() else {
            return;
        };
        if shared.pools[pool].shape.isolation == IsolationKind::Process {
            return;
        }
        {
            let mut slots = shared.components.slots.lock();
            let slot = (pool, key.to_string());
            if slots.contains_key(&slot) {
                return;
            }
            slots.insert(slot, Slot::Building);
        }
        let runtime = shared.pools[pool].pool.spec().clone();
        let language = shared.pools[pool].language.to_string();
        let weak: Weak<Shared> = Arc::downgrade(shared);
        let script = script.clone();
        let slot_key = (pool, key.to_string());
        let failed_key = slot_key.clone();
        let pool_config = shared.config.pool.clone();
        let observer =
            crate::metrics::restore_observer(&shared.metrics, &shared.pools[pool], "component");
        let building = shared.components.building.clone();
        let spawned = std::thread::Builder::new()
            .name("component-golden".into())
            .spawn(move || {
                let progress = |m: &str| tracing::info!("{m}");
                let made = {
                    let _one_at_a_time = building.lock();
                    // A bridge gone or shut down while this build waited
                    // needs it no more.
                    match weak.upgrade() {
                        Some(s) if !s.components.closed.load(Ordering::SeqCst) => drop(s),
                        _ => return,
                    }
                    let started = Instant::now();
                    (
                        component::ensure(&runtime, &script, &settings, &progress),
                        started.elapsed(),
                    )
                };
                let (made, took) = made;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let result = match &made {
                    Ok(g) if g.created => "created",
                    Ok(_) => "cached",
                    Err(ComponentError::Load(_)) => "does_not_load",
                    Err(_) => "failed",
                };
                shared.metrics.component_golden(&language, result, took);
                let slot = match made {
                    Ok(golden) => {
                        let collect = collect_garbage(pool_config.restore_timeout);
                        let pool = VmPool::with_hooks(
                            golden.spec.clone(),
                            pool_config,
                            PoolHooks {
                                prepare: Some(chain(
                                    preload_script(&script, settings.load_timeout),
                                    collect,
                                )),
                                observer: Some(observer),
                            },
                        );
                        Slot::Ready {
                            pool,
                            _golden: Arc::new(golden),
                        }
                    }
                    Err(ComponentError::Load(e)) => {
                        tracing::debug!(script = %script.name, error = %e, "no component golden: the script does not load");
                        Slot::Failed
                    }
                    Err(e) => {
                        tracing::warn!(script = %script.name, error = %e, "no component golden; its nodes load the script on each new VM");
                        Slot::Failed
                    }
                };
                let components = &shared.components;
                if let Slot::Ready { pool: p, .. } = &slot {
                    if components.closed.load(Ordering::SeqCst) {
                        p.shutdown();
                    }
                }
                components.slots.lock().insert(slot_key, slot);
                components.changed.notify_all();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a component golden build");
            shared
                .components
                .slots
                .lock()
                .insert(failed_key, Slot::Failed);
            shared.components.changed.notify_all();
        }
    }

    /// Waits (at most `wait`) until no component golden is being made;
    /// returns how many are ready.
    pub fn wait_built(&self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut slots = self.slots.lock();
        while slots.values().any(|s| matches!(s, Slot::Building)) {
            if self.changed.wait_until(&mut slots, deadline).timed_out() {
                break;
            }
        }
        slots
            .values()
            .filter(|s| matches!(s, Slot::Ready { .. }))
            .count()
    }

    /// Every ready component pool.
    #[cfg(feature = "testing")]
    pub fn pools(&self) -> Vec<VmPool> {
        self.indexed_pools()
            .into_iter()
            .map(|(_, pool)| pool)
            .collect()
    }

    /// Stops every component pool's waiting VMs (and those of pools made
    /// from now on).
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for slot in self.slots.lock().values() {
            if let Slot::Ready { pool: p, .. } = slot {
                p.shutdown();
            }
        }
    }
}

/// The actor id a component pool's clones load their script under before
/// they are lent.
const PRELOAD_ACTOR: &str = "pool-preload";

/// What a component pool does to each clone before lending it: the LOAD a
/// node would send first (found loaded: the worker reseeds and maps it).
/// The first Python work after a restore touches pages the clone shares
/// with its snapshot, each first touch a fault the host serves (~20 ms of
/// a pooled clone's first answer here); done now, the node's own LOAD
/// finds them mapped.
fn preload_script(script: &Arc<Script>, timeout: Duration) -> Prepare {
    let script = script.clone();
    Arc::new(move |vm: &mut SandboxVm| {
        vm.with_worker(|c| c.load(PRELOAD_ACTOR, &script.name, &script.source, timeout))
            .map(drop)
            .map_err(|e| e.to_string())
    })
}
