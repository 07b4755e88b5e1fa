//! The producing side of a ring: appends records, publishes the head and
//! rings the consumer's doorbell when it has parked.

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use crate::error::RingError;
use crate::layout::{RingLayout, HEAD_OFFSET, TAIL_OFFSET, WAITING_OFFSET};
use crate::position::{Position, Side};
use crate::record::{self, Header, Metadata, RecordView, FLAG_PADDING, HEADER_LEN, METADATA_LEN};
use crate::region::Region;
use crate::wait::{Backoff, Doorbell, Waiter};

/// Writes records into a ring.
pub struct Producer<'a> {
    side: Side<'a>,
    doorbell: Option<&'a dyn Doorbell>,
}

impl<'a> Producer<'a> {
    /// A producer for a freshly initialized ring (positions zero).
    pub fn new(region: &'a Region, ring: RingLayout) -> Producer<'a> {
        Producer::resume(region, ring, Position::default())
    }

    /// A producer that goes on from `at` (see [`Producer::position`]).
    pub fn resume(region: &'a Region, ring: RingLayout, at: Position) -> Producer<'a> {
        Producer {
            side: Side::at(region, ring, at),
            doorbell: None,
        }
    }

    /// The ring's data capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.side.ring.capacity
    }

    /// Where this producer has got to.
    pub fn position(&self) -> Position {
        self.side.position()
    }

    /// Rings `doorbell` after publishing whenever the consumer has said it
    /// is parked (see [`Consumer::with_parker`](crate::Consumer::with_parker)).
    pub fn with_doorbell(mut self, doorbell: &'a dyn Doorbell) -> Self {
        self.doorbell = Some(doorbell);
        self
    }

    /// Publishes the head; wakes a parked consumer. The fence pairs with
    /// the consumer's: either it sees the new head before parking, or we
    /// see its waiting flag and ring.
    fn publish(&mut self) -> Result<(), RingError> {
        self.side
            .region
            .store_release(self.side.ring.control + HEAD_OFFSET, self.side.offset)?;
        if let Some(doorbell) = self.doorbell {
            fence(Ordering::SeqCst);
            if self
                .side
                .region
                .load_acquire(self.side.ring.control + WAITING_OFFSET)?
                != 0
            {
                doorbell.ring();
            }
        }
        Ok(())
    }

    /// Sets how [`Producer::send`] waits for room.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.side.backoff = backoff;
        self
    }

    fn tail(&self) -> Result<u64, RingError> {
        let tail = self
            .side
            .region
            .load_acquire(self.side.ring.control + TAIL_OFFSET)?;
        if tail > self.side.offset || self.side.offset - tail > self.side.ring.capacity {
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
        self.try_send_tampered(meta, payload, |_, _| {})
    }

    /// Appends one record, letting `tamper` change its encoded header and
    /// the head before they are published (the hook fault injection uses;
    /// every real send passes a no-op).
    pub(crate) fn try_send_tampered(
        &mut self,
        meta: &Metadata,
        payload: Payload<'_>,
        tamper: impl FnOnce(&mut [u8; HEADER_LEN as usize], &mut u64),
    ) -> Result<(), RingError> {
        let cap = self.side.ring.capacity;
        let size = payload.len();
        let len = record::record_len(size)
            .filter(|&l| l <= cap && size <= u64::from(u32::MAX))
            .ok_or(RingError::TooLarge {
                len: size,
                capacity: cap,
            })?;
        let meta_bytes = meta.encode()?;
        let mut free = cap - (self.side.offset - self.tail()?);
        let pos = self.side.offset % cap;
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
            self.side
                .region
                .write(self.side.ring.data + pos, &pad.encode())?;
            self.side.offset += to_end;
            self.publish()?;
            free -= to_end;
        }
        if len > free {
            return Err(RingError::Full { needed: len, free });
        }
        let at = self.side.ring.data + self.side.offset % cap;
        self.side.region.write(at + HEADER_LEN, &meta_bytes)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&meta_bytes);
        let dst = at + HEADER_LEN + METADATA_LEN;
        match payload {
            Payload::Bytes(b) => {
                self.side.region.write(dst, b)?;
                crc.update(b);
            }
            Payload::View(v) => {
                v.region
                    .for_each_chunk(v.payload_offset, size, |done, chunk| {
                        self.side.region.write(dst + done, chunk)?;
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
            sequence: self.side.sequence,
        };
        let mut raw = header.encode();
        tamper(&mut raw, &mut self.side.offset);
        self.side.region.write(at, &raw)?;
        self.side.offset += len;
        self.side.sequence += 1;
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
        let mut waiter = Waiter::new(self.side.backoff);
        loop {
            match attempt(self) {
                Err(RingError::Full { .. }) if Instant::now() < deadline => waiter.wait(),
                Err(RingError::Full { .. }) => return Err(RingError::Timeout(timeout)),
                other => return other,
            }
        }
    }
}

/// Where a record's payload comes from.
pub(crate) enum Payload<'a> {
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
