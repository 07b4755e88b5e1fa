//! Guest compute against host compute, same interpreter, same code: a
//! CPU-bound loop timed by the script itself (`time.perf_counter` in
//! Python, `performance.now` in Node; both read the clock through the
//! vDSO, no system call) in a sandboxed actor in a VM, in the same actor
//! run as a jailed host process (`isolation: process`, the image's own
//! interpreter), and in the host's own `python3` / `node`, interleaved,
//! so drift hits all alike. The guest runs user code natively; what it
//! pays beyond the host is guest kernel work during the loop (timer
//! ticks), which `kvm_pvm` hosts emulate. Run with `./dev.sh bench`.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_actor::message::Message;
use reflow_benches::report::{self, record};
use reflow_benches::{invoke_once, kvm_available, ms, process_bridge, took};
use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::BridgeConfig;
use reflow_host_bridge::SandboxActor;
use reflow_integration_tests::graphs::bridge_for;
use reflow_integration_tests::percentile;
use reflow_sandbox_core::{Language, Script};

/// The loop, the same text in the actor and on the host.
const PY_LOOP: &str = "
def work(n):
    s = 0
    for i in range(n):
        s += i * i % 7
    return s
";

const PY_ACTOR: &str = r#"
import sys, time

@actor(name="Compute", inports=["n"], outports=["took"])
def compute(context):
    n = context.get_input("n")
    started = time.perf_counter()
    work(n)
    return {"took": time.perf_counter() - started, "version": sys.version.split()[0]}
"#;

const PY_HOST: &str = r#"
import sys, time
n = int(sys.argv[1])
started = time.perf_counter()
work(n)
print(time.perf_counter() - started, sys.version.split()[0])
"#;

const JS_LOOP: &str = "
function work(n) {
  let s = 0;
  for (let i = 0; i < n; i++) s += (i * i) % 7;
  return s;
}
";

const JS_ACTOR: &str = r#"
const metadata = { name: "Compute", inports: ["n"], outports: ["took"] };
function process(context) {
  const n = Number(context.getInput("n"));
  const started = performance.now();
  work(n);
  return { took: (performance.now() - started) / 1e3, version: globalThis.process.versions.node };
}
module.exports = { metadata, process };
"#;

const JS_HOST: &str = r#"
const n = Number(process.argv[1]);
const started = performance.now();
work(n);
console.log((performance.now() - started) / 1e3, process.versions.node);
"#;

struct Subject {
    language: Language,
    name: &'static str,
    file: &'static str,
    actor: String,
    host: (&'static str, Vec<String>),
    /// Iterations: a few hundred milliseconds on the host.
    n: i64,
}

fn subjects() -> [Subject; 2] {
    [
        Subject {
            language: Language::Python,
            name: "python",
            file: "compute.actor.py",
            actor: format!("{PY_LOOP}{PY_ACTOR}"),
            // Debian's, as in the image, ahead of any other on PATH.
            host: (
                host_program("/usr/bin/python3", "python3"),
                vec!["-c".into(), format!("{PY_LOOP}{PY_HOST}")],
            ),
            n: 3_000_000,
        },
        Subject {
            language: Language::JavaScript,
            name: "javascript",
            file: "compute.actor.js",
            actor: format!("{JS_LOOP}{JS_ACTOR}"),
            host: (
                host_program("/usr/bin/node", "node"),
                vec!["-e".into(), format!("{JS_LOOP}{JS_HOST}")],
            ),
            n: 30_000_000,
        },
    ]
}

/// `path` when it exists, else `name` (found on PATH).
fn host_program(path: &'static str, name: &'static str) -> &'static str {
    if std::path::Path::new(path).exists() {
        path
    } else {
        name
    }
}

/// One host run: its time and the interpreter's version.
fn host_run(s: &Subject) -> (Duration, String) {
    let out = Command::new(s.host.0)
        .args(&s.host.1)
        .arg(s.n.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the host's {}: {e}", s.host.0));
    assert!(out.status.success(), "host {} failed: {out:?}", s.host.0);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let secs: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("host {} printed {text:?}", s.host.0));
    (
        Duration::from_secs_f64(secs),
        words.next().unwrap_or("?").to_string(),
    )
}

fn compute(_: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let rt = reflow_benches::runtime();
    report::reset("compute");
    let rounds = report::samples(10);
    for s in subjects() {
        let bridge = rt.block_on(async {
            bridge_for(
                &[s.language],
                StateStore::embedded(),
                BridgeConfig::default(),
            )
        });
        let process_bridge =
            rt.block_on(async { process_bridge(s.language, BridgeConfig::default()) });
        bridge.wait_ready(Duration::from_secs(300));
        process_bridge.wait_ready(Duration::from_secs(300));
        let script = Script::inline(s.language, s.file, &s.actor);
        let actor = bridge.actor(script.clone()).expect("the compute actor");
        let process_actor = process_bridge
            .actor(script)
            .expect("the compute actor in a process");
        let run = |actor: &SandboxActor| {
            let outputs = invoke_once(
                &rt,
                actor,
                HashMap::from([("n".to_string(), Message::Integer(s.n))]),
            );
            let version = match outputs.get("version") {
                Some(Message::String(v)) => v.to_string(),
                other => panic!("no version in {other:?}"),
            };
            (took(&outputs), version)
        };
        // One of each first, unmeasured: load, JIT, page cache.
        let (_, guest_version) = run(&actor);
        let (_, process_version) = run(&process_actor);
        let (_, host_version) = host_run(&s);
        let (mut guest, mut process, mut host) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            guest.push(run(&actor).0);
            process.push(run(&process_actor).0);
            host.push(host_run(&s).0);
        }
        bridge.shutdown();
        process_bridge.shutdown();
        guest.sort();
        process.sort();
        host.sort();
        let p = percentile(&process, 0.5);
        let (g, h) = (percentile(&guest, 0.5), percentile(&host, 0.5));
        let process_ratio = p.as_secs_f64() / h.as_secs_f64();
        let process_same = if process_version == host_version {
            format!("both {process_version}")
        } else {
            format!("NOT the same version: process {process_version}, host {host_version}")
        };
        println!(
            "compute: {}: the same loop, process p50 {:.1} ms, host p50 {:.1} ms: \
             {process_ratio:.3}x ({rounds} each, interleaved; {process_same})",
            s.name,
            ms(p),
            ms(h)
        );
        record(
            "compute",
            &format!("process / host compute, same interpreter, {}", s.name),
            process_ratio,
            &format!(
                "a CPU-bound loop timed by the script: process worker p50 {:.1} ms, host \
                 {:.1} ms; {rounds} each; {process_same}",
                ms(p),
                ms(h)
            ),
        );
        let ratio = g.as_secs_f64() / h.as_secs_f64();
        let same = if guest_version == host_version {
            format!("both {guest_version}")
        } else {
            format!("NOT the same version: guest {guest_version}, host {host_version}")
        };
        println!(
            "compute: {}: the same loop, guest p50 {:.1} ms, host p50 {:.1} ms: {ratio:.3}x \
             ({rounds} each, interleaved; {same})",
            s.name,
            ms(g),
            ms(h)
        );
        record(
            "compute",
            &format!("guest / host compute, same interpreter, {}", s.name),
            ratio,
            &format!(
                "a CPU-bound loop timed by the script: guest p50 {:.1} ms, host {:.1} ms; \
                 {rounds} each; {same}",
                ms(g),
                ms(h)
            ),
        );
    }
}

criterion_group!(benches, compute);
criterion_main!(benches);
