//! What actors print, through `reflow-sandbox run`: each line an event
//! tagged with its node and message, and a script that prints 100 MB in a
//! loop (Python and JavaScript) costs the host a bounded log (its message's
//! `max_log_lines`, the rest counted as dropped) while the graph goes on.
//! Needs /dev/kvm and the guest images (`./dev.sh test` provides both).

use std::path::Path;
use std::process::Command;

mod common;
use common::{kvm, text};

const PYTHON: &str = r#"import sys
print('loading chatty')
@actor(name='Chatty', inports=['input'], outports=['output'])
def chatty(context):
    n = context.get_input('input')
    print('hello', n)
    print('careful', n, file=sys.stderr)
    if n == 2:
        line = 'x' * 99
        for _ in range(1_000_000):
            print(line)
    print('\x1b[2J', end='')
    return {'output': n}
"#;

const JAVASCRIPT: &str = r#"console.log('loading shouty');
const metadata = { component: 'Shouty', inports: ['input'], outports: ['output'] };
function process(context) {
  const n = Number(context.getInput('input'));
  console.log('hello', n);
  console.error('careful', n);
  if (n === 2) {
    const line = 'y'.repeat(99);
    for (let i = 0; i < 1e6; i++) console.log(line);
  }
  return { output: n };
}
module.exports = { metadata, process };
"#;

/// `Range(3) -> actor -> Format` for each of the two actors, in `dir`.
fn graph(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("chatty.actor.py"), PYTHON).unwrap();
    std::fs::write(dir.join("shouty.actor.js"), JAVASCRIPT).unwrap();
    let edge = |n: &str, p: &str| {
        serde_json::json!({"nodeId": n, "portName": p, "portId": p, "expose": false,
                           "portType": {"type": "any"}})
    };
    let script = |runtime: &str, path: &str| {
        serde_json::json!({"componentSpec": {"type": "script",
            "script": {"runtime": runtime, "source": "file", "path": path}}})
    };
    let mut processes = serde_json::Map::new();
    let mut connections = Vec::new();
    for (actor, component, runtime, path) in [
        ("py", "Chatty", "python", "chatty.actor.py"),
        ("js", "Shouty", "javascript", "shouty.actor.js"),
    ] {
        let (range, sink) = (format!("{actor}_range"), format!("{actor}_out"));
        processes.insert(
            range.clone(),
            serde_json::json!({"id": range, "component": "Range"}),
        );
        processes.insert(
            actor.into(),
            serde_json::json!({"id": actor, "component": component,
                               "metadata": script(runtime, path)}),
        );
        processes.insert(
            sink.clone(),
            serde_json::json!({"id": sink, "component": "Format",
                               "metadata": {"template": "{}"}}),
        );
        connections.push(serde_json::json!(
            {"from": edge(&range, "count"), "to": edge(&range, "count"), "data": 3}));
        connections.push(serde_json::json!(
            {"from": edge(&range, "out"), "to": edge(actor, "input")}));
        connections.push(serde_json::json!(
            {"from": edge(actor, "output"), "to": edge(&sink, "in")}));
    }
    let graph = serde_json::json!({
        "caseSensitive": true,
        "properties": {"name": "chatty"},
        "processes": processes,
        "connections": connections,
    });
    let path = dir.join("graph.json");
    std::fs::write(&path, graph.to_string()).unwrap();
    path
}

#[test]
fn printed_lines_are_logged_per_message_and_a_flood_is_capped() {
    if !kvm() {
        return;
    }
    for var in [
        "REFLOW_KERNEL",
        "REFLOW_INITRAMFS",
        "REFLOW_PYTHON_IMAGE",
        "REFLOW_NODE_IMAGE",
    ] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the tests with ./dev.sh test"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = graph(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .arg("run")
        .arg(&path)
        .args(["--quiet", "--preload", "1", "--log-format", "json"])
        .env(
            "RUST_LOG",
            "warn,reflow_network=error,reflow_sandbox::guest=info",
        )
        .env_remove("REDIS_URL")
        .output()
        .expect("reflow-sandbox runs");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{}", tail(&stderr));
    let mut results: Vec<&str> = stdout.lines().collect();
    results.sort();
    assert_eq!(
        results,
        [
            "js_out.out: \"1\"",
            "js_out.out: \"2\"",
            "js_out.out: \"3\"",
            "py_out.out: \"1\"",
            "py_out.out: \"2\"",
            "py_out.out: \"3\""
        ],
        "the graph goes on past the flood\n{}",
        tail(&stderr)
    );
    // Two floods of 100 MB each: the log holds two messages' worth of
    // lines (1000 each by default) and a few more.
    assert!(stderr.len() < 2 << 20, "{} bytes of log", stderr.len());
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for (node, actor) in [("py", "chatty.actor.py"), ("js", "shouty.actor.js")] {
        let guest: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["target"] == "reflow_sandbox::guest" && e["node"] == node)
            .collect();
        // The line is the event's "message"; `seq` numbers the node's
        // messages from 1. (What the script's top level prints is logged
        // where it runs: in a node's VM, or once when its component golden
        // is built, which an earlier run may have cached: not checked here.)
        let text_of = |e: &serde_json::Value| e["message"].as_str().unwrap_or("").to_string();
        let in_message = |n: u64| -> Vec<&serde_json::Value> {
            guest
                .iter()
                .copied()
                .filter(|e| e["seq"].as_u64() == Some(n))
                .collect()
        };
        for n in 1..=3u64 {
            let lines = in_message(n);
            assert!(
                lines
                    .iter()
                    .any(|e| e["stream"] == "stdout" && text_of(e) == format!("hello {n}")),
                "{node} message {n}: {lines:?}"
            );
            assert!(
                lines
                    .iter()
                    .any(|e| e["stream"] == "stderr" && text_of(e) == format!("careful {n}")),
                "{node} message {n}: {lines:?}"
            );
            assert!(lines.iter().all(|e| e["actor"] == actor));
        }
        let flood = in_message(2);
        assert!(
            flood.len() <= 1001,
            "{node}: {} events for the flood",
            flood.len()
        );
        let dropped = flood
            .iter()
            .find_map(|e| e["dropped_lines"].as_u64())
            .unwrap_or_else(|| panic!("{node}: no drop count in {flood:?}"));
        assert!(
            (998_000..=1_000_000).contains(&dropped),
            "{node}: {dropped} lines dropped"
        );
    }
    // A script cannot drive the operator's terminal: its escape sequence
    // arrives escaped.
    assert!(
        events
            .iter()
            .any(|e| e["node"] == "py" && e["message"] == "\\u{1b}[2J"),
        "the escaped escape sequence:\n{}",
        tail(&stderr)
    );
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(4000)..]
}
