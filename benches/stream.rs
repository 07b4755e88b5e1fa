//! Streams through a sandboxed node, side by side with a native node in
//! its place, in one run:
//!
//! - throughput: `Range(n) -> identity -> sink` in a real
//!   `reflow_network::Network`, the identity a Python actor, a JavaScript
//!   actor (each in a VM, and again in a jailed host process,
//!   `isolation: process`), or the native `Add` (amount 0); every message
//!   is checked to arrive exactly once and in order. Criterion times
//!   streams of [`CRITERION_STREAM`] messages; the report gets one stream
//!   of [`REPORT_STREAM`] (msg/s and the ratio to the native graph).
//! - open-loop latency: messages sent to the identity node at a fixed rate
//!   (a sender thread keeps the schedule whatever the answers do), each
//!   timed from its scheduled send to its arrival at the sink, so a slow
//!   answer delays no later send and queueing shows in the percentiles. At
//!   10 and 100 msg/s the node is idle between messages: every message is
//!   a first message after an idle period (at 10 msg/s, longer than the
//!   bridge's default `idle_hold`: each message finds the VM held).
//!   `REFLOW_IDLE_HOLD_MS` sets another hold (the rows' note says so).
//!
//! - what metrics and tracing cost: rounds of three Python streams, in a
//!   rotating order: node metrics off (`BridgeConfig::metrics`) and no
//!   events; metrics on and the CLI's default log filter; metrics on and
//!   every per-message event (its span, `answered`, VM events). Events are
//!   formatted as `run --log-format json` does, written to nowhere. The
//!   medians of the ratios to the first.
//!
//! Run with `./dev.sh bench` (or `cargo bench -p reflow-benches --bench
//! stream`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use reflow_actor::message::Message;
use reflow_actor::Actor;
use reflow_benches::probe::{point, Probe};
use reflow_benches::report::{self, record};
use reflow_benches::{idle_hold_from_env, kvm_available, middle_actor_with, ms, process_bridge};
use reflow_host_bridge::{Bridge, BridgeConfig};
use reflow_integration_tests::percentile;
use reflow_network::connector::Connector;
use reflow_network::network::Network;
use reflow_sandbox::natives::native;
use reflow_sandbox::run::network_config;
use reflow_sandbox_core::{Language, Script};

const IDENTITY_PY: &str = r#"
@actor(name="Identity", inports=["input"], outports=["output"])
def identity(context):
    return {"output": context.get_input("input")}
"#;

const IDENTITY_JS: &str = r#"
const metadata = { name: "Identity", inports: ["input"], outports: ["output"] };
function process(context) {
  return { output: context.getInput("input") };
}
module.exports = { metadata, process };
"#;

/// Messages in each stream criterion times.
const CRITERION_STREAM: i64 = 10_000;
/// Messages in the stream whose rate goes to the report.
/// (a fifth in a quick run).
const REPORT_STREAM: usize = 100_000;
/// Open-loop rates (msg/s) and how long each is sent.
const RATES: [(u32, Duration); 3] = [
    (10, Duration::from_secs(5)),
    (100, Duration::from_secs(5)),
    (5_000, Duration::from_secs(2)),
];
/// The longest wait for any one message at the sink before the bench
/// gives up on the stream (a lost message must fail the bench, not hang
/// it).
const STALL: Duration = Duration::from_secs(120);

/// One identity node to measure.
struct Subject {
    label: &'static str,
    script: Option<Script>,
    /// Whether the script runs in a jailed host process
    /// (`isolation: process`) instead of a VM.
    process: bool,
}

/// What the metrics cost: pairs of streams of this many messages, one
/// through a Python node that counts them and one through a node that
/// does not, alternating which goes first.
const PAIR_STREAM: i64 = 20_000;
/// How many pairs (half in a quick run).
const PAIRS: usize = 6;

fn subjects() -> Vec<Subject> {
    let python = || {
        Some(Script::inline(
            Language::Python,
            "identity.actor.py",
            IDENTITY_PY,
        ))
    };
    let javascript = || {
        Some(Script::inline(
            Language::JavaScript,
            "identity.actor.js",
            IDENTITY_JS,
        ))
    };
    vec![
        Subject {
            label: "Python",
            script: python(),
            process: false,
        },
        Subject {
            label: "JavaScript",
            script: javascript(),
            process: false,
        },
        Subject {
            label: "native",
            script: None,
            process: false,
        },
        Subject {
            label: "Python process",
            script: python(),
            process: true,
        },
        Subject {
            label: "JavaScript process",
            script: javascript(),
            process: true,
        },
    ]
}

/// The identity actor for `subject` (a bridge of its own for a script)
/// and its (in, out) ports.
fn identity(
    subject: &Subject,
    metrics: bool,
) -> (Option<Bridge>, Arc<dyn Actor>, (&'static str, &'static str)) {
    let ports = match subject.script {
        Some(_) => ("input", "output"),
        None => ("in", "out"),
    };
    let config = idle_hold_from_env(BridgeConfig {
        metrics,
        ..BridgeConfig::default()
    });
    let ready = Duration::from_secs(600);
    let (bridge, actor) = match &subject.script {
        Some(script) if subject.process => {
            let bridge = process_bridge(script.language, config);
            bridge.wait_ready(ready);
            let actor: Arc<dyn Actor> =
                Arc::new(bridge.actor(script.clone()).expect("the script's actor"));
            (Some(bridge), actor)
        }
        script => middle_actor_with(script.clone(), ready, config),
    };
    (bridge, actor, ports)
}

/// `src (Range) -> mid -> probe`, started; `mid` is `actor` with ports
/// `ports` (in, out), configured as an identity (`amount` 0 for `Add`).
fn network(actor: Arc<dyn Actor>, ports: (&str, &str), seen: flume::Sender<Message>) -> Network {
    let mut n = Network::new(network_config());
    n.register_actor("Range", native("Range").expect("Range"))
        .unwrap();
    n.register_actor_arc("Mid", actor).unwrap();
    n.register_actor("Probe", Probe::new(seen)).unwrap();
    n.add_node("src", "Range", None).unwrap();
    n.add_node(
        "mid",
        "Mid",
        Some(HashMap::from([(
            "amount".to_string(),
            serde_json::json!(0),
        )])),
    )
    .unwrap();
    n.add_node("probe", "Probe", None).unwrap();
    let (in_port, out_port) = ports;
    n.add_connection(Connector::new(point("src", "out"), point("mid", in_port)));
    n.add_connection(Connector::new(point("mid", out_port), point("probe", "in")));
    n.start().unwrap();
    n
}

/// Waits for `expected` at the sink; anything else (an error, a value out
/// of order, a lost message) ends the bench.
fn expect(seen: &flume::Receiver<Message>, expected: i64) {
    check(seen.recv_timeout(STALL), expected);
}

fn check<E: std::fmt::Debug>(got: Result<Message, E>, expected: i64) {
    match got {
        Ok(Message::Integer(got)) if got == expected => {}
        other => panic!("the sink expected {expected}, got {other:?}"),
    }
}

/// Streams `count` messages from `Range` through the node; returns how
/// long from the request to the last arrival. What has arrived is taken
/// in one go after each wait: a wake-up of this thread per message would
/// make the sink the stream's bottleneck on a small machine.
fn stream(n: &Network, seen: &flume::Receiver<Message>, count: i64) -> Duration {
    let t = Instant::now();
    n.send_to_actor("src", "count", Message::Integer(count))
        .unwrap();
    let mut next = 1;
    while next <= count {
        expect(seen, next);
        next += 1;
        for m in seen.try_iter() {
            check::<()>(Ok(m), next);
            next += 1;
        }
    }
    assert_eq!(next, count + 1, "more messages than sent reached the sink");
    t.elapsed()
}

/// Sends `rate` messages a second for `span` straight to the node's
/// inport; returns each message's time from its scheduled send to its
/// arrival, sorted.
fn open_loop(
    n: &Network,
    seen: &flume::Receiver<Message>,
    port: &str,
    rate: u32,
    span: Duration,
) -> Vec<Duration> {
    let count = (rate as f64 * span.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let arrivals = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            (0..count)
                .map(|i| {
                    expect(&seen, i as i64);
                    Instant::now()
                })
                .collect::<Vec<_>>()
        })
    };
    let start = Instant::now() + Duration::from_millis(20);
    let mut scheduled = Vec::with_capacity(count);
    for i in 0..count {
        let at = start + interval * i as u32;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        scheduled.push(at);
        n.send_to_actor("mid", port, Message::Integer(i as i64))
            .unwrap();
    }
    let arrivals = arrivals.join().expect("the sink's reader");
    let mut times: Vec<Duration> = arrivals
        .iter()
        .zip(&scheduled)
        .map(|(a, s)| a.saturating_duration_since(*s))
        .collect();
    times.sort();
    times
}

/// What one subject measured.
struct Measured {
    label: &'static str,
    rate: f64,
    open: Vec<(u32, Vec<Duration>)>,
}

fn measure(c: &mut Criterion, rt: &tokio::runtime::Runtime, subject: &Subject) -> Measured {
    let _guard = rt.enter();
    let (bridge, actor, ports) = identity(subject, true);
    let (tx, rx) = flume::unbounded();
    let n = network(actor, ports, tx);
    // The first stream takes the node's VM and loads the script.
    stream(&n, &rx, 100);
    let mut group = c.benchmark_group("stream");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(10));
    group.bench_function(
        format!("{CRITERION_STREAM}_messages_{}", subject.label),
        |b| b.iter_custom(|iters| (0..iters).map(|_| stream(&n, &rx, CRITERION_STREAM)).sum()),
    );
    group.finish();
    let messages = report::samples(REPORT_STREAM) as i64;
    let took = stream(&n, &rx, messages);
    let rate = messages as f64 / took.as_secs_f64();
    println!(
        "stream: {messages} messages Range -> {} identity -> sink in {:.2} s: {rate:.0} msg/s",
        subject.label,
        took.as_secs_f64()
    );
    let open = RATES
        .iter()
        .map(|&(r, span)| {
            // An idle gap first, so the first message meets an idle node.
            std::thread::sleep(Duration::from_millis(200));
            let span = if report::is_quick() { span / 2 } else { span };
            let times = open_loop(&n, &rx, ports.0, r, span);
            println!(
                "stream: {} identity at {r} msg/s (open loop, {} messages): p50 {:.3} ms, p99 \
                 {:.3} ms, max {:.3} ms",
                subject.label,
                times.len(),
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.99)),
                ms(*times.last().unwrap())
            );
            (r, times)
        })
        .collect();
    n.shutdown();
    if let Some(bridge) = bridge {
        bridge.shutdown();
    }
    Measured {
        label: subject.label,
        rate,
        open,
    }
}

fn report_all(measured: &[Measured]) {
    let native = measured
        .iter()
        .find(|m| m.label == "native")
        .map_or(f64::NAN, |m| m.rate);
    for m in measured {
        record(
            "stream",
            &format!("Range -> {} identity -> sink", m.label),
            m.rate,
            &format!(
                "a real reflow_network graph, {} messages",
                report::samples(REPORT_STREAM)
            ),
        );
        if m.label != "native" {
            record(
                "stream",
                &format!("{} node / native node, msg/s (same run)", m.label),
                m.rate / native,
                "the sandbox's share of a stream",
            );
        }
        let hold = idle_hold_from_env(BridgeConfig::default()).idle_hold;
        let note = if hold == BridgeConfig::default().idle_hold {
            "scheduled send to arrival".to_string()
        } else {
            format!(
                "scheduled send to arrival; idle_hold {} ms",
                hold.as_millis()
            )
        };
        for (rate, times) in &m.open {
            report::record_times(
                "stream",
                &format!("{} identity at {rate} msg/s open loop", m.label),
                times,
                &note,
            );
        }
    }
}

/// The Python stream with node metrics on and off, in interleaved pairs
/// (drift on a shared host moves both sides of a pair alike): the median
/// rate without metrics, and the median of the pairs' ratios.
fn metrics_cost(rt: &tokio::runtime::Runtime, python_rate: f64) {
    // A node's counting per message, alone: what `Counted` does for a
    // message that returns one output.
    let metrics = reflow_host_bridge::metrics::Metrics::new().expect("metrics");
    let node = metrics.node("python", "identity.actor.py", true);
    let mut taken = std::collections::VecDeque::new();
    let rounds = 1_000_000u32;
    let t = Instant::now();
    for _ in 0..rounds {
        taken.push_back(Instant::now());
        let took = taken
            .pop_front()
            .map_or(Duration::ZERO, |s: Instant| s.elapsed());
        node.answered(took, None);
        node.outputs(1);
    }
    let per_message = t.elapsed().as_secs_f64() / f64::from(rounds);
    println!(
        "stream: node metrics cost {:.0} ns per message, {:.2} % of the Python stream's {:.1} us",
        per_message * 1e9,
        per_message * python_rate * 100.0,
        1e6 / python_rate
    );
    record(
        "stream",
        "node metrics per message, ns",
        per_message * 1e9,
        "a node's counting for one message with one output, timed alone",
    );
    record(
        "stream",
        "node metrics per message / Python stream time per message (same run)",
        per_message * python_rate,
        "the counting's share of the Python stream's time per message",
    );
    let filter = tracing_switch();
    // The per-message events alone, formatted as JSON: what a node emits
    // for a message with every event on (its span and the answered event
    // inside it).
    filter(Level::Debug);
    let t = Instant::now();
    for seq in 0..EVENT_ROUNDS {
        let span = tracing::debug_span!(
            target: "reflow_sandbox::message",
            "message",
            node = "mid",
            actor = "identity.actor.py",
            seq
        );
        span.in_scope(|| {
            tracing::debug!(
                target: "reflow_sandbox::message",
                outcome = "ok",
                took_us = 40u64,
                "answered"
            )
        });
    }
    let per_event = t.elapsed().as_secs_f64() / EVENT_ROUNDS as f64;
    filter(Level::Off);
    println!(
        "stream: per-message events cost {:.0} ns per message as JSON, {:.2} % of the Python stream's time per message",
        per_event * 1e9,
        per_event * python_rate * 100.0
    );
    record(
        "stream",
        "per-message events (span and answered, JSON) / Python stream time per message (same run)",
        per_event * python_rate,
        "a message's span and answered event formatted as JSON to nowhere, timed alone",
    );
    let _guard = rt.enter();
    let python = &subjects()[0];
    let sides: Vec<_> = [true, false]
        .into_iter()
        .map(|metrics| {
            let (bridge, actor, ports) = identity(python, metrics);
            let (tx, rx) = flume::unbounded();
            let n = network(actor, ports, tx);
            stream(&n, &rx, 1_000);
            (bridge, n, rx)
        })
        .collect();
    // A stream's rate with its node's metrics on or off and the log
    // filter `level`.
    let rate = |metrics: bool, level: Level| {
        let (_, n, rx) = &sides[usize::from(!metrics)];
        filter(level);
        let r = PAIR_STREAM as f64 / stream(n, rx, PAIR_STREAM).as_secs_f64();
        filter(Level::Off);
        r
    };
    let rounds = if report::is_quick() { PAIRS / 2 } else { PAIRS };
    let mut off_rates = Vec::new();
    let (mut default_ratios, mut debug_ratios) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Each round: off, the CLI's default, every per-message event; in
        // a rotating order.
        let mut got = [0.0; 3];
        for k in 0..3 {
            let which = (i + k) % 3;
            got[which] = match which {
                0 => rate(false, Level::Off),
                1 => rate(true, Level::Default),
                _ => rate(true, Level::Debug),
            };
        }
        let [off, default, debug] = got;
        println!(
            "stream: metrics and tracing round {i}: off {off:.0} msg/s, default {default:.0} msg/s, per-message events {debug:.0} msg/s"
        );
        off_rates.push(off);
        default_ratios.push(default / off);
        debug_ratios.push(debug / off);
    }
    for (bridge, n, _) in sides {
        n.shutdown();
        if let Some(b) = bridge {
            b.shutdown();
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let note = format!(
        "{rounds} rounds of {PAIR_STREAM}-message streams, each side in a rotating order; median"
    );
    record(
        "stream",
        "Range -> Python identity -> sink, node metrics and tracing off",
        median(&mut off_rates),
        &note,
    );
    record(
        "stream",
        "Python msg/s, node metrics and tracing on / off (same run)",
        median(&mut default_ratios),
        &format!("{note}; on: metrics, and the CLI's default log filter (warnings, printed lines) as JSON"),
    );
    record(
        "stream",
        "Python msg/s, metrics and every per-message event / off (same run)",
        median(&mut debug_ratios),
        &format!("{note}; every event: each message's span and answered event, VM events, as JSON"),
    );
}

/// Messages whose events are timed alone.
const EVENT_ROUNDS: u64 = 200_000;

/// The log filters the metrics-and-tracing rounds compare.
#[derive(Clone, Copy)]
enum Level {
    /// Nothing.
    Off,
    /// What `run` shows by default.
    Default,
    /// Every per-message event too.
    Debug,
}

/// What the events cost to format: a global subscriber as `run
/// --log-format json` sets one up, writing to nowhere, whose filter the
/// returned switch sets.
fn tracing_switch() -> impl Fn(Level) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let (filter, handle) = reload::Layer::new(EnvFilter::new("off"));
    let json = fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(std::io::sink);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .try_init()
        .is_ok();
    assert!(installed, "the bench's tracing subscriber is the first");
    move |level| {
        let directives = match level {
            Level::Off => "off",
            Level::Default => "warn,reflow_sandbox::guest=info,reflow_network=error",
            Level::Debug => "warn,reflow_sandbox::guest=info,reflow_network=error,reflow_sandbox::message=debug,reflow_sandbox::vm=debug",
        };
        handle
            .reload(EnvFilter::new(directives))
            .expect("the filter reloads");
    }
}

fn streams(c: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let rt = reflow_benches::runtime();
    report::reset("stream");
    let measured: Vec<Measured> = subjects().iter().map(|s| measure(c, &rt, s)).collect();
    report_all(&measured);
    let python = measured
        .iter()
        .find(|m| m.label == "Python")
        .map_or(f64::NAN, |m| m.rate);
    metrics_cost(&rt, python);
}

criterion_group!(benches, streams);
criterion_main!(benches);
