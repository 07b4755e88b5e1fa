//! Hot reload: a script changed while 1,000 messages stream through its
//! node. Every input is answered exactly once, in order; the answers
//! switch from the old behaviour to the new one at one point; the node's
//! state carries over. A new version that does not load is refused and
//! the old one keeps answering.

use std::time::Duration;

use reflow_integration_tests::graphs::{shown, small_bridge, GraphBuilder};
use reflow_integration_tests::kvm_available;
use reflow_sandbox::{run, RunOptions};
use reflow_sandbox_core::{Language, Script};
use serde_json::json;

const MESSAGES: usize = 1000;

/// The Counter script, `version` in its answers; it raises on input
/// `fail_at` (0: never).
fn counter(version: &str, fail_at: usize) -> String {
    format!(
        r#"
import time

@actor(name="Counter", inports=["input"], outports=["output"])
async def counter(context):
    n = await context.state.increment("seen")
    time.sleep(0.002)
    if context.get_input("input") == {fail_at}:
        raise ValueError("the last one")
    return {{"output": f"{{context.get_input('input')}}:{version}:{{n}}"}}
"#
    )
}

/// Streams [`MESSAGES`] through a Counter node, publishing `update` after
/// the 200th answer; returns the answers (input, version, count), the
/// metrics at the end and the errors.
async fn stream_with_update(update: &str) -> (Vec<(usize, String, usize)>, String, Vec<String>) {
    let mut g = GraphBuilder::default();
    g.native("numbers", "Range", json!({}))
        .script("counter", "Counter", &counter("v1", 0), json!({}), None)
        .connect("numbers", "out", "counter", "input")
        .initial("numbers", "count", json!(MESSAGES));
    let graph = g.load();
    let bridge = small_bridge("reload");
    let (tx, rx) = flume::unbounded();
    let options = RunOptions {
        timeout: Some(Duration::from_secs(600)),
        updates: Some(rx),
        ..RunOptions::default()
    };
    let new = Script::inline(Language::Python, "Counter.actor.py", update);
    let mut seen = 0;
    let outcome = run(&graph, &bridge, &options, |_| {
        seen += 1;
        if seen == 200 {
            tx.send(("Counter".to_string(), new.clone())).unwrap();
        }
    })
    .await
    .unwrap();
    let metrics = bridge.metrics().unwrap();
    bridge.shutdown();
    let errors = shown(&outcome, "counter", "error");
    assert_eq!(outcome.failures, errors.len());
    let answers = shown(&outcome, "counter", "output")
        .iter()
        .map(|s| {
            let parts: Vec<&str> = s.trim_matches('"').split(':').collect();
            (
                parts[0].parse().unwrap(),
                parts[1].to_string(),
                parts[2].parse().unwrap(),
            )
        })
        .collect();
    (answers, metrics, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_changed_mid_stream_switches_once_without_losing_a_message() {
    if !kvm_available() {
        return;
    }
    let v2 = counter("v2", MESSAGES);
    let (answers, metrics, errors) = stream_with_update(&v2).await;
    // The last input raised in v2: its error names the version.
    let hash = reflow_host_bridge::versions::content_hash(&Script::inline(
        Language::Python,
        "Counter.actor.py",
        &v2,
    ));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&format!("Counter.actor.py (counter, version {hash})"))
            && errors[0].contains("the last one"),
        "{errors:?}"
    );
    assert_eq!(answers.len(), MESSAGES - 1);
    for (i, (input, _, n)) in answers.iter().enumerate() {
        assert_eq!(*input, i + 1, "answered once each, in order");
        assert_eq!(*n, i + 1, "the state counter carried over");
    }
    let switch = answers
        .iter()
        .position(|a| a.1 == "v2")
        .expect("the new version answered");
    eprintln!(
        "reload: the answers switched to v2 at message {}",
        switch + 1
    );
    assert!(switch >= 200, "switched at {switch}, before the update");
    assert!(
        answers[..switch].iter().all(|a| a.1 == "v1")
            && answers[switch..].iter().all(|a| a.1 == "v2"),
        "one switch point"
    );
    assert!(
        metrics.contains(
            "reflow_sandbox_script_updates_total{actor=\"Counter.actor.py\",result=\"applied\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_does_not_load_leaves_the_old_one_running() {
    if !kvm_available() {
        return;
    }
    let broken = "@actor(name='Counter', inports=['input'], outports=['output'])\n\
                  def counter(context):\n    return {'output': undefined_name}\n\
                  raise RuntimeError('this version does not load')\n";
    let (answers, metrics, errors) = stream_with_update(broken).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(answers.len(), MESSAGES);
    for (i, (input, version, n)) in answers.iter().enumerate() {
        assert_eq!((*input, version.as_str(), *n), (i + 1, "v1", i + 1));
    }
    assert!(
        metrics.contains(
            "reflow_sandbox_script_updates_total{actor=\"Counter.actor.py\",result=\"rejected\"} 1"
        ),
        "{metrics}"
    );
}
