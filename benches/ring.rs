//! The shared-memory ring, measured through a real guest: the agent's echo
//! service sends every host->guest message straight back. Side by side in
//! the same run: the same ring between two host threads (no VM), which is
//! the floor the guest path is compared with.
//!
//! Reported: 64 B round trip p50/p99 (criterion measures the mean), small
//! message throughput with a pipelined producer, and the effective rate of
//! 64 MiB echoes. Then, on the same VM in the same run, 64 B round trips
//! through the ring (busy, and after the guest consumer idled) and through
//! the vsock control channel (the agent's `echo` request), with their
//! ratio; and with the host consumer not spinning: sleeping with back-off
//! versus parked on the guest's doorbell. Run with `./dev.sh bench`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use reflow_agent_protocol::request::Request;
use reflow_benches::report::{self, record, record_times};
use reflow_benches::{kvm_available, sample};
use reflow_integration_tests::{percentile, EchoVm};
use reflow_ring::layout::RegionLayout;
use reflow_ring::{Backoff, Consumer, Metadata, Producer, Region};
use reflow_vmm::shm::GuestDoorbell;
use reflow_vmm::ControlChannel;

const WAIT: Duration = Duration::from_secs(60);

fn meta(id: u64) -> Metadata {
    Metadata {
        message_id: id,
        port: "in".into(),
        ..Default::default()
    }
}

/// The `p` percentile of sorted samples, in microseconds (NaN for none).
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    percentile(sorted, p).as_secs_f64() * 1e6
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
        // Stop the echo thread even if `f` panics (the scope would wait for
        // it forever).
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        f(Path {
            tx: Producer::new(region, layout.host_to_guest),
            rx: Consumer::new(region, layout.guest_to_host),
            id: 0,
        });
    });
}

fn measure(c: &mut Criterion, name: &str, path: &mut Path<'_>) {
    let small = [0x5au8; 64];
    c.bench_function(&format!("ring/{name}/rtt_64B"), |b| {
        b.iter(|| path.round_trip(&small))
    });
    for (label, len, n) in [
        ("64 B", 64, 20_000),
        ("4 KiB", 4096, 2000),
        ("1 MiB", 1 << 20, 200),
    ] {
        let payload = vec![0x3cu8; len];
        let times = sample(report::samples(n), || path.round_trip(&payload));
        println!(
            "ring/{name}: {label} round trip p50 {:.1} us, p99 {:.1} us ({} samples)",
            pct(&times, 0.5),
            pct(&times, 0.99),
            times.len()
        );
        record_times("ring", &format!("{name}: {label} round trip"), &times, "");
    }

    // Pipelined small messages: how many echoes per second.
    const N: u64 = 200_000;
    let first = path.id;
    let Path { tx, rx, .. } = &mut *path;
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
    let rate = N as f64 / t.elapsed().as_secs_f64();
    println!("ring/{name}: {rate:.0} small messages/s echoed (pipelined, {N} messages)");
    record(
        "ring",
        &format!("{name}: small messages echoed, pipelined"),
        rate,
        "batched: many in flight",
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
    let gbs = (64u64 << 20) as f64 / (median / 2.0) / 1e9;
    println!(
        "ring/{name}: 64 MiB echo median {:.1} ms = {gbs:.2} GB/s each way",
        median * 1e3
    );
    record(
        "ring",
        &format!("{name}: 64 MiB payload, each way"),
        gbs,
        "",
    );
}

/// 64 B round trips on the same guest in the same run: through the ring
/// while it is busy (the consumer still spinning), through the ring after
/// 20 ms idle (the guest consumer has backed off into sleeping), and
/// through the vsock control channel (the agent's `echo` request).
fn ring_vs_vsock(c: &mut Criterion, path: &mut Path<'_>, control: &mut ControlChannel) {
    let small = [0x5au8; 64];
    let echo = Request::Echo {
        text: "x".repeat(64),
    };
    let vsock_once = |control: &mut ControlChannel| {
        let answer = control.request(&echo, WAIT).expect("vsock echo");
        assert_eq!(answer.len(), 64);
    };
    c.bench_function("ring/guest_echo/vsock_rtt_64B", |b| {
        b.iter(|| vsock_once(control))
    });
    let busy = sample(2000, || path.round_trip(&small));
    let vsock = sample(100, || vsock_once(control));
    let mut idle = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        path.round_trip(&small);
        idle.push(t.elapsed());
    }
    idle.sort();
    let (b50, b99) = (pct(&busy, 0.5), pct(&busy, 0.99));
    let (i50, i99) = (pct(&idle, 0.5), pct(&idle, 0.99));
    let (v50, v99) = (pct(&vsock, 0.5), pct(&vsock, 0.99));
    println!(
        "ring vs vsock, 64 B round trip, same guest, same run: \
         ring (busy) p50 {b50:.1} us p99 {b99:.1} us; \
         ring (after 20 ms idle) p50 {i50:.1} us p99 {i99:.1} us; \
         vsock p50 {v50:.1} us p99 {v99:.1} us; \
         vsock/ring p50 {:.0}x (busy), {:.1}x (idle)",
        v50 / b50,
        v50 / i50
    );
    record_times(
        "ring",
        "guest_echo: 64 B round trip after 20 ms idle",
        &idle,
        "the guest consumer left its spin: its wake-up is sampled",
    );
    let vsock = format!("vsock p50 {v50:.1} us, p99 {v99:.1} us, same guest");
    record(
        "ring",
        "vsock / ring, 64 B round trip p50 (same run)",
        v50 / b50,
        &format!("ring busy; {vsock}"),
    );
    record(
        "ring",
        "vsock / ring after 20 ms idle, 64 B round trip p50",
        v50 / i50,
        &vsock,
    );
}

/// 64 B round trips where the host consumer does not spin: it sleeps with
/// back-off (20 us doubling to 1 ms), then parks on the guest's doorbell
/// (the guest rings it with one MMIO write, an ioeventfd).
fn doorbell_vs_sleep(path: Path<'_>, doorbell: &GuestDoorbell) {
    let small = [0x5au8; 64];
    let Path { tx, rx, id } = path;
    let no_spin = |max_sleep| Backoff {
        spin: Duration::ZERO,
        max_sleep,
    };
    let mut path = Path {
        tx,
        rx: rx.with_backoff(no_spin(Duration::from_millis(1))),
        id,
    };
    let run = |path: &mut Path<'_>| sample(500, || path.round_trip(&small));
    let sleeping = run(&mut path);
    let (s50, s99) = (pct(&sleeping, 0.5), pct(&sleeping, 0.99));
    let before = doorbell.wakeups();
    let Path { tx, rx, id } = path;
    let mut path = Path {
        tx,
        rx: rx
            .with_backoff(no_spin(Duration::from_secs(1)))
            .with_parker(doorbell),
        id,
    };
    let parked = run(&mut path);
    let (d50, d99) = (pct(&parked, 0.5), pct(&parked, 0.99));
    println!(
        "ring, host consumer not spinning, 64 B round trip: sleeping p50 {s50:.1} us p99 {s99:.1} us; \
         parked on the doorbell p50 {d50:.1} us p99 {d99:.1} us ({} wake-ups); sleep/doorbell p50 {:.1}x",
        doorbell.wakeups() - before,
        s50 / d50
    );
    record_times(
        "ring",
        "host consumer parked on the guest's doorbell: 64 B round trip",
        &parked,
        &format!("sleeping with back-off instead: p50 {s50:.1} us, p99 {s99:.1} us"),
    );
}

fn ring(c: &mut Criterion) {
    report::reset("ring");
    // Baseline: two host threads, same ring code, same sizes.
    let size = 160u64 << 20;
    let mut buf = vec![0u64; size as usize / 8];
    // SAFETY: the buffer is 8-aligned, `size` bytes, and outlives the region.
    let region = unsafe { Region::from_raw(buf.as_mut_ptr().cast(), size as usize) };
    let layout = RegionLayout::for_size(size).expect("layout");
    layout.initialize(&region).expect("init");
    with_thread_echo(layout, &region, |mut path| {
        measure(c, "host_threads", &mut path)
    });

    if !kvm_available() {
        return;
    }
    let mut vm = EchoVm::restore(160);
    let shared = vm.shared.clone();
    let layout = shared.layout();
    let region = shared.ring_region();
    let mut path = Path {
        tx: Producer::new(region, layout.host_to_guest),
        rx: Consumer::new(region, layout.guest_to_host),
        id: 0,
    };
    measure(c, "guest_echo", &mut path);
    ring_vs_vsock(c, &mut path, &mut vm.vm.control);
    doorbell_vs_sleep(path, shared.guest_doorbell());
    let outcome = vm.power_off();
    assert_eq!(outcome.exit_code(), 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = ring
}
criterion_main!(benches);
