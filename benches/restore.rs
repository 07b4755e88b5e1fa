//! Golden-snapshot restore: host time from `Vm::restore` to the clone
//! having taken its fresh entropy and clock and answered (restore-to-ready),
//! and the host memory each additional idle clone adds (RSS and PSS of this
//! process, which runs all clones), with copy-on-write sharing of the
//! snapshot's pages.
//!
//! Run with `./dev.sh bench`. The golden snapshot comes from the user cache
//! (created on first use, which boots the guest once).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use reflow_benches::report;
use reflow_benches::{guest_images, kvm_available, median};
use reflow_integration_tests::{warm_python_golden, LIMIT};
use reflow_sandbox_core::{SandboxVm, VmSpec};
use reflow_vmm::snapshot::golden;
use reflow_vmm::{RunningVm, Vm, VmConfig, VmIo};

fn config() -> VmConfig {
    let images = guest_images();
    let mut c = VmConfig::new(&images.kernel);
    c.initrd = Some(images.initramfs);
    c.timeout = Some(Duration::from_secs(600));
    c
}

/// Restores a clone and runs it until it is ready.
fn ready_clone(dir: &std::path::Path, config: &VmConfig) -> (RunningVm, Duration) {
    let vm = Vm::restore(
        dir,
        config.clone(),
        VmIo::console(Box::new(std::io::sink())),
    )
    .expect("restore");
    let mut running = vm.start().expect("start");
    let stop = running
        .wait_until(
            |c| c.ready.is_some(),
            Some(Instant::now() + Duration::from_secs(300)),
        )
        .expect("run");
    assert!(stop.is_none(), "clone stopped before ready: {stop:?}");
    let ready = running.ready().map(|r| r.host_elapsed).unwrap_or_default();
    (running, ready)
}

fn restore(c: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let config = config();
    let cache = reflow_vmm::cache_root();
    let golden = golden::ensure(&config, &cache, &|m| eprintln!("[golden] {m}")).expect("golden");

    let mut times = Vec::new();
    let mut group = c.benchmark_group("restore");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("restore_to_agent_ready", |b| {
        b.iter_custom(|iters| {
            let mut sum = Duration::ZERO;
            for _ in 0..iters {
                let (running, ready) = ready_clone(&golden.dir, &config);
                sum += ready;
                times.push(ready);
                running.stop_handle().stop();
                let _ = running.wait();
            }
            sum
        })
    });
    group.finish();
    let restores = times.len();
    report::reset("restore");
    report::record(
        "restore",
        "restore from golden snapshot to agent ready",
        median(times.clone()).as_secs_f64() * 1e3,
        "ms",
        report::Target::ours(100.0, report::Better::Lower),
        &format!("agent-only guest; {}", report::golden_age(&golden.dir)),
    );
    println!(
        "restore: restore-to-agent-ready median {:.1} ms ({restores} restores)",
        median(times).as_secs_f64() * 1e3
    );

    // Memory per additional idle clone.
    let (rss0, pss0) = report::memory_kib();
    let first = ready_clone(&golden.dir, &config).0;
    let (rss1, pss1) = report::memory_kib();
    let extra: Vec<RunningVm> = (0..9)
        .map(|_| ready_clone(&golden.dir, &config).0)
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let (rss10, pss10) = report::memory_kib();
    println!(
        "restore: host memory for the first idle clone: RSS {} KiB, PSS {} KiB; \
         per additional idle clone (10 clones): RSS {} KiB, PSS {} KiB",
        rss1.saturating_sub(rss0),
        pss1.saturating_sub(pss0),
        rss10.saturating_sub(rss1) / 9,
        pss10.saturating_sub(pss1) / 9
    );
    for vm in std::iter::once(first).chain(extra) {
        vm.stop_handle().stop();
        let _ = vm.wait();
    }
}

/// Samples of each way of restoring a sandbox clone, interleaved.
const SANDBOX_SAMPLES: usize = 30;

/// The sandbox's restore, as a pool makes a clone: in a monitor process
/// of its own (spawn, PID and other namespaces, chroot, restore, the
/// agent's handshake, its connection handed over) against the same
/// golden restored by a monitor on a thread of this process, as before
/// the split; side by side, interleaved, on the warm Python worker golden.
fn sandbox_restore(_: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let (golden, config) = warm_python_golden(40, "run_worker.py", "worker.ready");
    let spec = VmSpec::new(golden.clone(), config.clone());
    // The first restore in a process checks the golden's memory digest
    // (once per bridge process): its own row, not a sample.
    let first = SandboxVm::restore(&spec, LIMIT).expect("a clone in a monitor process");
    let first_ms = first.ready_after().as_secs_f64() * 1e3;
    drop(first);
    let (warm, _) = ready_clone(&golden, &config);
    warm.stop_handle().stop();
    let _ = warm.wait();
    let (mut process, mut thread) = (Vec::new(), Vec::new());
    for _ in 0..SANDBOX_SAMPLES {
        let vm = SandboxVm::restore(&spec, LIMIT).expect("a clone in a monitor process");
        process.push(vm.ready_after());
        drop(vm);
        let started = Instant::now();
        let (running, _) = ready_clone(&golden, &config);
        thread.push(started.elapsed());
        running.stop_handle().stop();
        let _ = running.wait();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = |mut v: Vec<Duration>| {
        v.sort();
        v[(v.len() * 99).div_ceil(100) - 1]
    };
    let note = format!(
        "warm Python golden; {SANDBOX_SAMPLES} of each, interleaved; {}",
        report::golden_age(&golden)
    );
    report::record(
        "restore",
        "sandbox clone restore to agent ready, first in a process (digest check)",
        first_ms,
        "ms",
        None,
        &note,
    );
    for (what, times) in [("monitor process", &process), ("monitor thread", &thread)] {
        report::record(
            "restore",
            &format!("sandbox clone restore to agent ready, {what} (median)"),
            ms(median(times.clone())),
            "ms",
            None,
            &note,
        );
        report::record(
            "restore",
            &format!("sandbox clone restore to agent ready, {what} (p99)"),
            ms(p99(times.clone())),
            "ms",
            None,
            &note,
        );
    }
    println!(
        "restore: first sandbox clone in this process (memory digest check): {first_ms:.1} ms"
    );
    println!(
        "restore: sandbox clone to agent ready: monitor process median {:.1} ms (p99 {:.1}), \
         monitor thread median {:.1} ms (p99 {:.1}); ratio {:.2}",
        ms(median(process.clone())),
        ms(p99(process.clone())),
        ms(median(thread.clone())),
        ms(p99(thread.clone())),
        ms(median(process)) / ms(median(thread)).max(1e-9)
    );
}

criterion_group!(benches, restore, sandbox_restore);
criterion_main!(benches);
