//! VM-level limits on real clones: a CPU time limit puts the VM's threads
//! (vCPU and event loop) in a cgroup of its own, which throttles a guest
//! that spins, and goes away with the VM.

use std::path::Path;
use std::time::{Duration, Instant};

use reflow_host_bridge::{Limits, SandboxVm, VmSpec};
use reflow_integration_tests::calls::NoState;
use reflow_integration_tests::{kvm_available, warm_python_golden, LIMIT};
use reflow_ring::Value;
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
        eprintln!("skipped: this host has no cgroup cpu controller: {e}");
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
    // The vCPU thread, the event loop and what they started.
    let names: Vec<String> = members(&group)
        .iter()
        .map(|tid| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
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
