//! An [`InvokeHandler`] that performs state requests in a [`StateStore`]
//! and hands outputs to a callback: how the host serves a running actor.

use reflow_ring::Value;

use crate::state::{Scope, StateStore};
use reflow_sandbox_core::protocol::StateRequest;
use reflow_sandbox_core::worker::InvokeHandler;

/// Serves one invocation. The worker client blocks its thread on the ring,
/// so that thread must not be one of the async runtime's workers (run it
/// under `spawn_blocking` or on a thread of its own); state operations are
/// driven on `runtime` from there.
pub struct StoreHandler<'a, F: FnMut(&str, Value)> {
    /// The store state requests are performed in.
    pub store: &'a StateStore,
    /// Whose keys the actor's requests may touch.
    pub scope: &'a Scope,
    /// The async runtime state operations are driven on.
    pub runtime: &'a tokio::runtime::Handle,
    /// Called with the port and value of each output as it is sent.
    pub on_output: F,
}

impl<F: FnMut(&str, Value)> InvokeHandler for StoreHandler<'_, F> {
    fn output(&mut self, port: &str, value: Value) {
        (self.on_output)(port, value);
    }

    fn state(&mut self, request: StateRequest) -> Result<Value, String> {
        self.runtime
            .block_on(self.store.apply(self.scope, &request))
            .map_err(|e| e.to_string())
    }
}
