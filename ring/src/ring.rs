//! Producer and consumer of one ring.
//!
//! Positions are byte counts that only grow: the producer owns `head`, the
//! consumer owns `tail`, each in its own cache line of the control page, and
//! each side keeps its own copy of its position (it never trusts the shared
//! copy of its own, only reads the other side's). `head - tail` bytes are in
//! flight; records start 64-byte aligned and never wrap (a padding record
//! fills the end of the ring instead).

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use crate::layout::{RingLayout, HEAD_OFFSET, TAIL_OFFSET, WAITING_OFFSET};
use crate::record::{
    self, Header, Metadata, RecordError, RecordView, FLAG_PADDING, HEADER_LEN, METADATA_LEN,
};
use crate::region::{OutOfBounds, Region};

/// Errors of ring operations. `Full` and `Timeout` are backpressure; all
/// others mean the other side broke the protocol (or the caller misused it)
/// and the ring must not be used further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a {len}-byte record does not fit a {capacity}-byte ring")]
    TooLarge { len: u64, capacity: u64 },
    #[error("ring full: {needed} bytes needed, {free} free")]
    Full { needed: u64, free: u64 },
    #[error("ring still full after {0:?}")]
    Timeout(Duration),
    #[error("ring positions are inconsistent: {0}")]
    Corrupt(&'static str),
    #[error("record out of sequence: expected {expected}, found {found}")]
    Sequence { expected: u64, found: u64 },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
}

/// How [`Producer::send_faulty`] breaks its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The header magic is wrong.
    Magic,
    /// The format version is unknown.
    Version,
    /// The stored checksum does not match the contents.
    Checksum,
    /// The payload size runs past the ring.
    Length,
    /// The published head is beyond anything the ring can hold.
    Position,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        Ok(match s {
            "magic" => Fault::Magic,
            "version" => Fault::Version,
            "checksum" => Fault::Checksum,
            "length" => Fault::Length,
            "position" => Fault::Position,
            other => {
                return Err(format!(
                    "unknown fault {other:?} (magic, version, checksum, length, position)"
                ))
            }
        })
    }
}

impl Fault {
    /// Every fault, for tests.
    pub const ALL: [Fault; 5] = [
        Fault::Magic,
        Fault::Version,
        Fault::Checksum,
        Fault::Length,
        Fault::Position,
    ];

    /// Whether `err` is what a consumer reports on meeting this fault.
    pub fn explains(self, err: &RingError) -> bool {
        match self {
            Fault::Magic => matches!(err, RingError::Record(RecordError::BadMagic(_))),
            Fault::Version => matches!(err, RingError::Record(RecordError::Version(_))),
            Fault::Checksum => matches!(err, RingError::Record(RecordError::Checksum { .. })),
            Fault::Length => matches!(err, RingError::Record(RecordError::Length { .. })),
            Fault::Position => matches!(err, RingError::Corrupt(_)),
        }
    }

    /// The name [`str::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Magic => "magic",
            Fault::Version => "version",
            Fault::Checksum => "checksum",
            Fault::Length => "length",
            Fault::Position => "position",
        }
    }
}

/// Wakes the other side's consumer when it has parked (for example a write
/// to an MMIO doorbell that KVM turns into an eventfd signal).
pub trait Doorbell: Sync {
    fn ring(&self);
}

/// Blocks a consumer until its doorbell rings or `timeout` passes
/// (spurious and early wake-ups are fine).
pub trait Parker: Sync {
    fn park(&self, timeout: Duration);
}

/// Where one side of a ring has got to (its own position and the next
/// record sequence number): kept by an owner that outlives the borrowing
/// [`Producer`] or [`Consumer`], to resume it later with `resume`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub sequence: u64,
}

/// Writes records into a ring.
pub struct Producer<'a> {
    region: &'a Region,
    ring: RingLayout,
    head: u64,
    sequence: u64,
    backoff: Backoff,
    doorbell: Option<&'a dyn Doorbell>,
}

/// Reads records from a ring.
pub struct Consumer<'a> {
    region: &'a Region,
    ring: RingLayout,
    tail: u64,
    sequence: u64,
    backoff: Backoff,
    parker: Option<&'a dyn Parker>,
}

impl<'a> Producer<'a> {
    /// A producer for a freshly initialized ring (positions zero).
    pub fn new(region: &'a Region, ring: RingLayout) -> Producer<'a> {
        Producer::resume(region, ring, Position::default())
    }

    /// A producer that goes on from `at` (see [`Producer::position`]).
    pub fn resume(region: &'a Region, ring: RingLayout, at: Position) -> Producer<'a> {
        Producer {
            region,
            ring,
            head: at.offset,
            sequence: at.sequence,
            backoff: Backoff::default(),
            doorbell: None,
        }
    }

    /// Where this producer has got to.
    pub fn position(&self) -> Position {
        Position {
            offset: self.head,
            sequence: self.sequence,
        }
    }

    /// Rings `doorbell` after publishing whenever the consumer has said it
    /// is parked (see [`Consumer::with_parker`]).
    pub fn with_doorbell(mut self, doorbell: &'a dyn Doorbell) -> Self {
        self.doorbell = Some(doorbell);
        self
    }

    /// Publishes the head; wakes a parked consumer. The fence pairs with
    /// the consumer's: either it sees the new head before parking, or we
    /// see its waiting flag and ring.
    fn publish(&mut self) -> Result<(), RingError> {
        self.region
            .store_release(self.ring.control + HEAD_OFFSET, self.head)?;
        if let Some(doorbell) = self.doorbell {
            fence(Ordering::SeqCst);
            if self
                .region
                .load_acquire(self.ring.control + WAITING_OFFSET)?
                != 0
            {
                doorbell.ring();
            }
        }
        Ok(())
    }

    /// Sets how [`Producer::send`] waits for room.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn tail(&self) -> Result<u64, RingError> {
        let tail = self.region.load_acquire(self.ring.control + TAIL_OFFSET)?;
        if tail > self.head || self.head - tail > self.ring.capacity {
            return Err(RingError::Corrupt("consumer position out of range"));
        }
        Ok(tail)
    }

    /// Appends one record, or fails with [`RingError::Full`] (having at
    /// most published padding up to the ring's end).
    pub fn try_send(&mut self, meta: &Metadata, payload: &[u8]) -> Result<(), RingError> {
        self.try_send_from(meta, Payload::Bytes(payload))
    }

    /// Appends a copy of a record read from another ring (or the same
    /// region), copying region to region without an intermediate buffer
    /// of the payload's size.
    pub fn try_forward(&mut self, view: &RecordView<'_>) -> Result<(), RingError> {
        self.try_send_from(&view.metadata, Payload::View(view))
    }

    fn try_send_from(&mut self, meta: &Metadata, payload: Payload<'_>) -> Result<(), RingError> {
        self.try_send_tampered(meta, payload, None)
    }

    /// Publishes one deliberately broken record (see [`Fault`]): for tests
    /// that prove a consumer survives a hostile producer. The producer is
    /// unusable afterwards.
    pub fn send_faulty(&mut self, fault: Fault) -> Result<(), RingError> {
        let meta = Metadata::default();
        self.try_send_tampered(&meta, Payload::Bytes(b"hostile"), Some(fault))
    }

    fn try_send_tampered(
        &mut self,
        meta: &Metadata,
        payload: Payload<'_>,
        fault: Option<Fault>,
    ) -> Result<(), RingError> {
        let cap = self.ring.capacity;
        let size = payload.len();
        let len = record::record_len(size)
            .filter(|&l| l <= cap && size <= u64::from(u32::MAX))
            .ok_or(RingError::TooLarge {
                len: size,
                capacity: cap,
            })?;
        let meta_bytes = meta.encode()?;
        let mut free = cap - (self.head - self.tail()?);
        let pos = self.head % cap;
        let to_end = cap - pos;
        if len > to_end {
            // The record does not fit before the ring's end: fill the end
            // with padding first (published on its own, so a record as large
            // as the whole ring fits once the consumer has passed the wrap).
            if to_end > free {
                return Err(RingError::Full {
                    needed: to_end,
                    free,
                });
            }
            let pad = Header {
                flags: FLAG_PADDING,
                size: 0,
                checksum: 0,
                record_len: to_end,
                sequence: 0,
            };
            self.region.write(self.ring.data + pos, &pad.encode())?;
            self.head += to_end;
            self.publish()?;
            free -= to_end;
        }
        if len > free {
            return Err(RingError::Full { needed: len, free });
        }
        let at = self.ring.data + self.head % cap;
        self.region.write(at + HEADER_LEN, &meta_bytes)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&meta_bytes);
        let dst = at + HEADER_LEN + METADATA_LEN;
        match payload {
            Payload::Bytes(b) => {
                self.region.write(dst, b)?;
                crc.update(b);
            }
            Payload::View(v) => {
                v.region
                    .for_each_chunk(v.payload_offset, size, |done, chunk| {
                        self.region.write(dst + done, chunk)?;
                        crc.update(chunk);
                        Ok::<(), RingError>(())
                    })?;
            }
        }
        let header = Header {
            flags: 0,
            size,
            checksum: crc.finalize(),
            record_len: len,
            sequence: self.sequence,
        };
        let mut raw = header.encode();
        match fault {
            None => {}
            Some(Fault::Magic) => raw[0..4].copy_from_slice(b"EVIL"),
            Some(Fault::Version) => raw[4] = 0xee,
            Some(Fault::Checksum) => raw[12] ^= 0x5a,
            Some(Fault::Length) => raw[8..12].copy_from_slice(&(cap as u32 + 1).to_le_bytes()),
            Some(Fault::Position) => self.head += 2 * cap,
        }
        self.region.write(at, &raw)?;
        self.head += len;
        self.sequence += 1;
        self.publish()
    }

    /// Appends one record, waiting for room with adaptive back-off (spin,
    /// then yield, then sleep) for at most `timeout`.
    pub fn send(
        &mut self,
        meta: &Metadata,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), RingError> {
        self.retry(timeout, |p| p.try_send(meta, payload))
    }

    /// [`Producer::try_forward`], waiting for room like [`Producer::send`].
    pub fn forward(&mut self, view: &RecordView<'_>, timeout: Duration) -> Result<(), RingError> {
        self.retry(timeout, |p| p.try_forward(view))
    }

    fn retry(
        &mut self,
        timeout: Duration,
        mut attempt: impl FnMut(&mut Self) -> Result<(), RingError>,
    ) -> Result<(), RingError> {
        let deadline = Instant::now() + timeout;
        let mut waiter = Waiter::new(self.backoff);
        loop {
            match attempt(self) {
                Err(RingError::Full { .. }) if Instant::now() < deadline => waiter.wait(),
                Err(RingError::Full { .. }) => return Err(RingError::Timeout(timeout)),
                other => return other,
            }
        }
    }
}

impl<'a> Consumer<'a> {
    /// A consumer for a freshly initialized ring (positions zero).
    pub fn new(region: &'a Region, ring: RingLayout) -> Consumer<'a> {
        Consumer::resume(region, ring, Position::default())
    }

    /// A consumer that goes on from `at` (see [`Consumer::position`]).
    pub fn resume(region: &'a Region, ring: RingLayout, at: Position) -> Consumer<'a> {
        Consumer {
            region,
            ring,
            tail: at.offset,
            sequence: at.sequence,
            backoff: Backoff::default(),
            parker: None,
        }
    }

    /// Where this consumer has got to (records released so far).
    pub fn position(&self) -> Position {
        Position {
            offset: self.tail,
            sequence: self.sequence,
        }
    }

    /// After spinning, [`Consumer::recv`] parks on `parker` (raising the
    /// ring's waiting flag, so a producer with a doorbell wakes it) instead
    /// of sleeping; `Backoff::max_sleep` then bounds each park.
    pub fn with_parker(mut self, parker: &'a dyn Parker) -> Self {
        self.parker = Some(parker);
        self
    }

    fn set_waiting(&self, waiting: bool) -> Result<(), RingError> {
        self.region
            .store_release(self.ring.control + WAITING_OFFSET, u64::from(waiting))?;
        Ok(())
    }

    /// Sets how [`Consumer::recv`] waits for records.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn set_tail(&mut self, tail: u64) -> Result<(), RingError> {
        self.tail = tail;
        self.region
            .store_release(self.ring.control + TAIL_OFFSET, tail)?;
        Ok(())
    }

    /// The next record, validated, without consuming it; `None` when the
    /// ring is empty. Release it with [`Consumer::release`].
    pub fn try_recv(&mut self) -> Result<Option<RecordView<'a>>, RingError> {
        let cap = self.ring.capacity;
        loop {
            let head = self.region.load_acquire(self.ring.control + HEAD_OFFSET)?;
            if head < self.tail || head - self.tail > cap {
                return Err(RingError::Corrupt("producer position out of range"));
            }
            let avail = head - self.tail;
            if avail == 0 {
                return Ok(None);
            }
            let pos = self.tail % cap;
            let to_end = cap - pos;
            if avail < HEADER_LEN {
                return Err(RingError::Corrupt("partial record header published"));
            }
            let at = self.ring.data + pos;
            let mut raw = [0u8; HEADER_LEN as usize];
            self.region.read(at, &mut raw)?;
            let header = Header::decode(&raw)?;
            if header.record_len > to_end || header.record_len > avail {
                return Err(RingError::Corrupt(
                    "record runs past the published data or the ring end",
                ));
            }
            if header.flags & FLAG_PADDING != 0 {
                if header.record_len != to_end {
                    return Err(RingError::Corrupt("padding does not reach the ring end"));
                }
                self.set_tail(self.tail + to_end)?;
                continue;
            }
            if header.sequence != self.sequence {
                return Err(RingError::Sequence {
                    expected: self.sequence,
                    found: header.sequence,
                });
            }
            let mut meta_raw = [0u8; METADATA_LEN as usize];
            self.region.read(at + HEADER_LEN, &mut meta_raw)?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&meta_raw);
            self.region
                .hash_into(at + HEADER_LEN + METADATA_LEN, header.size, &mut crc)?;
            let computed = crc.finalize();
            if computed != header.checksum {
                return Err(RecordError::Checksum {
                    stored: header.checksum,
                    computed,
                }
                .into());
            }
            let metadata = Metadata::decode(&meta_raw)?;
            return Ok(Some(RecordView {
                region: self.region,
                metadata,
                sequence: header.sequence,
                payload_offset: at + HEADER_LEN + METADATA_LEN,
                size: header.size,
                record_len: header.record_len,
            }));
        }
    }

    /// Consumes `view` (the record `try_recv` returned last), giving its
    /// space back to the producer.
    pub fn release(&mut self, view: RecordView<'_>) -> Result<(), RingError> {
        if view.sequence != self.sequence {
            return Err(RingError::Sequence {
                expected: self.sequence,
                found: view.sequence,
            });
        }
        self.sequence += 1;
        self.set_tail(self.tail + view.record_len)
    }

    /// Waits for the next record with adaptive back-off, for at most
    /// `timeout`; `None` if none arrived.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<RecordView<'a>>, RingError> {
        let deadline = Instant::now() + timeout;
        let mut waiter = Waiter::new(self.backoff);
        loop {
            if let Some(v) = self.try_recv()? {
                return Ok(Some(v));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let Some(sleep) = waiter.next() else {
                continue;
            };
            let Some(parker) = self.parker else {
                std::thread::sleep(sleep);
                continue;
            };
            self.set_waiting(true)?;
            fence(Ordering::SeqCst);
            let arrived = self.try_recv();
            if !matches!(arrived, Ok(None)) {
                self.set_waiting(false)?;
                return arrived;
            }
            parker.park(sleep.min(deadline - now));
            self.set_waiting(false)?;
        }
    }
}

/// Where a record's payload comes from.
enum Payload<'a> {
    Bytes(&'a [u8]),
    View(&'a RecordView<'a>),
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::View(v) => v.size,
        }
    }
}

/// How a waiting side polls: spin for `spin` (reading the clock is a vDSO
/// call, no system call), then sleep with growing intervals up to
/// `max_sleep`. Where every system call is expensive (a guest whose kernel
/// is emulated), spin longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub spin: Duration,
    pub max_sleep: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            spin: Duration::from_micros(100),
            max_sleep: Duration::from_millis(1),
        }
    }
}

struct Waiter {
    policy: Backoff,
    start: Instant,
    sleep: Duration,
}

impl Waiter {
    fn new(policy: Backoff) -> Waiter {
        Waiter {
            policy,
            start: Instant::now(),
            sleep: Duration::from_micros(20),
        }
    }

    /// Spins a little and returns `None` while in the spin phase; after
    /// it, returns how long to sleep next (growing up to `max_sleep`).
    fn next(&mut self) -> Option<Duration> {
        if self.start.elapsed() < self.policy.spin {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            return None;
        }
        let sleep = self.sleep;
        self.sleep = (self.sleep * 2).min(self.policy.max_sleep);
        Some(sleep)
    }

    fn wait(&mut self) {
        if let Some(sleep) = self.next() {
            std::thread::sleep(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::RegionLayout;
    use crate::region::test_memory::TestMemory;

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
}
