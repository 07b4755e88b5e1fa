//! The one table every bench figure is held to: per metric, the seed's
//! figure (the design's performance table, microVM column) where it has
//! one, our own goal for the median and for the p99 where the figure has
//! one, and what would move the figure. A bench records a figure under a
//! `(bench, metric)` row of this table; a figure without a row is an error
//! in the report, and a row without a figure is reported as not measured.

use crate::report::Better;

/// One row: a metric, its unit and its targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    pub bench: &'static str,
    pub metric: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// The seed's figure, where its table has this metric.
    pub seed: Option<f64>,
    /// Our goal for the median (or for the figure, when it is one number).
    pub goal: f64,
    /// Our goal for the p99, for figures that have one.
    pub goal_p99: Option<f64>,
    /// What would move the figure towards the goal.
    pub lever: &'static str,
}

use Better::{Higher, Lower};

#[allow(clippy::too_many_arguments)]
const fn row(
    bench: &'static str,
    metric: &'static str,
    unit: &'static str,
    better: Better,
    seed: Option<f64>,
    goal: f64,
    goal_p99: Option<f64>,
    lever: &'static str,
) -> Goal {
    Goal {
        bench,
        metric,
        unit,
        better,
        seed,
        goal,
        goal_p99,
        lever,
    }
}

const EMULATED: &str = "guest kernel work (wake-ups, page faults, timer ticks) is emulated on \
                        kvm_pvm hosts; a bare-metal KVM host";
const RESTORE: &str = "fewer guest pages touched on restore (smaller golden working set), \
                       prefaulting the snapshot's hot pages, a bare-metal host";
const WAKE: &str = "a host-to-guest wake-up that costs no emulated guest kernel work, or a \
                    longer guest spin before it sleeps";
const STREAM: &str = "answer records batched per window and a cheaper value codec in the \
                      guest worker (its CPU is the bottleneck: ~24 us per message in Python)";
const REMOTE: &str = "a host-to-guest wake-up: a lone message reaches a worker that has \
                      finished spinning and sleeps (up to 10 ms; each wake-up is emulated guest \
                      kernel work on kvm_pvm hosts); then several calls per frame, a binary codec";
const FORK: &str = "a pre-started interpreter (preloads imported) forked per worker, \
                    reseeding its randomness";
const PROCESS_WAKE: &str = "a wake-up from the host once the worker has finished spinning \
                            (a futex on the ring); the worker sleeps up to 10 ms between polls";
const SEED_RTT: Option<f64> = Some(5.0);

/// Every metric the benches record, and those the issue asks for that no
/// bench records yet (shown as not measured).
#[rustfmt::skip]
pub const TARGETS: &[Goal] = &[
    // boot.rs
    row("boot", "cold boot to agent ready (host time)", "ms", Lower, None, 1000.0, None, EMULATED),
    row("boot", "cold boot to agent ready, Python image", "ms", Lower, None, 2000.0, Some(4000.0),
        EMULATED),
    row("boot", "cold boot to agent ready, Node image", "ms", Lower, None, 2000.0, Some(4000.0),
        EMULATED),
    // restore.rs
    row("restore", "restore from golden snapshot to agent ready", "ms", Lower, None, 50.0,
        None, RESTORE),
    row("restore", "sandbox clone restore to agent ready, first in a process (digest check)",
        "ms", Lower, None, 200.0, None,
        "a cheaper golden digest check (hash only what the clone maps)"),
    row("restore", "sandbox clone restore to agent ready, monitor process", "ms", Lower, None,
        50.0, Some(100.0), RESTORE),
    row("restore", "sandbox clone restore to agent ready, monitor thread", "ms", Lower, None,
        50.0, Some(100.0), RESTORE),
    row("restore", "restore to agent ready, cold page cache", "ms", Lower, None, 200.0,
        Some(400.0), "fewer snapshot pages read on restore (a smaller golden working set), \
        read ahead in one sequential pass"),
    // component.rs
    row("component", "restore to ready, runtime golden", "ms", Lower, None, 50.0, Some(100.0),
        RESTORE),
    row("component", "restore to ready, component golden", "ms", Lower, None, 50.0, Some(100.0),
        RESTORE),
    row("component", "restore to first answer, runtime golden + load", "ms", Lower, None, 100.0,
        Some(200.0), "component goldens (the script loaded in the snapshot) for more scripts"),
    row("component", "restore to first answer, component golden", "ms", Lower, None, 60.0,
        Some(120.0), RESTORE),
    row("component", "pool acquire to first answer, runtime golden + load", "ms", Lower,
        Some(100.0), 50.0, Some(100.0),
        "a component golden per script, so a pool lends clones with the script loaded"),
    row("component", "pool acquire to first answer, component golden", "ms", Lower, Some(100.0),
        5.0, Some(20.0),
        "a held clone's first wake-up: its vCPU leaves its halt and the worker its sleep; \
         wake it on lend, before the first message"),
    row("component", "restore to ready, golden as made", "ms", Lower, None, 50.0, Some(100.0),
        RESTORE),
    row("component", "restore to ready, golden made to look 3 hours old", "ms", Lower, None,
        50.0, Some(100.0), RESTORE),
    // ring.rs
    row("ring", "host_threads: 64 B round trip", "us", Lower, None, 5.0, Some(50.0),
        "the floor of the ring code itself; pinned threads"),
    row("ring", "host_threads: 4 KiB round trip", "us", Lower, None, 10.0, Some(100.0),
        "the floor of the ring code itself; pinned threads"),
    row("ring", "host_threads: 1 MiB round trip", "us", Lower, None, 500.0, Some(2000.0),
        "one copy fewer per direction (decode in place)"),
    row("ring", "host_threads: small messages echoed, pipelined", "msg/s", Higher,
        Some(10_000.0), 1_000_000.0, None, "batched position updates"),
    row("ring", "host_threads: 64 MiB payload, each way", "GB/s", Higher, None, 5.0, None,
        "one copy fewer per direction (decode in place)"),
    row("ring", "guest_echo: 64 B round trip", "us", Lower, None, 20.0, Some(200.0), WAKE),
    row("ring", "guest_echo: 4 KiB round trip", "us", Lower, None, 30.0, Some(300.0), WAKE),
    row("ring", "guest_echo: 1 MiB round trip", "us", Lower, None, 500.0, Some(2000.0),
        "one copy fewer per direction (decode in place)"),
    row("ring", "guest_echo: small messages echoed, pipelined", "msg/s", Higher, Some(10_000.0),
        500_000.0, None, "batched position updates"),
    row("ring", "guest_echo: 64 MiB payload, each way", "GB/s", Higher, None, 5.0, None,
        "one copy fewer per direction (decode in place)"),
    row("ring", "guest_echo: 64 B round trip after 20 ms idle", "us", Lower, None, 100.0,
        Some(1000.0), WAKE),
    row("ring", "host consumer parked on the guest's doorbell: 64 B round trip", "us", Lower,
        None, 50.0, Some(500.0),
        "the doorbell's eventfd wake-up is host work; the guest's MMIO exit is emulated here"),
    row("ring", "vsock / ring, 64 B round trip p50 (same run)", "x", Higher, None, 10.0, None,
        "nothing: the ratio shows what the ring saves over the control channel"),
    row("ring", "vsock / ring after 20 ms idle, 64 B round trip p50", "x", Higher, None, 2.0,
        None, WAKE),
    // python.rs and javascript.rs (actor_bench.rs)
    row("python", "restore to first answer (fresh clone, identity actor)", "ms", Lower, None,
        100.0, None, RESTORE),
    row("python", "restore to agent ready (python worker golden)", "ms", Lower, None, 50.0,
        None, RESTORE),
    row("python", "pre-warmed instantiation: load + first answer on a ready clone", "ms", Lower,
        Some(100.0), 20.0, None, "component goldens: the script loaded before the snapshot"),
    row("python", "identity round trip 64 B", "ms", Lower, SEED_RTT, 0.020, Some(0.200), WAKE),
    row("python", "identity round trip 4096 B", "ms", Lower, SEED_RTT, 0.020, Some(0.200),
        WAKE),
    row("python", "sequential 64 B invocations (unbatched)", "msg/s", Higher, Some(10_000.0),
        50_000.0, None, "a cheaper value codec and fewer records per message in the worker"),
    row("python", "async identity round trip 64 B / sync (alternating blocks)", "x", Lower,
        None, 1.1, None, "one event loop run per batch of messages (done)"),
    row("python", "64 MiB through a Python actor", "GB/s", Higher, None, 5.0, None,
        "find where the round trip goes beyond the ring's own 64 MiB echo (host encode, the \
         worker's output write, host decode, guest faults on ring pages); one copy fewer"),
    row("python", "process worker: start to ready", "ms", Lower, None, 100.0, None, FORK),
    row("python", "process worker: load + first answer on a ready worker", "ms", Lower,
        Some(100.0), 5.0, None, FORK),
    row("python", "process worker: identity round trip 64 B", "ms", Lower, SEED_RTT, 0.020,
        Some(0.200), PROCESS_WAKE),
    row("python", "process worker: identity round trip 4096 B", "ms", Lower, SEED_RTT, 0.020,
        Some(0.200), PROCESS_WAKE),
    row("python", "process / VM identity round trip 64 B p50 (same run)", "x", Lower, None, 1.0,
        None, "nothing expected: the same worker and ring; the process side pays no emulated \
        guest kernel work on its wake-ups"),
    row("python", "process worker: sequential 64 B invocations (unbatched)", "msg/s", Higher,
        Some(10_000.0), 50_000.0, None, "a cheaper value codec and fewer records per message in \
        the worker"),
    row("javascript", "restore to first answer (fresh clone, identity actor)", "ms", Lower,
        None, 100.0, None, RESTORE),
    row("javascript", "restore to agent ready (javascript worker golden)", "ms", Lower, None,
        50.0, None, RESTORE),
    row("javascript", "pre-warmed instantiation: load + first answer on a ready clone", "ms",
        Lower, Some(100.0), 20.0, None,
        "component goldens: the script loaded before the snapshot; less V8 compilation on load"),
    row("javascript", "identity round trip 64 B", "ms", Lower, SEED_RTT, 0.020, Some(0.200),
        "fewer allocations per message in the worker (Node 18 had a 5 ms p99 here, Node 24 \
         0.1-0.3 ms)"),
    row("javascript", "identity round trip 4096 B", "ms", Lower, SEED_RTT, 0.020, Some(0.200),
        "fewer allocations per message in the worker (Node 18 had a 5 ms p99 here, Node 24 \
         0.1-0.3 ms)"),
    row("javascript", "sequential 64 B invocations (unbatched)", "msg/s", Higher,
        Some(10_000.0), 50_000.0, None,
        "fewer allocations per message in the worker (guest page faults are emulated)"),
    row("javascript", "async identity round trip 64 B / sync (alternating blocks)", "x", Lower, None,
        1.1, None, "nothing: async actors cost what sync ones do"),
    row("javascript", "64 MiB through a JavaScript actor", "GB/s", Higher, None, 5.0, None,
        "find where the round trip goes beyond the ring's own 64 MiB echo (host encode, the \
         worker's output write, host decode, guest faults on ring pages); one copy fewer"),
    row("javascript", "process worker: start to ready", "ms", Lower, None, 100.0, None, FORK),
    row("javascript", "process worker: load + first answer on a ready worker", "ms", Lower,
        Some(100.0), 5.0, None, FORK),
    row("javascript", "process worker: identity round trip 64 B", "ms", Lower, SEED_RTT, 0.020,
        Some(0.200), PROCESS_WAKE),
    row("javascript", "process worker: identity round trip 4096 B", "ms", Lower, SEED_RTT, 0.020,
        Some(0.200), PROCESS_WAKE),
    row("javascript", "process / VM identity round trip 64 B p50 (same run)", "x", Lower, None, 1.0,
        None, "nothing expected: the same worker and ring; the process side pays no emulated \
        guest kernel work on its wake-ups"),
    row("javascript", "process worker: sequential 64 B invocations (unbatched)", "msg/s", Higher,
        Some(10_000.0), 50_000.0, None, "a cheaper value codec and fewer records per message in \
        the worker"),
    // compute.rs
    row("compute", "guest / host compute, same interpreter, python", "x", Lower, None, 1.05,
        None, "fewer guest timer ticks (a tickless guest kernel while a vCPU runs user code); \
        a bare-metal host, where ticks are not emulated"),
    row("compute", "guest / host compute, same interpreter, javascript", "x", Lower, None, 1.05,
        None, "fewer guest timer ticks (a tickless guest kernel while a vCPU runs user code); \
        a bare-metal host, where ticks are not emulated"),
    row("compute", "process / host compute, same interpreter, python", "x", Lower, None, 1.05,
        None, "nothing expected: the same interpreter on the same kernel; a gap is the jail's \
        cost (seccomp filter, cgroups)"),
    row("compute", "process / host compute, same interpreter, javascript", "x", Lower, None,
        1.05, None, "nothing expected: the same interpreter on the same kernel; a gap is the \
        jail's cost (seccomp filter, cgroups)"),
    // state.rs
    row("state", "embedded get, host side", "us", Lower, Some(2000.0), 10.0, None,
        "nothing needed"),
    row("state", "embedded set, host side", "us", Lower, Some(2000.0), 10.0, None,
        "nothing needed"),
    row("state", "redis get, host side", "us", Lower, Some(2000.0), 100.0, None,
        "a pipelined connection per bridge; Redis is a network round trip"),
    row("state", "redis set, host side", "us", Lower, Some(2000.0), 100.0, None,
        "a pipelined connection per bridge; Redis is a network round trip"),
    // graph.rs
    row("graph", "one message native -> Python -> native", "ms", Lower, SEED_RTT, 0.5,
        Some(2.0), WAKE),
    row("graph", "one message native -> JavaScript -> native", "ms", Lower, SEED_RTT, 0.5,
        Some(2.0), WAKE),
    row("graph", "Python node / native node, p50 (same run)", "x", Lower, None, 3.0, None,
        WAKE),
    row("graph", "JavaScript node / native node, p50 (same run)", "x", Lower, None, 3.0, None,
        WAKE),
    row("graph", "state get from guest code, embedded", "ms", Lower, Some(2.0), 0.1, None,
        "a state reply the worker spins for instead of sleeping"),
    row("graph", "state set from guest code, embedded", "ms", Lower, Some(2.0), 0.1, None,
        "a state reply the worker spins for instead of sleeping"),
    row("graph", "state get from guest code, redis", "ms", Lower, Some(2.0), 0.1, None,
        "a pipelined Redis connection; the worker spinning for the reply"),
    row("graph", "state set from guest code, redis", "ms", Lower, Some(2.0), 0.1, None,
        "a pipelined Redis connection; the worker spinning for the reply"),
    // remote.rs
    row("remote", "one message native -> Python (local) -> native", "ms", Lower, SEED_RTT, 0.5,
        Some(2.0), EMULATED),
    row("remote", "one message native -> Python (host over loopback) -> native", "ms", Lower,
        SEED_RTT, 1.0, Some(3.0), REMOTE),
    row("remote", "one message, host / local, p50 (same run)", "x", Lower, None, 2.0, None,
        REMOTE),
    row("remote", "stream of 2000 through a Python node (local)", "msg/s", Higher,
        Some(10_000.0), 20_000.0, None, STREAM),
    row("remote", "stream of 2000 through a Python node (host over loopback)", "msg/s", Higher,
        Some(10_000.0), 10_000.0, None, REMOTE),
    row("remote", "stream, host / local, msg/s (same run)", "x", Higher, None, 0.5, None, REMOTE),
    // stream.rs
    row("stream", "Range -> Python identity -> sink", "msg/s", Higher, Some(10_000.0), 50_000.0,
        None, STREAM),
    row("stream", "Range -> JavaScript identity -> sink", "msg/s", Higher, Some(10_000.0),
        50_000.0, None, STREAM),
    row("stream", "Range -> native identity -> sink", "msg/s", Higher, None, 100_000.0, None,
        "the native floor of the graph (reflow_network's own channels)"),
    row("stream", "Python node / native node, msg/s (same run)", "x", Higher, None, 0.5, None,
        STREAM),
    row("stream", "JavaScript node / native node, msg/s (same run)", "x", Higher, None, 0.5,
        None, STREAM),
    row("stream", "Python identity at 10 msg/s open loop", "ms", Lower, None, 1.0, Some(2.0),
        WAKE),
    row("stream", "Python identity at 100 msg/s open loop", "ms", Lower, None, 1.0, Some(2.0),
        WAKE),
    row("stream", "Python identity at 5000 msg/s open loop", "ms", Lower, None, 1.0, Some(2.0),
        WAKE),
    row("stream", "JavaScript identity at 10 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), WAKE),
    row("stream", "JavaScript identity at 100 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), WAKE),
    row("stream", "JavaScript identity at 5000 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), "the worker's wake-ups between messages: slower on Node 24 than on Node 18, not \
         understood yet"),
    row("stream", "native identity at 10 msg/s open loop", "ms", Lower, None, 1.0, Some(2.0),
        "the native floor"),
    row("stream", "native identity at 100 msg/s open loop", "ms", Lower, None, 1.0, Some(2.0),
        "the native floor"),
    row("stream", "native identity at 5000 msg/s open loop", "ms", Lower, None, 1.0, Some(2.0),
        "the native floor"),
    row("stream", "Range -> Python process identity -> sink", "msg/s", Higher, Some(10_000.0),
        50_000.0, None, STREAM),
    row("stream", "Python process node / native node, msg/s (same run)", "x", Higher, None, 0.5,
        None, STREAM),
    row("stream", "Python process identity at 10 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), PROCESS_WAKE),
    row("stream", "Python process identity at 100 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), PROCESS_WAKE),
    row("stream", "Python process identity at 5000 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), PROCESS_WAKE),
    row("stream", "Range -> JavaScript process identity -> sink", "msg/s", Higher, Some(10_000.0),
        50_000.0, None, STREAM),
    row("stream", "JavaScript process node / native node, msg/s (same run)", "x", Higher, None, 0.5,
        None, STREAM),
    row("stream", "JavaScript process identity at 10 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), PROCESS_WAKE),
    row("stream", "JavaScript process identity at 100 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), PROCESS_WAKE),
    row("stream", "JavaScript process identity at 5000 msg/s open loop", "ms", Lower, None, 1.0,
        Some(2.0), PROCESS_WAKE),
    row("stream", "Range -> Python identity -> sink, node metrics and tracing off", "msg/s", Higher, None,
        50_000.0, None, STREAM),
    row("stream", "Python msg/s, node metrics and tracing on / off (same run)", "x", Higher, None,
        0.97, None, "fewer metric updates and events per message (each node looks its handles up once already)"),
    row("stream", "Python msg/s, metrics and every per-message event / off (same run)", "x",
        Higher, None, 0.9, None, "cheaper formatting of the per-message debug events"),
    row("stream", "per-message events (span and answered, JSON) / Python stream time per message (same run)",
        "x", Lower, None, 0.03, None, "cheaper formatting of the per-message debug events"),
    row("stream", "node metrics per message, ns", "ns", Lower, None, 500.0, None,
        "fewer metric updates per message"),
    row("stream", "node metrics per message / Python stream time per message (same run)", "x",
        Lower, None, 0.03, None, "fewer metric updates per message"),
    // idle.rs
    row("idle", "host CPU of idle Python nodes with their VMs, per 100 nodes", "% of a core",
        Lower, None, 2.0, None, "no periodic wake-ups in a held VM (monitor tick, guest timer)"),
    row("idle", "busy node p50 beside idle nodes / alone (same run)", "x", Lower, None, 1.2,
        None, "no periodic wake-ups in a held VM (monitor tick, guest timer)"),
    row("idle", "busy node round trip, alone", "ms", Lower, None, 0.05, Some(0.5), WAKE),
    // memory.rs
    row("memory", "host PSS per idle Python VM, 100 held", "MiB", Lower, Some(50.0), 15.0,
        None, "fewer guest pages dirtied after restore; a smaller monitor"),
    row("memory", "one more idle Python VM, process PSS", "MiB", Lower, Some(50.0), 15.0, None,
        "fewer guest pages dirtied after restore; a smaller monitor"),
    row("memory", "idle Python VMs that fit in 24 GiB, by memory (extrapolated)", "VMs", Higher,
        None, 1000.0, None, "a smaller private footprint per VM"),
    row("memory", "monitor RSS per idle Python VM", "MiB", Lower, None, 3.0, None,
        "a smaller monitor: fewer threads (stacks) and less heap per VM"),
    row("memory", "monitor private memory per idle Python VM", "MiB", Lower, None, 3.0, None,
        "less heap and fewer stacks per monitor (Firecracker's bound is 5 MiB)"),
    row("memory", "monitor private memory per idle Python VM after 100 messages", "MiB", Lower,
        None, 3.0, None, "less heap and fewer stacks per monitor (Firecracker's bound is 5 MiB)"),
    row("memory", "private guest memory per idle Python VM", "MiB", Lower, None, 12.0, None,
        "fewer guest pages written after restore (the worker's heap, page tables)"),
    row("memory", "monitor RSS per idle Python VM after 100 messages", "MiB", Lower, None, 3.0,
        None, "a smaller monitor: fewer threads (stacks) and less heap per VM"),
    row("memory", "private guest memory per idle Python VM after 100 messages", "MiB", Lower,
        None, 16.0, None,
        "fewer guest pages written per message (the worker's allocations, page cache); \
         free page reporting back to the host"),
    row("memory", "idle Python VMs restored until the host refuses", "VMs", Higher, None,
        1000.0, None,
        "fewer host resources per VM: file descriptors and threads per monitor, KVM's kernel \
         memory"),
];

/// The row of `(bench, metric)` in [`TARGETS`].
pub fn goal(bench: &str, metric: &str) -> Option<&'static Goal> {
    find(TARGETS, bench, metric)
}

/// The row of `(bench, metric)` in `table`.
pub fn find<'a>(table: &'a [Goal], bench: &str, metric: &str) -> Option<&'a Goal> {
    table
        .iter()
        .find(|g| g.bench == bench && g.metric == metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_unique_and_has_a_sane_goal() {
        for (i, g) in TARGETS.iter().enumerate() {
            assert!(
                !TARGETS[..i]
                    .iter()
                    .any(|o| o.bench == g.bench && o.metric == g.metric),
                "{} / {} twice",
                g.bench,
                g.metric
            );
            assert!(g.goal > 0.0 && g.goal.is_finite(), "{}", g.metric);
            assert!(g.goal_p99.is_none_or(|p| p > 0.0), "{}", g.metric);
            assert!(!g.lever.is_empty() && !g.unit.is_empty(), "{}", g.metric);
            if let (Some(p99), Lower) = (g.goal_p99, g.better) {
                assert!(p99 >= g.goal, "{}: p99 goal under the median's", g.metric);
            }
        }
    }
}
