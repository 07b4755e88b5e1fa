//! The host end of the agent's control channel (see
//! `reflow_agent_protocol::control`).
//!
//! The monitor listens on `<vsock uds>_1024`, where guest connections to
//! host port 1024 arrive. An event-loop subscriber accepts the agent's
//! connection and runs the handshake without blocking (hello -> welcome
//! with fresh entropy and the clock -> ready); a connection that completes
//! it becomes a [`ControlChannel`], handed to whoever waits on the VM's
//! [`ControlHandle`], and marks the VM ready. A restored clone's agent
//! reconnects (the snapshot's connection is reset), so its first handshake
//! is also what makes the clone ready and unique.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use parking_lot::{Condvar, Mutex};
use reflow_agent_protocol::control::{
    encode_frame, read_frame, FrameBuffer, FrameError, GuestMessage, HostMessage, Outcome,
    CONTROL_PORT, ENTROPY_LEN, PROTOCOL_VERSION,
};
use reflow_agent_protocol::request::Request;

use super::deadline::Deadline;
use crate::console::{AgentReady, ConsoleState, GuestEvent};
use crate::hostile::HostileLog;

/// Errors on the control channel.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The control socket could not be created (an old one removed, bound or
    /// made non-blocking).
    #[error("binding the control socket {path}: {source}")]
    Bind {
        /// The socket's path (the vsock socket's path plus `_` and the control
        /// port).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The agent did not complete its handshake within this long.
    #[error("the agent did not connect within {0:?}")]
    NotConnected(Duration),
    /// Reading or writing a frame failed, or the guest sent a malformed one.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The agent answered a request with an error.
    #[error("the agent refused `{request}`: {message}")]
    Refused {
        /// The request, as text.
        request: String,
        /// The agent's error message.
        message: String,
    },
    /// The agent sent something the protocol does not allow there (what).
    #[error("the agent broke the control protocol: {0}")]
    Protocol(String),
}

/// What the agent said when it connected (it crosses from a monitor
/// process to the bridge as it is).
#[derive(Debug, Clone, PartialEq, Eq, bitcode::Encode, bitcode::Decode)]
pub struct AgentHello {
    /// The agent's version string, as the guest sent it (untrusted).
    pub agent_version: String,
    /// Guest uptime at the hello.
    pub uptime_ms: u64,
    /// Guest uptime once it had applied the welcome.
    pub ready_uptime_ms: u64,
    /// Which connection of this agent this is (1 after a boot).
    pub connection: u64,
}

/// A ready control connection: send requests, get replies.
pub struct ControlChannel {
    stream: UnixStream,
    next_id: u64,
    hello: AgentHello,
}

impl ControlChannel {
    /// The connection and what the agent said on it (to hand it to
    /// another process).
    pub(crate) fn into_parts(self) -> (UnixStream, AgentHello) {
        (self.stream, self.hello)
    }

    /// A channel over `stream`, whose agent finished its handshake saying
    /// `hello` (in another process: no request was sent on it yet).
    pub(crate) fn from_parts(stream: UnixStream, hello: AgentHello) -> ControlChannel {
        ControlChannel {
            stream,
            next_id: 1,
            hello,
        }
    }

    /// What the agent said when it connected.
    pub fn hello(&self) -> &AgentHello {
        &self.hello
    }

    /// Sends `request` and waits up to `timeout` for its reply. A refused
    /// request is [`ControlError::Refused`]; anything malformed from the
    /// guest is [`ControlError::Protocol`] or a frame error, and the channel
    /// should not be used again.
    pub fn request(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<String, ControlError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = encode_frame(&HostMessage::Request {
            id,
            request: request.clone(),
        })?;
        // One deadline for the request and its whole reply: a guest that
        // trickles bytes cannot stretch the wait.
        let mut io = Deadline::new(&self.stream, timeout);
        io.write_all(&frame).map_err(FrameError::Io)?;
        match read_frame::<GuestMessage>(&mut io)? {
            GuestMessage::Reply { id: got, outcome } if got == id => match outcome {
                Outcome::Ok(result) => Ok(result),
                Outcome::Err(message) => Err(ControlError::Refused {
                    request: request.name().to_string(),
                    message,
                }),
            },
            other => Err(ControlError::Protocol(format!(
                "expected the reply to request {id}, got {other:?}"
            ))),
        }
    }
}

#[derive(Default)]
struct Slot {
    channel: Option<ControlChannel>,
}

/// Waits for the agent's control channel; cheap to clone, usable from any
/// thread while another drives the VM.
#[derive(Clone, Default)]
pub struct ControlHandle(Arc<(Mutex<Slot>, Condvar)>);

impl ControlHandle {
    fn put(&self, channel: ControlChannel) {
        let (slot, cv) = &*self.0;
        slot.lock().channel = Some(channel);
        cv.notify_all();
    }

    /// Takes the next ready channel, waiting up to `timeout`. The VM must
    /// be running (its event loop driven by `run`/`wait_until`).
    pub fn wait(&self, timeout: Duration) -> Result<ControlChannel, ControlError> {
        let (slot, cv) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut guard = slot.lock();
        loop {
            if let Some(c) = guard.channel.take() {
                return Ok(c);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::NotConnected(timeout));
            }
            cv.wait_for(&mut guard, left);
        }
    }
}

/// A connection still in its handshake.
struct Pending {
    stream: UnixStream,
    frames: FrameBuffer,
    hello: Option<AgentHello>,
    /// When it was accepted.
    since: Instant,
}

/// Most handshakes under way at once.
const MAX_PENDING: usize = 4;

/// How long a handshake may stay unfinished before a new connection may
/// take its place (the agent's takes milliseconds; a guest that opens
/// connections and never finishes them must not keep the real one out).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);

/// The pending handshake a new connection replaces when all
/// [`MAX_PENDING`] places are taken: the oldest, if it is older than
/// [`HANDSHAKE_LIMIT`].
fn expired(pending: impl Iterator<Item = (RawFd, Instant)>, now: Instant) -> Option<RawFd> {
    pending
        .filter(|(_, since)| now.saturating_duration_since(*since) >= HANDSHAKE_LIMIT)
        .min_by_key(|(_, since)| *since)
        .map(|(fd, _)| fd)
}

/// Bytes one handshake may buffer (hello and ready are tiny).
const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

/// The event-loop side: accepts and handshakes agent connections.
pub(super) struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    pending: HashMap<RawFd, Pending>,
    handle: ControlHandle,
    console: Arc<Mutex<ConsoleState>>,
    events: Option<Sender<GuestEvent>>,
    hostile: HostileLog,
    started: Instant,
}

/// Where the control listener for the VM socket `uds` lives.
pub fn control_socket_path(uds: &Path) -> PathBuf {
    PathBuf::from(format!("{}_{CONTROL_PORT}", uds.display()))
}

impl ControlServer {
    pub(super) fn bind(
        uds: &Path,
        handle: ControlHandle,
        console: Arc<Mutex<ConsoleState>>,
        events: Option<Sender<GuestEvent>>,
        hostile: HostileLog,
        started: Instant,
    ) -> Result<ControlServer, ControlError> {
        let path = control_socket_path(uds);
        let err = |source| ControlError::Bind {
            path: path.clone(),
            source,
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
        let listener = UnixListener::bind(&path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        Ok(ControlServer {
            listener,
            path,
            pending: HashMap::new(),
            handle,
            console,
            events,
            hostile,
            started,
        })
    }

    fn accept(&mut self, ops: &mut EventOps) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.pending.len() >= MAX_PENDING {
                let since = self.pending.iter().map(|(fd, p)| (*fd, p.since));
                let Some(old) = expired(since, Instant::now()) else {
                    continue;
                };
                self.hostile.report(
                    "control",
                    format!("a handshake left unfinished for over {HANDSHAKE_LIMIT:?}; dropped"),
                );
                let _ = ops.remove(Events::with_data_raw(old, old as u32, EventSet::IN));
                self.pending.remove(&old);
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.as_raw_fd();
            if ops
                .add(Events::with_data_raw(fd, fd as u32, EventSet::IN))
                .is_ok()
            {
                self.pending.insert(
                    fd,
                    Pending {
                        stream,
                        frames: FrameBuffer::default(),
                        hello: None,
                        since: Instant::now(),
                    },
                );
                self.advance(fd, ops);
            }
        }
    }

    /// Reads what arrived on a handshaking connection and moves it on.
    fn advance(&mut self, fd: RawFd, ops: &mut EventOps) {
        let Some(p) = self.pending.get_mut(&fd) else {
            return;
        };
        let verdict = step(p, &self.hostile);
        match verdict {
            Step::Wait => return,
            Step::Drop => {}
            Step::Ready(hello) => {
                let mut console = self.console.lock();
                let first = console.ready.is_none();
                let ready = AgentReady {
                    guest_uptime: Duration::from_millis(hello.ready_uptime_ms),
                    host_elapsed: self.started.elapsed(),
                };
                if first {
                    console.ready = Some(ready);
                }
                drop(console);
                if let (true, Some(tx)) = (first, &self.events) {
                    let _ = tx.send(GuestEvent::Ready(ready));
                }
                if let Some(p) = self.pending.remove(&fd) {
                    let _ = ops.remove(Events::with_data_raw(fd, fd as u32, EventSet::IN));
                    if p.stream.set_nonblocking(false).is_ok() {
                        self.handle.put(ControlChannel {
                            stream: p.stream,
                            next_id: 1,
                            hello,
                        });
                    }
                }
                return;
            }
        }
        let _ = ops.remove(Events::with_data_raw(fd, fd as u32, EventSet::IN));
        self.pending.remove(&fd);
    }
}

enum Step {
    Wait,
    Drop,
    Ready(AgentHello),
}

/// One handshake step: read what is there, answer a hello, finish on ready.
fn step(p: &mut Pending, hostile: &HostileLog) -> Step {
    let mut buf = [0u8; 4096];
    loop {
        match p.stream.read(&mut buf) {
            Ok(0) => return Step::Drop,
            Ok(n) => p.frames.push(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return Step::Drop,
        }
        if p.frames.len() > MAX_HANDSHAKE_BYTES {
            hostile.report("control", "handshake larger than any hello");
            return Step::Drop;
        }
    }
    loop {
        let msg = match p.frames.next_frame::<GuestMessage>() {
            Ok(Some(m)) => m,
            Ok(None) => return Step::Wait,
            Err(e) => {
                hostile.report("control", format!("handshake: {e}"));
                return Step::Drop;
            }
        };
        match (msg, &mut p.hello) {
            (
                GuestMessage::Hello {
                    protocol,
                    agent_version,
                    uptime_ms,
                    connection,
                },
                None,
            ) => {
                if protocol != PROTOCOL_VERSION {
                    hostile.report(
                        "control",
                        format!("agent speaks protocol {protocol}, we speak {PROTOCOL_VERSION}"),
                    );
                    return Step::Drop;
                }
                let welcome = welcome().and_then(|w| encode_frame(&w).map_err(|e| e.to_string()));
                let sent = welcome.and_then(|f| p.stream.write_all(&f).map_err(|e| e.to_string()));
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not welcome the agent");
                    return Step::Drop;
                }
                p.hello = Some(AgentHello {
                    agent_version,
                    uptime_ms,
                    ready_uptime_ms: uptime_ms,
                    connection,
                });
            }
            (GuestMessage::Ready { uptime_ms }, Some(hello)) => {
                hello.ready_uptime_ms = uptime_ms;
                return Step::Ready(hello.clone());
            }
            (other, _) => {
                hostile.report(
                    "control",
                    format!("out of order in the handshake: {other:?}"),
                );
                return Step::Drop;
            }
        }
    }
}

/// Fresh entropy (`getrandom(2)`: no file to open, so it works inside a
/// jailed monitor's empty root) and the wall clock for the agent.
fn welcome() -> Result<HostMessage, String> {
    let mut entropy = vec![0u8; ENTROPY_LEN];
    let mut filled = 0;
    while filled < entropy.len() {
        // SAFETY: writes at most the rest of `entropy`, which lives across
        // the call.
        let n = unsafe {
            libc::getrandom(
                entropy[filled..].as_mut_ptr().cast(),
                entropy.len() - filled,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("getrandom: {e}"));
        }
        filled += n as usize;
    }
    let now = std::time::SystemTime::now() + crate::snapshot::age::clock_shift();
    let unix_ns = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok(HostMessage::Welcome { entropy, unix_ns })
}

impl MutEventSubscriber for ControlServer {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.listener, EventSet::IN)) {
            tracing::error!(error = ?e, "cannot watch the control socket");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.listener.as_raw_fd() {
            self.accept(ops);
        } else {
            self.advance(events.fd(), ops);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{expired, HANDSHAKE_LIMIT};

    #[test]
    fn only_a_handshake_past_its_limit_gives_way_the_oldest_first() {
        let now = Instant::now() + 2 * HANDSHAKE_LIMIT;
        let at = |ago: Duration| now - ago;
        let young = [
            (3, at(Duration::from_secs(1))),
            (4, at(Duration::from_secs(2))),
        ];
        assert_eq!(expired(young.into_iter(), now), None);
        let mixed = [
            (3, at(Duration::from_secs(1))),
            (5, at(HANDSHAKE_LIMIT)),
            (6, at(HANDSHAKE_LIMIT + Duration::from_secs(5))),
        ];
        assert_eq!(expired(mixed.into_iter(), now), Some(6));
    }
}
