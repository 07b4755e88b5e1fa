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
use reflow_benches::report::{self, meminfo_kib, memory_kib, record, Better, Target};
use reflow_integration_tests::{warm_python_golden, LIMIT};
use reflow_sandbox_core::{SandboxVm, VmSpec};

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
        record(
            BENCH,
            &format!("host PSS per idle Python VM, {n} VMs"),
            pss_per,
            "MiB",
            None,
            "snapshot pages shared among clones",
        );
        record(
            BENCH,
            &format!("host RSS per idle Python VM, {n} VMs"),
            rss_per,
            "MiB",
            None,
            "counts shared snapshot pages in every clone",
        );
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
        "one more idle Python VM (10 -> 100), process PSS",
        marginal,
        "MiB",
        Target::design(50.0, Better::Lower),
        "KVM's kernel memory per VM not included",
    );
    record(
        BENCH,
        "idle Python actor VMs that fit in available memory",
        fit,
        "VMs",
        None,
        &format!(
            "by memory alone: {:.1} GiB available / PSS of one more VM; threads, file descriptors and KVM's kernel memory bind first",
            available as f64 / (1 << 20) as f64
        ),
    );
    drop(vms);
}

criterion_group!(benches, memory);
criterion_main!(benches);
