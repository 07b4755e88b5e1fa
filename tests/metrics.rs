//! The bridge's metrics as a graph runs: messages by outcome, outputs,
//! state operations, VM kills by reason, restores and latencies move
//! exactly as the messages, a timeout and a worker that kills itself
//! happen; and the text is what `run --metrics` serves.

use std::time::Duration;

use reflow_integration_tests::graphs::{shown, small_bridge, GraphBuilder};
use reflow_integration_tests::kvm_available;
use reflow_sandbox::{run, RunOptions};
use serde_json::json;

const FLAKY: &str = r#"
import os, time

@actor(name="Flaky", inports=["input"], outports=["output"])
async def flaky(context):
    n = context.get_input("input")
    await context.state.increment("seen")
    print("seen", n)
    if n == 3:
        raise ValueError("three")
    if n == 5:
        time.sleep(60)
    if n == 7:
        os.kill(os.getpid(), 9)
    await context.send_output("output", n)
    return {"output": n * 10}
"#;

/// The sum of the samples of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (metric, rest) = head.split_once('{').unwrap_or((head, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_messages_failures_timeouts_and_kills() {
    if !kvm_available() {
        return;
    }
    let mut g = GraphBuilder::default();
    g.native("numbers", "Range", json!({}))
        .script("flaky", "Flaky", FLAKY, json!({}), Some(3))
        .native("out", "Format", json!({}))
        .connect("numbers", "out", "flaky", "input")
        .connect("flaky", "output", "out", "in")
        .initial("numbers", "count", json!(8));
    let graph = g.load();
    let bridge = small_bridge("metrics");
    let before = bridge.metrics().unwrap();
    assert_eq!(sample(&before, "reflow_sandbox_messages_total", &[]), 0.0);
    let options = RunOptions {
        timeout: Some(Duration::from_secs(600)),
        ..RunOptions::default()
    };
    // One scrape while the graph runs: the node holds its VM then.
    let mut during = None;
    let outcome = run(&graph, &bridge, &options, |_| {
        if during.is_none() {
            during = Some(bridge.metrics().unwrap());
        }
    })
    .await
    .unwrap();
    let during = during.expect("a scrape during the run");
    let resident = |stat: &str| {
        sample(
            &during,
            "reflow_sandbox_node_vm_resident_bytes",
            &[("runtime", "python"), ("stat", stat)],
        )
    };
    // A monitor process with its guest's touched memory: megabytes.
    assert!(resident("max") > 1e6, "{during}");
    assert!(resident("total") >= resident("max"), "{during}");
    assert_eq!(outcome.failures, 3, "{:?}", shown(&outcome, "out", "out"));
    let text = bridge.metrics().unwrap();
    let actor = ("actor", "Flaky.actor.py");
    let messages = |outcome: &str| {
        sample(
            &text,
            "reflow_sandbox_messages_total",
            &[actor, ("runtime", "python"), ("outcome", outcome)],
        )
    };
    assert_eq!(messages("ok"), 5.0, "{text}");
    assert_eq!(messages("actor_error"), 1.0, "{text}");
    assert_eq!(messages("timeout"), 1.0, "{text}");
    assert_eq!(messages("worker_gone"), 1.0, "{text}");
    assert_eq!(sample(&text, "reflow_sandbox_messages_total", &[]), 8.0);
    // Each message sent one output and returned one.
    assert_eq!(
        sample(&text, "reflow_sandbox_outputs_total", &[actor]),
        10.0
    );
    // Every message counted before it failed, the two lost VMs' too.
    assert_eq!(
        sample(&text, "reflow_sandbox_state_operations_total", &[actor]),
        8.0
    );
    // Each printed one line, within its limits: logged.
    let lines = |result: &str| {
        sample(
            &text,
            "reflow_sandbox_guest_log_lines_total",
            &[actor, ("result", result)],
        )
    };
    assert_eq!((lines("logged"), lines("dropped")), (8.0, 0.0), "{text}");
    let kills = |reason: &str| {
        sample(
            &text,
            "reflow_sandbox_vm_kills_total",
            &[("runtime", "python"), ("reason", reason)],
        )
    };
    assert_eq!(kills("timeout"), 1.0, "{text}");
    assert_eq!(kills("worker_gone"), 1.0, "{text}");
    assert_eq!(sample(&text, "reflow_sandbox_vm_kills_total", &[]), 2.0);
    assert_eq!(
        sample(
            &text,
            "reflow_sandbox_message_duration_seconds_count",
            &[actor]
        ),
        8.0
    );
    // The node's first VM and the two that replaced the lost ones.
    let restored = sample(&text, "reflow_sandbox_restores_total", &[("result", "ok")]);
    assert!(restored >= 3.0, "{text}");
    assert_eq!(
        sample(&text, "reflow_sandbox_restore_duration_seconds_count", &[]),
        restored
    );
    assert!(sample(&text, "reflow_sandbox_pool_wait_seconds_count", &[]) >= 3.0);
    assert!(text.contains("# TYPE reflow_sandbox_vms gauge"), "{text}");
    // The script's component golden: asked for once, made or found.
    bridge.wait_components(Duration::from_secs(600));
    let text = bridge.metrics().unwrap();
    assert_eq!(
        sample(
            &text,
            "reflow_sandbox_component_goldens_total",
            &[("runtime", "python")]
        ),
        1.0,
        "{text}"
    );
    bridge.shutdown();
}
