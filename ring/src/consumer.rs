//! The consuming side of a ring: validates every record the other side
//! published before handing out a view of it, and parks when idle.

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use crate::error::RingError;
use crate::layout::{RingLayout, HEAD_OFFSET, TAIL_OFFSET, WAITING_OFFSET};
use crate::position::{Position, Side};
use crate::record::{
    Header, Metadata, RecordError, RecordView, FLAG_PADDING, HEADER_LEN, METADATA_LEN,
};
use crate::region::Region;
use crate::wait::{Backoff, Parker, Waiter};

/// Reads records from a ring.
pub struct Consumer<'a> {
    side: Side<'a>,
    parker: Option<&'a dyn Parker>,
}

impl<'a> Consumer<'a> {
    /// A consumer for a freshly initialized ring (positions zero).
    pub fn new(region: &'a Region, ring: RingLayout) -> Consumer<'a> {
        Consumer::resume(region, ring, Position::default())
    }

    /// A consumer that goes on from `at` (see [`Consumer::position`]).
    pub fn resume(region: &'a Region, ring: RingLayout, at: Position) -> Consumer<'a> {
        Consumer {
            side: Side::at(region, ring, at),
            parker: None,
        }
    }

    /// Where this consumer has got to (records released so far).
    pub fn position(&self) -> Position {
        self.side.position()
    }

    /// After spinning, [`Consumer::recv`] parks on `parker` (raising the
    /// ring's waiting flag, so a producer with a doorbell wakes it) instead
    /// of sleeping; `Backoff::max_sleep` then bounds each park.
    pub fn with_parker(mut self, parker: &'a dyn Parker) -> Self {
        self.parker = Some(parker);
        self
    }

    fn set_waiting(&self, waiting: bool) -> Result<(), RingError> {
        self.side
            .region
            .store_release(self.side.ring.control + WAITING_OFFSET, u64::from(waiting))?;
        Ok(())
    }

    /// Sets how [`Consumer::recv`] waits for records.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.side.backoff = backoff;
        self
    }

    fn set_tail(&mut self, tail: u64) -> Result<(), RingError> {
        self.side.offset = tail;
        self.side
            .region
            .store_release(self.side.ring.control + TAIL_OFFSET, tail)?;
        Ok(())
    }

    /// The next record, validated, without consuming it; `None` when the
    /// ring is empty. Release it with [`Consumer::release`].
    pub fn try_recv(&mut self) -> Result<Option<RecordView<'a>>, RingError> {
        let cap = self.side.ring.capacity;
        loop {
            let head = self
                .side
                .region
                .load_acquire(self.side.ring.control + HEAD_OFFSET)?;
            if head < self.side.offset || head - self.side.offset > cap {
                return Err(RingError::Corrupt("producer position out of range"));
            }
            let avail = head - self.side.offset;
            if avail == 0 {
                return Ok(None);
            }
            let pos = self.side.offset % cap;
            let to_end = cap - pos;
            if avail < HEADER_LEN {
                return Err(RingError::Corrupt("partial record header published"));
            }
            let at = self.side.ring.data + pos;
            let mut raw = [0u8; HEADER_LEN as usize];
            self.side.region.read(at, &mut raw)?;
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
                self.set_tail(self.side.offset + to_end)?;
                continue;
            }
            if header.sequence != self.side.sequence {
                return Err(RingError::Sequence {
                    expected: self.side.sequence,
                    found: header.sequence,
                });
            }
            let mut meta_raw = [0u8; METADATA_LEN as usize];
            self.side.region.read(at + HEADER_LEN, &mut meta_raw)?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&meta_raw);
            self.side
                .region
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
                region: self.side.region,
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
        if view.sequence != self.side.sequence {
            return Err(RingError::Sequence {
                expected: self.side.sequence,
                found: view.sequence,
            });
        }
        self.side.sequence += 1;
        self.set_tail(self.side.offset + view.record_len)
    }

    /// Waits for the next record with adaptive back-off, for at most
    /// `timeout`; `None` if none arrived.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<RecordView<'a>>, RingError> {
        self.recv_while(timeout, &|| true)
    }

    /// [`Consumer::recv`], giving up early (`None`) once `go_on` says
    /// waiting is pointless (the producer's VM is gone, say). It is asked
    /// after every sleep or park of the back-off, never while spinning,
    /// so a check that takes a lock costs nothing on the fast path.
    pub fn recv_while(
        &mut self,
        timeout: Duration,
        go_on: &dyn Fn() -> bool,
    ) -> Result<Option<RecordView<'a>>, RingError> {
        let deadline = Instant::now() + timeout;
        let mut waiter = Waiter::new(self.side.backoff);
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
                if !go_on() {
                    return self.try_recv();
                }
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
            if !go_on() {
                return self.try_recv();
            }
        }
    }
}
