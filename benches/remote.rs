//! A sandbox host over loopback next to local sandboxes, side by side in
//! one run: the same `native -> Python -> native` graph with its Python
//! node in a local VM, and on a host (`reflow-sandbox serve`'s server,
//! here in this process on its own runtime, reached over TCP through its
//! REST and WebSocket API by `RemoteSandboxActor`):
//!
//! - one message end to end (p50, p99), and the ratio host / local;
//! - a stream of messages sent at once, msg/s, and the ratio.
//!
//! Run with `./dev.sh bench` (or `cargo bench -p reflow-benches --bench
//! remote`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use reflow_actor::message::Message;
use reflow_actor::Actor;
use reflow_benches::probe::{message_latency, network};
use reflow_benches::report::{self, record};
use reflow_benches::{kvm_available, middle_actor, ms};
use reflow_host_bridge::remote::{RemoteHosts, RemoteSandboxActor};
use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::BridgeConfig;
use reflow_integration_tests::percentile;
use reflow_sandbox::serve::{self, ClientLimits, Server, Tokens};
use reflow_sandbox_core::{Language, Script};

const INC: &str = r#"
@actor(name="Inc", inports=["input"], outports=["output"])
async def inc(context):
    await context.send_output("output", context.get_input("input") + 1)
"#;

const TOKEN: &str = "bench-token-0000000000000000000000000000000000000000000000000000";

/// Messages per stream.
const STREAM: usize = 2000;

/// A host serving on a free loopback port from `rt`; its URL.
fn host(rt: &tokio::runtime::Runtime) -> String {
    let _guard = rt.enter();
    let bridge =
        reflow_integration_tests::graphs::bridge(StateStore::embedded(), BridgeConfig::default());
    bridge.wait_ready(Duration::from_secs(120));
    let tokens = Tokens::parse(&format!("bench {TOKEN}"), std::path::Path::new("tokens"))
        .expect("the bench's token");
    let limits = ClientLimits {
        functions: 8,
        sessions: 8,
        max_timeout: Duration::from_secs(300),
    };
    let server = Server::new(bridge, Some(tokens), limits);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let at = listener.local_addr().unwrap();
    rt.spawn(serve::serve(listener, server, None));
    format!("http://{at}")
}

/// Sends `STREAM` messages at once and waits for all of them: msg/s.
fn stream(n: &reflow_network::network::Network, seen: &flume::Receiver<Message>) -> f64 {
    let t = Instant::now();
    for i in 0..STREAM {
        n.send_to_actor("src", "in", Message::Integer(i as i64))
            .unwrap();
    }
    for _ in 0..STREAM {
        seen.recv_timeout(Duration::from_secs(120))
            .expect("every message reaches the probe");
    }
    STREAM as f64 / t.elapsed().as_secs_f64()
}

fn remote_vs_local(c: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let mut group = c.benchmark_group("remote");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(5));
    let client_rt = reflow_benches::runtime();
    let server_rt = reflow_benches::runtime();
    let url = host(&server_rt);
    let script = || Script::inline(Language::Python, "inc.actor.py", INC);
    let mut results = Vec::new();
    for (label, name) in [
        ("local", "python_local"),
        ("host over loopback", "python_host"),
    ] {
        let _guard = client_rt.enter();
        let (bridge, actor): (_, Arc<dyn Actor>) = if name == "python_local" {
            middle_actor(Some(script()), Duration::from_secs(120))
        } else {
            let hosts = RemoteHosts::new(std::slice::from_ref(&url), TOKEN.into(), None)
                .expect("the host's URL");
            (
                None,
                Arc::new(RemoteSandboxActor::new(hosts, script(), "bench")),
            )
        };
        let (tx, rx) = flume::unbounded();
        let n = network(actor, ("input", "output"), tx);
        let (first, times) = message_latency(&mut group, name, &n, &rx, report::samples(3000));
        let rate = stream(&n, &rx);
        n.shutdown();
        if let Some(bridge) = bridge {
            bridge.shutdown();
        }
        println!(
            "remote: one message native -> Python ({label}) -> native: p50 {:.3} ms, p99 {:.3} ms \
             (first {:.1} ms); a stream of {STREAM}: {rate:.0} msg/s",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(first)
        );
        results.push((label, times, rate));
    }
    group.finish();
    let p50 = |i: usize| percentile(&results[i].1, 0.5).as_secs_f64();
    for (label, times, rate) in &results {
        report::record_times(
            "remote",
            &format!("one message native -> Python ({label}) -> native"),
            times,
            "a real reflow_network graph; the other placement measured in the same run",
        );
        record(
            "remote",
            &format!("stream of {STREAM} through a Python node ({label})"),
            *rate,
            "all sent at once; msg/s until the last reached the probe",
        );
    }
    record(
        "remote",
        "one message, host / local, p50 (same run)",
        p50(1) / p50(0),
        "the network hop, JSON and the session's round trip",
    );
    record(
        "remote",
        "stream, host / local, msg/s (same run)",
        results[1].2 / results[0].2,
        "both keep a window in flight; the host's adds the network hop and JSON per message",
    );
    println!(
        "remote: host / local, same run: one message p50 {:.2}x; stream {:.2}x of local msg/s",
        p50(1) / p50(0),
        results[1].2 / results[0].2
    );
}

criterion_group!(benches, remote_vs_local);
criterion_main!(benches);
