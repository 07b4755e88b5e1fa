//! The vsock muxer: maps guest stream connections onto host Unix sockets,
//! speaking Firecracker's hybrid vsock protocol.
//!
//! - Host-initiated: a host process connects to the VM's socket `uds` and
//!   writes `CONNECT <port>\n`; we open a connection to guest port `port`
//!   and, once the guest accepts, answer `OK <host port>\n` on the socket,
//!   which then carries the stream.
//! - Guest-initiated: a guest connection to CID 2, port `P` is connected to
//!   the Unix socket `<uds>_P`; if nobody listens there, the guest gets RST.
//!
//! All host sockets are non-blocking and watched by the muxer's own epoll
//! (edge-triggered), whose fd the event loop watches: one fd for the whole
//! device, however many connections it carries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::ops::Bound;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{Connection, Verdict};
use super::packet::{op, Header};
use crate::hostile::HostileLog;

/// Most connections (and pending `CONNECT` handshakes) at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest `CONNECT <port>\n` line we read.
const MAX_CONNECT_LINE: usize = 32;
/// Most RSTs queued for packets that belong to no connection; beyond this a
/// flooding guest's stray packets are dropped (and reported).
const MAX_QUEUED_RESETS: usize = 256;
/// Host ports of host-initiated connections start here.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Errors setting up the muxer.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// The host's vsock socket could not be set up (an old one removed, bound
    /// or made non-blocking).
    #[error("binding the vsock socket {path}: {source}")]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Creating the muxer's epoll set or adding the listener to it failed.
    #[error("vsock epoll: {0}")]
    Epoll(std::io::Error),
}

/// What an epoll event's data names.
#[derive(Debug, Clone, Copy)]
enum Source {
    Listener,
    Handshake,
    Conn(Key),
}

/// (host port, guest port).
type Key = (u32, u32);

/// A host connection that has not finished its `CONNECT` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// The muxer.
pub struct Muxer {
    cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    sources: HashMap<RawFd, Source>,
    handshakes: HashMap<RawFd, Handshake>,
    conns: BTreeMap<Key, Connection<UnixStream>>,
    resets: VecDeque<Header>,
    last_served: Option<Key>,
    next_port: u32,
    hostile: HostileLog,
}

/// Parses `CONNECT <port>\n` (the newline already stripped).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.strip_prefix("CONNECT ")?;
    port.trim_end_matches('\r').parse().ok()
}

impl Muxer {
    /// Binds `uds` (replacing a stale socket file) for guest `cid`.
    pub fn new(cid: u64, uds: &Path, hostile: HostileLog) -> Result<Muxer, MuxerError> {
        let bind_err = |source| MuxerError::Bind {
            path: uds.to_path_buf(),
            source,
        };
        match std::fs::remove_file(uds) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let listener = UnixListener::bind(uds).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        let mut muxer = Muxer {
            cid,
            uds: uds.to_path_buf(),
            listener,
            epoll,
            sources: HashMap::new(),
            handshakes: HashMap::new(),
            conns: BTreeMap::new(),
            resets: VecDeque::new(),
            last_served: None,
            next_port: FIRST_LOCAL_PORT,
            hostile,
        };
        let fd = muxer.listener.as_raw_fd();
        muxer
            .watch(fd, Source::Listener, EventSet::IN)
            .map_err(MuxerError::Epoll)?;
        Ok(muxer)
    }

    /// The fd the event loop watches.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The Unix socket host processes connect to.
    pub fn uds_path(&self) -> &Path {
        &self.uds
    }

    fn watch(&mut self, fd: RawFd, source: Source, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(events | EventSet::EDGE_TRIGGERED, fd as u64),
        )?;
        self.sources.insert(fd, source);
        Ok(())
    }

    fn unwatch(&mut self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        self.sources.remove(&fd);
    }

    fn count(&self) -> usize {
        self.conns.len() + self.handshakes.len()
    }

    /// Handles every ready host socket.
    pub fn process_host_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "vsock epoll wait failed");
                    return;
                }
            };
            for ev in &events[..n] {
                let fd = ev.data() as RawFd;
                match self.sources.get(&fd).copied() {
                    Some(Source::Listener) => self.accept_all(),
                    Some(Source::Handshake) => self.read_handshake(fd),
                    Some(Source::Conn(key)) => {
                        if let Some(c) = self.conns.get_mut(&key) {
                            let set = ev.event_set();
                            if set.intersects(
                                EventSet::IN
                                    | EventSet::HANG_UP
                                    | EventSet::READ_HANG_UP
                                    | EventSet::ERROR,
                            ) {
                                c.set_readable();
                            }
                            if set.contains(EventSet::OUT) {
                                c.flush();
                            }
                        }
                    }
                    None => {}
                }
            }
            if n < events.len() {
                return;
            }
        }
    }

    /// Drops connections whose guest never finished closing them (it gets
    /// an RST), so a guest cannot pin connection slots.
    fn sweep(&mut self) {
        let now = std::time::Instant::now();
        let expired: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.expired(now))
            .map(|(k, _)| *k)
            .collect();
        for (local, peer) in expired {
            self.remove((local, peer));
            self.queue_reset_header(Header::to_guest(self.cid, local, peer, op::RST));
        }
    }

    fn accept_all(&mut self) {
        self.sweep();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.count() >= MAX_CONNECTIONS {
                        tracing::warn!("vsock: refusing a host connection; {MAX_CONNECTIONS} open");
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    if self.watch(fd, Source::Handshake, EventSet::IN).is_ok() {
                        self.handshakes.insert(
                            fd,
                            Handshake {
                                stream,
                                line: Vec::new(),
                            },
                        );
                        // Data may have arrived before we watched it.
                        self.read_handshake(fd);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_handshake(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        // Byte by byte: nothing after the newline belongs to us.
        let mut byte = [0u8; 1];
        let outcome = loop {
            match hs.stream.read(&mut byte) {
                Ok(0) => break Err("closed before CONNECT"),
                Ok(_) if byte[0] == b'\n' => break Ok(parse_connect(&hs.line)),
                Ok(_) if hs.line.len() >= MAX_CONNECT_LINE => break Err("CONNECT line too long"),
                Ok(_) => hs.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break Err("read error"),
            }
        };
        self.unwatch(fd);
        let Some(hs) = self.handshakes.remove(&fd) else {
            return;
        };
        match outcome {
            Ok(Some(port)) => self.connect_to_guest(hs.stream, port),
            Ok(None) => {
                tracing::warn!(line = %String::from_utf8_lossy(&hs.line), "vsock: bad CONNECT line");
            }
            Err(why) => tracing::debug!(why, "vsock: host handshake ended"),
        }
    }

    fn free_local_port(&mut self) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|(local, _)| *local == port) {
                return port;
            }
        }
    }

    fn connect_to_guest(&mut self, stream: UnixStream, port: u32) {
        let local = self.free_local_port();
        let key = (local, port);
        let fd = stream.as_raw_fd();
        if self
            .watch(
                fd,
                Source::Conn(key),
                EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP,
            )
            .is_err()
        {
            return;
        }
        self.conns.insert(
            key,
            Connection::connect_to_guest(stream, self.cid, local, port),
        );
    }

    fn accept_from_guest(&mut self, h: &Header) {
        let key = (h.dst_port, h.src_port);
        let path = PathBuf::from(format!("{}_{}", self.uds.display(), h.dst_port));
        let stream = if self.count() >= MAX_CONNECTIONS {
            tracing::warn!("vsock: refusing a guest connection; {MAX_CONNECTIONS} open");
            None
        } else {
            UnixStream::connect(&path)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .map_err(|e| tracing::debug!(path = %path.display(), error = %e, "vsock: no host listener"))
                .ok()
        };
        let Some(stream) = stream else {
            self.queue_reset(h);
            return;
        };
        let fd = stream.as_raw_fd();
        let events = EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP;
        if self.watch(fd, Source::Conn(key), events).is_err() {
            self.queue_reset(h);
            return;
        }
        let mut conn = Connection::accept_from_guest(stream, self.cid, h);
        // Anything already waiting on the socket is sent once we respond.
        conn.set_readable();
        self.conns.insert(key, conn);
    }

    /// An RST answering guest packet `h`.
    fn queue_reset(&mut self, h: &Header) {
        if h.op == op::RST {
            return;
        }
        self.queue_reset_header(Header::to_guest(self.cid, h.dst_port, h.src_port, op::RST));
    }

    fn queue_reset_header(&mut self, rst: Header) {
        if self.resets.len() >= MAX_QUEUED_RESETS {
            self.hostile.report(
                "vsock",
                "flood of packets for unknown connections; RST dropped",
            );
            return;
        }
        self.resets.push_back(rst);
    }

    fn remove(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            self.unwatch(c.stream.as_raw_fd());
        }
    }

    /// Handles one validated guest packet.
    pub fn handle_tx(&mut self, h: &Header, payload: &[u8]) {
        let key = (h.dst_port, h.src_port);
        let Some(conn) = self.conns.get_mut(&key) else {
            match h.op {
                op::REQUEST => {
                    self.sweep();
                    self.accept_from_guest(h)
                }
                // A late answer to a connection we already dropped.
                op::RST => {}
                _ => self.queue_reset(h),
            }
            return;
        };
        match conn.on_packet(h, payload) {
            Ok(Verdict::Keep) => {}
            Ok(Verdict::Drop) => self.remove(key),
            Err(e) => {
                self.hostile.report(
                    "vsock",
                    format!("connection {}<->{}: {e}", h.dst_port, h.src_port),
                );
                conn.reset();
            }
        }
    }

    /// Whether there is a packet for the guest.
    pub fn has_rx_work(&self) -> bool {
        !self.resets.is_empty() || self.conns.values().any(Connection::has_rx_work)
    }

    /// The next packet for the guest, its payload read into `buf`.
    /// Connections take turns.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(h) = self.resets.pop_front() {
            return Some((h, 0));
        }
        let after = match self.last_served {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let order: Vec<Key> = self
            .conns
            .range((after, Bound::Unbounded))
            .chain(self.conns.range(..))
            .filter(|(_, c)| c.has_rx_work())
            .map(|(k, _)| *k)
            .collect();
        for key in order {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            let packet = conn.next_packet(buf);
            if conn.finished() {
                self.remove(key);
            }
            if let Some(p) = packet {
                self.last_served = Some(key);
                return Some(p);
            }
        }
        None
    }

    /// Drops every connection (after a snapshot restore the guest resets
    /// its side; host sockets see EOF).
    pub fn reset_all(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for k in keys {
            self.remove(k);
        }
        self.resets.clear();
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::packet::{HOST_CID, TYPE_STREAM};
    use std::io::Write;

    const CID: u64 = 3;

    fn from_guest(op: u16, src_port: u32, dst_port: u32, len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            kind: TYPE_STREAM,
            op,
            buf_alloc: 1 << 18,
            ..Header::default()
        }
    }

    fn muxer(dir: &Path) -> Muxer {
        Muxer::new(CID, &dir.join("vm.sock"), HostileLog::default()).unwrap()
    }

    fn drain(m: &mut Muxer) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        for _ in 0..50 {
            m.process_host_events();
            while let Some((h, n)) = m.next_rx(&mut buf) {
                out.push((h, buf[..n].to_vec()));
            }
            if !out.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        out
    }

    #[test]
    fn connect_line_parses_strictly() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT"), None);
        assert_eq!(parse_connect(b"connect 52"), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
    }

    #[test]
    fn host_connect_reaches_the_guest_and_carries_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(dir.path());
        let mut host = UnixStream::connect(dir.path().join("vm.sock")).unwrap();
        host.write_all(b"CONNECT 1024\nearly").unwrap();
        let out = drain(&mut m);
        let req = out[0].0;
        assert_eq!(
            (req.op, req.dst_port, req.dst_cid),
            (op::REQUEST, 1024, CID)
        );
        // The guest accepts; the host reads OK and then the stream.
        let resp = from_guest(op::RESPONSE, 1024, req.src_port, 0);
        m.handle_tx(&resp, &[]);
        let mut ok = [0u8; 14];
        host.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, format!("OK {}\n", req.src_port).as_bytes());
        let out = drain(&mut m);
        assert_eq!((out[0].0.op, out[0].1.as_slice()), (op::RW, &b"early"[..]));
        m.handle_tx(&from_guest(op::RW, 1024, req.src_port, 2), b"hi");
        let mut hi = [0u8; 2];
        host.read_exact(&mut hi).unwrap();
        assert_eq!(&hi, b"hi");
        // The host hangs up: the guest hears SHUTDOWN, answers RST, gone.
        drop(host);
        let out = drain(&mut m);
        assert_eq!(out.last().unwrap().0.op, op::SHUTDOWN);
        m.handle_tx(&from_guest(op::RST, 1024, req.src_port, 0), &[]);
        assert_eq!(m.connection_count(), 0);
    }

    #[test]
    fn guest_connect_goes_to_the_port_socket_or_gets_rst() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(dir.path());
        m.handle_tx(&from_guest(op::REQUEST, 4000, 1024, 0), &[]);
        let out = drain(&mut m);
        assert_eq!(out[0].0.op, op::RST, "nobody listens on vm.sock_1024");
        let listener = UnixListener::bind(dir.path().join("vm.sock_1024")).unwrap();
        m.handle_tx(&from_guest(op::REQUEST, 4001, 1024, 0), &[]);
        let (mut host, _) = listener.accept().unwrap();
        let out = drain(&mut m);
        assert_eq!((out[0].0.op, out[0].0.dst_port), (op::RESPONSE, 4001));
        m.handle_tx(&from_guest(op::RW, 4001, 1024, 5), b"hello");
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        host.write_all(b"back").unwrap();
        let out = drain(&mut m);
        assert_eq!(out[0].1, b"back");
    }

    #[test]
    fn hostile_packets_are_reset_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = HostileLog::default();
        let mut m = Muxer::new(CID, &dir.path().join("vm.sock"), log.clone()).unwrap();
        // Data for a connection that does not exist: RST, not a crash.
        m.handle_tx(&from_guest(op::RW, 1, 2, 3), b"abc");
        assert_eq!(drain(&mut m)[0].0.op, op::RST);
        // A flood of them is bounded.
        for i in 0..(MAX_QUEUED_RESETS as u32 + 10) {
            m.handle_tx(&from_guest(op::RW, i, 2, 0), &[]);
        }
        assert!(log.count() > 0);
        // Credit overrun on a live connection: reset and reported.
        let _listener = UnixListener::bind(dir.path().join("vm.sock_7")).unwrap();
        m.reset_all();
        m.handle_tx(&from_guest(op::REQUEST, 9, 7, 0), &[]);
        drain(&mut m);
        let before = log.count();
        let big = vec![0u8; 65536];
        for _ in 0..16 {
            m.handle_tx(&from_guest(op::RW, 9, 7, 65536), &big);
        }
        assert!(log.count() > before, "credit overrun not reported");
        let out = drain(&mut m);
        assert!(out.iter().any(|(h, _)| h.op == op::RST));
        assert_eq!(m.connection_count(), 0);
    }

    #[test]
    fn connection_limit_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(dir.path());
        let _l = UnixListener::bind(dir.path().join("vm.sock_5")).unwrap();
        for port in 0..(MAX_CONNECTIONS as u32 + 5) {
            m.handle_tx(&from_guest(op::REQUEST, port, 5, 0), &[]);
        }
        assert_eq!(m.connection_count(), MAX_CONNECTIONS);
    }
}
