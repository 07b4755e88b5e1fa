//! The `reflow-sandbox` binary as a user runs it: the README's demo graph,
//! a graph whose actor fails (exit status 2, the error printed) and a graph
//! that is refused (exit status 1, the reason printed). Needs /dev/kvm and
//! the guest images (`./dev.sh test` provides both); the runs with /dev/kvm
//! hidden need only the images.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{kvm, text};

fn run(graph: &Path, extra: &[&str]) -> Output {
    run_env(graph, extra, &[])
}

fn run_env(graph: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    run_without(graph, extra, env, &[])
}

/// [`run_env`] with the variables `unset` taken out of its environment.
fn run_without(graph: &Path, extra: &[&str], env: &[(&str, &str)], unset: &[&str]) -> Output {
    for var in ["REFLOW_KERNEL", "REFLOW_INITRAMFS", "REFLOW_PYTHON_IMAGE"] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the tests with ./dev.sh test"
        );
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"));
    for var in unset {
        command.env_remove(var);
    }
    command
        .arg("run")
        .arg(graph)
        .args(["--quiet", "--preload", "1", "--timeout", "600"])
        .args(extra)
        .envs(env.iter().copied())
        .env_remove("REDIS_URL")
        .output()
        .expect("reflow-sandbox runs")
}

/// Asserts `stdout` holds the demo pipeline's results, in any order.
fn assert_demo_results(stdout: &str, stderr: &str) {
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    let mut want: Vec<String> = (1..=5)
        .map(|i| format!("counter.out: \"numbers seen by scale so far: {i}\""))
        .chain((1..=5).map(|i| format!("result.out: \"scaled and offset: {}\"", i * 10 + 1)))
        .collect();
    want.sort();
    assert_eq!(lines, want, "stderr:\n{stderr}");
}

#[test]
fn the_demo_pipeline_prints_its_results() {
    if !kvm() {
        return;
    }
    let graph = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline/graph.json");
    let out = run(&graph, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_demo_results(&stdout, &stderr);
    assert!(!stderr.contains("INPORT CLOSED"), "{stderr}");
}

/// The demo pipeline as a workspace on a host without /dev/kvm (hidden
/// by `REFLOW_NO_KVM=1`): refused, naming its actors and the way out;
/// with `isolation: process` for both languages in its reflow.yaml, it
/// prints the demo's results from process workers. Needs no /dev/kvm.
#[test]
fn without_kvm_the_demo_runs_only_once_reflow_yaml_allows_processes() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline");
    for file in ["graph.json", "scale.actor.py", "offset.actor.js"] {
        std::fs::copy(example.join(file), dir.path().join(file)).unwrap();
    }
    // No KVM, no guest kernel or initramfs, and a cache of its own: a
    // golden snapshot made (or found) on the way would show.
    let cache = tempfile::tempdir().unwrap();
    let run_env = |graph: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let cache_dir = cache.path().to_str().unwrap();
        let env: Vec<(&str, &str)> = [("REFLOW_CACHE_DIR", cache_dir)]
            .into_iter()
            .chain(env.iter().copied())
            .collect();
        run_without(graph, extra, &env, &["REFLOW_KERNEL", "REFLOW_INITRAMFS"])
    };
    let no_kvm = [(reflow_vmm::NO_KVM_ENV, "1")];
    let out = run_env(dir.path(), &[], &no_kvm);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("(python)")
            && stderr.contains("(javascript)")
            && stderr.contains("this host cannot run one")
            && stderr.contains("isolation: process"),
        "{stderr}"
    );
    assert!(text(&out.stdout).is_empty(), "nothing ran");

    std::fs::write(
        dir.path().join("reflow.yaml"),
        "workspace:\n  sandbox:\n    python:\n      isolation: process\n    \
         javascript:\n      isolation: process\n",
    )
    .unwrap();
    let out = run_env(dir.path(), &[], &no_kvm);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_demo_results(&stdout, &stderr);

    // Or the graph's script nodes say so, each in its metadata.
    std::fs::remove_file(dir.path().join("reflow.yaml")).unwrap();
    let path = dir.path().join("graph.json");
    let mut graph: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    graph["processes"]["scale"]["metadata"]["isolation"] = "process".into();
    std::fs::write(&path, graph.to_string()).unwrap();
    let out = run_env(dir.path(), &[], &no_kvm);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Offset (javascript)") && !stderr.contains("(python)"),
        "only the node left a VM is refused: {stderr}"
    );
    graph["processes"]["offset"]["metadata"]["isolation"] = "process".into();
    std::fs::write(&path, graph.to_string()).unwrap();
    let out = run_env(dir.path(), &[], &no_kvm);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_demo_results(&stdout, &stderr);
    let snapshots = cache.path().join("snapshots");
    let made: Vec<_> = std::fs::read_dir(&snapshots)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "no VM, no golden snapshot: {made:?}");
}

/// `Range(2) -> Boom (raises) -> Format` on Boom's error port, written
/// in `dir`: the graph file and its JSON.
fn boom_graph(dir: &Path) -> (std::path::PathBuf, serde_json::Value) {
    std::fs::write(
        dir.join("boom.actor.py"),
        "@actor(name='Boom', inports=['input'], outports=['output'])\n\
         def boom(context):\n    raise RuntimeError('boom ' + str(context.get_input('input')))\n",
    )
    .unwrap();
    let edge = |n: &str, p: &str| {
        serde_json::json!({"nodeId": n, "portName": p, "portId": p, "expose": false,
                           "portType": {"type": "any"}})
    };
    let graph = serde_json::json!({
        "caseSensitive": true,
        "properties": {"name": "boom"},
        "processes": {
            "n": {"id": "n", "component": "Range"},
            "b": {"id": "b", "component": "Boom", "metadata": {"componentSpec": {"type": "script",
                  "script": {"runtime": "python", "source": "file", "path": "boom.actor.py"}}}},
            "e": {"id": "e", "component": "Format"},
        },
        "connections": [
            {"from": edge("n", "count"), "to": edge("n", "count"), "data": 2},
            {"from": edge("n", "out"), "to": edge("b", "input")},
            {"from": edge("b", "error"), "to": edge("e", "in")},
        ],
    });
    let path = dir.join("graph.json");
    std::fs::write(&path, graph.to_string()).unwrap();
    (path, graph)
}

#[test]
fn json_logs_carry_vm_and_message_events() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = boom_graph(dir.path());
    let filter = "warn,reflow_network=error,reflow_sandbox::vm=debug,reflow_sandbox::message=debug";
    let out = run_env(&path, &["--log-format", "json"], &[("RUST_LOG", filter)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let named = |message: &str| {
        events
            .iter()
            .filter(|e| e["message"] == message)
            .collect::<Vec<_>>()
    };
    let lent = named("VM lent");
    assert_eq!(lent.len(), 1, "{stderr}");
    assert_eq!(lent[0]["node"], "b");
    assert_eq!(lent[0]["actor"], "boom.actor.py");
    assert_eq!(lent[0]["target"], "reflow_sandbox::vm");
    let answered = named("answered");
    assert_eq!(answered.len(), 2, "{stderr}");
    for (a, seq) in answered.iter().zip(1..) {
        assert_eq!(a["outcome"], "actor_error");
        assert!(a["took_us"].as_u64().is_some(), "{a}");
        // In its message's span: the node, the actor, the message's
        // number in the node from 1.
        assert_eq!(a["span"]["name"], "message", "{a}");
        assert_eq!(a["span"]["seq"], seq, "{a}");
        assert_eq!(a["span"]["node"], "b", "{a}");
        assert_eq!(a["span"]["actor"], "boom.actor.py", "{a}");
    }
    // The script node ran in the bridge's own dispatch loop (Reflow's
    // process would never hold its VM): idle, the VM was held.
    assert!(
        named("VM held (idle)")
            .iter()
            .any(|e| e["actor"] == "boom.actor.py"),
        "{stderr}"
    );
    // The actor's failures are logged as JSON too, never as text.
    assert!(events.iter().any(|e| e["level"] == "WARN"), "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.contains(" WARN ")),
        "a text line among the JSON ones:\n{stderr}"
    );
}

#[test]
fn a_failing_actor_and_a_bad_graph_have_their_own_exit_status() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, graph) = boom_graph(dir.path());
    let out = run(&path, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("e.out: "))
        .collect();
    assert_eq!(errors.len(), 2, "{stdout}");
    for n in [1, 2] {
        let shown = format!("actor raised: RuntimeError: boom {n}");
        assert!(errors.iter().any(|l| l.contains(&shown)), "{stdout}");
    }
    assert!(stderr.contains("2 message(s) failed"), "{stderr}");

    let mut bad = graph.clone();
    bad["processes"]["e"]["component"] = serde_json::json!("Nope");
    std::fs::write(&path, bad.to_string()).unwrap();
    let out = run(&path, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("component \"Nope\" is neither a script"),
        "{stderr}"
    );
}

fn sandbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
        .args(args)
        .env_remove("REDIS_URL")
        .output()
        .expect("reflow-sandbox runs")
}

#[test]
fn discover_lists_components_and_reports_broken_scripts() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/workspace");
    let out = sandbox(&["discover", fixtures]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    let first: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        first,
        [
            "COMPONENT",
            "Clock",
            "Counter",
            "Greeter",
            "Multiply",
            "Negate",
            "Shout",
            "Tally",
            "Upper"
        ]
    );
    assert!(
        stderr.contains("broken/dupe.actor.py:2: inport \"a\" listed twice"),
        "{stderr}"
    );
    assert!(stderr.contains("9 script(s) skipped"), "{stderr}");

    let out = sandbox(&["discover", fixtures, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["components"].as_array().unwrap().len(), 8);
    assert_eq!(v["problems"].as_array().unwrap().len(), 9);
    assert_eq!(v["components"][3]["component"], "Multiply");
    assert_eq!(v["components"][3]["inports"][1]["required"], false);

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/workspace");
    let out = sandbox(&["discover", example]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_discovered_workspace_runs_end_to_end() {
    if !kvm() {
        return;
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workspace");
    let out = run(&example, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "repeats.out: \"seen again: the x2\"",
            "repeats.out: \"seen again: the x3\"",
            "repeats.out: \"seen again: dog x2\"",
            "repeats.out: \"seen again: the x4\"",
            "repeats.out: \"seen again: fox x2\"",
        ],
        "{stderr}"
    );
}

#[test]
fn cache_lists_its_entries_and_prunes_only_old_ones() {
    use std::fs::{File, FileTimes};
    use std::time::{Duration, SystemTime};
    let root = tempfile::tempdir().unwrap();
    let old = SystemTime::now() - Duration::from_secs(30 * 86_400);
    for (path, when) in [
        ("snapshots/old/state.bin", old),
        ("snapshots/new/state.bin", SystemTime::now()),
    ] {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"state").unwrap();
        let times = FileTimes::new().set_accessed(when).set_modified(when);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(times)
            .unwrap();
    }
    let cache = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reflow-sandbox"))
            .arg("cache")
            .args(args)
            .env("REFLOW_CACHE_DIR", root.path())
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, listed, _) = cache(&["list"]);
    assert_eq!(code, Some(0));
    assert!(
        listed.contains("old") && listed.contains("new") && listed.contains("2 entries"),
        "{listed}"
    );
    let (code, dry, _) = cache(&["prune", "--dry-run"]);
    assert_eq!(code, Some(0));
    assert!(dry.contains("would remove 1 of 2 entries"), "{dry}");
    assert!(root.path().join("snapshots/old").exists());
    let (code, _, err) = cache(&["prune", "--unused-for", "2h"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("at least 1d"), "{err}");
    let (code, pruned, _) = cache(&["prune", "--unused-for", "1w"]);
    assert_eq!(code, Some(0), "{pruned}");
    assert!(pruned.contains("removed 1 of 2 entries"), "{pruned}");
    assert!(!root.path().join("snapshots/old").exists());
    assert!(root.path().join("snapshots/new/state.bin").exists());
}
