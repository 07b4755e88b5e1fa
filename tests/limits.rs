//! VM-level limits on real clones: a CPU time limit puts the VM's threads
//! (vCPU and event loop) in a cgroup of its own, which throttles a guest
//! that spins, and goes away with the VM.

use std::path::Path;
use std::time::{Duration, Instant};

use reflow_integration_tests::calls::NoState;
use reflow_integration_tests::{kvm_available, missing, warm_python_golden, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::{Limits, SandboxVm, VmSpec};
use reflow_vmm::cgroup::CpuHierarchy;

/// `nr_throttled` of a v1 or v2 group's `cpu.stat`.
fn throttled(group: &Path) -> u64 {
    std::fs::read_to_string(group.join("cpu.stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Thread ids in the group.
fn members(group: &Path) -> Vec<String> {
    ["tasks", "cgroup.threads"]
        .iter()
        .find_map(|f| std::fs::read_to_string(group.join(f)).ok())
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

const SPIN: &str = "import time\n\
@actor(name=\"Spin\", inports=[\"s\"], outports=[\"n\"])\n\
def spin(context):\n    end = time.monotonic() + context.get_input(\"s\")\n    n = 0\n    \
while time.monotonic() < end:\n        n += 1\n    return {\"n\": n}\n";

#[test]
fn a_cpu_limited_clone_runs_in_its_own_throttled_cgroup() {
    if !kvm_available() {
        return;
    }
    if let Err(e) = CpuHierarchy::find() {
        missing(&format!("this host has no cgroup cpu controller: {e}"));
        return;
    }
    let (golden, config) = warm_python_golden(40, "run_worker.py", "worker.ready");
    let mut spec = VmSpec::new(golden, config);
    spec.cpu = Some(0.25);
    let mut vm = SandboxVm::restore(&spec, LIMIT).expect("a clone");
    let group = vm
        .cpu_group()
        .expect("a cgroup for the clone")
        .to_path_buf();
    // The vCPU thread, the event loop and what they started (in the
    // clone's monitor process: /proc/<tid> reaches any thread).
    let names: Vec<String> = members(&group)
        .iter()
        .map(|tid| {
            std::fs::read_to_string(format!("/proc/{tid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    eprintln!("threads in the clone's cgroup: {names:?}");
    assert!(names.iter().any(|n| n == "vcpu0"), "{names:?}");
    assert!(names.iter().any(|n| n == "sandbox-vm"), "{names:?}");
    vm.with_worker(|w| w.load("spin", "spin.actor.py", SPIN, LIMIT))
        .expect("load");
    let before = throttled(&group);
    let t = Instant::now();
    let inputs = Value::Map(vec![("s".into(), Value::Float(2.0))]);
    let done = vm
        .with_worker(|w| {
            w.invoke(
                "spin",
                inputs,
                Value::Map(vec![]),
                &Limits::with_timeout(LIMIT),
                &mut NoState,
            )
        })
        .expect("the spin returns");
    eprintln!("spun 2 s of guest time in {:?}: {done:?}", t.elapsed());
    let after = throttled(&group);
    assert!(
        after > before,
        "a guest spinning for 2 s under 0.25 CPUs is throttled ({before} -> {after})"
    );
    drop(vm);
    let t = Instant::now();
    while group.exists() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!group.exists(), "the clone's cgroup is removed with it");
}

const PROBE: &str = "import os\n\
@actor(name=\"PROBE\", inports=[\"go\"], outports=[\"vm\"])\n\
def probe(context):\n    \
mib = os.sysconf(\"SC_PHYS_PAGES\") * os.sysconf(\"SC_PAGE_SIZE\") >> 20\n    \
return {\"vm\": [mib, len(os.sched_getaffinity(0))]}\n";

/// An actor that asks for its own VM shape in reflow.yaml gets clones of
/// that memory size and vCPU count (a golden snapshot of their own), next
/// to an actor on its runtime's; one asking for a shape the bridge lacks
/// is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_get_vms_of_the_shape_they_ask_for() {
    use reflow_host_bridge::state::StateStore;
    use reflow_host_bridge::BridgeConfig;
    use reflow_integration_tests::graphs::{shown, GraphBuilder};
    use reflow_sandbox::setup::{self, Sizes};
    use reflow_sandbox::{run, RunOptions};
    use reflow_sandbox_core::{Language, Script, ShapeOverrides};
    use reflow_workspace::config::Config;
    use serde_json::json;

    if !kvm_available() {
        return;
    }
    let config = Config::parse(
        "workspace:\n  sandbox:\n    actors:\n      Big:\n        memory: 320MB\n        \
         vcpus: 2\n        cpu: 1.5\n",
        Path::new("reflow.yaml"),
    )
    .unwrap();
    let mut g = GraphBuilder::default();
    g.native("go", "Range", json!({}))
        .script(
            "small",
            "Small",
            &PROBE.replace("PROBE", "Small"),
            json!({}),
            None,
        )
        .script(
            "big",
            "Big",
            &PROBE.replace("PROBE", "Big"),
            json!({}),
            None,
        )
        .native("small_vm", "Format", json!({}))
        .native("big_vm", "Format", json!({}))
        .connect("go", "out", "small", "go")
        .connect("go", "out", "big", "go")
        .connect("small", "vm", "small_vm", "in")
        .connect("big", "vm", "big_vm", "in")
        .initial("go", "count", json!(1));
    let mut graph = g.load();
    for (component, script) in &mut graph.scripts {
        config.apply_actor(component, script);
    }
    let shapes = setup::shapes(&graph, Sizes::default_for);
    assert_eq!(shapes.len(), 2, "{shapes:?}");
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
            "256 MiB, 1 vCPU, unlimited CPU",
            "320 MiB, 2 vCPUs, 1.5 CPU"
        ]
    );
    let mut huge = Script::inline(Language::Python, "huge.actor.py", "");
    huge.shape = ShapeOverrides {
        mem_mib: Some(1024),
        ..ShapeOverrides::default()
    };
    let refused = bridge.actor(huge).err().expect("no pool of that shape");
    assert!(
        refused.to_string().contains("1024 MiB") && refused.to_string().contains("has none"),
        "{refused}"
    );

    let options = RunOptions {
        timeout: Some(Duration::from_secs(600)),
        ..RunOptions::default()
    };
    let outcome = run(&graph, &bridge, &options, |_| {}).await.unwrap();
    bridge.shutdown();
    assert_eq!(outcome.failures, 0);
    let vm = |node: &str| -> (i64, i64) {
        let shown = shown(&outcome, node, "out");
        let v: Vec<i64> = serde_json::from_str::<String>(&shown[0])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_else(|| panic!("{node}: {shown:?}"));
        (v[0], v[1])
    };
    let (small, big) = (vm("small_vm"), vm("big_vm"));
    eprintln!("guest memory (MiB) and CPUs: small {small:?}, big {big:?}");
    assert_eq!((small.1, big.1), (1, 2), "vCPUs");
    assert!(
        (56..=72).contains(&(big.0 - small.0)),
        "the big actor's guest has 64 MiB more: {small:?} {big:?}"
    );
}
