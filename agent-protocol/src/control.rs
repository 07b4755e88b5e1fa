//! The control protocol between the host and the agent, over vsock.
//!
//! The agent connects to the host (CID 2) on [`CONTROL_PORT`] as soon as it
//! is up, and again whenever its connection breaks (a VM restored from a
//! snapshot gets a transport reset, so every clone reconnects to its own
//! host). The handshake:
//!
//! 1. agent -> host: [`GuestMessage::Hello`] (protocol version, agent
//!    version, uptime);
//! 2. host -> agent: [`HostMessage::Welcome`] (fresh entropy and the wall
//!    clock: a clone must not share its RNG state with its siblings);
//! 3. agent -> host: [`GuestMessage::Ready`] once both are applied.
//!
//! Then the host sends [`HostMessage::Request`]s and the agent answers each
//! with a [`GuestMessage::Reply`] carrying the same id. Every message is one
//! frame: a little-endian `u32` length, then that many bytes of bitcode.
//! Frames are bounded by [`MAX_FRAME`]; both sides treat the other's bytes
//! as untrusted (the host especially: the guest runs untrusted code).

use std::io::{ErrorKind, Read, Write};

use bitcode::{Decode, Encode};

use crate::request::Request;

/// The vsock port the host listens on for the agent.
pub const CONTROL_PORT: u32 = 1024;
/// The host's vsock CID.
pub const HOST_CID: u32 = 2;
/// Version of this protocol; the host refuses an agent speaking another.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 4 << 20;
/// Entropy bytes in a welcome.
pub const ENTROPY_LEN: usize = 32;

/// Agent -> host.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum GuestMessage {
    /// First frame on every connection.
    Hello {
        /// The agent's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The agent's crate version.
        agent_version: String,
        /// Milliseconds since the guest booted.
        uptime_ms: u64,
        /// How many times this agent has connected (1 after boot; more in a
        /// clone restored from a snapshot).
        connection: u64,
    },
    /// The welcome is applied; requests may follow.
    Ready {
        /// Milliseconds since the guest booted.
        uptime_ms: u64,
    },
    /// The answer to request `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// How it went.
        outcome: Outcome,
    },
}

/// How a request went.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Outcome {
    /// It succeeded with this answer.
    Ok(String),
    /// It failed for this reason.
    Err(String),
}

/// Host -> agent.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum HostMessage {
    /// Answer to a hello: entropy for the kernel RNG and the host's clock.
    Welcome {
        /// [`ENTROPY_LEN`] bytes to mix into the kernel RNG.
        entropy: Vec<u8>,
        /// The host's wall clock, in nanoseconds since the Unix epoch.
        unix_ns: u64,
    },
    /// A request to execute.
    Request {
        /// Echoed in the reply.
        id: u64,
        /// What to do.
        request: Request,
    },
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Reading or writing the connection failed.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the control connection")]
    Closed,
    /// A frame announced more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// A frame's body is not a valid message.
    #[error("undecodable frame: {0}")]
    Decode(String),
}

/// Encodes `msg` as one frame.
pub fn encode_frame<T: Encode>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = bitcode::encode(msg);
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes `msg` as one frame (a single write call for small frames).
pub fn write_frame<T: Encode>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode_frame(msg)?)?;
    Ok(())
}

/// Decodes one frame body.
pub fn decode<T: for<'a> Decode<'a>>(body: &[u8]) -> Result<T, FrameError> {
    bitcode::decode(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Reads one frame, blocking.
pub fn read_frame<T: for<'a> Decode<'a>>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(match e.kind() {
            ErrorKind::UnexpectedEof => FrameError::Closed,
            _ => FrameError::Io(e),
        });
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Io(e),
    })?;
    decode(&body)
}

/// Collects frames from a non-blocking byte stream.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame<T: for<'a> Decode<'a>>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(len) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        msg.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let msgs = [
            GuestMessage::Hello {
                protocol: PROTOCOL_VERSION,
                agent_version: "0.1.0".into(),
                uptime_ms: 12,
                connection: 1,
            },
            GuestMessage::Reply {
                id: 7,
                outcome: Outcome::Err("no".into()),
            },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            write_frame(&mut wire, m).unwrap();
        }
        let mut r = wire.as_slice();
        assert_eq!(read_frame::<GuestMessage>(&mut r).unwrap(), msgs[0]);
        assert_eq!(read_frame::<GuestMessage>(&mut r).unwrap(), msgs[1]);
        assert!(matches!(
            read_frame::<GuestMessage>(&mut r),
            Err(FrameError::Closed)
        ));
        let mut fb = FrameBuffer::default();
        let mut got = Vec::new();
        for b in &wire {
            fb.push(std::slice::from_ref(b));
            while let Some(m) = fb.next_frame::<GuestMessage>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn hostile_frames_are_refused() {
        let mut fb = FrameBuffer::default();
        fb.push(&u32::MAX.to_le_bytes());
        assert!(matches!(
            fb.next_frame::<GuestMessage>(),
            Err(FrameError::TooLarge(_))
        ));
        let mut fb = FrameBuffer::default();
        fb.push(&3u32.to_le_bytes());
        fb.push(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            fb.next_frame::<GuestMessage>(),
            Err(FrameError::Decode(_))
        ));
        let mut r: &[u8] = &[9, 0, 0, 0, 1];
        assert!(matches!(
            read_frame::<GuestMessage>(&mut r),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn requests_travel_in_frames() {
        let msg = HostMessage::Request {
            id: 1,
            request: Request::ReadFile {
                path: "/proc/uptime".into(),
            },
        };
        let frame = encode_frame(&msg).unwrap();
        assert_eq!(
            read_frame::<HostMessage>(&mut frame.as_slice()).unwrap(),
            msg
        );
    }
}
