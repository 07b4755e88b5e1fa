//! The shared-memory message ring between the host and guest user space, on
//! VMs restored from a golden snapshot: an echo service in the guest returns
//! every message unchanged; broken records from the guest are host errors;
//! a full ring holds the producer back without losing anything.

use std::time::{Duration, Instant};

use reflow_integration_tests::{
    golden_agent_vm, kvm_available, percentile, timed_round_trips, EchoVm, TestVm, LIMIT,
};
use reflow_ring::{Backoff, Consumer, Fault, Metadata, Producer, RingError};
use reflow_vmm::StopReason;

const MIB: usize = 1 << 20;
/// The echo test's shared region: room for a 64 MiB message each way.
const SHM_MIB: u32 = 160;
/// The other tests' (mapping it in the guest is cheaper).
const SMALL_SHM_MIB: u32 = 16;

fn meta(id: u64) -> Metadata {
    Metadata {
        message_id: id,
        timestamp_ns: id,
        actor_id: "echo-test".into(),
        port: "in".into(),
        kind: 1,
    }
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(7) ^ seed) as u8).collect()
}

#[test]
fn guest_echo_returns_every_message_byte_identical() {
    if !kvm_available() {
        return;
    }
    let vm = EchoVm::restore(SHM_MIB);
    let shared = vm.shared.clone();
    let region = shared.ring_region();
    let layout = shared.layout();
    let mut to_guest = Producer::new(region, layout.host_to_guest);
    let mut from_guest = Consumer::new(region, layout.guest_to_host);
    let mut id = 0u64;

    // Sizes from empty to 64 MiB, each back byte-identical, in place.
    for len in [0, 64, 4096, MIB, 64 * MIB] {
        let payload = pattern(len, len);
        let t = Instant::now();
        to_guest.send(&meta(id), &payload, LIMIT).unwrap();
        let echo = from_guest.recv(LIMIT).unwrap().expect("echo");
        let rtt = t.elapsed();
        assert_eq!(echo.metadata, meta(id));
        assert_eq!(echo.len(), len);
        assert!(echo.to_vec() == payload, "{len}-byte echo differs");
        from_guest.release(echo).unwrap();
        eprintln!(
            "echo of {len} bytes: {:.3} ms round trip",
            rtt.as_secs_f64() * 1e3
        );
        id += 1;
    }

    // Round-trip latency of 64-byte messages.
    let small = pattern(1, 64);
    let rtts = timed_round_trips(&mut to_guest, &mut from_guest, meta, &mut id, 2000, &small);
    eprintln!(
        "64 B round trip through the guest: p50 {:.1} us, p99 {:.1} us",
        percentile(&rtts, 0.5).as_secs_f64() * 1e6,
        percentile(&rtts, 0.99).as_secs_f64() * 1e6
    );

    // The host consumer parks on the guest's doorbell instead of polling:
    // the guest's echo rings it (one MMIO write, an ioeventfd) and every
    // message still comes back.
    // (It stays parked-capable for the rest, as a pool would run it.)
    let mut from_guest = from_guest
        .with_backoff(Backoff {
            spin: Duration::ZERO,
            max_sleep: Duration::from_secs(1),
        })
        .with_parker(shared.guest_doorbell());
    {
        let rtts = timed_round_trips(&mut to_guest, &mut from_guest, meta, &mut id, 200, &small);
        from_guest = from_guest.with_backoff(Backoff::default());
        let wakeups = shared.guest_doorbell().wakeups();
        eprintln!(
            "64 B round trip, host consumer parked on the doorbell: p50 {:.1} us, p99 {:.1} us, {wakeups} doorbell wake-ups",
            percentile(&rtts, 0.5).as_secs_f64() * 1e6,
            percentile(&rtts, 0.99).as_secs_f64() * 1e6
        );
        assert!(wakeups > 0, "the guest never rang the doorbell");
    }

    // A long pipelined run: order and count preserved, nothing lost or
    // duplicated, the producer held back by a full ring rather than dropping.
    const RUN: u64 = 50_000;
    let first = id;
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut tx = to_guest;
            for i in first..first + RUN {
                tx.send(&meta(i), &i.to_le_bytes(), LIMIT).unwrap();
            }
        });
        for i in first..first + RUN {
            let echo = from_guest.recv(LIMIT).unwrap().expect("echo");
            assert_eq!(echo.metadata.message_id, i);
            assert_eq!(echo.to_vec(), i.to_le_bytes());
            from_guest.release(echo).unwrap();
        }
        assert!(from_guest.try_recv().unwrap().is_none());
    });
    eprintln!(
        "{RUN} small messages through the guest and back: {:.0} msg/s",
        RUN as f64 / t.elapsed().as_secs_f64()
    );

    let outcome = vm.power_off();
    assert_eq!(outcome.stop, StopReason::Reset);
    assert_eq!(outcome.exit_code(), 0);
}

#[test]
fn hostile_guest_records_are_host_errors_and_the_host_stays_up() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = golden_agent_vm(SMALL_SHM_MIB);
    for fault in Fault::ALL {
        let mut vm = TestVm::restore(&dir, config.clone(), Box::new(std::io::sink()));
        let shared = vm.shared.clone().expect("a shared region");
        let region = shared.ring_region();
        let layout = shared.layout();
        let mut from_guest = Consumer::new(region, layout.guest_to_host);
        let said = vm.ok(&format!("ring-fault {}", fault.name()));
        eprintln!("guest: {said}");
        let err = from_guest
            .recv(LIMIT)
            .expect_err("a broken record must be an error");
        eprintln!("host refused the {} fault: {err}", fault.name());
        assert!(fault.explains(&err), "{fault:?} gave {err:?}");
        // The error sticks: a consumer never skips past a broken record.
        assert!(from_guest.try_recv().is_err());
        // The host is unharmed and the VM can still be shut down cleanly
        // (an owner would discard it now).
        assert_eq!(vm.ok("ping"), "pong");
        let outcome = vm.power_off();
        assert_eq!(outcome.exit_code(), 0);
    }
}

#[test]
fn full_ring_applies_backpressure_and_loses_nothing() {
    if !kvm_available() {
        return;
    }
    let (dir, config) = golden_agent_vm(SMALL_SHM_MIB);
    let mut vm = TestVm::restore(&dir, config, Box::new(std::io::sink()));
    let shared = vm.shared.clone().expect("a shared region");
    let region = shared.ring_region();
    let layout = shared.layout();
    let mut to_guest = Producer::new(region, layout.host_to_guest);
    let mut from_guest = Consumer::new(region, layout.guest_to_host);
    // Nobody consumes yet: the ring fills, then refuses (never drops).
    let payload = pattern(3, 60_000);
    let mut sent = 0u64;
    let full = loop {
        match to_guest.try_send(&meta(sent), &payload) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, RingError::Full { .. }), "{full:?}");
    assert!(sent > 0);
    let waited = to_guest.send(&meta(sent), &payload, Duration::from_millis(50));
    assert!(matches!(waited, Err(RingError::Timeout(_))), "{waited:?}");
    eprintln!("ring full after {sent} messages of {} bytes", payload.len());
    // Once the guest consumes, everything arrives, in order, and the
    // producer goes on.
    assert_eq!(vm.ok("ring-echo"), "started");
    let total = sent * 3;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in sent..total {
                to_guest.send(&meta(i), &payload, LIMIT).unwrap();
            }
        });
        for i in 0..total {
            let echo = from_guest.recv(LIMIT).unwrap().expect("echo");
            assert_eq!(echo.metadata.message_id, i);
            assert!(echo.to_vec() == payload);
            from_guest.release(echo).unwrap();
        }
    });
    assert!(from_guest.try_recv().unwrap().is_none());
    let outcome = vm.power_off();
    assert_eq!(outcome.exit_code(), 0);
}
