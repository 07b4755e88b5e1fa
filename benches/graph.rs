//! Sandboxed actors inside real Reflow networks, side by side in one run:
//!
//! - one message end to end through `native -> Python -> native` and
//!   `native -> JavaScript -> native` (a `reflow_network::Network`, the
//!   script node in its own clone), next to the same graph with a native
//!   actor in the script node's place, so the sandbox's share is a ratio
//!   measured in the same run;
//! - a state `get` and `set` round trip from guest code, with the embedded
//!   store and with a real Redis server, timed by the actor itself around
//!   the operation (p50 and p99).
//!
//! Run with `./dev.sh bench`.

use std::collections::HashMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use reflow_actor::message::Message;
use reflow_benches::probe::{message_latency, network};
use reflow_benches::report::{self, record};
use reflow_benches::{invoke_once, kvm_available, middle_actor, ms, took};
use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::BridgeConfig;
use reflow_integration_tests::graphs::bridge;
use reflow_integration_tests::percentile;
use reflow_integration_tests::redis_server::RedisServer;
use reflow_sandbox_core::{Language, Script};

const INC: &str = r#"
@actor(name="Inc", inports=["input"], outports=["output"])
async def inc(context):
    await context.send_output("output", context.get_input("input") + 1)
"#;

const INC_JS: &str = r#"
const metadata = { name: "Inc", inports: ["input"], outports: ["output"] };
async function process(context) {
  await context.sendOutput("output", context.getInput("input") + 1);
}
module.exports = { metadata, process };
"#;

/// Times its one state operation itself, in guest code (`perf_counter`
/// reads the clock through the vDSO, no system call).
const STATE_OPS: &str = r#"
import time

@actor(name="StateOps", inports=["op"], outports=["took"])
async def ops(context):
    op = context.get_input("op")
    started = time.perf_counter()
    if op == "get":
        await context.state.get("k")
    else:
        await context.state.set("k", 1)
    return {"took": time.perf_counter() - started}
"#;

fn graph_latency(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("graph");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(5));
    let mut report = Vec::new();
    // Each script graph gets a bridge of its own, shut down after it: an
    // idle VM left running by one measurement (its worker polling, every
    // wake-up emulated kernel work here) would slow the next one.
    for (label, name, script, ports) in [
        (
            "native -> Python -> native",
            "python_middle",
            Some(Script::inline(Language::Python, "inc.actor.py", INC)),
            ("input", "output"),
        ),
        (
            "native -> native -> native",
            "native_middle",
            None,
            ("in", "out"),
        ),
        (
            "native -> JavaScript -> native",
            "javascript_middle",
            Some(Script::inline(Language::JavaScript, "inc.actor.js", INC_JS)),
            ("input", "output"),
        ),
    ] {
        let _guard = rt.enter();
        let (bridge, actor) = middle_actor(script, Duration::from_secs(120));
        let (tx, rx) = flume::unbounded();
        let n = network(actor, ports, tx);
        let (first, times) = message_latency(&mut group, name, &n, &rx, report::samples(5000));
        n.shutdown();
        if let Some(bridge) = bridge {
            bridge.shutdown();
        }
        report.push((label, first, times));
    }
    group.finish();
    for (label, first, times) in &report {
        println!(
            "graph: one message {label}: p50 {:.3} ms, p99 {:.3} ms ({} samples; the node's \
             first message, VM taken from the pool and script loaded: {:.1} ms)",
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.99)),
            times.len(),
            ms(*first)
        );
    }
    let p50 = |i: usize| percentile(&report[i].2, 0.5).as_secs_f64();
    let native = format!(
        "native node in its place, same run: p50 {:.3} ms, p99 {:.3} ms",
        p50(1) * 1e3,
        ms(percentile(&report[1].2, 0.99))
    );
    // The script node's graph `i` in `language`: one message's p50 and p99,
    // and its p50 over the native node's (graph 1) in the same run.
    let script_latency = |language: &str, i: usize| {
        report::record_times(
            "graph",
            &format!("one message native -> {language} -> native"),
            &report[i].2,
            &format!("a real reflow_network graph; {native}"),
        );
        record(
            "graph",
            &format!("{language} node / native node, p50 (same run)"),
            p50(i) / p50(1),
            "the sandbox's share",
        );
    };
    script_latency("Python", 0);
    script_latency("JavaScript", 2);
    println!(
        "graph: p50 with the Python node / with a native node in its place (same run): {:.1}x; \
         with the JavaScript node: {:.1}x; design target for message processing < 5 ms: {:.0}x \
         (Python) and {:.0}x (JavaScript) under",
        p50(0) / p50(1),
        p50(2) / p50(1),
        5e-3 / p50(0),
        5e-3 / p50(2)
    );
}

fn state_from_guest(rt: &tokio::runtime::Runtime) {
    let redis = RedisServer::start();
    let stores = [
        ("embedded", StateStore::embedded()),
        (
            "redis",
            rt.block_on(StateStore::redis(&redis.url())).expect("redis"),
        ),
    ];
    const N: usize = 300;
    let mut report = Vec::new();
    for (name, store) in stores {
        let bridge = rt.block_on(async { bridge(store, BridgeConfig::default()) });
        bridge.wait_ready(Duration::from_secs(120));
        let actor = bridge
            .actor(Script::inline(Language::Python, "ops.actor.py", STATE_OPS))
            .unwrap();
        let invoke = |op: &str| {
            let inputs = HashMap::from([("op".to_string(), Message::string(op.into()))]);
            took(&invoke_once(rt, &actor, inputs))
        };
        invoke("set");
        let mut times: HashMap<&str, Vec<Duration>> = HashMap::new();
        // Interleaved, so drift hits both alike.
        for _ in 0..N {
            for op in ["get", "set"] {
                let took = invoke(op);
                times.entry(op).or_default().push(took);
            }
        }
        bridge.shutdown();
        for op in ["get", "set"] {
            let v = &times[op];
            report::record_times(
                "graph",
                &format!("state {op} from guest code, {name}"),
                v,
                "timed in guest code around the await",
            );
            let mut sorted = v.clone();
            sorted.sort();
            report.push((name, op, percentile(&sorted, 0.5)));
        }
    }
    for op in ["get", "set"] {
        let of = |store: &str| {
            report
                .iter()
                .find(|(n, o, _)| *n == store && *o == op)
                .map(|r| ms(r.2))
                .unwrap_or(f64::NAN)
        };
        println!(
            "state {op} from guest code: embedded p50 {:.3} ms, Redis p50 {:.3} ms ({N} each)",
            of("embedded"),
            of("redis")
        );
    }
}

fn graph(c: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let rt = reflow_benches::runtime();
    report::reset("graph");
    graph_latency(c, &rt);
    state_from_guest(&rt);
}

criterion_group!(benches, graph);
criterion_main!(benches);
