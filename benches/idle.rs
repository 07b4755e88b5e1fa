//! What idle sandboxed nodes cost: many Python nodes in one real
//! `reflow_network` graph, each with its VM (taken on its first message),
//! then left idle, so that each node holds its VM after the bridge's
//! `idle_hold`. Measured in one run:
//!
//! - the host CPU the whole bridge uses while they idle: this process and
//!   every process it started (the VMs' monitors, whose vCPU threads carry
//!   the guests' time), from `/proc` over [`IDLE_WINDOW`], as a share of
//!   one core;
//! - a busy node's round trip (p50/p99, closed loop) alone, then with the
//!   idle nodes beside it: the idle ones must not slow it down.
//!
//! `REFLOW_IDLE_NODES` (default 100) sets how many idle nodes;
//! `REFLOW_IDLE_HOLD_MS` the bridge's `idle_hold` (default: the bridge's
//! default), to see what idle nodes cost without holds.
//!
//! Run with `./dev.sh bench` (or `cargo bench -p reflow-benches --bench
//! idle`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_actor::message::Message;
use reflow_actor::Actor;
use reflow_benches::probe::{point, Probe};
use reflow_benches::report::{self, record};
use reflow_benches::{idle_hold_from_env, kvm_available, ms, sample};
use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::BridgeConfig;
use reflow_integration_tests::graphs::bridge_for;
use reflow_integration_tests::{cpu_ticks, percentile};
use reflow_network::connector::Connector;
use reflow_network::network::Network;
use reflow_sandbox::run::network_config;
use reflow_sandbox_core::{Language, PoolConfig, Script};

const TAGGED: &str = r#"
@actor(name="Tagged", inports=["input"], outports=["output"])
def tagged(context):
    return {"output": context.get_input("input")}
"#;

/// How long the idle nodes' CPU use is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// Round trips of the busy node per measurement.
const ROUND_TRIPS: usize = 2_000;

/// The share of one core this process and every process it started
/// (transitively) used over `window`.
fn cpu_share(window: Duration) -> (f64, usize) {
    let pids = report::process_tree(std::process::id());
    let before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    std::thread::sleep(window);
    let after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let used = after.saturating_sub(before) as f64 / hz;
    (used / window.as_secs_f64(), pids.len())
}

/// `busy` and `n` idle identity nodes, each into its own probe channel.
fn network(
    actor: Arc<dyn Actor>,
    n: usize,
    busy: flume::Sender<Message>,
    idle: flume::Sender<Message>,
) -> Network {
    let mut net = Network::new(network_config());
    net.register_actor_arc("Tagged", actor).unwrap();
    net.register_actor("Busy", Probe::new(busy)).unwrap();
    net.register_actor("Idle", Probe::new(idle)).unwrap();
    net.add_node("busy", "Tagged", None).unwrap();
    net.add_node("busy_out", "Busy", None).unwrap();
    net.add_node("idle_out", "Idle", None).unwrap();
    net.add_connection(Connector::new(
        point("busy", "output"),
        point("busy_out", "in"),
    ));
    for i in 0..n {
        let id = format!("idle{i}");
        net.add_node(&id, "Tagged", None).unwrap();
        net.add_connection(Connector::new(
            point(&id, "output"),
            point("idle_out", "in"),
        ));
    }
    net.start().unwrap();
    net
}

/// Round trips through the busy node, sorted.
fn round_trips(net: &Network, seen: &flume::Receiver<Message>) -> Vec<Duration> {
    let mut i = 0i64;
    sample(ROUND_TRIPS, || {
        net.send_to_actor("busy", "input", Message::Integer(i))
            .unwrap();
        match seen.recv_timeout(Duration::from_secs(60)) {
            Ok(Message::Integer(got)) if got == i => {}
            other => panic!("the busy node answered {i} with {other:?}"),
        }
        i += 1;
    })
}

fn idle(_: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let n: usize = std::env::var("REFLOW_IDLE_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = reflow_benches::runtime();
    let _guard = rt.enter();
    report::reset("idle");
    let config = idle_hold_from_env(BridgeConfig {
        pool: PoolConfig {
            preload_count: 2,
            max_size: n + 4,
            ..PoolConfig::default()
        },
        ..BridgeConfig::default()
    });
    let hold = config.idle_hold;
    let bridge = bridge_for(&[Language::Python], StateStore::embedded(), config);
    bridge.wait_ready(Duration::from_secs(600));
    let actor = bridge
        .actor(Script::inline(Language::Python, "tagged.actor.py", TAGGED))
        .expect("the actor");
    let (busy_tx, busy_rx) = flume::unbounded();
    let (idle_tx, idle_rx) = flume::unbounded();
    let net = network(Arc::new(actor), n, busy_tx, idle_tx);
    round_trips(&net, &busy_rx);
    let alone = round_trips(&net, &busy_rx);

    let started = Instant::now();
    for i in 0..n {
        net.send_to_actor(&format!("idle{i}"), "input", Message::Integer(i as i64))
            .unwrap();
    }
    let mut answered = HashMap::new();
    while answered.len() < n {
        match idle_rx.recv_timeout(Duration::from_secs(600)) {
            Ok(Message::Integer(i)) => *answered.entry(i).or_insert(0) += 1,
            other => panic!("an idle node answered {other:?}"),
        }
    }
    println!(
        "idle: {n} nodes took their VMs and answered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Well past idle_hold: every idle node has held its VM (a long one
    // is not waited for: those VMs are measured idle and running).
    std::thread::sleep(
        hold.saturating_mul(4).min(Duration::from_secs(10)) + Duration::from_secs(2),
    );
    let (share, processes) = cpu_share(IDLE_WINDOW);
    let beside = round_trips(&net, &busy_rx);
    net.shutdown();
    bridge.shutdown();

    println!(
        "idle: {n} idle Python nodes with their VMs (held after {hold:?} idle): {:.2} % of one \
         core over {IDLE_WINDOW:?} for the whole bridge ({processes} processes)",
        share * 100.0
    );
    let pct = |t: &[Duration]| (ms(percentile(t, 0.5)), ms(percentile(t, 0.99)));
    let ((a50, a99), (b50, b99)) = (pct(&alone), pct(&beside));
    println!(
        "idle: busy node round trip alone p50 {a50:.3} ms p99 {a99:.3} ms; beside {n} idle \
         nodes p50 {b50:.3} ms p99 {b99:.3} ms ({:.2}x at p50)",
        b50 / a50
    );
    record(
        "idle",
        "host CPU of idle Python nodes with their VMs, per 100 nodes",
        share * 100.0 * 100.0 / n as f64,
        &format!(
            "{n} nodes, {:.2} % of a core for the whole bridge, from /proc over {}s after \
             idle_hold ({hold:?})",
            share * 100.0,
            IDLE_WINDOW.as_secs()
        ),
    );
    record(
        "idle",
        "busy node p50 beside idle nodes / alone (same run)",
        b50 / a50,
        &format!("{n} idle nodes; closed loop; beside them p50 {b50:.3} ms, p99 {b99:.3} ms"),
    );
    report::record_times("idle", "busy node round trip, alone", &alone, "closed loop");
}

criterion_group!(benches, idle);
criterion_main!(benches);
