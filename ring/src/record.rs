//! The record format: 64-byte header, 256-byte metadata, payload, padded to
//! a multiple of 64 bytes.
//!
//! ```text
//! header   0  magic "RFLW" (u32)      4  version u8     5  flags u8 (bit 0: padding)
//!          8  payload size u32        12 CRC-32 of metadata + payload
//!         16  record length u32 (header + metadata + payload, rounded up to 64)
//!         24  sequence u64            32..64 zero
//! metadata 0  message id u64          8  timestamp (ns) u64
//!         16  actor id: length u8, then up to 111 bytes of UTF-8
//!        128  port: length u8, then up to 111 bytes of UTF-8
//!        240  kind u32                244..256 zero
//! ```
//! A padding record fills the rest of the ring before a wrap; consumers skip
//! it.

use crate::region::Region;

/// The magic bytes that start every record header.
pub const MAGIC: [u8; 4] = *b"RFLW";
/// The record format version written into every header.
pub const VERSION: u8 = 1;
/// Header flag marking a padding record (no payload; fills the ring's end).
pub const FLAG_PADDING: u8 = 1;
/// Size of a record header in bytes.
pub const HEADER_LEN: u64 = 64;
/// Size of a record's metadata block in bytes.
pub const METADATA_LEN: u64 = 256;
/// Alignment (and length granularity) of records in bytes.
pub const ALIGN: u64 = 64;
/// Longest actor id or port name in bytes of UTF-8.
pub const NAME_MAX: usize = 111;

/// Errors building or parsing records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// An actor id or port to encode is longer than [`NAME_MAX`] bytes.
    #[error("{field} is {len} bytes, over the {NAME_MAX}-byte limit")]
    NameTooLong {
        /// Which field: `"actor id"` or `"port"`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The header does not start with [`MAGIC`] (the bytes found).
    #[error("bad record magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// The header's format version (given) is not [`VERSION`].
    #[error("record version {0} is not supported (expected {VERSION})")]
    Version(u8),
    /// The header's record length, payload size or flags are inconsistent.
    #[error("record length {len} is invalid for a {size}-byte payload")]
    Length {
        /// The record length the header states, in bytes.
        len: u64,
        /// The payload size the header states, in bytes.
        size: u64,
    },
    /// A metadata name (the field named) is too long or not UTF-8.
    #[error("metadata field {0} is malformed")]
    Metadata(&'static str),
    /// The CRC-32 of metadata and payload does not match the header's.
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes actually in the ring.
        computed: u32,
    },
}

/// Routing information carried with every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The message's id, chosen by the sender (replies carry the id of the
    /// request they answer).
    pub message_id: u64,
    /// A timestamp in nanoseconds, chosen by the sender (0 when unset).
    pub timestamp_ns: u64,
    /// The actor the message concerns (at most [`NAME_MAX`] bytes).
    pub actor_id: String,
    /// The port the message concerns (at most [`NAME_MAX`] bytes).
    pub port: String,
    /// What the payload is (defined by the protocols above the ring).
    pub kind: u32,
}

impl Metadata {
    /// Encodes into the fixed 256-byte block.
    pub fn encode(&self) -> Result<[u8; METADATA_LEN as usize], RecordError> {
        let mut m = [0u8; METADATA_LEN as usize];
        m[0..8].copy_from_slice(&self.message_id.to_le_bytes());
        m[8..16].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        for (field, value, at) in [("actor id", &self.actor_id, 16), ("port", &self.port, 128)] {
            let b = value.as_bytes();
            if b.len() > NAME_MAX {
                return Err(RecordError::NameTooLong {
                    field,
                    len: b.len(),
                });
            }
            m[at] = b.len() as u8;
            m[at + 1..at + 1 + b.len()].copy_from_slice(b);
        }
        m[240..244].copy_from_slice(&self.kind.to_le_bytes());
        Ok(m)
    }

    /// Decodes and validates a 256-byte block.
    pub fn decode(m: &[u8; METADATA_LEN as usize]) -> Result<Metadata, RecordError> {
        let name = |field: &'static str, at: usize| {
            let len = m[at] as usize;
            if len > NAME_MAX {
                return Err(RecordError::Metadata(field));
            }
            String::from_utf8(m[at + 1..at + 1 + len].to_vec())
                .map_err(|_| RecordError::Metadata(field))
        };
        let u64_at = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().unwrap_or_default());
        Ok(Metadata {
            message_id: u64_at(0),
            timestamp_ns: u64_at(8),
            actor_id: name("actor id", 16)?,
            port: name("port", 128)?,
            kind: u32::from_le_bytes(m[240..244].try_into().unwrap_or_default()),
        })
    }
}

/// Total record length for a payload of `size` bytes.
pub fn record_len(size: u64) -> Option<u64> {
    size.checked_add(HEADER_LEN + METADATA_LEN)?
        .checked_next_multiple_of(ALIGN)
}

/// A parsed record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Flag bits; only [`FLAG_PADDING`] is defined.
    pub flags: u8,
    /// Payload size in bytes (0 for padding).
    pub size: u64,
    /// CRC-32 of the metadata block and the payload (0 for padding).
    pub checksum: u32,
    /// Whole record length in bytes, a multiple of [`ALIGN`].
    pub record_len: u64,
    /// The record's sequence number on its ring (0 for padding).
    pub sequence: u64,
}

impl Header {
    /// Encodes into the fixed 64-byte header block.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = VERSION;
        h[5] = self.flags;
        h[8..12].copy_from_slice(&(self.size as u32).to_le_bytes());
        h[12..16].copy_from_slice(&self.checksum.to_le_bytes());
        h[16..20].copy_from_slice(&(self.record_len as u32).to_le_bytes());
        h[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        h
    }

    /// Parses and checks the header on its own (lengths against each other
    /// and the format; positions are the ring's job).
    pub fn decode(h: &[u8; HEADER_LEN as usize]) -> Result<Header, RecordError> {
        let magic = [h[0], h[1], h[2], h[3]];
        if magic != MAGIC {
            return Err(RecordError::BadMagic(magic));
        }
        if h[4] != VERSION {
            return Err(RecordError::Version(h[4]));
        }
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let header = Header {
            flags: h[5],
            size: u64::from(u32_at(8)),
            checksum: u32_at(12),
            record_len: u64::from(u32_at(16)),
            sequence: u64::from_le_bytes(h[24..32].try_into().unwrap_or_default()),
        };
        let len_ok = if header.flags & FLAG_PADDING != 0 {
            header.size == 0 && header.record_len >= ALIGN && header.record_len % ALIGN == 0
        } else {
            record_len(header.size) == Some(header.record_len)
        };
        if !len_ok || header.flags & !FLAG_PADDING != 0 {
            return Err(RecordError::Length {
                len: header.record_len,
                size: header.size,
            });
        }
        Ok(header)
    }
}

/// A message as the consumer sees it: metadata decoded, payload still in the
/// ring (read it in place). Valid until released to the ring.
#[derive(Debug)]
pub struct RecordView<'a> {
    pub(crate) region: &'a Region,
    /// The record's decoded metadata.
    pub metadata: Metadata,
    /// The record's sequence number on its ring.
    pub sequence: u64,
    pub(crate) payload_offset: u64,
    pub(crate) size: u64,
    pub(crate) record_len: u64,
}

impl RecordView<'_> {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.size as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Copies the payload into `out` (which must be exactly `len()` long).
    pub fn copy_to(&self, out: &mut [u8]) -> Result<(), crate::region::OutOfBounds> {
        self.region
            .read(self.payload_offset, &mut out[..self.size as usize])
    }

    /// The payload as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.size as usize];
        // In bounds: validated when the record was parsed.
        let _ = self.copy_to(&mut v);
        v
    }

    /// Address of the payload in shared memory, for zero-copy readers (e.g.
    /// a Python memoryview). The other side may still write it: read it
    /// volatile, and only before releasing the record.
    pub fn payload_ptr(&self) -> *const u8 {
        self.region
            .ptr_at(self.payload_offset, self.size)
            .unwrap_or(std::ptr::null())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_limits() {
        let m = Metadata {
            message_id: 9,
            timestamp_ns: 123,
            actor_id: "multiplier-1".into(),
            port: "output".into(),
            kind: 2,
        };
        assert_eq!(Metadata::decode(&m.encode().unwrap()).unwrap(), m);
        let long = Metadata {
            port: "p".repeat(NAME_MAX + 1),
            ..Default::default()
        };
        assert!(matches!(
            long.encode(),
            Err(RecordError::NameTooLong { .. })
        ));
        let mut raw = m.encode().unwrap();
        raw[16] = 200;
        assert_eq!(
            Metadata::decode(&raw),
            Err(RecordError::Metadata("actor id"))
        );
        raw[16] = 2;
        raw[17] = 0xff;
        assert_eq!(
            Metadata::decode(&raw),
            Err(RecordError::Metadata("actor id"))
        );
    }

    #[test]
    fn header_round_trips_and_is_validated() {
        let h = Header {
            flags: 0,
            size: 100,
            checksum: 7,
            record_len: record_len(100).unwrap(),
            sequence: 42,
        };
        assert_eq!(h.record_len, 448);
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(matches!(
            Header::decode(&bad),
            Err(RecordError::BadMagic(_))
        ));
        let mut bad = h.encode();
        bad[4] = 2;
        assert_eq!(Header::decode(&bad), Err(RecordError::Version(2)));
        let mut bad = h;
        bad.record_len = 64;
        assert!(matches!(
            Header::decode(&bad.encode()),
            Err(RecordError::Length { .. })
        ));
        let mut bad = h.encode();
        bad[5] = 0x80;
        assert!(matches!(
            Header::decode(&bad),
            Err(RecordError::Length { .. })
        ));
        let pad = Header {
            flags: FLAG_PADDING,
            size: 0,
            checksum: 0,
            record_len: 128,
            sequence: 0,
        };
        assert_eq!(Header::decode(&pad.encode()).unwrap(), pad);
    }
}
