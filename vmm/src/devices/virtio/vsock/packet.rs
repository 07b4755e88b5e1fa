//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, 44 bytes,
//! little endian) and the checks every guest packet must pass.
//!
//! Parsing is pure and total: any 44 bytes decode to a [`Header`], and
//! [`validate_tx`] decides whether the guest may send it. The fuzz target
//! `vsock_packet` drives both with arbitrary bytes.

/// Size of the header on the wire.
pub const HDR_LEN: usize = 44;
/// The only socket type we carry.
pub const TYPE_STREAM: u16 = 1;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Largest payload one packet may carry (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PAYLOAD: u32 = 64 * 1024;

/// Packet operations.
pub mod op {
    /// Asks to open a connection to `dst_port`.
    pub const REQUEST: u16 = 1;
    /// Accepts a connection request.
    pub const RESPONSE: u16 = 2;
    /// Refuses a request or ends a connection at once.
    pub const RST: u16 = 3;
    /// The sender will receive or send no more (see `flags`).
    pub const SHUTDOWN: u16 = 4;
    /// Carries stream data (the only operation with a payload).
    pub const RW: u16 = 5;
    /// Tells the peer the sender's `buf_alloc` and `fwd_cnt`.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Asks the peer for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `SHUTDOWN` flags: the sender will receive / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// `SHUTDOWN` flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// One decoded header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// CID of the sender.
    pub src_cid: u64,
    /// CID of the receiver.
    pub dst_cid: u64,
    /// The sender's port.
    pub src_port: u32,
    /// The receiver's port.
    pub dst_port: u32,
    /// Payload length in bytes (after the header).
    pub len: u32,
    /// Socket type (only [`TYPE_STREAM`] is carried).
    pub kind: u16,
    /// The operation, one of [`op`].
    pub op: u16,
    /// Operation flags (the `SHUTDOWN_*` bits of a `SHUTDOWN`).
    pub flags: u32,
    /// Bytes of receive buffer the sender has for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has received and passed on so far (wrapping).
    pub fwd_cnt: u32,
}

fn u64_at(b: &[u8; HDR_LEN], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8; HDR_LEN], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u16_at(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    /// Decodes the wire layout.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        Header {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            kind: u16_at(b, 28),
            op: u16_at(b, 30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    /// Encodes the wire layout.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The header of a packet the host sends to `guest_cid`, from host port
    /// `local` to guest port `peer`.
    pub fn to_guest(guest_cid: u64, local: u32, peer: u32, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: local,
            dst_port: peer,
            kind: TYPE_STREAM,
            op,
            ..Header::default()
        }
    }
}

/// Why a guest packet was refused. Every one is a guest bug or an attack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The buffer (this many bytes) is shorter than a header.
    #[error("packet of {0} bytes is shorter than the {HDR_LEN}-byte header")]
    Short(usize),
    /// The source CID is not the guest's.
    #[error("source CID {found} is not the guest's CID {expected}")]
    SourceCid {
        /// The guest's CID.
        expected: u64,
        /// The CID the packet gives.
        found: u64,
    },
    /// The destination CID (given) is not the host's.
    #[error("destination CID {0} is not the host (2)")]
    DestinationCid(u64),
    /// The socket type (given) is not [`TYPE_STREAM`].
    #[error("socket type {0} is not a stream (1)")]
    Type(u16),
    /// The operation (given) is none of [`op`].
    #[error("unknown operation {0}")]
    Op(u16),
    /// The payload length (given) is over [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLong(u32),
    /// The guest's buffers hold fewer payload bytes than the header says.
    #[error("header says {len} payload bytes but the buffers hold {available}")]
    Truncated {
        /// The payload length the header gives.
        len: u32,
        /// Payload bytes the buffers hold.
        available: usize,
    },
    /// An operation other than `RW` carries payload.
    #[error("operation {op} carries {len} payload bytes; only RW may carry data")]
    DataOnControl {
        /// The operation.
        op: u16,
        /// Its payload length in bytes.
        len: u32,
    },
}

/// Checks a header the guest put on the TX queue; `available` is how many
/// payload bytes its buffers hold after the header.
pub fn validate_tx(h: &Header, guest_cid: u64, available: usize) -> Result<(), PacketError> {
    if h.src_cid != guest_cid {
        return Err(PacketError::SourceCid {
            expected: guest_cid,
            found: h.src_cid,
        });
    }
    if h.dst_cid != HOST_CID {
        return Err(PacketError::DestinationCid(h.dst_cid));
    }
    if h.kind != TYPE_STREAM {
        return Err(PacketError::Type(h.kind));
    }
    if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&h.op) {
        return Err(PacketError::Op(h.op));
    }
    if h.len > MAX_PAYLOAD {
        return Err(PacketError::TooLong(h.len));
    }
    if h.len as usize > available {
        return Err(PacketError::Truncated {
            len: h.len,
            available,
        });
    }
    if h.op != op::RW && h.len != 0 {
        return Err(PacketError::DataOnControl {
            op: h.op,
            len: h.len,
        });
    }
    Ok(())
}

/// Decodes and validates a whole packet (header then payload) from one
/// buffer: the entry point of the fuzz target.
pub fn parse_tx(bytes: &[u8], guest_cid: u64) -> Result<(Header, &[u8]), PacketError> {
    let Some(head) = bytes.first_chunk::<HDR_LEN>() else {
        return Err(PacketError::Short(bytes.len()));
    };
    let h = Header::from_bytes(head);
    let rest = &bytes[HDR_LEN..];
    validate_tx(&h, guest_cid, rest.len())?;
    Ok((h, &rest[..h.len as usize]))
}

/// Packets from the guest for the tests of the device and its
/// connections.
#[cfg(test)]
pub(crate) mod from_guest {
    use super::{Header, HOST_CID, TYPE_STREAM};

    /// The tests' guest CID.
    pub const CID: u64 = 3;

    /// A stream packet `op` with `len` bytes of payload from guest port
    /// 5000 to host port 1024, the guest offering a 64 KiB buffer.
    pub fn guest_packet(op: u16, len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: 5000,
            dst_port: 1024,
            len,
            kind: TYPE_STREAM,
            op,
            buf_alloc: 65536,
            ..Header::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: u64 = 3;

    fn rw(len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 1024,
            len,
            kind: TYPE_STREAM,
            op: op::RW,
            ..Header::default()
        }
    }

    #[test]
    fn header_round_trips_through_the_wire_layout() {
        let h = Header {
            flags: 3,
            buf_alloc: 65536,
            fwd_cnt: 77,
            ..rw(5)
        };
        let b = h.to_bytes();
        assert_eq!(Header::from_bytes(&b), h);
        // Field offsets as in the virtio spec.
        assert_eq!(&b[24..28], &5u32.to_le_bytes());
        assert_eq!(&b[30..32], &op::RW.to_le_bytes());
        assert_eq!(&b[36..40], &65536u32.to_le_bytes());
    }

    #[test]
    fn every_malformed_field_is_refused() {
        let mut bytes = rw(3).to_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        assert_eq!(parse_tx(&bytes, CID).unwrap().1, b"abc");
        assert_eq!(parse_tx(&bytes[..10], CID), Err(PacketError::Short(10)));
        assert!(matches!(
            parse_tx(&bytes[..HDR_LEN + 2], CID),
            Err(PacketError::Truncated {
                len: 3,
                available: 2
            })
        ));
        let bad = [
            Header {
                src_cid: 9,
                ..rw(0)
            },
            Header {
                dst_cid: 7,
                ..rw(0)
            },
            Header { kind: 2, ..rw(0) },
            Header { op: 0, ..rw(0) },
            Header { op: 8, ..rw(0) },
            Header {
                len: MAX_PAYLOAD + 1,
                ..rw(0)
            },
            Header {
                op: op::REQUEST,
                ..rw(1)
            },
        ];
        for h in bad {
            assert!(validate_tx(&h, CID, 1 << 20).is_err(), "{h:?} accepted");
        }
    }

    #[test]
    fn trailing_bytes_beyond_len_are_ignored() {
        let mut bytes = rw(1).to_bytes().to_vec();
        bytes.extend_from_slice(b"xyz");
        assert_eq!(parse_tx(&bytes, CID).unwrap().1, b"x");
    }
}
