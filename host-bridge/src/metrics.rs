//! The bridge's metrics in the Prometheus text format: messages by
//! outcome and their latency per actor, outputs and state operations, VM
//! kills by reason, restores and their latency, pool waits, and (read when
//! scraped) VMs by state. Labels are bounded: a runtime, a VM shape, an
//! actor (its script's name), an outcome from a fixed list; never a
//! message, a node id or a VM.
//!
//! Per node, the counters it bumps on every message are looked up once
//! ([`NodeMetrics`]), so a message costs a few atomic adds.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::node::ActorFailure;

/// Why the metrics could not be made or written (a bug: the names and
/// labels are fixed).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Prometheus refused a metric or could not encode.
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
}

/// Every outcome a message can have (the `outcome` label).
pub const OUTCOMES: &[&str] = &[
    "ok",
    "actor_error",
    "load_error",
    "timeout",
    "died",
    "worker_gone",
    "hostile",
    "limit",
    "too_large",
    "unsendable",
    "bad_input",
    "no_vm",
    "sandbox",
];

/// The `outcome` label of a failure.
pub fn outcome(failure: &ActorFailure) -> &'static str {
    use reflow_sandbox_core::ErrorKind;
    match failure {
        ActorFailure::Actor(a) if a.kind == ErrorKind::Load => "load_error",
        ActorFailure::Actor(_) => "actor_error",
        ActorFailure::Timeout(..) => "timeout",
        ActorFailure::Died(..) => "died",
        ActorFailure::WorkerGone(_) => "worker_gone",
        ActorFailure::Hostile(..) => "hostile",
        ActorFailure::Limit(..) => "limit",
        ActorFailure::MessageTooLarge(_) => "too_large",
        ActorFailure::Unsendable(_) => "unsendable",
        ActorFailure::Input { .. } => "bad_input",
        ActorFailure::NoVm(_) => "no_vm",
        ActorFailure::Sandbox(..) => "sandbox",
    }
}

/// The `shape` label of a VM shape: `256MiB-1vcpu`.
pub fn shape_label(shape: &reflow_sandbox_core::VmShape) -> String {
    format!("{}MiB-{}vcpu", shape.mem_mib, shape.vcpus)
}

/// What hears the restores of a pool (`runtime` or `component`) over
/// `of`, counting them in `metrics`.
pub(crate) fn restore_observer(
    metrics: &std::sync::Arc<Metrics>,
    of: &crate::shared::ShapedPool,
    pool: &'static str,
) -> reflow_sandbox_core::pool::RestoreObserver {
    observer(metrics.clone(), of.language, of.shape, pool)
}

/// As [`restore_observer`], for a pool not made yet.
pub(crate) fn observer(
    metrics: std::sync::Arc<Metrics>,
    language: reflow_sandbox_core::Language,
    shape: reflow_sandbox_core::VmShape,
    pool: &'static str,
) -> reflow_sandbox_core::pool::RestoreObserver {
    let (runtime, shape) = (language.to_string(), shape_label(&shape));
    std::sync::Arc::new(move |took, ok| {
        metrics.restored(&runtime, &shape, pool, took, ok);
        tracing::debug!(
            target: "reflow_sandbox::vm",
            runtime,
            shape,
            pool,
            ok,
            took_us = took.as_micros() as u64,
            "VM restored"
        );
    })
}

/// The resident memory of process `pid` (0 once it is gone).
pub(crate) fn resident_bytes(pid: u32) -> u64 {
    let pages = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// The throttled time cgroup `dir`'s `cpu.stat` reports, in seconds (0
/// when it cannot be read).
pub(crate) fn throttled_seconds(dir: &std::path::Path) -> f64 {
    std::fs::read_to_string(dir.join("cpu.stat"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("throttled_usec "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0.0, |us| us / 1e6)
}

/// Latency buckets, seconds: 50 us to 60 s.
const LATENCY: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A bridge's metrics.
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    message_seconds: HistogramVec,
    outputs: IntCounterVec,
    state_ops: IntCounterVec,
    vm_kills: IntCounterVec,
    pool_wait: HistogramVec,
    restores: IntCounterVec,
    restore_seconds: HistogramVec,
    /// Set when scraped.
    pub(crate) vms: IntGaugeVec,
    /// Set when scraped.
    pub(crate) node_vms: IntGaugeVec,
    /// Set when scraped.
    pub(crate) busy: IntGauge,
    /// Set when scraped.
    pub(crate) script_versions: IntGaugeVec,
    /// Set when scraped.
    pub(crate) vm_memory: IntGaugeVec,
    /// Set when scraped.
    pub(crate) vm_throttled: prometheus::GaugeVec,
    script_updates: IntCounterVec,
    guest_log_lines: IntCounterVec,
    guest_log_dropped_bytes: IntCounterVec,
    goldens: IntCounterVec,
    golden_seconds: HistogramVec,
}

/// `c`, registered in `r`.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> prometheus::Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(r, HistogramVec::new(opts, labels)?)
}

/// Component golden buckets, seconds: 10 ms (found in the cache) to 5 min.
const GOLDEN: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

impl Metrics {
    /// The metrics, all zero.
    pub fn new() -> Result<Metrics, MetricsError> {
        let r = Registry::new();
        Ok(Metrics {
            vms: gauge(
                &r,
                "reflow_sandbox_vms",
                "VMs of each pool: ready (restored, waiting held) and live (ready, lent and being restored)",
                &["runtime", "shape", "pool", "state"],
            )?,
            node_vms: gauge(
                &r,
                "reflow_sandbox_node_vms",
                "VMs lent to graph nodes: busy (running messages), idle (running, waiting for one), held (vCPUs stopped until the next message)",
                &["state"],
            )?,
            busy: registered(
                &r,
                IntGauge::new(
                    "reflow_sandbox_streams_busy",
                    "Nodes streaming messages through their VM right now",
                )?,
            )?,
            script_versions: gauge(
                &r,
                "reflow_sandbox_script_versions",
                "Graph nodes by the script version they serve (its content hash)",
                &["actor", "version"],
            )?,
            vm_memory: gauge(
                &r,
                "reflow_sandbox_node_vm_resident_bytes",
                "Host memory resident in the monitor processes of VMs lent to nodes (guest memory touched included): their total, and the largest",
                &["runtime", "stat"],
            )?,
            vm_throttled: registered(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "reflow_sandbox_node_vm_cpu_throttled_seconds",
                        "Time the CPU-limited VMs lent to nodes were throttled by their cgroup quota, summed over those VMs (it drops when one is replaced)",
                    ),
                    &["runtime"],
                )?,
            )?,
            golden_seconds: histogram(
                &r,
                "reflow_sandbox_component_golden_duration_seconds",
                "Making (or finding in the cache) a script's component golden snapshot",
                &["runtime", "result"],
                GOLDEN,
            )?,
            goldens: counter(
                &r,
                "reflow_sandbox_component_goldens_total",
                "Component golden snapshots a script's first node asked for, by result: created, cached, does_not_load (the script), failed",
                &["runtime", "result"],
            )?,
            script_updates: counter(
                &r,
                "reflow_sandbox_script_updates_total",
                "Nodes switched to a new script version (applied) or refusing one that does not load (rejected)",
                &["actor", "result"],
            )?,
            guest_log_lines: counter(
                &r,
                "reflow_sandbox_guest_log_lines_total",
                "Lines actors printed, by result: logged, or dropped (over a message's max_log_lines/max_log_size, over the node's rate, or printed outside a message)",
                &["runtime", "actor", "result"],
            )?,
            guest_log_dropped_bytes: counter(
                &r,
                "reflow_sandbox_guest_log_dropped_bytes_total",
                "Bytes of printed output dropped (see reflow_sandbox_guest_log_lines_total)",
                &["runtime", "actor"],
            )?,
            messages: counter(
                &r,
                "reflow_sandbox_messages_total",
                "Messages answered, by actor and outcome",
                &["runtime", "actor", "outcome"],
            )?,
            message_seconds: histogram(
                &r,
                "reflow_sandbox_message_duration_seconds",
                "From a message taken by its node to its answer (done or failed), queueing in the node's window included",
                &["runtime", "actor"],
                LATENCY,
            )?,
            outputs: counter(
                &r,
                "reflow_sandbox_outputs_total",
                "Outputs actors sent",
                &["runtime", "actor"],
            )?,
            state_ops: counter(
                &r,
                "reflow_sandbox_state_operations_total",
                "State operations actors made",
                &["runtime", "actor"],
            )?,
            vm_kills: counter(
                &r,
                "reflow_sandbox_vm_kills_total",
                "VMs stopped and discarded because of what happened in them, by reason (an outcome, or hostile_devices)",
                &["runtime", "reason"],
            )?,
            pool_wait: histogram(
                &r,
                "reflow_sandbox_pool_wait_seconds",
                "How long a node waited for a VM from its pool (a restore, when none was ready)",
                &["runtime"],
                LATENCY,
            )?,
            restores: counter(
                &r,
                "reflow_sandbox_restores_total",
                "Clones restored from golden snapshots, by result",
                &["runtime", "shape", "pool", "result"],
            )?,
            restore_seconds: histogram(
                &r,
                "reflow_sandbox_restore_duration_seconds",
                "From a restore's start to its VM ready (its script loaded, for a component pool)",
                &["runtime", "shape", "pool"],
                LATENCY,
            )?,
            registry: r,
        })
    }

    /// The handles a node of `actor` on `runtime` bumps per message
    /// (none when `on` is false: the node counts nothing).
    pub fn node(&self, runtime: &str, actor: &str, on: bool) -> NodeMetrics {
        NodeMetrics(on.then(|| {
            Handles {
                runtime: runtime.to_string(),
                actor: actor.to_string(),
                ok: self.messages.with_label_values(&[runtime, actor, "ok"]),
                seconds: self.message_seconds.with_label_values(&[runtime, actor]),
                outputs: self.outputs.with_label_values(&[runtime, actor]),
                state_ops: self.state_ops.with_label_values(&[runtime, actor]),
                logged: self
                    .guest_log_lines
                    .with_label_values(&[runtime, actor, "logged"]),
                log_dropped: self
                    .guest_log_lines
                    .with_label_values(&[runtime, actor, "dropped"]),
                log_dropped_bytes: self
                    .guest_log_dropped_bytes
                    .with_label_values(&[runtime, actor]),
                messages: self.messages.clone(),
                vm_kills: self.vm_kills.clone(),
                pool_wait: self.pool_wait.with_label_values(&[runtime]),
            }
        }))
    }

    /// Counts a restore of pool `pool` (`runtime` or `component`) of
    /// `runtime` and `shape`.
    pub(crate) fn restored(
        &self,
        runtime: &str,
        shape: &str,
        pool: &str,
        took: Duration,
        ok: bool,
    ) {
        let result = if ok { "ok" } else { "failed" };
        self.restores
            .with_label_values(&[runtime, shape, pool, result])
            .inc();
        if ok {
            self.restore_seconds
                .with_label_values(&[runtime, shape, pool])
                .observe(took.as_secs_f64());
        }
    }

    /// A component golden of `runtime` made (`result`) in `took`.
    pub(crate) fn component_golden(&self, runtime: &str, result: &str, took: Duration) {
        self.goldens.with_label_values(&[runtime, result]).inc();
        self.golden_seconds
            .with_label_values(&[runtime, result])
            .observe(took.as_secs_f64());
    }

    /// A node of `actor` switched to a new version (`applied`) or refused
    /// one (`rejected`).
    pub(crate) fn script_update(&self, actor: &str, result: &str) {
        self.script_updates
            .with_label_values(&[actor, result])
            .inc();
    }

    /// Every metric in the Prometheus text format (the gauges as last
    /// set: [`crate::Bridge::metrics`] sets them first).
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// One node's metric handles (`None`: it counts nothing). Public so the
/// benches can time a message's share of the counting.
pub struct NodeMetrics(Option<Handles>);

struct Handles {
    runtime: String,
    actor: String,
    ok: IntCounter,
    seconds: Histogram,
    outputs: IntCounter,
    state_ops: IntCounter,
    logged: IntCounter,
    log_dropped: IntCounter,
    log_dropped_bytes: IntCounter,
    messages: IntCounterVec,
    vm_kills: IntCounterVec,
    pool_wait: Histogram,
}

impl NodeMetrics {
    /// Whether the node counts.
    pub fn on(&self) -> bool {
        self.0.is_some()
    }

    /// A message answered after `took`: done, or `failed`.
    pub fn answered(&self, took: Duration, failed: Option<&ActorFailure>) {
        let Some(h) = &self.0 else { return };
        h.seconds.observe(took.as_secs_f64());
        match failed {
            None => h.ok.inc(),
            Some(f) => h
                .messages
                .with_label_values(&[&h.runtime, &h.actor, outcome(f)])
                .inc(),
        }
    }

    /// `n` outputs sent or returned.
    pub fn outputs(&self, n: u64) {
        if let Some(h) = &self.0 {
            h.outputs.inc_by(n);
        }
    }

    /// A state operation.
    pub fn state_op(&self) {
        if let Some(h) = &self.0 {
            h.state_ops.inc();
        }
    }

    /// A line an actor printed, logged.
    pub fn logged(&self) {
        if let Some(h) = &self.0 {
            h.logged.inc();
        }
    }

    /// Lines (and their bytes) an actor printed, dropped.
    pub fn log_dropped(&self, lines: u64, bytes: u64) {
        if let Some(h) = &self.0 {
            h.log_dropped.inc_by(lines);
            h.log_dropped_bytes.inc_by(bytes);
        }
    }

    /// A wait for a VM from the pool.
    pub fn waited(&self, took: Duration) {
        if let Some(h) = &self.0 {
            h.pool_wait.observe(took.as_secs_f64());
        }
    }

    /// A VM discarded for `reason`.
    pub fn killed(&self, reason: &str) {
        if let Some(h) = &self.0 {
            h.vm_kills.with_label_values(&[&h.runtime, reason]).inc();
        }
    }
}
