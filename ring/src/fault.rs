//! Fault injection, for tests that prove a consumer survives a hostile
//! producer. Built only with the `testing` feature: no release binary can
//! publish a broken record on purpose.

use crate::error::RingError;
use crate::producer::{Payload, Producer};
use crate::record::{Metadata, RecordError};

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

impl Producer<'_> {
    /// Publishes one deliberately broken record (see [`Fault`]). The
    /// producer is unusable afterwards.
    pub fn send_faulty(&mut self, fault: Fault) -> Result<(), RingError> {
        let meta = Metadata::default();
        let cap = self.capacity();
        self.try_send_tampered(&meta, Payload::Bytes(b"hostile"), |raw, head| match fault {
            Fault::Magic => raw[0..4].copy_from_slice(b"EVIL"),
            Fault::Version => raw[4] = 0xee,
            Fault::Checksum => raw[12] ^= 0x5a,
            Fault::Length => raw[8..12].copy_from_slice(&(cap as u32 + 1).to_le_bytes()),
            Fault::Position => *head += 2 * cap,
        })
    }
}
