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
use reflow_benches::{boot_to_ready, guest_images, kvm_available, median};

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
        report::record(
            "boot",
            "cold boot to agent ready (host time)",
            median(ready_times.clone()).as_secs_f64() * 1e3,
            "ms",
            None,
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

criterion_group!(benches, boot);
criterion_main!(benches);
