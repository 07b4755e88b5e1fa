//! Sandbox events in Reflow's own tracing protocol
//! (`reflow_tracing_protocol`), beside the network's events about native
//! actors, when the network has tracing on (`NetworkConfig::tracing`;
//! `reflow-sandbox run --trace-server`). What goes there: a message's
//! failure (`ActorFailed`, with the error and its outcome), a VM lent to a
//! node or discarded (and why), and each line an actor printed
//! (`NetworkEvent`s whose `custom_attributes` say `sandbox.event`); ids
//! and timings, never payloads. Events are sent in the order they happen
//! by one task on the async runtime, at most [`RATE`] per second for the
//! whole bridge and at most [`QUEUE`] waiting (the rest are dropped, each
//! said in a debug event), so a guest cannot flood the trace server or the
//! bridge's memory.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use reflow_sandbox_core::LogLine;
use reflow_tracing_protocol::client::TracingIntegration;
use reflow_tracing_protocol::{TraceEvent, TraceEventType, TraceId};
use serde_json::Value as Json;

use reflow_vmm::rate::Bucket;

/// Trace events per second, sustained and at once.
const RATE: f64 = 2000.0;

/// Events waiting for the trace server, at most.
const QUEUE: usize = 4096;

/// Where a bridge's trace events go.
pub(crate) struct ReflowTrace {
    queue: flume::Sender<TraceEvent>,
    bucket: Mutex<Bucket>,
}

impl ReflowTrace {
    /// Starts the task on `runtime` that sends events to `integration`'s
    /// server, one after another (a task per event would let a later one
    /// overtake an earlier: a node's printed lines out of order). It ends
    /// when this is dropped.
    pub(crate) fn new(
        integration: TracingIntegration,
        runtime: tokio::runtime::Handle,
    ) -> ReflowTrace {
        let (queue, events) = flume::bounded::<TraceEvent>(QUEUE);
        runtime.spawn(async move {
            while let Ok(event) = events.recv_async().await {
                if let Err(e) = integration.client().record_event(TraceId::new(), event).await {
                    tracing::debug!(target: "reflow_sandbox::trace", error = %e, "a trace event was not sent");
                }
            }
        });
        ReflowTrace {
            queue,
            bucket: Mutex::new(Bucket::new(RATE, RATE)),
        }
    }

    /// Message `seq` of `node` failed with `outcome` (a metrics outcome).
    pub(crate) fn failed(&self, node: &str, seq: u64, outcome: &str, error: &str) {
        let mut event = TraceEvent::actor_failed(node.to_string(), error.to_string());
        event.data.custom_attributes = attributes(&[
            ("sandbox.event", "failed".into()),
            ("seq", seq.into()),
            ("outcome", outcome.into()),
        ]);
        self.send(event);
    }

    /// Something about `node`'s VM: `what` (`vm_lent`, `vm_discarded`),
    /// with `fields`.
    pub(crate) fn vm(&self, node: &str, what: &str, fields: &[(&str, Json)]) {
        let mut all = vec![("sandbox.event", Json::from(what))];
        all.extend(fields.iter().cloned());
        self.sandbox_event(node, &all);
    }

    /// A line `node`'s actor printed in message `seq` (0: its top level).
    pub(crate) fn printed(&self, node: &str, actor: &str, seq: u64, line: &LogLine) {
        self.sandbox_event(
            node,
            &[
                ("sandbox.event", "log".into()),
                ("actor", actor.into()),
                ("seq", seq.into()),
                ("stream", line.stream.name().into()),
                ("line", line.text.clone().into()),
            ],
        );
    }

    fn sandbox_event(&self, node: &str, fields: &[(&str, Json)]) {
        let mut event = TraceEvent::actor_created(node.to_string());
        event.event_type = TraceEventType::NetworkEvent;
        event.data.custom_attributes = attributes(fields);
        self.send(event);
    }

    fn send(&self, event: TraceEvent) {
        if !self.bucket.lock().take(Instant::now()) {
            tracing::debug!(target: "reflow_sandbox::trace", "over the trace event rate: one dropped");
            return;
        }
        if self.queue.try_send(event).is_err() {
            tracing::debug!(target: "reflow_sandbox::trace", "the trace server is behind: one event dropped");
        }
    }
}

fn attributes(fields: &[(&str, Json)]) -> HashMap<String, Json> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}
