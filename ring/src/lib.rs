//! The message ring between the host and guest user space.
//!
//! Two single-producer/single-consumer rings (host->guest, guest->host) live
//! in the shared-memory region the monitor maps into the guest. Each message
//! is one record: a 64-byte header (magic, version, flags, size, checksum),
//! 256 bytes of metadata (actor id, message id, timestamp, port), then the
//! payload. Consumers read payloads in place through a borrowed
//! [`record::RecordView`]; producers get backpressure ([`RingError::Full`])
//! when the ring has no room, never a dropped message.
//!
//! Positions are byte counts that only grow: the producer owns `head`, the
//! consumer owns `tail`, each in its own cache line of the control page, and
//! each side keeps its own copy of its position (it never trusts the shared
//! copy of its own, only reads the other side's). `head - tail` bytes are in
//! flight; records start 64-byte aligned and never wrap (a padding record
//! fills the end of the ring instead).
//!
//! Everything the other side writes is untrusted: positions, headers,
//! lengths and checksums are validated before use and violations are
//! [`RingError`]s, never panics or out-of-bounds accesses.
//!
//! Module map: [`region`] (bounds-checked volatile access to shared memory),
//! [`layout`] (where the rings are), [`record`] (the record format),
//! [`value`] (the payload encoding), [`producer`] and [`consumer`] (the two
//! sides), [`wait`] (doorbells, parkers, back-off), [`position`], [`error`];
//! with the `testing` feature, `fault` (deliberately broken records).

#![warn(missing_docs)]

pub mod consumer;
pub mod error;
#[cfg(feature = "testing")]
pub mod fault;
pub mod layout;
pub mod position;
pub mod producer;
pub mod record;
pub mod region;
pub mod value;
pub mod wait;

pub use consumer::Consumer;
pub use error::RingError;
#[cfg(feature = "testing")]
pub use fault::Fault;
pub use layout::{RegionLayout, RingLayout};
pub use position::Position;
pub use producer::Producer;
pub use record::{Metadata, RecordView};
pub use region::Region;
pub use value::{Value, ValueError};
pub use wait::{Backoff, Doorbell, Parker};

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
