//! The state file: a fixed header, then the bitcode-encoded state.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "RFLWSNAP"
//!      8     4  format version (LE)
//!     12     8  body length (LE)
//!     20     4  CRC-32 of the body (LE)
//!     24     -  body: bitcode(SnapshotState)
//! ```
//! Anything that does not match exactly (magic, version, length, checksum,
//! decoding) is refused: a snapshot is restored whole or not at all.

use super::state::SnapshotState;

/// The first eight bytes of every state file.
pub const MAGIC: &[u8; 8] = b"RFLWSNAP";
/// Bumped whenever [`SnapshotState`] or the memory layout changes.
pub const FORMAT_VERSION: u32 = 4;
const HEADER_LEN: usize = 24;
/// Refuse absurd body lengths before allocating.
const MAX_BODY_LEN: u64 = 64 << 20;

/// A state file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotFileError {
    /// The file is shorter than the header.
    #[error("snapshot state file is truncated ({len} bytes; the header alone is {HEADER_LEN})")]
    TruncatedHeader {
        /// The file's length in bytes.
        len: usize,
    },
    /// The file does not start with [`MAGIC`].
    #[error("not a Reflow snapshot (bad magic)")]
    BadMagic,
    /// The file's format version is not [`FORMAT_VERSION`].
    #[error("snapshot format version {found} is not supported (this monitor reads version {FORMAT_VERSION}); recreate the snapshot")]
    Version {
        /// The version the file has.
        found: u32,
    },
    /// The body's length differs from the header's (or is over 64 MiB).
    #[error("snapshot state body is {found} bytes, the header says {expected}: truncated or padded file")]
    Length {
        /// The body length the header gives, in bytes.
        expected: u64,
        /// The body's actual length in bytes.
        found: u64,
    },
    /// The body's CRC-32 differs from the header's.
    #[error("snapshot state checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupted")]
    Checksum {
        /// The CRC-32 the header holds.
        stored: u32,
        /// The CRC-32 of the body as read.
        computed: u32,
    },
    /// The body does not decode as a [`SnapshotState`] (the reason).
    #[error("snapshot state does not decode: {0}")]
    Decode(String),
    /// The state could not be encoded (the reason).
    #[error("snapshot state does not encode: {0}")]
    Encode(String),
}

/// Serializes `state` with header and checksum.
pub fn encode(state: &SnapshotState) -> Result<Vec<u8>, SnapshotFileError> {
    let body = bitcode::serialize(state).map_err(|e| SnapshotFileError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Checks the header and checksum, then decodes.
pub fn decode(bytes: &[u8]) -> Result<SnapshotState, SnapshotFileError> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(SnapshotFileError::TruncatedHeader { len: bytes.len() })?;
    if &header[..8] != MAGIC {
        return Err(SnapshotFileError::BadMagic);
    }
    let le32 =
        |r: std::ops::Range<usize>| u32::from_le_bytes(header[r].try_into().unwrap_or([0; 4]));
    let version = le32(8..12);
    if version != FORMAT_VERSION {
        return Err(SnapshotFileError::Version { found: version });
    }
    let expected = u64::from_le_bytes(header[12..20].try_into().unwrap_or([0; 8]));
    let body = &bytes[HEADER_LEN..];
    if expected > MAX_BODY_LEN || expected != body.len() as u64 {
        return Err(SnapshotFileError::Length {
            expected,
            found: body.len() as u64,
        });
    }
    let stored = le32(20..24);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(SnapshotFileError::Checksum { stored, computed });
    }
    bitcode::deserialize(body).map_err(|e| SnapshotFileError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::state::*;
    use super::*;

    pub(crate) fn sample() -> SnapshotState {
        SnapshotState {
            mem_size: 128 << 20,
            cpu_fingerprint: 42,
            tsc_khz: 2_300_000,
            cmdline: "console=ttyS0".into(),
            vcpus: vec![],
            vm: KvmVmState {
                irqchips: vec![Default::default(); 3],
                pit: Default::default(),
                clock: Default::default(),
            },
            serial: SerialSnapshot {
                baud_divisor_low: 12,
                baud_divisor_high: 0,
                interrupt_enable: 0,
                interrupt_identification: 1,
                line_control: 3,
                line_status: 0x60,
                modem_control: 8,
                modem_status: 0xb0,
                scratch: 0,
                in_buffer: vec![b'x'],
            },
            transports: vec![],
            vsock: TransportSnapshot {
                device_type: 19,
                status: 15,
                device_features_sel: 0,
                driver_features_sel: 0,
                acked_features: 1 << 32,
                queue_sel: 2,
                interrupt_status: 0,
                config_generation: 0,
                queues: vec![],
                disk_sectors: 0,
            },
            shm_size: 0,
            shm_addr: 0,
            memory_sha256: [7; 32],
            rings: RingMarks::default(),
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample()).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.mem_size, 128 << 20);
        assert_eq!(back.serial, sample().serial);
        assert_eq!(back.vm.irqchips.len(), 3);
    }

    #[test]
    fn refuses_damage() {
        let good = encode(&sample()).unwrap();
        assert!(matches!(
            decode(&good[..10]),
            Err(SnapshotFileError::TruncatedHeader { .. })
        ));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad).err(), Some(SnapshotFileError::BadMagic));
        let mut bad = good.clone();
        bad[8] = 99;
        assert!(matches!(
            decode(&bad),
            Err(SnapshotFileError::Version { found: 99 })
        ));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(SnapshotFileError::Length { .. })
        ));
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(matches!(
            decode(&bad),
            Err(SnapshotFileError::Checksum { .. })
        ));
        let mut padded = good.clone();
        padded.push(0);
        assert!(matches!(
            decode(&padded),
            Err(SnapshotFileError::Length { .. })
        ));
    }

    #[test]
    fn every_single_byte_flip_is_refused() {
        let good = encode(&sample()).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at byte {i} was accepted");
        }
    }
}
