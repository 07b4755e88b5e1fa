//! Reflow's own tracing protocol carries the sandbox's events beside the
//! network's: a graph run with a trace server (a WebSocket stand-in for
//! Reflow's tracing server, reading what Reflow's unmodified client sends)
//! delivers a script node's printed lines, its VM being lent and its
//! failures, next to the network's events about native actors.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reflow_integration_tests::graphs::{small_bridge, GraphBuilder};
use reflow_integration_tests::kvm_available;
use reflow_sandbox::{run, RunOptions};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const TALK: &str = r#"
@actor(name="Talk", inports=["input"], outports=["output"])
def talk(context):
    n = context.get_input("input")
    print("hi", n)
    if n == 2:
        raise ValueError("two")
    return {"output": n}
"#;

/// A WebSocket server on loopback: its URL, and each text frame it gets,
/// parsed.
async fn trace_server() -> (String, flume::Receiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (tx, rx) = flume::unbounded();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(frame)) = ws.next().await {
                    if let Message::Text(text) = frame {
                        let v: Value = serde_json::from_str(&text).expect("JSON from the client");
                        let _ = tx.send(v);
                    }
                }
            });
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_events_reach_reflow_s_tracing_server() {
    if !kvm_available() {
        return;
    }
    let (url, frames) = trace_server().await;
    let mut g = GraphBuilder::default();
    g.native("numbers", "Range", json!({}))
        .script("talk", "Talk", TALK, json!({}), None)
        .native("out", "Format", json!({}))
        .connect("numbers", "out", "talk", "input")
        .connect("talk", "output", "out", "in")
        .initial("numbers", "count", json!(3));
    let graph = g.load();
    let bridge = small_bridge("trace");
    let options = RunOptions {
        timeout: Some(Duration::from_secs(600)),
        trace_server: Some(url),
        ..RunOptions::default()
    };
    let outcome = run(&graph, &bridge, &options, |_| {}).await.unwrap();
    assert_eq!(outcome.failures, 1);
    // Events are sent as they happen; give the last ones time to arrive.
    let mut events = Vec::new();
    let want = |events: &[Value]| {
        let sandbox = |what: &str| {
            events
                .iter()
                .filter(|e| e["data"]["custom_attributes"]["sandbox.event"] == what)
                .count()
        };
        sandbox("log") >= 3
            && sandbox("failed") >= 1
            && sandbox("vm_lent") >= 1
            && events.iter().any(|e| e["actor_id"] == "out")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want(&events) && Instant::now() < deadline {
        if let Ok(Ok(frame)) =
            tokio::time::timeout(Duration::from_secs(1), frames.recv_async()).await
        {
            if let Some(event) = frame.get("RecordEvent").map(|r| r["event"].clone()) {
                events.push(event);
            }
        }
    }
    let of = |what: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["data"]["custom_attributes"]["sandbox.event"] == what)
            .collect()
    };
    let lines: Vec<(u64, &str)> = of("log")
        .iter()
        .map(|e| {
            assert_eq!(e["actor_id"], "talk");
            assert_eq!(e["event_type"], "NetworkEvent");
            let a = &e["data"]["custom_attributes"];
            (a["seq"].as_u64().unwrap(), a["line"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        lines,
        [(1, "hi 1"), (2, "hi 2"), (3, "hi 3")],
        "{events:#?}"
    );
    let failed = of("failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["event_type"], "ActorFailed");
    assert_eq!(failed[0]["actor_id"], "talk");
    assert_eq!(failed[0]["data"]["custom_attributes"]["seq"], 2);
    assert_eq!(
        failed[0]["data"]["custom_attributes"]["outcome"],
        "actor_error"
    );
    let error = failed[0]["data"]["error"].as_str().unwrap();
    assert!(error.contains("ValueError: two"), "{error}");
    let lent = of("vm_lent");
    assert!(lent.iter().all(|e| e["actor_id"] == "talk"), "{lent:#?}");
    // Beside them, what the network says about its native actors: the
    // Format sink's, which runs after the node's VM was lent (so after
    // Reflow's client connected; it drops what is recorded before, such as
    // the Range node's events at the network's start).
    assert!(
        events.iter().any(|e| e["actor_id"] == "out"),
        "no event about the native Format node: {events:#?}"
    );
}
