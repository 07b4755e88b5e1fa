//! The shared-memory ring, measured through a real guest: the agent's echo
//! service sends every host->guest message straight back. Side by side in
//! the same run: the same ring between two host threads (no VM), which is
//! the floor the guest path is compared with.
//!
//! Reported: 64 B round trip p50/p99 (criterion measures the mean), small
//! message throughput with a pipelined producer, and the effective rate of
//! 64 MiB echoes. Run with `./dev.sh bench`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_benches::kvm_available;
use reflow_integration_tests::EchoVm;
use reflow_ring::layout::RegionLayout;
use reflow_ring::{Consumer, Metadata, Producer, Region};

const WAIT: Duration = Duration::from_secs(60);

fn meta(id: u64) -> Metadata {
    Metadata {
        message_id: id,
        port: "in".into(),
        ..Default::default()
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6
}

/// One side of an echo path: send to `tx`, read the echo from `rx`.
struct Path<'a> {
    tx: Producer<'a>,
    rx: Consumer<'a>,
    id: u64,
}

impl Path<'_> {
    fn round_trip(&mut self, payload: &[u8]) {
        self.tx.send(&meta(self.id), payload, WAIT).expect("send");
        let echo = self.rx.recv(WAIT).expect("recv").expect("echo");
        assert_eq!(echo.metadata.message_id, self.id);
        self.rx.release(echo).expect("release");
        self.id += 1;
    }
}

/// Host-thread echo over an in-process region (the no-VM baseline).
fn with_thread_echo(layout: RegionLayout, region: &Region, f: impl FnOnce(Path<'_>)) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rx = Consumer::new(region, layout.host_to_guest);
            let mut tx = Producer::new(region, layout.guest_to_host);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(v) = rx.recv(Duration::from_millis(10)).expect("echo recv") {
                    tx.forward(&v, WAIT).expect("echo send");
                    rx.release(v).expect("echo release");
                }
            }
        });
        f(Path {
            tx: Producer::new(region, layout.host_to_guest),
            rx: Consumer::new(region, layout.guest_to_host),
            id: 0,
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

fn measure(c: &mut Criterion, name: &str, mut path: Path<'_>) {
    let small = [0x5au8; 64];
    let mut samples = Vec::new();
    c.bench_function(&format!("ring/{name}/rtt_64B"), |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let one = Instant::now();
                path.round_trip(&small);
                samples.push(one.elapsed());
            }
            t.elapsed()
        })
    });
    println!(
        "ring/{name}: 64 B round trip p50 {:.1} us, p99 {:.1} us ({} samples)",
        pct(&mut samples, 0.5),
        pct(&mut samples, 0.99),
        samples.len()
    );

    // Pipelined small messages: how many echoes per second.
    const N: u64 = 200_000;
    let first = path.id;
    let Path { tx, rx, .. } = &mut path;
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in first..first + N {
                tx.send(&meta(i), &i.to_le_bytes(), WAIT).expect("send");
            }
        });
        for i in first..first + N {
            let v = rx.recv(WAIT).expect("recv").expect("echo");
            assert_eq!(v.metadata.message_id, i);
            rx.release(v).expect("release");
        }
    });
    println!(
        "ring/{name}: {:.0} small messages/s echoed (pipelined, {N} messages)",
        N as f64 / t.elapsed().as_secs_f64()
    );
    path.id = first + N;

    // 64 MiB payloads.
    let big = vec![0xa5u8; 64 << 20];
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        path.round_trip(&big);
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2].as_secs_f64();
    println!(
        "ring/{name}: 64 MiB echo median {:.1} ms = {:.2} GB/s each way",
        median * 1e3,
        (64u64 << 20) as f64 / (median / 2.0) / 1e9
    );
}

fn ring(c: &mut Criterion) {
    // Baseline: two host threads, same ring code, same sizes.
    let size = 160u64 << 20;
    let mut buf = vec![0u64; size as usize / 8];
    // SAFETY: the buffer is 8-aligned, `size` bytes, and outlives the region.
    let region = unsafe { Region::from_raw(buf.as_mut_ptr().cast(), size as usize) };
    let layout = RegionLayout::for_size(size).expect("layout");
    layout.initialize(&region).expect("init");
    with_thread_echo(layout, &region, |path| measure(c, "host_threads", path));

    if !kvm_available() {
        return;
    }
    let vm = EchoVm::restore(160);
    let shared = vm.shared.clone();
    let layout = shared.layout();
    let region = shared.ring_region();
    measure(
        c,
        "guest_echo",
        Path {
            tx: Producer::new(region, layout.host_to_guest),
            rx: Consumer::new(region, layout.guest_to_host),
            id: 0,
        },
    );
    let outcome = vm.power_off();
    assert_eq!(outcome.exit_code(), 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = ring
}
criterion_main!(benches);
