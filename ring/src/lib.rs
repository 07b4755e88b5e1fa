//! The message ring between the host and guest user space.
//!
//! Two single-producer/single-consumer rings (host->guest, guest->host) live
//! in the shared-memory region the monitor maps into the guest. Each message
//! is one record laid out as the design seeds describe: a 64-byte header
//! (magic, version, flags, size, checksum), 256 bytes of metadata (actor id,
//! message id, timestamp, port), then the payload. Consumers read payloads in
//! place through a borrowed [`record::RecordView`]; producers get
//! backpressure ([`RingError::Full`]) when the ring has no room, never a
//! dropped message.
//!
//! Everything the other side writes is untrusted: positions, headers,
//! lengths and checksums are validated before use and violations are
//! [`RingError`]s, never panics or out-of-bounds accesses.
//!
//! Module map: [`region`] (bounds-checked volatile access to shared memory),
//! [`layout`] (where the rings are), [`record`] (the record format),
//! [`ring`] (producer and consumer).

pub mod layout;
pub mod record;
pub mod region;
pub mod ring;
pub mod value;

pub use layout::{RegionLayout, RingLayout};
pub use record::{Metadata, RecordView};
pub use region::Region;
pub use ring::{Backoff, Consumer, Doorbell, Fault, Parker, Position, Producer, RingError};
pub use value::{Value, ValueError};
