//! What scripts print, as events of target `reflow_sandbox::guest`: one
//! per line, tagged with the node, its actor, `seq` (the message's number
//! in the node, 1 for its first; absent for the script's top level) and the
//! stream. Each message's lines are capped by its limits (`max_log_lines`,
//! `max_log_size`, enforced by the sandbox core whatever the guest's SDK
//! does); each node's lines are rate-limited here, so a stream of chatty messages cannot flood the
//! host's log. What is dropped is counted in metrics and said in one
//! summary event at the end of a message, itself rate-limited (a summary
//! that finds no room is carried to a later one, never lost from the
//! counts).

use std::time::Instant;

use parking_lot::Mutex;
use reflow_sandbox_core::LogLine;

use crate::metrics::NodeMetrics;
use crate::trace_events::ReflowTrace;
use reflow_vmm::rate::Bucket;

/// Lines a node may log per second, sustained.
const RATE: f64 = 1000.0;
/// Lines a node may log at once (one message's default `max_log_lines`).
const BURST: f64 = 1000.0;

/// A node's log rate, and the drops not yet told.
pub(crate) struct LogGate {
    bucket: Bucket,
    /// Lines and bytes dropped since the last summary.
    untold: (u64, u64),
}

impl LogGate {
    pub(crate) fn new() -> LogGate {
        LogGate {
            bucket: Bucket::new(RATE, BURST),
            untold: (0, 0),
        }
    }

    /// Whether one more line may be logged now.
    fn take(&mut self, now: Instant) -> bool {
        self.bucket.take(now)
    }
}

/// A node's way to log what its actor prints.
#[derive(Clone, Copy)]
pub(crate) struct GuestLogs<'a> {
    pub(crate) gate: &'a Mutex<LogGate>,
    pub(crate) metrics: &'a NodeMetrics,
    pub(crate) node: &'a str,
    pub(crate) actor: &'a str,
    /// Reflow's tracing, when the network has it on: each logged line goes
    /// there too.
    pub(crate) trace: Option<&'a ReflowTrace>,
}

impl GuestLogs<'_> {
    /// A line message `message` printed (0: the script's top level, while
    /// it loaded).
    pub(crate) fn line(&self, message: u64, line: &LogLine) {
        if !self.gate.lock().take(Instant::now()) {
            self.dropped(1, line.text.len() as u64 + 1);
            return;
        }
        self.metrics.logged();
        if let Some(trace) = self.trace {
            trace.printed(self.node, self.actor, message, line);
        }
        let (node, actor, stream) = (self.node, self.actor, line.stream.name());
        let text = &line.text;
        match (message, line.cut) {
            (0, 0) => {
                tracing::info!(target: "reflow_sandbox::guest", node, actor, stream, "{text}")
            }
            (0, cut) => {
                tracing::info!(target: "reflow_sandbox::guest", node, actor, stream, cut, "{text}")
            }
            (seq, 0) => {
                tracing::info!(target: "reflow_sandbox::guest", node, actor, seq, stream, "{text}")
            }
            (seq, cut) => {
                tracing::info!(target: "reflow_sandbox::guest", node, actor, seq, stream, cut, "{text}")
            }
        }
    }

    /// Lines (and their bytes) dropped: counted now, told at a message's
    /// end (see [`GuestLogs::end`]).
    pub(crate) fn dropped(&self, lines: u64, bytes: u64) {
        self.metrics.log_dropped(lines, bytes);
        let mut gate = self.gate.lock();
        gate.untold.0 = gate.untold.0.saturating_add(lines);
        gate.untold.1 = gate.untold.1.saturating_add(bytes);
    }

    /// Message `message` ended: says what was dropped since the last
    /// summary, if anything was and the rate allows.
    pub(crate) fn end(&self, message: u64) {
        let mut gate = self.gate.lock();
        if gate.untold == (0, 0) || !gate.take(Instant::now()) {
            return;
        }
        let (lines, bytes) = std::mem::take(&mut gate.untold);
        drop(gate);
        tracing::info!(
            target: "reflow_sandbox::guest",
            node = self.node,
            actor = self.actor,
            seq = message,
            dropped_lines = lines,
            dropped_bytes = bytes,
            "printed output dropped (over max_log_lines or max_log_size, over the node's {RATE} lines/s, or printed outside a message)"
        );
    }
}
