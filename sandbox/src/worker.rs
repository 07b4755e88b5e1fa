//! The host end of a script worker's ring: loads scripts, invokes actors,
//! streams their outputs and answers their state requests. Everything read
//! from the guest is checked; a worker that breaks the protocol or misses
//! its deadline leaves the client poisoned (see [`Fate::Kill`]).

use std::time::{Duration, Instant};

use reflow_ring::{
    Consumer, Metadata, Position, Producer, Region, RegionLayout, RingError, Value, ValueError,
};

use crate::fate::Fate;
use crate::guest_log::{LogBudget, LogLine, LogRecord};
use crate::limits::Limits;
use crate::protocol::{into_map, ActorError, Collected, Kind, MessageError, StateOp, StateRequest};

/// Why a call to the worker failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The actor failed (load error or exception); the worker is fine.
    #[error(transparent)]
    Actor(ActorError),
    /// The worker did not finish within the call's timeout (given).
    #[error("no answer from the worker within {0:?}")]
    Timeout(Duration),
    /// The worker sent something the protocol does not allow (what).
    #[error("the worker broke the protocol: {0}")]
    Hostile(String),
    /// A ring operation failed (a full ring, or a corrupt one).
    #[error("the ring failed: {0}")]
    Ring(#[from] RingError),
    /// The host's message could not be encoded as a [`Value`].
    #[error("cannot encode the message: {0}")]
    Encode(#[from] ValueError),
    /// An earlier failure left this client unusable.
    #[error("the worker was abandoned after an earlier failure")]
    Poisoned,
    /// The VM stopped while a call was waiting for the worker.
    #[error("the VM stopped while the worker was busy")]
    Died,
    /// The actor went over one of its [`Limits`] (which, and by how much).
    #[error("{0}")]
    Limit(String),
    /// The message was not sent: it is larger than the actor may get.
    #[error("the message is {len} bytes, over the {max}-byte limit ({what}); it was not passed to the actor")]
    MessageTooLarge {
        /// The encoded message's size in bytes.
        len: usize,
        /// The limit it is over, in bytes.
        max: usize,
        /// Which limit: `max_message_size` or the ring's size.
        what: &'static str,
    },
}

impl From<MessageError> for WorkerError {
    fn from(e: MessageError) -> WorkerError {
        WorkerError::Hostile(e.to_string())
    }
}

/// A loaded actor's metadata (as the SDK's `@actor` produced it).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The metadata map the worker sent in its `LOADED` record.
    pub metadata: Value,
    /// What the script printed while it loaded (its top level), within
    /// the load's log limits, and what was dropped (lines, bytes).
    pub logs: (Vec<LogLine>, Option<(u64, u64)>),
}

/// Receives what an invocation produces while it runs.
pub trait InvokeHandler {
    /// One `send_output`, as it happens.
    fn output(&mut self, port: &str, value: Value);
    /// A state request; `Err` is raised in the actor.
    fn state(&mut self, request: StateRequest) -> Result<Value, String>;
    /// A line the actor printed, within the message's log limits, as it
    /// happens. By default an event of target `reflow_sandbox::guest`.
    fn log(&mut self, line: LogLine) {
        tracing::info!(target: "reflow_sandbox::guest", stream = line.stream.name(), cut = line.cut, "{}", line.text);
    }
    /// What the message's printing dropped, once at its end (only when
    /// something was): over the limits, or printed outside a message.
    fn log_dropped(&mut self, lines: u64, bytes: u64) {
        tracing::info!(target: "reflow_sandbox::guest", lines, bytes, "printed output dropped");
    }
}

/// What a [`WorkerClient`] must remember between uses (its rings'
/// positions and its call count), for an owner that keeps the client only
/// while it works (see [`WorkerClient::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientState {
    tx: Position,
    rx: Position,
    next_id: u64,
    poisoned: bool,
}

impl Default for ClientState {
    fn default() -> ClientState {
        ClientState {
            tx: Position::default(),
            rx: Position::default(),
            next_id: 1,
            poisoned: false,
        }
    }
}

impl ClientState {
    /// A client whose rings' ends stand at `tx` (host to guest) and `rx`
    /// (guest to host): where a clone of a snapshot taken after the worker
    /// had used its rings starts.
    pub fn at(tx: Position, rx: Position) -> ClientState {
        ClientState {
            tx,
            rx,
            ..ClientState::default()
        }
    }

    /// Where the host-to-guest and guest-to-host rings' ends stand.
    pub fn positions(&self) -> (Position, Position) {
        (self.tx, self.rx)
    }

    /// Whether an earlier failure left the worker unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

/// The host end of one worker's pair of rings.
pub struct WorkerClient<'a> {
    tx: Producer<'a>,
    rx: Consumer<'a>,
    next_id: u64,
    poisoned: bool,
    alive: Option<&'a dyn Fn() -> bool>,
    /// How long the worker spins on an empty ring before it sleeps, told
    /// on LOAD ([`WorkerClient::idle_spin`]).
    idle_spin: Option<Duration>,
}

/// One record from the guest, checked and decoded.
struct Incoming {
    kind: Kind,
    /// The record's payload, bytes.
    len: usize,
    port: String,
    value: Value,
}

impl<'a> WorkerClient<'a> {
    /// A client over the host->guest producer and guest->host consumer of a
    /// freshly initialized region.
    pub fn new(tx: Producer<'a>, rx: Consumer<'a>) -> WorkerClient<'a> {
        WorkerClient {
            tx,
            rx,
            next_id: 1,
            poisoned: false,
            alive: None,
            idle_spin: None,
        }
    }

    /// Makes every wait for the worker also end, with
    /// [`WorkerError::Died`], as soon as `alive` says the VM is gone
    /// (asked after every sleep of the ring's back-off, at most 1 ms apart
    /// on the host, never while it spins), instead of at the deadline.
    pub fn with_liveness(mut self, alive: &'a dyn Fn() -> bool) -> WorkerClient<'a> {
        self.alive = Some(alive);
        self
    }

    /// Tells the worker, on the next LOAD, to spin `spin` on an empty ring
    /// before it sleeps (it caps this at 1 s; without it, 50 ms). A host
    /// that holds an idle VM's vCPUs after some time should ask for more
    /// than that time: a held worker that was spinning sees the next
    /// message on its first poll once released, where a sleeping one waits
    /// for a guest timer interrupt.
    pub fn idle_spin(&mut self, spin: Duration) -> &mut Self {
        self.idle_spin = Some(spin);
        self
    }

    /// A client over the two rings of `region` laid out as `layout` (host
    /// to guest for requests, guest to host for answers).
    pub fn attach(region: &'a Region, layout: &RegionLayout) -> WorkerClient<'a> {
        WorkerClient::resume(region, layout, ClientState::default())
    }

    /// A client that goes on where one with `state` stopped.
    pub fn resume(
        region: &'a Region,
        layout: &RegionLayout,
        state: ClientState,
    ) -> WorkerClient<'a> {
        WorkerClient {
            tx: Producer::resume(region, layout.host_to_guest, state.tx),
            rx: Consumer::resume(region, layout.guest_to_host, state.rx),
            next_id: state.next_id,
            poisoned: state.poisoned,
            alive: None,
            idle_spin: None,
        }
    }

    /// What to resume this client from.
    pub fn state(&self) -> ClientState {
        ClientState {
            tx: self.tx.position(),
            rx: self.rx.position(),
            next_id: self.next_id,
            poisoned: self.poisoned,
        }
    }

    /// Whether an earlier failure left the worker unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Loads `source` (shown as `name` in tracebacks) as the actor
    /// `actor_id`, with the default limits but `timeout`.
    pub fn load(
        &mut self,
        actor_id: &str,
        name: &str,
        source: &str,
        timeout: Duration,
    ) -> Result<Loaded, WorkerError> {
        self.load_within(actor_id, name, source, &Limits::with_timeout(timeout))
    }

    /// Loads `source` (shown as `name` in tracebacks) as the actor
    /// `actor_id`, within `limits`' timeout; the worker caps what each of
    /// the actor's messages prints at `limits`' log limits.
    pub fn load_within(
        &mut self,
        actor_id: &str,
        name: &str,
        source: &str,
        limits: &Limits,
    ) -> Result<Loaded, WorkerError> {
        let int = |n: usize| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let mut body = vec![
            ("name".into(), Value::Str(name.into())),
            ("source".into(), Value::Str(source.into())),
            (
                "log".into(),
                Value::Map(vec![
                    ("lines".into(), int(limits.max_log_lines)),
                    ("bytes".into(), int(limits.max_log_bytes)),
                ]),
            ),
        ];
        if let Some(spin) = self.idle_spin {
            body.push(("idle_spin_ms".into(), int(spin.as_millis() as usize)));
        }
        let payload = Value::Map(body).encode()?;
        let mut budget = LogBudget::new(limits.max_log_lines, limits.max_log_bytes);
        let mut lines = Vec::new();
        let loaded = self.call(
            Kind::Load,
            actor_id,
            &payload,
            limits.timeout,
            |_, got| match got.kind {
                Kind::Log => {
                    lines.extend(take_log(&mut budget, got.value, limits)?);
                    Ok(None)
                }
                Kind::Loaded => {
                    let mut fields = into_map(got.value)?;
                    match fields.iter().position(|(k, _)| k == "metadata") {
                        Some(at) => Ok(Some(fields.swap_remove(at).1)),
                        None => Err(WorkerError::Hostile("LOADED without metadata".into())),
                    }
                }
                other => Err(unexpected(other, "LOADED, LOG or ERROR")),
            },
        )?;
        Ok(Loaded {
            metadata: loaded,
            logs: (lines, budget.dropped()),
        })
    }

    /// Has the worker collect its garbage now, within `timeout`, and
    /// returns what it reported. A clone shares its golden's memory until
    /// it writes a page, and an interpreter's first full collection writes
    /// to most of its heap: V8's took half a second in a fresh clone on an
    /// AMD EPYC `kvm_pvm` host, every page a copy-on-write fault the guest
    /// kernel handles emulated. A pool asks for it while a clone waits
    /// (see `VmPool`), so no message waits for it.
    pub fn collect(&mut self, actor_id: &str, timeout: Duration) -> Result<Collected, WorkerError> {
        let payload = Value::Map(Vec::new()).encode()?;
        self.call(
            Kind::Collect,
            actor_id,
            &payload,
            timeout,
            |_, got| match got.kind {
                Kind::Done => Ok(Some(Collected::parse(got.value)?)),
                other => Err(unexpected(other, "DONE or ERROR")),
            },
        )
    }

    /// Runs the loaded actor once within `limits`; outputs and state
    /// requests go to `handler` as they come. Returns the outputs the actor
    /// returned (a map, empty when it returned nothing).
    pub fn invoke(
        &mut self,
        actor_id: &str,
        inputs: Value,
        config: Value,
        limits: &Limits,
        handler: &mut dyn InvokeHandler,
    ) -> Result<Value, WorkerError> {
        let payload = stream::invoke_payload(inputs, &config, limits).1?;
        let mut count = Counts::new(limits);
        let result = self.call(
            Kind::Invoke,
            actor_id,
            &payload,
            limits.timeout,
            |tx, got| invocation_step(tx, got, limits, &mut count, &mut *handler),
        );
        count.report_logs(handler);
        result
    }

    /// Sends one message and feeds the answers to `step` until it returns
    /// a result; ERROR records end the call with the actor's error.
    fn call<T>(
        &mut self,
        kind: Kind,
        actor_id: &str,
        payload: &[u8],
        timeout: Duration,
        mut step: impl FnMut(
            &mut dyn FnMut(Kind, &Value) -> Result<(), WorkerError>,
            Incoming,
        ) -> Result<Option<T>, WorkerError>,
    ) -> Result<T, WorkerError> {
        if self.poisoned {
            return Err(WorkerError::Poisoned);
        }
        let deadline = Instant::now() + timeout;
        let id = self.next_id;
        self.next_id += 1;
        let result = (|| {
            send_on(&mut self.tx, id, actor_id, kind, payload, deadline).map_err(|e| match e {
                WorkerError::Ring(RingError::TooLarge { capacity, .. }) => {
                    larger_than_ring(payload.len(), capacity)
                }
                e => e,
            })?;
            loop {
                let got = self.receive(id, actor_id, deadline, timeout)?;
                if got.kind == Kind::Error {
                    return Err(WorkerError::Actor(ActorError::parse(got.value)?));
                }
                let tx = &mut self.tx;
                let mut reply = |kind: Kind, value: &Value| -> Result<(), WorkerError> {
                    send_on(tx, id, actor_id, kind, &value.encode()?, deadline)
                };
                if let Some(done) = step(&mut reply, got)? {
                    return Ok(done);
                }
            }
        })();
        if let Err(e) = &result {
            self.poisoned |= e.fate() == Fate::Kill;
        }
        result
    }

    /// The next record of call `id`, decoded; anything else is hostile.
    fn receive(
        &mut self,
        id: u64,
        actor_id: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Incoming, WorkerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let died = std::cell::Cell::new(false);
        let received = match self.alive {
            None => self.rx.recv(left)?,
            Some(alive) => self.rx.recv_while(left, &|| {
                let on = alive();
                died.set(!on);
                on
            })?,
        };
        let Some(record) = received else {
            return Err(if died.get() {
                WorkerError::Died
            } else {
                WorkerError::Timeout(timeout)
            });
        };
        let meta = record.metadata.clone();
        let bytes = record.to_vec();
        self.rx.release(record)?;
        if meta.message_id != id || meta.actor_id != actor_id {
            return Err(WorkerError::Hostile(format!(
                "a record for message {} of {:?} while {id} of {actor_id:?} runs",
                meta.message_id, meta.actor_id
            )));
        }
        let kind = Kind::from_wire(meta.kind)
            .ok_or_else(|| WorkerError::Hostile(format!("unknown record kind {}", meta.kind)))?;
        let value = Value::decode(&bytes)
            .map_err(|e| WorkerError::Hostile(format!("an undecodable {kind:?} record: {e}")))?;
        Ok(Incoming {
            kind,
            len: bytes.len(),
            port: meta.port,
            value,
        })
    }
}

/// One record of a running invocation (not ERROR, which the caller
/// handles): outputs and state requests go to `handler`, state replies
/// through `tx`; returns the returned outputs once DONE comes.
fn invocation_step(
    tx: &mut dyn FnMut(Kind, &Value) -> Result<(), WorkerError>,
    got: Incoming,
    limits: &Limits,
    count: &mut Counts,
    handler: &mut dyn InvokeHandler,
) -> Result<Option<Value>, WorkerError> {
    match got.kind {
        Kind::Output => {
            count.output(limits, got.len, 1)?;
            handler.output(&got.port, got.value)
        }
        Kind::State => {
            count.state(limits)?;
            let request = StateRequest::parse(got.value)?;
            let reply = match state_value_error(&request, got.len, limits) {
                Some(refused) => StateRequest::error(refused),
                None => match handler.state(request) {
                    Ok(v) => StateRequest::ok(v),
                    Err(e) => StateRequest::error(e),
                },
            };
            tx(Kind::StateReply, &reply)?;
        }
        Kind::Log => {
            if let Some(line) = take_log(&mut count.log, got.value, limits)? {
                handler.log(line);
            }
        }
        Kind::Done => {
            return match got.value {
                Value::None => Ok(Some(Value::Map(Vec::new()))),
                Value::Map(m) => {
                    count.output(limits, got.len, m.len())?;
                    Ok(Some(Value::Map(m)))
                }
                _ => Err(WorkerError::Hostile("DONE with a non-map result".into())),
            }
        }
        other => return Err(unexpected(other, "OUTPUT, STATE, LOG, DONE or ERROR")),
    }
    Ok(None)
}

fn send_on(
    tx: &mut Producer<'_>,
    id: u64,
    actor_id: &str,
    kind: Kind,
    payload: &[u8],
    deadline: Instant,
) -> Result<(), WorkerError> {
    let left = deadline.saturating_duration_since(Instant::now());
    tx.send(&record_meta(id, actor_id, kind), payload, left)?;
    Ok(())
}

/// The metadata of a host record of `kind` for message `id` of `actor_id`.
fn record_meta(id: u64, actor_id: &str, kind: Kind) -> Metadata {
    Metadata {
        message_id: id,
        actor_id: actor_id.into(),
        kind: kind.wire(),
        ..Metadata::default()
    }
}

/// A message of `len` bytes that the ring (of `capacity` bytes) refused
/// before anything was written: the ring is fine, the message was not sent.
fn larger_than_ring(len: usize, capacity: u64) -> WorkerError {
    WorkerError::MessageTooLarge {
        len,
        max: usize::try_from(capacity).unwrap_or(usize::MAX),
        what: "the size of the shared ring",
    }
}

/// What one invocation has made so far, against its limits.
struct Counts {
    outputs: usize,
    output_bytes: usize,
    state_ops: usize,
    log: LogBudget,
}

impl Counts {
    fn new(limits: &Limits) -> Counts {
        Counts {
            outputs: 0,
            output_bytes: 0,
            state_ops: 0,
            log: LogBudget::new(limits.max_log_lines, limits.max_log_bytes),
        }
    }

    /// Tells `handler` what the message's printing dropped, if anything
    /// (once, at the message's end).
    fn report_logs(&self, handler: &mut dyn InvokeHandler) {
        if let Some((lines, bytes)) = self.log.dropped() {
            handler.log_dropped(lines, bytes);
        }
    }

    /// Counts `n` outputs carried by a record of `len` bytes.
    fn output(&mut self, limits: &Limits, len: usize, n: usize) -> Result<(), WorkerError> {
        if len > limits.max_output_bytes {
            return Err(WorkerError::Limit(format!(
                "an output of {len} bytes, over the {}-byte limit (max_output_size)",
                limits.max_output_bytes
            )));
        }
        self.output_bytes = self.output_bytes.saturating_add(len);
        if self.output_bytes > limits.max_output_total_bytes {
            return Err(WorkerError::Limit(format!(
                "outputs of more than {} bytes in all in one invocation (max_output_total_size)",
                limits.max_output_total_bytes
            )));
        }
        self.outputs += n;
        if self.outputs > limits.max_outputs {
            return Err(WorkerError::Limit(format!(
                "more than {} outputs in one invocation (max_outputs)",
                limits.max_outputs
            )));
        }
        Ok(())
    }

    fn state(&mut self, limits: &Limits) -> Result<(), WorkerError> {
        self.state_ops += 1;
        if self.state_ops > limits.max_state_ops {
            return Err(WorkerError::Limit(format!(
                "more than {} state operations in one invocation (max_state_ops)",
                limits.max_state_ops
            )));
        }
        Ok(())
    }
}

/// Why a `set` or `push` in a record of `len` bytes stores too large a
/// value, if it does (raised in the actor; nothing is stored).
fn state_value_error(request: &StateRequest, len: usize, limits: &Limits) -> Option<String> {
    let max = limits.max_state_value_bytes;
    // The value is part of the record: a record within the limit cannot
    // carry a value over it.
    if len <= max || !matches!(request.op, StateOp::Set | StateOp::Push) {
        return None;
    }
    let size = request
        .args
        .first()
        .map_or(0, |v| v.encode().map_or(usize::MAX, |b| b.len()));
    (size > max).then(|| {
        format!("a state value of {size} bytes is over the {max}-byte limit (max_state_value_size); nothing was stored")
    })
}

/// A LOG record's line if `budget` keeps it. A message that sent more LOG
/// records than any SDK would (see [`crate::guest_log::RECORD_SLACK`])
/// breaches a limit; a malformed one is hostile.
fn take_log(
    budget: &mut LogBudget,
    value: Value,
    limits: &Limits,
) -> Result<Option<LogLine>, WorkerError> {
    if !budget.record() {
        return Err(WorkerError::Limit(format!(
            "more than {} printed-output records in one message (max_log_lines {} and {} more)",
            limits
                .max_log_lines
                .saturating_add(crate::guest_log::RECORD_SLACK),
            limits.max_log_lines,
            crate::guest_log::RECORD_SLACK
        )));
    }
    Ok(budget.admit(LogRecord::parse(value)?))
}

fn unexpected(kind: Kind, wanted: &str) -> WorkerError {
    WorkerError::Hostile(format!("a {kind:?} record where {wanted} belongs"))
}

#[path = "stream.rs"]
mod stream;
pub use stream::{StreamEnd, StreamHandler, Window};

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "worker_log_tests.rs"]
mod log_tests;

#[cfg(test)]
#[path = "worker_collect_tests.rs"]
mod collect_tests;
