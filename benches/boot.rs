//! Boot to agent-ready: host time from creating the VM's vCPU threads to the
//! agent's ready line on the console, for the agent-only initramfs guest.
//! Also printed: the guest's own uptime at that point and the full run time
//! to power-off, as medians.
//!
//! Run with `./dev.sh bench` (builds the images and sets their paths).
//! Boots take ~10-30 s on nested kvm_pvm hosts, so the sample count is the
//! criterion minimum of 10.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use reflow_benches::report;
use reflow_benches::{boot_config_to_ready, boot_to_ready, guest_images, kvm_available, median};
use reflow_integration_tests::{node_runtime, python_runtime};

fn boot(c: &mut Criterion) {
    if !kvm_available() {
        return;
    }
    let images = guest_images();
    let mut ready_times = Vec::new();
    let mut guest_uptimes = Vec::new();
    let mut totals = Vec::new();
    let mut group = c.benchmark_group("boot");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    group.bench_function("boot_to_agent_ready", |b| {
        b.iter_custom(|iters| {
            let mut sum = Duration::ZERO;
            for _ in 0..iters {
                let (ready, outcome) = boot_to_ready(&images);
                sum += ready.host_elapsed;
                ready_times.push(ready.host_elapsed);
                guest_uptimes.push(ready.guest_uptime);
                totals.push(outcome.elapsed);
            }
            sum
        })
    });
    group.finish();
    if !guest_uptimes.is_empty() {
        report::reset("boot");
        report::record_times(
            "boot",
            "cold boot to agent ready (host time)",
            &ready_times,
            "our kernel and agent; seconds under kvm_pvm, ~100 ms on bare metal",
        );
        println!(
            "boot: agent-ready median {:.3} s host time ({:.3} s guest uptime); boot to power-off median {:.3} s ({} boots)",
            median(ready_times.clone()).as_secs_f64(),
            median(guest_uptimes.clone()).as_secs_f64(),
            median(totals.clone()).as_secs_f64(),
            totals.len()
        );
    }
}

/// Cold boots of the Python and Node images (their kernel, root disk and
/// agent, as a golden snapshot's first boot has them), to the agent's
/// ready line: what building a golden pays before its warm-up.
fn image_boots() {
    for (name, runtime) in [("Python", python_runtime(40)), ("Node", node_runtime(40))] {
        let times: Vec<Duration> = (0..report::samples(5))
            .map(|_| boot_config_to_ready(runtime.config.clone()).0.host_elapsed)
            .collect();
        println!(
            "boot: {name} image, cold boot to agent ready: median {:.2} s ({} boots)",
            median(times.clone()).as_secs_f64(),
            times.len()
        );
        report::record_times(
            "boot",
            &format!("cold boot to agent ready, {name} image"),
            &times,
            "kernel, root disk and agent, no golden; host time",
        );
    }
}

fn boots(c: &mut Criterion) {
    boot(c);
    if kvm_available() {
        image_boots();
    }
}

criterion_group!(benches, boots);
criterion_main!(benches);
