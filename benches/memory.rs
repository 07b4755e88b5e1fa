//! Host memory per idle Python actor VM, and how many fit: clones of the
//! warm worker golden restored and held (as the pool keeps them), 1, 10
//! and 100 of them, with the RSS and PSS of this process and its monitor
//! processes (one per VM) measured after each
//! step (the clones' guest memory maps the snapshot file copy-on-write, so
//! PSS shares the common pages out among them; RSS counts them in every
//! clone). Design figure: ~50 MB per actor. How many fit, by memory alone:
//! the memory available before the first clone over the PSS of one more
//! VM, measured from 10 to 100 (KVM's kernel memory per VM is not in any
//! process's PSS; a MemAvailable drop was tried and drowned in noise).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_benches::kvm_available;
use reflow_benches::report::{self, meminfo_kib, memory_kib, record};
use reflow_benches::smaps::{self, Split};
use reflow_integration_tests::calls::{load_and_run, run_once};
use reflow_integration_tests::{warm_python_golden, LIMIT};
use reflow_ring::Value;
use reflow_sandbox_core::{Language, SandboxVm, Script, VmSpec};

const BENCH: &str = "memory";
const STEPS: [usize; 3] = [1, 10, 100];

fn memory(_: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    report::reset(BENCH);
    let (golden, config) = warm_python_golden(40, "run_worker.py", "worker.ready");
    let spec = VmSpec::new(golden, config);
    let available = meminfo_kib("MemAvailable:").unwrap_or(0);
    let (rss0, pss0) = memory_kib();
    let mut vms: Vec<SandboxVm> = Vec::new();
    // (VMs, process PSS KiB) at each step.
    let mut steps: Vec<(usize, u64)> = Vec::new();
    let mut notes = Vec::new();
    for n in STEPS {
        while vms.len() < n {
            let vm = SandboxVm::restore(&spec, LIMIT).expect("a clone");
            vm.hold().expect("held");
            vms.push(vm);
        }
        // Let the last restores' page-ins settle.
        std::thread::sleep(Duration::from_millis(500));
        let (rss, pss) = memory_kib();
        let per = |now: u64, base: u64| now.saturating_sub(base) as f64 / n as f64 / 1024.0;
        let (rss_per, pss_per) = (per(rss, rss0), per(pss, pss0));
        println!(
            "memory: {n} idle Python actor VMs: per VM RSS {rss_per:.1} MiB, PSS {pss_per:.1} MiB"
        );
        notes.push(format!(
            "{n} VMs: PSS {pss_per:.1} MiB, RSS {rss_per:.1} MiB per VM"
        ));
        if n == *STEPS.last().expect("steps") {
            record(
                BENCH,
                "host PSS per idle Python VM, 100 held",
                pss_per,
                &format!(
                    "snapshot pages shared among clones (RSS counts them in every clone); {}",
                    notes.join("; ")
                ),
            );
            split_by_owner(&vms, "");
        }
        steps.push((n, pss));
    }
    // The cost of one more VM: from 10 to 100, so shared pages are paid.
    let (a, b) = (steps[1], steps[2]);
    let marginal = b.1.saturating_sub(a.1) as f64 / (b.0 - a.0) as f64 / 1024.0;
    let fit = available as f64 / 1024.0 / marginal.max(0.001);
    println!(
        "memory: one more idle Python actor VM costs {marginal:.2} MiB of PSS; by memory alone \
         about {fit:.0} fit in the {:.1} GiB available",
        available as f64 / (1 << 20) as f64
    );
    record(
        BENCH,
        "one more idle Python VM, process PSS",
        marginal,
        "from 10 to 100 held; KVM's kernel memory per VM not included",
    );
    record(
        BENCH,
        "idle Python VMs that fit in 24 GiB, by memory (extrapolated)",
        24.0 * 1024.0 / marginal.max(0.001),
        &format!(
            "24 GiB / PSS of one more VM; here {fit:.0} in the {:.1} GiB available; threads, \
             file descriptors and KVM's kernel memory may bind first",
            available as f64 / (1 << 20) as f64
        ),
    );
    after_traffic(&mut vms);
    drop(vms);
    density(&spec);
}

/// The most VMs the density count restores.
const DENSITY_CAP: usize = 4000;
/// The density count stops when the host's available memory falls below
/// this (KiB), before the OOM killer would pick a victim.
const MEMORY_FLOOR_KIB: u64 = 2 << 20;

/// Restores and holds idle Python VMs until the host refuses one (memory,
/// threads, file descriptors, KVM), the available memory falls below
/// [`MEMORY_FLOOR_KIB`] or [`DENSITY_CAP`] is reached: how many, and what
/// stopped it.
fn density(spec: &VmSpec) {
    let started = std::time::Instant::now();
    let mut vms: Vec<SandboxVm> = Vec::new();
    let stopped_by = loop {
        if vms.len() >= DENSITY_CAP {
            break format!("the bench's cap of {DENSITY_CAP}");
        }
        if meminfo_kib("MemAvailable:").unwrap_or(0) < MEMORY_FLOOR_KIB {
            break "memory: less than 2 GiB available (the bench stops there)".to_string();
        }
        match SandboxVm::restore(spec, LIMIT) {
            Ok(vm) => match vm.hold() {
                Ok(()) => vms.push(vm),
                Err(e) => break format!("holding the VM: {e}"),
            },
            Err(e) => break format!("restore refused: {e}"),
        }
        if vms.len() % 250 == 0 {
            println!(
                "memory: density: {} VMs held after {:.0} s, {:.1} GiB available",
                vms.len(),
                started.elapsed().as_secs_f64(),
                meminfo_kib("MemAvailable:").unwrap_or(0) as f64 / (1 << 20) as f64
            );
        }
    };
    let n = vms.len();
    let took = started.elapsed();
    drop(vms);
    let stopped_by: String = stopped_by.chars().take(300).collect();
    println!("memory: density: {n} idle Python VMs held, stopped by {stopped_by}");
    record(
        BENCH,
        "idle Python VMs restored until the host refuses",
        n as f64,
        &format!(
            "stopped by {stopped_by}; {:.0} s; {:.0} GiB host",
            took.as_secs_f64(),
            meminfo_kib("MemTotal:").unwrap_or(0) as f64 / (1 << 20) as f64
        ),
    );
}

/// A Python actor that keeps nothing between messages.
const ECHO: &str = r#"
@actor(name="Echo", inports=["x"], outports=["x"])
def echo(context):
    return {"x": context.get_input("x")}
"#;

/// Every VM loads an actor and answers 100 messages of 4 KiB, then is held
/// again: the memory of VMs that have served, not only been restored.
fn after_traffic(vms: &mut [SandboxVm]) {
    let script = Script::inline(Language::Python, "echo.actor.py", ECHO);
    let inputs = Value::Map(vec![("x".into(), Value::Bytes(vec![3; 4096]))]);
    for vm in vms.iter_mut() {
        vm.release();
        load_and_run(vm, &script, inputs.clone());
        for _ in 0..99 {
            run_once(vm, "node", inputs.clone()).expect("an answer");
        }
        vm.hold().expect("held again");
    }
    std::thread::sleep(Duration::from_millis(500));
    split_by_owner(vms, " after 100 messages");
}

/// The held VMs' memory by owner: the monitor's own, the guest RAM private
/// to each clone, and the shared message region, per VM (`when` names the
/// moment in the metric).
fn split_by_owner(vms: &[SandboxVm], when: &str) {
    let mut total = Split::default();
    for vm in vms {
        total += smaps::of_tree(vm.monitor_pid());
    }
    let per = |kib: u64| kib as f64 / vms.len() as f64 / 1024.0;
    println!(
        "memory: per idle Python VM{when}: monitor RSS {:.2} MiB (private {:.2} MiB), guest RAM resident {:.1} MiB of which \
         private {:.1} MiB, shared region resident {:.1} MiB",
        per(total.monitor_rss),
        per(total.monitor_private),
        per(total.guest_rss),
        per(total.guest_private),
        per(total.shared_region_rss)
    );
    let note = format!(
        "{} held; guest RAM resident {:.1} MiB per VM (shared pages included), shared message \
         region resident {:.1} MiB",
        vms.len(),
        per(total.guest_rss),
        per(total.shared_region_rss)
    );
    record(
        BENCH,
        &format!("monitor RSS per idle Python VM{when}"),
        per(total.monitor_rss),
        &note,
    );
    record(
        BENCH,
        &format!("monitor private memory per idle Python VM{when}"),
        per(total.monitor_private),
        &note,
    );
    record(
        BENCH,
        &format!("private guest memory per idle Python VM{when}"),
        per(total.guest_private),
        &note,
    );
}

criterion_group!(benches, memory);
criterion_main!(benches);
