//! Producer and consumer tests over mock shared memory.

use std::time::Duration;

use std::sync::atomic::Ordering;

use crate::layout::RegionLayout;
use crate::layout::{HEAD_OFFSET, TAIL_OFFSET};
use crate::record::RecordError;
use crate::region::test_memory::TestMemory;
use crate::*;

fn meta(id: u64) -> Metadata {
    Metadata {
        message_id: id,
        timestamp_ns: id * 10,
        actor_id: "actor".into(),
        port: format!("port{}", id % 3),
        kind: 1,
    }
}

fn setup(size: usize) -> (TestMemory, RegionLayout) {
    let mut m = TestMemory::new(size);
    let l = RegionLayout::for_size(size as u64).unwrap();
    l.initialize(&m.region()).unwrap();
    (m, l)
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

#[test]
fn round_trips_sizes_and_wraps_with_padding() {
    let (mut m, l) = setup(256 * 1024);
    let r = m.region();
    let mut p = Producer::new(&r, l.host_to_guest);
    let mut c = Consumer::new(&r, l.host_to_guest);
    assert!(c.try_recv().unwrap().is_none());
    let sizes = [0usize, 1, 64, 4096, 5000, 20_000, 3, 50_000];
    for round in 0..20 {
        for (i, &len) in sizes.iter().enumerate() {
            let id = (round * sizes.len() + i) as u64;
            p.try_send(&meta(id), &payload(i + round, len)).unwrap();
            let v = c.try_recv().unwrap().expect("a record");
            assert_eq!(v.metadata, meta(id));
            assert_eq!(v.len(), len);
            assert_eq!(v.to_vec(), payload(i + round, len));
            c.release(v).unwrap();
        }
    }
    assert!(c.try_recv().unwrap().is_none());
}

/// A doorbell and parker pair over a condition variable, counting.
#[derive(Default)]
struct Bell {
    rung: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
    rings: std::sync::atomic::AtomicU64,
    parks: std::sync::atomic::AtomicU64,
}

impl Doorbell for Bell {
    fn ring(&self) {
        self.rings.fetch_add(1, Ordering::Relaxed);
        *self.rung.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

impl Parker for Bell {
    fn park(&self, timeout: Duration) {
        self.parks.fetch_add(1, Ordering::Relaxed);
        let guard = self.rung.lock().unwrap();
        let (mut guard, _) = self.cv.wait_timeout_while(guard, timeout, |r| !*r).unwrap();
        *guard = false;
    }
}

#[test]
fn a_parked_consumer_is_woken_by_the_doorbell_and_no_wakeup_is_lost() {
    let (mut m, l) = setup(256 * 1024);
    let r = m.region();
    let bell = Bell::default();
    // Parks last up to a minute, but each receive gives up after 10 s:
    // a lost wake-up fails the test instead of merely slowing it.
    let backoff = Backoff {
        spin: Duration::ZERO,
        max_sleep: Duration::from_secs(60),
    };
    let mut c = Consumer::new(&r, l.guest_to_host)
        .with_backoff(backoff)
        .with_parker(&bell);
    const N: u64 = 3000;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut p = Producer::new(&r, l.guest_to_host).with_doorbell(&bell);
            for i in 0..N {
                p.send(&meta(i), &payload(i as usize, 100), Duration::from_secs(10))
                    .unwrap();
                if i % 7 == 0 {
                    // Let the consumer run dry and park.
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        for i in 0..N {
            let v = c
                .recv(Duration::from_secs(10))
                .unwrap()
                .unwrap_or_else(|| panic!("message {i} never came: a lost wake-up"));
            assert_eq!(v.metadata.message_id, i);
            c.release(v).unwrap();
        }
    });
    let (rings, parks) = (
        bell.rings.load(Ordering::Relaxed),
        bell.parks.load(Ordering::Relaxed),
    );
    assert!(parks > 0, "the consumer never parked");
    // Each publish rings at most once: one per message, plus one per
    // wrap-around padding record.
    let record = record::record_len(100).unwrap();
    let publishes = N + N * record / l.guest_to_host.capacity + 1;
    assert!(
        rings > 0 && rings <= publishes,
        "{rings} rings for {publishes} publishes"
    );
}

#[test]
fn producers_and_consumers_resume_where_they_were() {
    let (mut m, l) = setup(256 * 1024);
    let r = m.region();
    let (mut at_p, mut at_c) = (Position::default(), Position::default());
    for i in 0..600u64 {
        // A new producer and consumer for every message, as an owner
        // that keeps only the positions would make them.
        let mut p = Producer::resume(&r, l.host_to_guest, at_p);
        p.try_send(&meta(i), &payload(i as usize, 700)).unwrap();
        at_p = p.position();
        let mut c = Consumer::resume(&r, l.host_to_guest, at_c);
        let v = c.try_recv().unwrap().expect("a record");
        assert_eq!(v.metadata.message_id, i);
        c.release(v).unwrap();
        at_c = c.position();
    }
    assert_eq!(at_p, at_c);
    assert_eq!(at_p.sequence, 600);
}

#[test]
fn a_fresh_region_started_at_saved_positions_goes_on_from_them() {
    // What a clone of a snapshot taken mid-conversation sees: a new,
    // zeroed region whose empty rings start where the old ones stood.
    let size = 256 * 1024;
    let (mut old, l) = setup(size);
    let r = old.region();
    let mut p = Producer::new(&r, l.host_to_guest);
    let mut c = Consumer::new(&r, l.host_to_guest);
    for i in 0..300u64 {
        p.try_send(&meta(i), &payload(i as usize, 900)).unwrap();
        let v = c.try_recv().unwrap().expect("a record");
        c.release(v).unwrap();
    }
    let (at_p, at_c) = (p.position(), c.position());
    assert!(
        at_p.offset > l.host_to_guest.capacity,
        "wrapped at least once"
    );
    let mut fresh = TestMemory::new(size);
    let fr = fresh.region();
    l.initialize_at(&fr, at_p.offset, 0).unwrap();
    let mut p = Producer::resume(&fr, l.host_to_guest, at_p);
    let mut c = Consumer::resume(&fr, l.host_to_guest, at_c);
    assert!(c.try_recv().unwrap().is_none(), "starts empty");
    for i in 300..400u64 {
        p.try_send(&meta(i), &payload(i as usize, 900)).unwrap();
        let v = c.try_recv().unwrap().expect("a record");
        assert_eq!(
            (v.metadata.message_id, v.to_vec()),
            (i, payload(i as usize, 900))
        );
        c.release(v).unwrap();
    }
    // A position inside a record is refused.
    assert!(l.initialize_at(&fr, 8, 0).is_err());
}

#[cfg(feature = "testing")]
#[test]
fn every_injected_fault_is_an_error_for_the_consumer() {
    for fault in Fault::ALL {
        let (mut m, l) = setup(256 * 1024);
        let r = m.region();
        let mut p = Producer::new(&r, l.guest_to_host);
        let mut c = Consumer::new(&r, l.guest_to_host);
        p.try_send(&meta(0), b"fine").unwrap();
        p.send_faulty(fault).unwrap();
        if fault != Fault::Position {
            // Records before the broken one are still delivered.
            let v = c.try_recv().unwrap().expect("the good record");
            c.release(v).unwrap();
        }
        let err = c.try_recv().expect_err(fault.name());
        assert!(fault.explains(&err), "{fault:?} gave {err:?}");
        assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
    }
}

#[test]
fn full_ring_applies_backpressure_then_recovers() {
    let (mut m, l) = setup(160 * 1024);
    let r = m.region();
    let mut p = Producer::new(&r, l.guest_to_host);
    let mut c = Consumer::new(&r, l.guest_to_host);
    let big = vec![7u8; 10_000];
    let mut sent = 0;
    loop {
        match p.try_send(&meta(sent), &big) {
            Ok(()) => sent += 1,
            Err(RingError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent > 0);
    assert_eq!(
        p.send(&meta(sent), &big, Duration::from_millis(5)),
        Err(RingError::Timeout(Duration::from_millis(5)))
    );
    let v = c.try_recv().unwrap().unwrap();
    c.release(v).unwrap();
    p.try_send(&meta(sent), &big).unwrap();
    // Forwarding a record copies it whole.
    let mut c2 = Consumer::new(&r, l.host_to_guest);
    let mut p2 = Producer::new(&r, l.host_to_guest);
    p2.try_send(&meta(77), &payload(3, 9000)).unwrap();
    let v = c2.try_recv().unwrap().unwrap();
    let v2 = c.try_recv().unwrap().unwrap();
    c.release(v2).unwrap();
    p.try_forward(&v).unwrap();
    c2.release(v).unwrap();
    let mut last = None;
    while let Some(v) = c.try_recv().unwrap() {
        last = Some((v.metadata.clone(), v.to_vec()));
        c.release(v).unwrap();
    }
    assert_eq!(last, Some((meta(77), payload(3, 9000))));
    // A record as large as half the ring or more fits wherever the
    // positions are, once the consumer catches up.
    let half = vec![1u8; (l.guest_to_host.capacity / 2) as usize];
    for i in 0..5 {
        p.send(&meta(1000 + i), &half, Duration::from_millis(50))
            .or_else(|_| {
                while let Some(v) = c.try_recv().unwrap() {
                    c.release(v).unwrap();
                }
                p.send(&meta(1000 + i), &half, Duration::from_millis(50))
            })
            .unwrap();
    }
    let huge = vec![0u8; l.guest_to_host.capacity as usize];
    assert!(matches!(
        p.try_send(&meta(0), &huge),
        Err(RingError::TooLarge { .. })
    ));
}

#[test]
fn threads_keep_order_and_count() {
    const N: u64 = 100_000;
    let (mut m, l) = setup(1 << 20);
    let r = m.region();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut p = Producer::new(&r, l.host_to_guest);
            for i in 0..N {
                p.send(&meta(i), &i.to_le_bytes(), Duration::from_secs(30))
                    .unwrap();
            }
        });
        let mut c = Consumer::new(&r, l.host_to_guest);
        for i in 0..N {
            let v = c.recv(Duration::from_secs(30)).unwrap().expect("message");
            assert_eq!(v.metadata.message_id, i);
            assert_eq!(v.to_vec(), i.to_le_bytes());
            c.release(v).unwrap();
        }
        assert!(c.try_recv().unwrap().is_none());
    });
}

#[test]
fn hostile_positions_and_records_are_errors() {
    let (mut m, l) = setup(160 * 1024);
    let r = m.region();
    let ring = l.guest_to_host;
    let mut p = Producer::new(&r, ring);
    p.try_send(&meta(0), b"hello").unwrap();
    // Head beyond the capacity.
    let mut c = Consumer::new(&r, ring);
    r.store_release(ring.control + HEAD_OFFSET, ring.capacity + 64)
        .unwrap();
    assert!(matches!(c.try_recv(), Err(RingError::Corrupt(_))));
    r.store_release(ring.control + HEAD_OFFSET, 384).unwrap();
    // Payload byte flipped: checksum.
    let mut b = [0u8];
    r.read(ring.data + 320, &mut b).unwrap();
    r.write(ring.data + 320, &[b[0] ^ 1]).unwrap();
    assert!(matches!(
        c.try_recv(),
        Err(RingError::Record(RecordError::Checksum { .. }))
    ));
    r.write(ring.data + 320, &b).unwrap();
    // Length past the published data.
    r.write(ring.data + 16, &1024u32.to_le_bytes()).unwrap();
    assert!(c.try_recv().is_err());
    r.write(ring.data + 16, &384u32.to_le_bytes()).unwrap();
    // Replayed sequence number.
    r.write(ring.data + 24, &5u64.to_le_bytes()).unwrap();
    assert!(matches!(
        c.try_recv(),
        Err(RingError::Sequence {
            expected: 0,
            found: 5
        })
    ));
    r.write(ring.data + 24, &0u64.to_le_bytes()).unwrap();
    assert_eq!(c.try_recv().unwrap().unwrap().to_vec(), b"hello");
    // A consumer position the producer cannot have produced.
    r.store_release(ring.control + TAIL_OFFSET, 1 << 40)
        .unwrap();
    assert!(matches!(
        p.try_send(&meta(1), b"x"),
        Err(RingError::Corrupt(_))
    ));
}

#[test]
fn random_garbage_never_panics() {
    let (mut m, l) = setup(160 * 1024);
    let r = m.region();
    let ring = l.guest_to_host;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut p = Producer::new(&r, ring);
        r.store_release(ring.control + TAIL_OFFSET, 0).unwrap();
        let _ = p.try_send(&meta(0), &payload(1, (next() % 3000) as usize));
        for _ in 0..(next() % 8) {
            let off = ring.data + next() % 4096;
            let _ = r.write(off, &[next() as u8]);
        }
        if next() % 4 == 0 {
            let _ = r.store_release(ring.control + HEAD_OFFSET, next() % (2 * ring.capacity));
        }
        let mut c = Consumer::new(&r, ring);
        for _ in 0..4 {
            match c.try_recv() {
                Ok(Some(v)) => {
                    let _ = v.to_vec();
                    let _ = c.release(v);
                }
                Ok(None) | Err(_) => break,
            }
        }
        r.store_release(ring.control + HEAD_OFFSET, 0).unwrap();
    }
}

#[test]
fn a_wait_ends_early_once_it_is_pointless_and_never_drops_a_record() {
    let (mut m, l) = setup(256 * 1024);
    let r = m.region();
    let mut p = Producer::new(&r, l.guest_to_host);
    let mut c = Consumer::new(&r, l.guest_to_host);
    let asked = std::cell::Cell::new(0);
    let go_on = || {
        asked.set(asked.get() + 1);
        asked.get() < 3
    };
    let started = std::time::Instant::now();
    assert!(c
        .recv_while(Duration::from_secs(30), &go_on)
        .unwrap()
        .is_none());
    assert_eq!(asked.get(), 3, "asked until it said no");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A record already there is returned whatever `go_on` says.
    p.try_send(&meta(1), b"late").unwrap();
    let v = c.recv_while(Duration::from_secs(30), &|| false).unwrap();
    assert_eq!(v.expect("the record").to_vec(), b"late");
}
