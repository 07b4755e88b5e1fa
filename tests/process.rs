//! Script workers run as jailed host processes (`isolation: process`):
//! the actor suite in a Python and a JavaScript process worker, what its jail leaves it
//! (checked by name from inside), and that killing it leaves nothing
//! behind. These need no /dev/kvm.

use reflow_host_bridge::state::StateStore;
use reflow_integration_tests::actor_suite;
use reflow_integration_tests::calls::{get, invoke, map, text};
use reflow_integration_tests::javascript_scripts::JAVASCRIPT;
use reflow_integration_tests::python_scripts::PYTHON;
use reflow_integration_tests::{missing, process_tree, process_worker, processes, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::{Language, WorkerClient};

#[test]
fn javascript_actors_run_in_a_process_worker() {
    actor_suite::process_actors_load_run_stream_keep_state_and_fail_cleanly(&JAVASCRIPT);
}

#[test]
fn python_actors_run_in_a_process_worker() {
    actor_suite::process_actors_load_run_stream_keep_state_and_fail_cleanly(&PYTHON);
}

/// What an actor finds of its jail, reported by name. `{host}` is a host
/// directory that exists outside the jail.
const PROBE: &str = r#"
import ctypes, errno, os, socket

libc = ctypes.CDLL(None, use_errno=True)

def raw(number):
    if libc.syscall(number, 0, 0, 0, 0, 0) == -1:
        return errno.errorcode.get(ctypes.get_errno(), "?")
    return "allowed"

def attempt(f):
    try:
        f()
        return "allowed"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return line.split()[1]

@actor(name="Probe", outports=["facts"])
def probe(context):
    host = context.config["host"]
    def tcp():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1)
        s.connect(("10.0.2.2", 80))
    def udp():
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("10.0.2.2", 53))
    def write_root():
        open("/usr/lib/reflow-was-here", "w")
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "host_dir": os.path.exists(host),
        "host_listing": attempt(lambda: os.listdir(host)),
        "tcp": attempt(tcp),
        "udp": attempt(udp),
        "write_root": attempt(write_root),
        "tmp": attempt(lambda: open("/tmp/scratch", "w").write("ok")),
        "devices": ",".join(sorted(os.listdir("/dev"))),
        "processes": ",".join(p for p in os.listdir("/proc") if p.isdigit()),
        "interfaces": attempt(lambda: os.listdir("/sys/class/net")),
        "capabilities": status("CapEff"),
        "no_new_privs": status("NoNewPrivs"),
        "mem": attempt(lambda: open("/dev/mem", "rb")),
        "ptrace": raw(101),
        "mount": raw(165),
        "unshare": raw(272),
        "bpf": raw(321),
    }
"#;

#[test]
fn a_process_worker_sees_its_image_read_only_and_nothing_of_the_host() {
    let worker = process_worker(Language::Python, 8);
    let alive = || worker.is_alive();
    let mut client =
        WorkerClient::attach(worker.ring_region(), &worker.layout()).with_liveness(&alive);
    client
        .load("probe", "probe.actor.py", PROBE, LIMIT)
        .unwrap();
    let host = env!("CARGO_MANIFEST_DIR");
    let store = StateStore::embedded();
    let config = map(vec![("host", Value::Str(host.into()))]);
    let (_, facts) = invoke(&mut client, &store, "probe", map(vec![]), config).unwrap();
    eprintln!("{facts:?}");
    let fact = |key: &str| text(get(&facts, key));
    // PID 1 of a PID namespace of its own, alone in it.
    assert_eq!(get(&facts, "pid"), Some(&Value::Int(1)));
    assert_eq!(fact("processes"), "1");
    // Not root; as root, a uid of its own.
    assert_ne!(get(&facts, "uid"), Some(&Value::Int(0)));
    // Nothing of the host's files.
    assert_eq!(get(&facts, "host_dir"), Some(&Value::Bool(false)));
    assert_eq!(fact("host_listing"), "ENOENT");
    // No network at all: no network socket (seccomp).
    assert_eq!(fact("tcp"), "EPERM");
    assert_eq!(fact("udp"), "EPERM");
    assert_eq!(fact("interfaces"), "ENOENT", "no /sys");
    // The image read-only; its own /tmp writable.
    assert_eq!(fact("write_root"), "EROFS");
    assert_eq!(fact("tmp"), "allowed");
    // Only the harmless devices; no /dev/mem.
    assert_eq!(fact("devices"), "null,random,urandom,zero");
    assert_eq!(fact("mem"), "ENOENT");
    assert_eq!(fact("capabilities"), "0000000000000000");
    assert_eq!(fact("no_new_privs"), "1");
    // Refused by its seccomp filter.
    for call in ["ptrace", "mount", "unshare", "bpf"] {
        assert_eq!(fact(call), "EPERM", "{call}");
    }
}

const DOUBLE_PY: &str = r#"
@actor(name="Double", inports=["input"], outports=["output"])
def double(context):
    return {"output": context.get_input("input") * 2}
"#;

const DOUBLE_JS: &str = r#"
const metadata = { name: "Double", inports: ["input"], outports: ["output"] };
function process(context) {
  return { output: context.getInput("input") * 2 };
}
module.exports = { metadata, process };
"#;

#[test]
fn a_held_python_worker_is_stopped_until_released() {
    held_worker_is_stopped_until_released(Language::Python, "double.actor.py", DOUBLE_PY);
}

#[test]
fn a_held_javascript_worker_is_stopped_until_released() {
    held_worker_is_stopped_until_released(Language::JavaScript, "double.actor.js", DOUBLE_JS);
}

/// An idle worker held is stopped (it uses no CPU, as a held VM's vCPUs
/// do not run) until it is let go, and then answers as before. Held
/// again and again while it sleeps between polls of its ring: a sleep a
/// stop interrupts resumes through `restart_syscall`, which its seccomp
/// filter must allow (Node aborted on a futex wait there once).
fn held_worker_is_stopped_until_released(language: Language, file: &str, source: &str) {
    let worker = process_worker(language, 8);
    let alive = || worker.is_alive();
    let mut client =
        WorkerClient::attach(worker.ring_region(), &worker.layout()).with_liveness(&alive);
    client.load("double", file, source, LIMIT).unwrap();
    let store = StateStore::embedded();
    let mut double = |n: i64| {
        let inputs = map(vec![("input", Value::Int(n))]);
        let (_, outputs) = invoke(&mut client, &store, "double", inputs, map(vec![])).unwrap();
        get(&outputs, "output").cloned()
    };
    assert_eq!(double(2), Some(Value::Int(4)));

    // The jail's PID 1, the worker: its outer process's one child.
    let (inner, _) = processes()
        .into_iter()
        .find(|(_, parent)| *parent == worker.pid())
        .expect("the jail's worker");
    // 'T' stopped; '-' gone.
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{inner}/stat")).unwrap_or_default();
        let fields = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        fields.chars().next().unwrap_or('-')
    };
    let wait_for = |stopped: bool| {
        let t = std::time::Instant::now();
        while (state() == 'T') != stopped && t.elapsed() < LIMIT {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(state() == 'T', stopped, "state {}", state());
    };
    wait_for(false);
    // Past its spin (50 ms, calibrated): sleeping between polls.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..20 {
        assert!(worker.hold(), "held");
        wait_for(true);
        std::thread::sleep(std::time::Duration::from_millis(3));
        worker.release();
        wait_for(false);
        std::thread::sleep(std::time::Duration::from_millis(7));
    }
    assert!(worker.is_alive(), "the worker lives after being held");
    assert_eq!(double(21), Some(Value::Int(42)));
}

/// The worker and everything it starts count against a pids group of its
/// own, whatever uid it runs as (`RLIMIT_NPROC` counts a uid's processes
/// across the host: a bound per worker only for a uid of its own).
#[test]
fn a_process_worker_runs_in_a_pids_group_of_its_own() {
    let worker = process_worker(Language::Python, 8);
    let Some(group) = worker.pids_group() else {
        missing("no usable cgroup pids controller for process workers");
        return;
    };
    let read = |f: &str| std::fs::read_to_string(group.join(f)).unwrap();
    assert_eq!(
        read("pids.max").trim(),
        reflow_vmm::monitor::harden::MAX_THREADS.to_string()
    );
    let current: u64 = read("pids.current").trim().parse().unwrap();
    assert!(current >= 1, "the worker's tasks are counted: {current}");
}

#[test]
fn killing_a_process_worker_leaves_nothing_behind() {
    let worker = process_worker(Language::Python, 8);
    let pid = worker.pid();
    let before = process_tree(pid);
    assert!(before.len() >= 2, "the jail and its worker: {before:?}");
    let run_dir = worker.run_dir().to_path_buf();
    assert!(run_dir.is_dir());
    let groups: Vec<_> = [worker.memory_group(), worker.pids_group()]
        .into_iter()
        .flatten()
        .map(|g| g.to_path_buf())
        .collect();
    for group in &groups {
        let members = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
        assert!(
            !members.trim().is_empty(),
            "the worker is in its group {}",
            group.display()
        );
    }
    drop(worker);
    // The worker dies with the jail's outer process (a parent-death
    // signal), and the host's init reaps it: a moment later.
    let left = || -> Vec<u32> {
        before
            .iter()
            .copied()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect()
    };
    let t = std::time::Instant::now();
    while !left().is_empty() && t.elapsed() < LIMIT {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let left = left();
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(!run_dir.exists(), "{} left", run_dir.display());
    for group in groups {
        assert!(!group.exists(), "{} left", group.display());
    }
}

const TRIPLE_PY: &str = r#"
@actor(name="Triple", inports=["input"], outports=["output"])
async def triple(context):
    await context.send_output("output", context.get_input("input") * 3)
"#;

const CALLS_JS: &str = r#"
const metadata = { name: "Calls", inports: ["input"], outports: ["output"] };
async function process(context) {
  const n = await context.state.increment("calls");
  return { output: `${context.getInput("input")}#${n}` };
}
module.exports = { metadata, process };
"#;

/// native -> Python -> JavaScript -> native in a real Reflow network, both
/// script nodes' workers jailed host processes from the bridge's pools,
/// with state in the embedded store: no VM anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflow_network_runs_process_actors_of_both_languages() {
    use reflow_host_bridge::{Bridge, BridgeConfig};
    use reflow_integration_tests::graphs::{shown, GraphBuilder};
    use reflow_integration_tests::{node_image, python_image};
    use reflow_sandbox::setup::Sizes;
    use reflow_sandbox_core::{PoolConfig, VmSpec};
    use serde_json::json;

    let spec = |language: Language, image| {
        let sizes = Sizes::default_for(language);
        VmSpec::process(language, image, sizes.shape.mem_mib, sizes.shm_mib)
    };
    let config = BridgeConfig {
        pool: PoolConfig {
            preload_count: 1,
            max_size: 4,
            ..PoolConfig::default()
        },
        namespace: "process".into(),
        ..BridgeConfig::default()
    };
    let bridge = Bridge::new(
        vec![
            (Language::Python, spec(Language::Python, python_image())),
            (
                Language::JavaScript,
                spec(Language::JavaScript, node_image()),
            ),
        ],
        StateStore::embedded(),
        config,
    );
    let mut g = GraphBuilder::default();
    g.native("numbers", "Range", json!({}))
        .script("triple", "Triple", TRIPLE_PY, json!({}), None)
        .js_script("calls", "Calls", CALLS_JS, json!({}), None)
        .native("shown", "Format", json!({}))
        .connect("numbers", "out", "triple", "input")
        .connect("triple", "output", "calls", "input")
        .connect("calls", "output", "shown", "in")
        .initial("numbers", "count", json!(4));
    let graph = g.load();
    let options = reflow_sandbox::RunOptions {
        timeout: Some(std::time::Duration::from_secs(300)),
        ..Default::default()
    };
    let outcome = reflow_sandbox::run(&graph, &bridge, &options, |_| {})
        .await
        .unwrap();
    assert_eq!(
        shown(&outcome, "shown", "out"),
        ["\"3#1\"", "\"6#2\"", "\"9#3\"", "\"12#4\""]
    );
    assert_eq!(outcome.failures, 0);
    for (_, shape, _) in bridge.pools() {
        assert_eq!(shape.isolation, reflow_sandbox_core::IsolationKind::Process);
    }
    bridge.shutdown();
}

const WHERE: &str = "import os\n\
@actor(name=\"NAME\", inports=[\"go\"], outports=[\"at\"])\n\
def where(context):\n    \
return {\"at\": \"vm\" if os.path.exists(\"/dev/mem\") else \"process\"}\n";

/// reflow.yaml's `isolation`: the Python runtime set to `process`, one
/// actor back on `vm`; the bridge has a pool of each, shows which, and
/// each node's worker runs where its config says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflow_yaml_chooses_process_or_vm_per_language_and_actor() {
    use reflow_host_bridge::BridgeConfig;
    use reflow_integration_tests::graphs::{shown, GraphBuilder};
    use reflow_sandbox::setup::{self, Sizes};
    use reflow_workspace::config::Config;
    use serde_json::json;

    if !reflow_integration_tests::kvm_available() {
        return;
    }
    let config = Config::parse(
        "workspace:\n  sandbox:\n    python:\n      isolation: process\n    actors:\n      \
         Strict:\n        isolation: vm\n",
        std::path::Path::new("reflow.yaml"),
    )
    .unwrap();
    let mut g = GraphBuilder::default();
    g.native("go", "Range", json!({}))
        .script(
            "loose",
            "Loose",
            &WHERE.replace("NAME", "Loose"),
            json!({}),
            None,
        )
        .script(
            "strict",
            "Strict",
            &WHERE.replace("NAME", "Strict"),
            json!({}),
            None,
        )
        .native("loose_at", "Format", json!({}))
        .native("strict_at", "Format", json!({}))
        .connect("go", "out", "loose", "go")
        .connect("go", "out", "strict", "go")
        .connect("loose", "at", "loose_at", "in")
        .connect("strict", "at", "strict_at", "in")
        .initial("go", "count", json!(2));
    let mut graph = g.load();
    for (component, script) in &mut graph.scripts {
        config.apply_actor(component, script);
    }
    let runtime = |l| Sizes::default_for(l).with(&config.runtime_shape(l));
    let shapes = setup::shapes(&graph, runtime);
    let bridge = setup::bridge_for(
        &reflow_integration_tests::bridge_images(),
        &shapes,
        &reflow_vmm::cache_root(),
        StateStore::embedded(),
        BridgeConfig::default(),
        false,
    )
    .expect("a bridge");
    let pools: Vec<String> = bridge.pools().map(|(_, s, _)| s.to_string()).collect();
    assert_eq!(
        pools,
        [
            "256 MiB, 1 vCPU, unlimited CPU, process",
            "256 MiB, 1 vCPU, unlimited CPU"
        ]
    );
    let options = reflow_sandbox::RunOptions {
        timeout: Some(std::time::Duration::from_secs(600)),
        ..Default::default()
    };
    let outcome = reflow_sandbox::run(&graph, &bridge, &options, |_| {})
        .await
        .unwrap();
    bridge.shutdown();
    assert_eq!(outcome.failures, 0);
    assert_eq!(
        shown(&outcome, "loose_at", "out"),
        ["\"process\"", "\"process\""]
    );
    assert_eq!(shown(&outcome, "strict_at", "out"), ["\"vm\"", "\"vm\""]);
}

/// Runs this test binary's test `name` alone in a child process with
/// `/dev/kvm` hidden (`REFLOW_NO_KVM=1`) and `CI=true`: its exit status
/// and what it printed.
fn without_kvm(name: &str) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(reflow_vmm::NO_KVM_ENV, "1")
        .env("CI", "true")
        .output()
        .expect("the child runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// A CI-like run on a host without KVM (hidden by the test switch): the
/// process suite passes, a test that needs a VM fails loudly, and
/// `reflow-sandbox run` refuses actors that need VMs by name, saying how
/// to run them as processes, instead of falling back on its own.
#[test]
fn without_kvm_process_actors_run_and_vm_ones_are_refused_by_name() {
    use reflow_integration_tests::graphs::GraphBuilder;
    use reflow_sandbox::setup::{self, Sizes};
    use reflow_workspace::config::Config;
    use serde_json::json;

    let (status, text) = without_kvm("a_reflow_network_runs_process_actors_of_both_languages");
    assert!(status.success(), "the process network without KVM:\n{text}");
    let (status, text) = without_kvm("reflow_yaml_chooses_process_or_vm_per_language_and_actor");
    assert!(!status.success(), "a VM test passed without KVM:\n{text}");
    assert!(
        text.contains("CI=true and a prerequisite is missing")
            && text.contains("REFLOW_NO_KVM=1 hides /dev/kvm"),
        "{text}"
    );

    let mut g = GraphBuilder::default();
    g.native("go", "Range", json!({}))
        .script(
            "a",
            "Loose",
            &WHERE.replace("NAME", "Loose"),
            json!({}),
            None,
        )
        .js_script("b", "Calls", CALLS_JS, json!({}), None)
        .connect("go", "out", "a", "go")
        .connect("go", "out", "b", "input")
        .initial("go", "count", json!(1));
    let graph = g.load();
    let why = Some("no KVM here".to_string());
    let refused = setup::refuse_vms_without_kvm(&graph, Sizes::default_for, why.clone())
        .expect_err("VM actors without KVM");
    let said = refused.to_string();
    assert!(
        said.starts_with("Calls (javascript), Loose (python) need a VM")
            && said.contains("no KVM here")
            && said.contains("isolation: process"),
        "{said}"
    );
    assert!(setup::refuse_vms_without_kvm(&graph, Sizes::default_for, None).is_ok());
    let config = Config::parse(
        "workspace:\n  sandbox:\n    python:\n      isolation: process\n    javascript:\n      \
         isolation: process\n",
        std::path::Path::new("reflow.yaml"),
    )
    .unwrap();
    let runtime = |l| Sizes::default_for(l).with(&config.runtime_shape(l));
    assert!(setup::refuse_vms_without_kvm(&graph, runtime, why).is_ok());
}
