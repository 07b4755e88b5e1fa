//! One vsock stream connection between a guest port and a host Unix socket:
//! its state machine and credit-based flow control.
//!
//! Guest -> host: the guest may have at most [`BUF_ALLOC`] bytes in flight
//! that we have not yet written to the Unix socket (`rx_cnt - fwd_cnt`);
//! bytes the socket cannot take at once wait in `pending`, which that limit
//! bounds. A guest that sends beyond its credit is hostile: the connection
//! is reset and the violation reported.
//!
//! Host -> guest: we read from the socket only as much as the guest has
//! told us it can buffer (`peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`), and
//! only when the guest has given us a receive buffer to fill.

use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::time::{Duration, Instant};

use super::packet::{op, Header, SHUTDOWN_RCV, SHUTDOWN_SEND};

/// Receive buffer we advertise to the guest, per connection.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: our REQUEST is out, waiting for the guest's RESPONSE.
    Connecting,
    /// Data flows both ways.
    Established,
    /// Shutting down: we will send an RST once the pending bytes are out
    /// (guest shutdown) or are waiting for the guest's RST (host EOF).
    Closing,
}

/// What the muxer should do with a connection after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection.
    Keep,
    /// Drop it without telling the guest (it reset the connection).
    Drop,
}

/// A guest packet that breaks the protocol on this connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The guest sent more data than the buffer we advertised has room for.
    #[error("guest sent {len} bytes with only {credit} bytes of credit left")]
    CreditExceeded {
        /// The payload length in bytes.
        len: u32,
        /// Bytes of buffer we had left for the guest.
        credit: u32,
    },
    /// The operation is not valid in the connection's state.
    #[error("operation {op} is not valid while the connection is {state:?}")]
    UnexpectedOp {
        /// The operation.
        op: u16,
        /// The connection's state when it arrived.
        state: State,
    },
}

/// One connection. `S` is the host end (a Unix stream; anything readable
/// and writable in tests).
pub struct Connection<S> {
    /// The host end: the Unix stream the guest's bytes are written to and read from.
    pub stream: S,
    state: State,
    cid: u64,
    local_port: u32,
    peer_port: u32,
    // Guest -> host.
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    fwd_cnt_sent: Wrapping<u32>,
    pending: Vec<u8>,
    // Host -> guest.
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// The host socket may have data (set by readiness, cleared when a read
    /// would block).
    readable: bool,
    host_eof: bool,
    peer_shutdown: u32,
    // Control packets owed to the guest.
    want_request: bool,
    want_response: bool,
    want_credit_update: bool,
    want_shutdown: bool,
    want_rst: bool,
    /// Our RST went out: the connection is over.
    rst_sent: bool,
    /// When the connection was opened and when it started closing: a guest
    /// that never answers a connection request or never finishes closing
    /// is cut off after [`CLOSE_TIMEOUT`].
    opened: Instant,
    closing_since: Option<Instant>,
}

/// How long a connection may wait for the guest to accept or close it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

impl<S: Read + Write> Connection<S> {
    fn new(stream: S, cid: u64, local_port: u32, peer_port: u32, state: State) -> Self {
        Connection {
            stream,
            state,
            cid,
            local_port,
            peer_port,
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            pending: Vec::new(),
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            readable: false,
            host_eof: false,
            peer_shutdown: 0,
            want_request: false,
            want_response: false,
            want_credit_update: false,
            want_shutdown: false,
            want_rst: false,
            rst_sent: false,
            opened: Instant::now(),
            closing_since: None,
        }
    }

    /// A host-initiated connection: a REQUEST goes to guest port `peer`.
    pub fn connect_to_guest(stream: S, cid: u64, local: u32, peer: u32) -> Self {
        let mut c = Self::new(stream, cid, local, peer, State::Connecting);
        c.want_request = true;
        c
    }

    /// A guest-initiated connection the host accepted: a RESPONSE is owed.
    pub fn accept_from_guest(stream: S, cid: u64, request: &Header) -> Self {
        let mut c = Self::new(
            stream,
            cid,
            request.dst_port,
            request.src_port,
            State::Established,
        );
        c.peer_buf_alloc = request.buf_alloc;
        c.peer_fwd_cnt = Wrapping(request.fwd_cnt);
        c.want_response = true;
        c
    }

    /// Where the connection stands.
    pub fn state(&self) -> State {
        self.state
    }

    fn close(&mut self) {
        self.state = State::Closing;
        self.closing_since.get_or_insert_with(Instant::now);
    }

    /// Whether the guest has kept the connection waiting (connecting or
    /// closing) for longer than [`CLOSE_TIMEOUT`] at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        let since = match self.state {
            State::Connecting => Some(self.opened),
            _ => self.closing_since,
        };
        since.is_some_and(|t| now.saturating_duration_since(t) > CLOSE_TIMEOUT)
    }

    /// Guest bytes waiting for the host socket to take them (at most
    /// [`BUF_ALLOC`]).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Bytes the guest can still take from us.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Handles a validated guest packet addressed to this connection.
    pub fn on_packet(&mut self, h: &Header, payload: &[u8]) -> Result<Verdict, ConnError> {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
        let unexpected = |state| ConnError::UnexpectedOp { op: h.op, state };
        match (self.state, h.op) {
            (_, op::RST) => return Ok(Verdict::Drop),
            (State::Connecting, op::RESPONSE) => {
                self.state = State::Established;
                let line = format!("OK {}\n", self.local_port);
                // A fresh socket buffer always takes a dozen bytes.
                if self.stream.write_all(line.as_bytes()).is_err() {
                    self.reset();
                }
            }
            (State::Connecting, _) => return Err(unexpected(self.state)),
            (_, op::REQUEST | op::RESPONSE) => return Err(unexpected(self.state)),
            (_, op::RW) => self.receive(payload)?,
            (_, op::CREDIT_UPDATE) => {}
            (_, op::CREDIT_REQUEST) => self.want_credit_update = true,
            (_, op::SHUTDOWN) => {
                self.peer_shutdown |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
                    self.close();
                    self.flush();
                }
            }
            (_, other) => {
                return Err(ConnError::UnexpectedOp {
                    op: other,
                    state: self.state,
                })
            }
        }
        Ok(Verdict::Keep)
    }

    fn receive(&mut self, payload: &[u8]) -> Result<(), ConnError> {
        let unforwarded = (self.rx_cnt - self.fwd_cnt).0;
        let credit = BUF_ALLOC.saturating_sub(unforwarded);
        let len = payload.len() as u32;
        if len > credit {
            return Err(ConnError::CreditExceeded { len, credit });
        }
        self.rx_cnt += len;
        if self.host_eof || self.peer_shutdown & SHUTDOWN_SEND != 0 {
            // Nobody reads these any more; count them as forwarded.
            self.fwd_cnt += len;
            return Ok(());
        }
        self.pending.extend_from_slice(payload);
        self.flush();
        Ok(())
    }

    /// Writes pending guest bytes to the host socket.
    pub fn flush(&mut self) {
        let mut written = 0;
        while written < self.pending.len() {
            match self.stream.write(&self.pending[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The host end is gone: nothing more can be delivered.
                    self.reset();
                    return;
                }
            }
        }
        self.pending.drain(..written);
        self.fwd_cnt += written as u32;
        // Tell the guest about freed space once half the buffer is free
        // again, so a sender waiting on credit does not stall.
        if (self.fwd_cnt - self.fwd_cnt_sent).0 >= BUF_ALLOC / 2 {
            self.want_credit_update = true;
        }
        if self.state == State::Closing && self.pending.is_empty() && !self.host_eof {
            self.want_rst = true;
        }
    }

    /// The host socket became readable (or hung up).
    pub fn set_readable(&mut self) {
        self.readable = true;
    }

    /// Resets the connection: an RST goes to the guest and the connection
    /// ends once it is sent.
    pub fn reset(&mut self) {
        self.want_rst = true;
        self.close();
    }

    /// Whether the RST was sent and the connection can go.
    pub fn finished(&self) -> bool {
        self.rst_sent
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && self.peer_credit() > 0
    }

    /// Whether the connection has a packet for the guest.
    pub fn has_rx_work(&self) -> bool {
        self.want_rst
            || self.want_request
            || self.want_response
            || self.want_shutdown
            || self.want_credit_update
            || self.can_send_data()
    }

    fn header(&mut self, op: u16) -> Header {
        self.fwd_cnt_sent = self.fwd_cnt;
        Header {
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
            ..Header::to_guest(self.cid, self.local_port, self.peer_port, op)
        }
    }

    /// The next packet for the guest, its payload read into `buf`. Returns
    /// the header and the payload length, or `None` when there is nothing
    /// to send.
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if self.want_rst {
            self.want_rst = false;
            self.rst_sent = true;
            self.close();
            return Some((self.header(op::RST), 0));
        }
        if self.want_request {
            self.want_request = false;
            return Some((self.header(op::REQUEST), 0));
        }
        if self.want_response {
            self.want_response = false;
            return Some((self.header(op::RESPONSE), 0));
        }
        while self.can_send_data() {
            let max = buf.len().min(self.peer_credit() as usize);
            match self.stream.read(&mut buf[..max]) {
                Ok(0) => {
                    self.host_eof = true;
                    self.want_shutdown = true;
                }
                Ok(n) => {
                    self.tx_cnt += n as u32;
                    let mut h = self.header(op::RW);
                    h.len = n as u32;
                    return Some((h, n));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(_) => {
                    self.host_eof = true;
                    self.want_shutdown = true;
                }
            }
        }
        if self.want_shutdown {
            self.want_shutdown = false;
            self.close();
            let mut h = self.header(op::SHUTDOWN);
            h.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
            return Some((h, 0));
        }
        if self.want_credit_update {
            self.want_credit_update = false;
            return Some((self.header(op::CREDIT_UPDATE), 0));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::packet::from_guest::{guest_packet, CID};
    use std::io::Cursor;

    /// A host end that records writes and serves reads from a buffer.
    #[derive(Default)]
    struct Pipe {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
        /// Accept at most this many bytes per write; `Some(0)` blocks.
        write_limit: Option<usize>,
        block_reads: bool,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.block_reads && self.input.position() as usize == self.input.get_ref().len() {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.input.read(buf)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.write_limit.map_or(buf.len(), |l| l.min(buf.len()));
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.output.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn accepted(pipe: Pipe) -> Connection<Pipe> {
        let mut c = Connection::accept_from_guest(pipe, CID, &guest_packet(op::REQUEST, 0));
        let (h, _) = c.next_packet(&mut [0; 16]).unwrap();
        assert_eq!((h.op, h.src_port, h.dst_port), (op::RESPONSE, 1024, 5000));
        c
    }

    #[test]
    fn host_initiated_connection_answers_ok_on_response() {
        let mut c = Connection::connect_to_guest(Pipe::default(), CID, 1 << 30, 52);
        let (h, _) = c.next_packet(&mut []).unwrap();
        assert_eq!((h.op, h.dst_port, h.dst_cid), (op::REQUEST, 52, CID));
        assert_eq!(c.state(), State::Connecting);
        let mut resp = guest_packet(op::RESPONSE, 0);
        (resp.src_port, resp.dst_port) = (52, 1 << 30);
        assert_eq!(c.on_packet(&resp, &[]), Ok(Verdict::Keep));
        assert_eq!(c.stream.output, format!("OK {}\n", 1u32 << 30).as_bytes());
        assert_eq!(c.state(), State::Established);
    }

    #[test]
    fn data_flows_both_ways_within_credit() {
        let pipe = Pipe {
            input: Cursor::new(b"hello guest".to_vec()),
            ..Pipe::default()
        };
        let mut c = accepted(pipe);
        c.on_packet(&guest_packet(op::RW, 5), b"hello").unwrap();
        assert_eq!(c.stream.output, b"hello");
        c.set_readable();
        let mut buf = [0u8; 4];
        let (h, n) = c.next_packet(&mut buf).unwrap();
        assert_eq!((h.op, n, &buf[..n]), (op::RW, 4, &b"hell"[..]));
        assert_eq!(h.fwd_cnt, 5, "our forward count rides on every packet");
        // The guest's credit ends the flow: 4 bytes in flight of 6 allowed.
        let mut small = guest_packet(op::CREDIT_UPDATE, 0);
        small.buf_alloc = 6;
        c.on_packet(&small, &[]).unwrap();
        let (_, n) = c.next_packet(&mut buf).unwrap();
        assert_eq!(n, 2);
        assert!(c.next_packet(&mut buf).is_none(), "no credit left");
    }

    #[test]
    fn guest_beyond_its_credit_is_refused_and_blocked_bytes_wait() {
        let pipe = Pipe {
            write_limit: Some(0),
            ..Pipe::default()
        };
        let mut c = accepted(pipe);
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..4 {
            c.on_packet(&guest_packet(op::RW, chunk.len() as u32), &chunk)
                .unwrap();
        }
        assert_eq!(
            c.on_packet(&guest_packet(op::RW, 1), &[1]),
            Err(ConnError::CreditExceeded { len: 1, credit: 0 })
        );
        // The host drains: the bytes arrive in order and credit comes back.
        c.stream.write_limit = None;
        c.flush();
        assert_eq!(c.stream.output.len(), 4 * chunk.len());
        let (h, _) = c.next_packet(&mut []).unwrap();
        assert_eq!((h.op, h.fwd_cnt), (op::CREDIT_UPDATE, 4 * 64 * 1024));
    }

    #[test]
    fn host_eof_shuts_down_and_guest_rst_ends_it() {
        let pipe = Pipe::default();
        let mut c = accepted(pipe);
        c.set_readable();
        let (h, _) = c.next_packet(&mut [0; 8]).unwrap();
        assert_eq!(
            (h.op, h.flags),
            (op::SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND)
        );
        assert_eq!(
            c.on_packet(&guest_packet(op::RST, 0), &[]),
            Ok(Verdict::Drop)
        );
    }

    #[test]
    fn guest_shutdown_flushes_then_resets() {
        let pipe = Pipe {
            write_limit: Some(0),
            block_reads: true,
            ..Pipe::default()
        };
        let mut c = accepted(pipe);
        c.on_packet(&guest_packet(op::RW, 3), b"bye").unwrap();
        let mut sd = guest_packet(op::SHUTDOWN, 0);
        sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        c.on_packet(&sd, &[]).unwrap();
        assert!(!c.has_rx_work(), "the RST waits for the pending bytes");
        c.stream.write_limit = None;
        c.flush();
        assert_eq!(c.stream.output, b"bye");
        let (h, _) = c.next_packet(&mut []).unwrap();
        assert_eq!(h.op, op::RST);
        assert!(c.finished());
    }

    #[test]
    fn an_unanswered_connection_request_expires() {
        let c = Connection::connect_to_guest(Pipe::default(), CID, 1 << 30, 52);
        assert!(!c.expired(Instant::now()));
        assert!(c.expired(Instant::now() + CLOSE_TIMEOUT * 2));
    }

    #[test]
    fn a_closing_connection_expires() {
        let mut c = accepted(Pipe::default());
        let now = Instant::now();
        assert!(!c.expired(now + CLOSE_TIMEOUT * 2));
        c.set_readable();
        c.next_packet(&mut [0; 8]).unwrap(); // host EOF: SHUTDOWN sent
        assert!(!c.expired(Instant::now()));
        assert!(c.expired(Instant::now() + CLOSE_TIMEOUT * 2));
    }

    #[test]
    fn protocol_errors_are_reported() {
        let mut c = accepted(Pipe::default());
        assert!(c.on_packet(&guest_packet(op::REQUEST, 0), &[]).is_err());
        let mut c = Connection::connect_to_guest(Pipe::default(), CID, 1 << 30, 52);
        assert!(c.on_packet(&guest_packet(op::RW, 1), &[1]).is_err());
    }
}
