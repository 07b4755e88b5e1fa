//! Preparations a pool runs on each clone before it waits (see
//! [`crate::VmPool::with_prepare`]), and how to chain them.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::Prepare;
use crate::sandbox::SandboxVm;

/// The actor id a pool's garbage collection runs under (what the worker's
/// log records of it would name).
pub const COLLECT_ACTOR: &str = "reflow:collect";

/// Has each clone's worker collect its garbage before the clone waits in
/// its pool, within `timeout` ([`crate::WorkerClient::collect`]): the first
/// full collection in a clone copies most of the interpreter's heap out of
/// the golden's pages, and a stream that met it would stall for it.
pub fn collect_garbage(timeout: Duration) -> Prepare {
    Arc::new(move |vm: &mut SandboxVm| {
        let collected = vm
            .with_worker(|c| c.collect(COLLECT_ACTOR, timeout))
            .map_err(|e| format!("collecting the worker's garbage: {e}"))?;
        tracing::debug!(
            ms = collected.ms,
            heap = collected.heap,
            "a pooled clone collected its garbage"
        );
        Ok(())
    })
}

/// `first`, then `second` if `first` succeeded.
pub fn chain(first: Prepare, second: Prepare) -> Prepare {
    Arc::new(move |vm: &mut SandboxVm| {
        first(vm)?;
        second(vm)
    })
}
