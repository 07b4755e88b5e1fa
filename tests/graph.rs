//! Sandboxed Python and JavaScript actors in real Reflow networks: graphs loaded as the
//! `reflow-sandbox` CLI loads them, run by a `reflow_network::Network`,
//! with every script node in its own VM cloned from the worker golden.

use std::time::Duration;

use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::BridgeConfig;
use reflow_integration_tests::graphs::{bridge, bridge_for, shown, GraphBuilder};
use reflow_integration_tests::kvm_available;
use reflow_integration_tests::redis_server::RedisServer;
use reflow_sandbox::{run, RunOptions};
use reflow_sandbox_core::Language;
use reflow_sandbox_core::PoolConfig;
use serde_json::json;

fn config() -> BridgeConfig {
    BridgeConfig {
        pool: PoolConfig {
            preload_count: 2,
            max_size: 8,
            ..PoolConfig::default()
        },
        namespace: "test".into(),
        ..BridgeConfig::default()
    }
}

fn options() -> RunOptions {
    RunOptions {
        timeout: Some(Duration::from_secs(600)),
        ..RunOptions::default()
    }
}

const MULTIPLIER: &str = r#"
@actor(name="Multiplier", inports=["input"], outports=["output", "calls"])
async def process(context):
    x = context.get_input("input")
    n = await context.state.increment("calls")
    await context.send_output("output", x * context.config.get("factor", 2))
    return {"calls": n}
"#;

/// native -> Python -> native: numbers from a native `Range`, multiplied
/// in the VM (config and a state counter), offset by a native `Add`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_python_native_graph_produces_the_expected_values() {
    if !kvm_available() {
        return;
    }
    let mut g = GraphBuilder::default();
    g.native("numbers", "Range", json!({}))
        .script("mul", "Multiplier", MULTIPLIER, json!({"factor": 3}), None)
        .native("offset", "Add", json!({"amount": 1}))
        .native("calls", "Format", json!({"template": "call {}"}))
        .connect("numbers", "out", "mul", "input")
        .connect("mul", "output", "offset", "in")
        .connect("mul", "calls", "calls", "in")
        .initial("numbers", "count", json!(4));
    let graph = g.load();
    assert_eq!(graph.sinks, ["calls", "offset"]);
    let bridge = bridge(StateStore::embedded(), config());
    let outcome = run(&graph, &bridge, &options(), |_| {}).await.unwrap();
    assert_eq!(shown(&outcome, "offset", "out"), ["4", "7", "10", "13"]);
    assert_eq!(
        shown(&outcome, "calls", "out"),
        ["\"call 1\"", "\"call 2\"", "\"call 3\"", "\"call 4\""]
    );
    assert_eq!(outcome.failures, 0);
    bridge.shutdown();
}

const WHO: &str = r#"
import os
# Drawn on the VM's first message: values made at the top level are made
# once per script version (its component golden) and shared by its clones.
TOKEN = None

@actor(name="Who", inports=["input"], outports=["who"])
async def who(context):
    global TOKEN
    TOKEN = TOKEN or os.urandom(8).hex()
    n = await context.state.increment("seen")
    # A key that looks like another node's is still this node's own.
    await context.state.set("b:seen", 1000)
    return {"who": f"{TOKEN}:{n}"}
"#;

/// Runs two nodes of [`WHO`], `a` (2 messages) and `a:b` (3), with state
/// in `store`; checks they had a VM each and their own counters.
async fn two_nodes_of_who(store: StateStore) {
    let mut g = GraphBuilder::default();
    g.native("two", "Range", json!({}))
        .native("three", "Range", json!({}))
        .script("a", "Who", WHO, json!({}), None)
        .script("a:b", "Who", WHO, json!({}), None)
        .native("a_out", "Format", json!({}))
        .native("b_out", "Format", json!({}))
        .connect("two", "out", "a", "input")
        .connect("three", "out", "a:b", "input")
        .connect("a", "who", "a_out", "in")
        .connect("a:b", "who", "b_out", "in")
        .initial("two", "count", json!(2))
        .initial("three", "count", json!(3));
    let graph = g.load();
    let bridge = bridge(store, config());
    let outcome = run(&graph, &bridge, &options(), |_| {}).await.unwrap();
    bridge.shutdown();
    let split = |node: &str| -> Vec<(String, String)> {
        shown(&outcome, node, "out")
            .iter()
            .map(|s| {
                let (t, n) = s.trim_matches('"').split_once(':').unwrap();
                (t.to_string(), n.to_string())
            })
            .collect()
    };
    let (a, b) = (split("a_out"), split("b_out"));
    let counts = |v: &[(String, String)]| v.iter().map(|x| x.1.clone()).collect::<Vec<_>>();
    assert_eq!(counts(&a), ["1", "2"], "{a:?}");
    assert_eq!(counts(&b), ["1", "2", "3"], "{b:?}");
    assert!(a.iter().all(|x| x.0 == a[0].0), "one VM per node: {a:?}");
    assert!(b.iter().all(|x| x.0 == b[0].0), "one VM per node: {b:?}");
    assert_ne!(a[0].0, b[0].0, "the two nodes shared a VM");
}

/// Two nodes of one script: separate VMs (a token drawn at load time
/// differs) and separate state (each counts its own messages), in the
/// embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_of_one_script_have_their_own_vm_and_state() {
    if !kvm_available() {
        return;
    }
    two_nodes_of_who(StateStore::embedded()).await;
}

/// The same with state in a real Redis server, whose keys show the
/// namespaces: `a`'s key "b:seen" stays under `a`, apart from node `a:b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_in_redis_is_namespaced_per_node() {
    if !kvm_available() {
        return;
    }
    let redis = RedisServer::start();
    let store = StateStore::redis(&redis.url()).await.unwrap();
    two_nodes_of_who(store).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let get = |key: &'static str| {
        let mut c = c.clone();
        async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(get("test:a:seen").await.as_deref(), Some("2"));
    assert_eq!(get("test:a%3Ab:seen").await.as_deref(), Some("3"));
    assert_eq!(get("test:a:b:seen").await.as_deref(), Some("1000"));
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "test:a%3Ab:b:seen",
            "test:a%3Ab:seen",
            "test:a:b:seen",
            "test:a:seen"
        ]
    );
}

const FLAKY: &str = r#"
@actor(name="Flaky", inports=["input"], outports=["output"])
def flaky(context):
    x = context.get_input("input")
    if x == 2:
        raise ValueError(f"two is not allowed")
    if x == 4:
        while True:
            pass
    return {"output": x * 100}
"#;

/// An exception answers its message with `Message::Error` on `error` and
/// the node goes on; a message past its time limit gets an error too, its
/// VM is killed and replaced, and the next message succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_timeouts_answer_their_message_and_the_graph_goes_on() {
    if !kvm_available() {
        return;
    }
    flaky(
        Language::Python,
        FLAKY,
        "actor raised: ValueError: two is not allowed",
    )
    .await;
}

/// Runs numbers 1..5 through a flaky node of `language` (`source` raises on
/// 2, whose error says `raised`, and loops forever on 4, past its 3 s
/// limit) and checks the answers.
async fn flaky(language: Language, source: &str, raised: &str) {
    let mut g = GraphBuilder::default();
    g.native("numbers", "Range", json!({}));
    match language {
        Language::Python => g.script("flaky", "Flaky", source, json!({}), Some(3)),
        Language::JavaScript => g.js_script("flaky", "JsFlaky", source, json!({}), Some(3)),
    };
    g.native("ok", "Format", json!({}))
        .native("failed", "Format", json!({}))
        .connect("numbers", "out", "flaky", "input")
        .connect("flaky", "output", "ok", "in")
        .connect("flaky", "error", "failed", "in")
        .initial("numbers", "count", json!(5));
    let graph = g.load();
    let bridge = bridge_for(&[language], StateStore::embedded(), config());
    let outcome = run(&graph, &bridge, &options(), |_| {}).await.unwrap();
    assert_eq!(
        shown(&outcome, "ok", "out"),
        ["\"100\"", "\"300\"", "\"500\""]
    );
    let failed = shown(&outcome, "failed", "out");
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].contains(raised), "{failed:?}");
    assert!(failed[1].contains("ran past its 3s limit"), "{failed:?}");
    assert_eq!(outcome.failures, 2);
    bridge.shutdown();
}

const JS_FLAKY: &str = r#"
const metadata = { name: "JsFlaky", inports: ["input"], outports: ["output"] };
async function process(context) {
  const x = context.getInput("input");
  if (x === 2) throw new Error("two is not allowed");
  if (x === 4) for (;;) {}
  return { output: x * 100 };
}
module.exports = { metadata, process };
"#;

/// The same promises for a JavaScript node: a thrown error answers its
/// message on `error`, a message past its limit gets an error and a fresh
/// VM, and the other messages go through native -> JS -> native.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_nodes_answer_errors_and_timeouts_and_go_on() {
    if !kvm_available() {
        return;
    }
    flaky(
        Language::JavaScript,
        JS_FLAKY,
        "actor raised: Error: two is not allowed",
    )
    .await;
}
