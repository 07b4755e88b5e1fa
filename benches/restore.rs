//! Golden-snapshot restore: host time from calling `Vm::restore` (memory
//! mapped, devices rebuilt, vCPU state loaded: all counted) to the clone
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
use reflow_benches::{guest_images, kvm_available, median, ms, p99};
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

/// Restores a clone and runs it until it is ready; the time from before
/// `Vm::restore` (mapping the memory, rebuilding devices, loading vCPU
/// state) to the agent's ready line.
fn ready_clone(dir: &std::path::Path, config: &VmConfig) -> (RunningVm, Duration) {
    let started = Instant::now();
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
    (running, started.elapsed())
}

/// Drops a snapshot's files from the host's page cache (the pages no
/// process maps).
fn drop_from_page_cache(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    for name in ["memory.bin", "state.bin"] {
        let file = std::fs::File::open(dir.join(name)).expect("a snapshot file");
        // SAFETY: the descriptor is open for the call; offset 0 and length
        // 0 (to the end) are valid for any file; no memory is passed.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise on {name}");
    }
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
    report::record_times(
        "restore",
        "restore from golden snapshot to agent ready",
        &times,
        &format!("agent-only guest; {}", report::golden_age(&golden.dir)),
    );
    println!(
        "restore: restore-to-agent-ready median {:.1} ms ({restores} restores)",
        ms(median(times))
    );

    // The same with a cold page cache: the golden's files dropped from it
    // before each restore (no clone of it is alive then to pin them).
    let cold: Vec<Duration> = (0..report::samples(10))
        .map(|_| {
            drop_from_page_cache(&golden.dir);
            let (running, ready) = ready_clone(&golden.dir, &config);
            running.stop_handle().stop();
            let _ = running.wait();
            ready
        })
        .collect();
    println!(
        "restore: cold page cache, restore-to-agent-ready median {:.1} ms ({} restores)",
        ms(median(cold.clone())),
        cold.len()
    );
    report::record_times(
        "restore",
        "restore to agent ready, cold page cache",
        &cold,
        "agent-only guest; memory.bin and state.bin dropped from the page cache \
         (posix_fadvise DONTNEED) before each",
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
    let first_ms = ms(first.ready_after());
    drop(first);
    let (warm, _) = ready_clone(&golden, &config);
    warm.stop_handle().stop();
    let _ = warm.wait();
    let (mut process, mut thread) = (Vec::new(), Vec::new());
    for _ in 0..report::samples(SANDBOX_SAMPLES) {
        let vm = SandboxVm::restore(&spec, LIMIT).expect("a clone in a monitor process");
        process.push(vm.ready_after());
        drop(vm);
        let (running, ready) = ready_clone(&golden, &config);
        thread.push(ready);
        running.stop_handle().stop();
        let _ = running.wait();
    }
    let note = format!(
        "warm Python golden; {} of each, interleaved; {}",
        report::samples(SANDBOX_SAMPLES),
        report::golden_age(&golden)
    );
    report::record(
        "restore",
        "sandbox clone restore to agent ready, first in a process (digest check)",
        first_ms,
        &note,
    );
    for (what, times) in [("monitor process", &process), ("monitor thread", &thread)] {
        report::record_times(
            "restore",
            &format!("sandbox clone restore to agent ready, {what}"),
            times,
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
