//! Host memory per idle Python actor VM, and how many fit: clones of the
//! warm worker golden restored and held (as the pool keeps them), 1, 10
//! and 100 of them, with this process's RSS and PSS measured after each
//! step (the clones' guest memory maps the snapshot file copy-on-write, so
//! PSS shares the common pages out among them). The fit estimate divides
//! the memory available before the first clone by the PSS per clone at
//! 100. Seed figure: ~50 MB per actor.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_benches::kvm_available;
use reflow_benches::report::{self, meminfo_kib, memory_kib, record, Better, Target};
use reflow_host_bridge::{SandboxVm, VmSpec};
use reflow_integration_tests::{warm_python_golden, LIMIT};

const BENCH: &str = "memory";
const STEPS: [usize; 3] = [1, 10, 100];

fn memory(_: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    report::reset(BENCH);
    let (golden, config) = warm_python_golden(40, "run_worker.py", "worker.ready");
    let spec = VmSpec { golden, config };
    let available = meminfo_kib("MemAvailable:").unwrap_or(0);
    let (rss0, pss0) = memory_kib();
    let mut vms: Vec<SandboxVm> = Vec::new();
    let mut last = (0.0, 0.0);
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
            "memory: {n} idle Python actor VMs: RSS {rss_per:.1} MiB and PSS {pss_per:.1} MiB per VM \
             (process RSS {:.0} MiB)",
            rss as f64 / 1024.0
        );
        let target = if n == 100 {
            Target::seed(50.0, Better::Lower)
        } else {
            None
        };
        record(
            BENCH,
            &format!("host PSS per idle Python VM, {n} VMs"),
            pss_per,
            "MiB",
            target,
            "",
        );
        record(
            BENCH,
            &format!("host RSS per idle Python VM, {n} VMs"),
            rss_per,
            "MiB",
            None,
            "",
        );
        last = (rss_per, pss_per);
    }
    let fit = available as f64 / 1024.0 / last.1.max(0.001);
    println!(
        "memory: about {fit:.0} idle Python actor VMs fit in the {:.1} GiB available \
         (at {:.1} MiB PSS each)",
        available as f64 / (1 << 20) as f64,
        last.1
    );
    record(
        BENCH,
        "idle Python actor VMs that fit in available memory",
        fit,
        "VMs",
        None,
        &format!(
            "{:.1} GiB available / PSS per VM at 100",
            available as f64 / (1 << 20) as f64
        ),
    );
    drop(vms);
}

criterion_group!(benches, memory);
criterion_main!(benches);
