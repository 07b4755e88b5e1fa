//! One graph node's sandbox: the VM it holds (taken from its runtime's
//! pool on first use, with the script loaded), one message at a time
//! through it, and what happens to the VM when something goes wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reflow_ring::Value;
#[cfg(feature = "testing")]
use reflow_sandbox_core::StopHandle;

use crate::handler::StoreHandler;
use crate::shared::{Shared, Tracked};
use crate::state::Scope;
use reflow_sandbox_core::limits::Limits;
use reflow_sandbox_core::pool::{PoolError, PooledVm};
use reflow_sandbox_core::protocol::ActorError;
use reflow_sandbox_core::worker::WorkerError;
use reflow_sandbox_core::{Fate, Script};

/// Why a message got an error instead of (all of) its outputs.
#[derive(Debug, thiserror::Error)]
pub enum ActorFailure {
    /// The pool could not lend the node a VM.
    #[error("no sandbox VM for the actor: {0}")]
    NoVm(#[from] PoolError),
    /// The actor failed to load or raised; its VM is fine.
    #[error("{0}")]
    Actor(ActorError),
    /// The message ran past the actor's timeout (given); its VM is killed.
    #[error("the actor ran past its {0:?} limit; its VM was killed and will be replaced")]
    Timeout(Duration),
    /// The VM ended; why, as far as the monitor knows.
    #[error("the actor's VM stopped while running it ({0}); it will be replaced")]
    Died(String),
    /// The message timed out (after the duration given) because the
    /// worker process had ended while its VM lived on.
    #[error("the actor's worker process ended while running it (its VM lived on); no answer came within {0:?}, and the VM was discarded")]
    WorkerGone(Duration),
    /// The guest broke the worker protocol (how); its VM is discarded.
    #[error("the sandbox broke the protocol ({0}); its VM was discarded")]
    Hostile(String),
    /// The actor went over one of its limits (which); its VM is discarded.
    #[error("the actor went past a limit ({0}); its VM was discarded")]
    Limit(String),
    /// The message is larger than the actor may get; it was not sent (a
    /// [`WorkerError::MessageTooLarge`]).
    #[error("{0}")]
    MessageTooLarge(WorkerError),
    /// The message could not be encoded for the ring; it was not sent.
    #[error("{0}; it was not sent")]
    Unsendable(WorkerError),
    /// An input message cannot be converted for the actor; nothing was
    /// sent.
    #[error("cannot pass the input on port {port:?}: {reason}")]
    Input {
        /// The input port the message arrived on.
        port: String,
        /// Why it cannot be converted.
        reason: String,
    },
    /// Any other worker failure (ring, poisoned client, VM stopped); its
    /// fate follows the worker error's.
    #[error("the sandbox failed ({0}); its VM was discarded")]
    Sandbox(WorkerError),
}

impl ActorFailure {
    fn from_worker(e: WorkerError) -> ActorFailure {
        match e {
            WorkerError::Actor(a) => ActorFailure::Actor(a),
            WorkerError::Timeout(t) => ActorFailure::Timeout(t),
            WorkerError::Died => ActorFailure::Died("why is unknown".into()),
            WorkerError::Hostile(h) => ActorFailure::Hostile(h),
            WorkerError::Limit(l) => ActorFailure::Limit(l),
            e @ WorkerError::MessageTooLarge { .. } => ActorFailure::MessageTooLarge(e),
            e @ WorkerError::Encode(_) => ActorFailure::Unsendable(e),
            other => ActorFailure::Sandbox(other),
        }
    }

    /// The VM's fate after this failure: the sandbox core's rule
    /// ([`WorkerError::fate`]) for what the worker reported, and for the
    /// node's own failures: no VM or an input that could not be converted
    /// leave it as it was; a worker gone quiet kills it.
    pub fn fate(&self) -> Fate {
        match self {
            ActorFailure::Actor(a) => a.fate(),
            ActorFailure::MessageTooLarge(e)
            | ActorFailure::Unsendable(e)
            | ActorFailure::Sandbox(e) => e.fate(),
            ActorFailure::Timeout(_)
            | ActorFailure::Died(_)
            | ActorFailure::WorkerGone(_)
            | ActorFailure::Hostile(_)
            | ActorFailure::Limit(_) => Fate::Kill,
            ActorFailure::NoVm(_) | ActorFailure::Input { .. } => Fate::Keep,
        }
    }
}

struct Slot {
    vm: Option<PooledVm>,
    last_used: Instant,
}

/// A node's sandbox (shared by its behavior's invocations, which Reflow
/// runs one at a time).
pub(crate) struct Node {
    shared: Arc<Shared>,
    script: Arc<Script>,
    /// Where its VMs come from: an index in `shared.pools`.
    pool: usize,
    /// Its script's component golden key (see [`crate::components`]).
    component: String,
    slot: Mutex<Slot>,
    /// Stops the VM the node holds (or held last) without its slot's lock,
    /// which a running message holds (for [`Tracked::kill_vm`]).
    #[cfg(feature = "testing")]
    stop: Mutex<Option<StopHandle>>,
}

impl Node {
    pub fn new(shared: Arc<Shared>, script: Arc<Script>, pool: usize) -> Arc<Node> {
        let component =
            reflow_sandbox_core::component::key(shared.pools[pool].pool.spec(), &script);
        crate::components::Components::start(&shared, pool, &script, &component);
        let node = Arc::new(Node {
            shared: shared.clone(),
            script,
            pool,
            component,
            slot: Mutex::new(Slot {
                vm: None,
                last_used: Instant::now(),
            }),
            #[cfg(feature = "testing")]
            stop: Mutex::new(None),
        });
        let tracked: std::sync::Weak<dyn Tracked> = Arc::downgrade(&node) as _;
        shared.track(tracked);
        node
    }

    /// The index of its pool in `shared.pools`.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// Runs one message as node `node_id`: `on_output` gets each output as
    /// the actor sends it; returns the outputs it returned. Blocks: call it
    /// from a blocking thread.
    pub fn invoke(
        &self,
        node_id: &str,
        inputs: Value,
        config: Value,
        on_output: impl FnMut(&str, Value),
    ) -> Result<Value, ActorFailure> {
        let _busy = self.shared.busy();
        let mut slot = self.slot.lock();
        let limits = self.shared.config.limits_for(&self.script);
        let mut result = self.run(&mut slot, node_id, inputs, config, &limits, on_output);
        if let Err(ActorFailure::Died(why)) = &mut result {
            if let Some(outcome) = slot.vm.as_mut().and_then(|vm| vm.finish()) {
                *why = outcome.to_string();
            }
        }
        if let Err(ActorFailure::Timeout(t)) = &result {
            if let Some(vm) = slot.vm.as_mut().filter(|vm| vm.is_alive()) {
                match vm.worker_gone() {
                    Ok(true) => result = Err(ActorFailure::WorkerGone(*t)),
                    Ok(false) => {}
                    Err(why) => {
                        tracing::warn!(%why, "cannot tell whether a timed-out worker lives")
                    }
                }
            }
        }
        if let Err(e) = &result {
            if !e.fate().keeps_vm() {
                // Killed now, replaced from the pool on the next message.
                self.drop_vm(&mut slot);
            }
        }
        if let Some(vm) = slot.vm.as_ref().filter(|vm| vm.misbehaved()) {
            // The message's answer stands; the guest is not trusted again.
            tracing::warn!(
                node = node_id,
                reports = vm.hostile().count(),
                recent = ?vm.hostile().recent(),
                "the guest sent hostile input to its devices; its VM was discarded"
            );
            self.drop_vm(&mut slot);
        }
        slot.last_used = Instant::now();
        result
    }

    fn run(
        &self,
        slot: &mut Slot,
        node_id: &str,
        inputs: Value,
        config: Value,
        limits: &Limits,
        mut on_output: impl FnMut(&str, Value),
    ) -> Result<Value, ActorFailure> {
        let vm = match &mut slot.vm {
            Some(vm) if vm.is_alive() => vm,
            vm => {
                *vm = None;
                let pool = self.shared.pool_for(self.pool, &self.component);
                let mut fresh = pool.acquire(self.shared.config.acquire_timeout)?;
                #[cfg(feature = "testing")]
                {
                    *self.stop.lock() = Some(fresh.stop_handle());
                }
                let script = &self.script;
                fresh
                    .with_worker(|c| c.load(node_id, &script.name, &script.source, limits.timeout))
                    .map_err(ActorFailure::from_worker)?;
                vm.insert(fresh)
            }
        };
        let scope = Scope::new(&self.shared.config.namespace, node_id);
        let mut handler = StoreHandler {
            store: &self.shared.store,
            scope: &scope,
            runtime: &self.shared.tokio,
            on_output: |port: &str, value: Value| on_output(port, value),
        };
        vm.with_worker(|c| c.invoke(node_id, inputs, config, limits, &mut handler))
            .map_err(ActorFailure::from_worker)
    }

    /// Stops and forgets the node's VM.
    fn drop_vm(&self, slot: &mut Slot) {
        slot.vm = None;
        #[cfg(feature = "testing")]
        {
            *self.stop.lock() = None;
        }
    }

    /// Whether the node holds a VM now.
    pub fn has_vm(&self) -> bool {
        self.slot.lock().vm.is_some()
    }
}

impl Tracked for Node {
    /// Gives the VM back if the node has been idle for `idle`; a node
    /// that is running a message is left alone.
    fn release_if_idle(&self, idle: Duration) {
        let Some(mut slot) = self.slot.try_lock() else {
            return;
        };
        if slot.vm.is_some() && slot.last_used.elapsed() >= idle {
            tracing::debug!(script = %self.script.name, "giving back an idle VM");
            self.drop_vm(&mut slot);
        }
    }

    /// Stops the node's VM, if it has one, as if it crashed (a message it
    /// runs gets an error; the next one gets a fresh VM). Returns whether
    /// there was one to stop.
    #[cfg(feature = "testing")]
    fn kill_vm(&self) -> bool {
        let handle = self.stop.lock().take();
        handle.map(|h| h.stop()).is_some()
    }

    /// Whether the node has a VM it could stop.
    #[cfg(feature = "testing")]
    fn has_stop_handle(&self) -> bool {
        self.stop.lock().is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reflow_sandbox_core::{ErrorKind, Fate};

    use super::*;

    #[test]
    fn a_worker_error_has_the_same_fate_as_the_failure_it_becomes() {
        let actor = |kind| {
            WorkerError::Actor(ActorError {
                kind,
                message: "m".into(),
                traceback: String::new(),
            })
        };
        let errors = [
            actor(ErrorKind::Run),
            actor(ErrorKind::Load),
            actor(ErrorKind::Protocol),
            WorkerError::Timeout(Duration::from_secs(1)),
            WorkerError::Hostile("h".into()),
            WorkerError::Encode(reflow_ring::ValueError::TooDeep),
            WorkerError::Poisoned,
            WorkerError::Died,
            WorkerError::Limit("l".into()),
            WorkerError::MessageTooLarge {
                len: 2,
                max: 1,
                what: "max_message_size",
            },
        ];
        for e in errors {
            let fate = e.fate();
            let text = e.to_string();
            assert_eq!(ActorFailure::from_worker(e).fate(), fate, "{text}");
        }
        let input = ActorFailure::Input {
            port: "in".into(),
            reason: "r".into(),
        };
        assert_eq!(input.fate(), Fate::Keep);
        assert_eq!(
            ActorFailure::WorkerGone(Duration::from_secs(1)).fate(),
            Fate::Kill
        );
    }
}
