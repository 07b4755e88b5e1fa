//! Pipelined invocations: a window of messages in the worker at once.
//!
//! The host writes the INVOKE records of the next messages while the worker
//! runs the first, so a stream never waits for a round trip per message.
//! The worker still runs them one at a time, in order (its SDK queues the
//! INVOKEs it reads while waiting for a state reply), so every record it
//! sends belongs to the oldest unanswered message, the window's head: a
//! record for any other message is hostile. Each message has its own
//! limits and its own timeout, counted from when it became the head.
//!
//! A failure that leaves the worker usable (the actor raised, a message
//! refused before it was sent) answers its message and the stream goes
//! on. A failure that ends the worker (timeout, a hostile record, the VM
//! gone) is the head's; the messages behind it were never started (the
//! worker had not finished the head), and go back to the caller to run on
//! another VM: each message is answered exactly once.

use std::collections::VecDeque;
use std::time::Instant;

use reflow_ring::{RingError, Value};

use super::{invocation_step, larger_than_ring, record_meta, Counts, WorkerClient, WorkerError};
use crate::limits::Limits;
use crate::protocol::{ActorError, Kind};
use crate::worker::InvokeHandler;

/// Receives what a stream of invocations produces: each message's outputs
/// and state requests (through [`InvokeHandler`]) and then its end, one
/// message after the other, in the order they were taken.
pub trait StreamHandler: InvokeHandler {
    /// The head message finished; its returned outputs (a map).
    fn done(&mut self, outputs: Value);
    /// The head message failed and the worker goes on: the actor raised
    /// (or its error's fate retires the VM: see [`WorkerError::fate`]), or
    /// the message was refused before it was sent.
    fn failed(&mut self, error: WorkerError);
    /// Whether to take more messages; once false, the stream finishes
    /// those in flight and returns.
    fn more(&self) -> bool {
        true
    }
}

/// How much of a stream may be in the worker at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Messages written and not yet answered, at most.
    pub messages: usize,
    /// Their encoded bytes, at most (a single larger message still goes,
    /// alone).
    pub bytes: usize,
}

/// Why a stream stopped early: the worker failed while running the head
/// message (the error, which is the head's answer), and the inputs of the
/// messages taken after it, which were never started, in order.
#[derive(Debug)]
pub struct StreamEnd {
    /// The head message's failure; its fate is [`crate::Fate::Kill`].
    pub error: WorkerError,
    /// The inputs of the messages behind the head, oldest first.
    pub unstarted: Vec<Value>,
}

/// A message taken into the window.
struct Entry {
    /// Its inputs, kept to run it elsewhere if the worker fails first.
    inputs: Value,
    /// Its INVOKE payload, or why it will not be sent.
    payload: Result<Vec<u8>, WorkerError>,
    /// Its message id once written.
    id: Option<u64>,
    /// When it was written.
    sent: Instant,
    counts: Counts,
}

impl Entry {
    fn new(inputs: Value, config: &Value, limits: &Limits) -> Entry {
        let (inputs, payload) = invoke_payload(inputs, config, limits);
        Entry {
            inputs,
            payload,
            id: None,
            sent: Instant::now(),
            counts: Counts::new(limits),
        }
    }

    fn bytes(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// The INVOKE payload of `inputs` with `config` (or why it cannot be
/// sent), and the inputs back.
pub(super) fn invoke_payload(
    inputs: Value,
    config: &Value,
    limits: &Limits,
) -> (Value, Result<Vec<u8>, WorkerError>) {
    let body = Value::Map(vec![
        ("inputs".into(), inputs),
        ("config".into(), config.clone()),
    ]);
    let payload = body
        .encode()
        .map_err(WorkerError::from)
        .and_then(|payload| {
            if payload.len() > limits.max_message_bytes {
                Err(WorkerError::MessageTooLarge {
                    len: payload.len(),
                    max: limits.max_message_bytes,
                    what: "max_message_size",
                })
            } else {
                Ok(payload)
            }
        });
    let inputs = match body {
        Value::Map(mut fields) => fields.swap_remove(0).1,
        _ => unreachable!("built as a map above"),
    };
    (inputs, payload)
}

/// A stream's messages: those in the worker (the head first) and the one
/// taken but not yet written (the ring was full).
struct Pipeline {
    in_flight: VecDeque<Entry>,
    bytes: usize,
    waiting: Option<Entry>,
    /// Since when the head has been the head.
    head_since: Instant,
}

impl Pipeline {
    /// Takes the head out, its message over (what its printing dropped
    /// goes to `handler` first): the next message is the head from now.
    fn pop(&mut self, handler: &mut dyn InvokeHandler) -> Option<Entry> {
        let head = self.in_flight.pop_front();
        if let Some(e) = &head {
            self.bytes -= e.bytes();
            e.counts.report_logs(handler);
        }
        self.head_since = Instant::now();
        head
    }

    /// Ends the stream with `error` as the head's answer.
    fn end(mut self, error: WorkerError, handler: &mut dyn InvokeHandler) -> StreamEnd {
        if let Some(head) = self.in_flight.pop_front() {
            head.counts.report_logs(handler);
        }
        let unstarted = self
            .in_flight
            .into_iter()
            .chain(self.waiting)
            .map(|e| e.inputs)
            .collect();
        StreamEnd { error, unstarted }
    }
}

impl WorkerClient<'_> {
    /// Runs the loaded actor `actor_id` on each input `next` gives (until
    /// it gives `None`, or the handler wants no more), with `config` and
    /// within `limits`, keeping up to `window` of them in the worker at
    /// once. Each message's outputs, state requests and end go to
    /// `handler`, in order. Returns once every message taken is answered,
    /// or early (see [`StreamEnd`]) when the worker fails.
    pub fn stream(
        &mut self,
        actor_id: &str,
        config: &Value,
        limits: &Limits,
        window: Window,
        next: &mut dyn FnMut() -> Option<Value>,
        handler: &mut dyn StreamHandler,
    ) -> Result<(), StreamEnd> {
        let mut p = Pipeline {
            in_flight: VecDeque::new(),
            bytes: 0,
            waiting: None,
            head_since: Instant::now(),
        };
        loop {
            if let Err(e) = self.fill(&mut p, actor_id, config, limits, window, next, &*handler) {
                return Err(self.fail(p, e, handler));
            }
            let Some(head) = p.in_flight.front_mut() else {
                return Ok(());
            };
            let Some(id) = head.id else {
                // Refused before it was sent (an entry whose write failed
                // ends the stream in `fill`, never reaching here).
                if let Some(Entry {
                    payload: Err(error),
                    ..
                }) = p.pop(handler)
                {
                    handler.failed(error);
                }
                continue;
            };
            let deadline = head.sent.max(p.head_since) + limits.timeout;
            let got = match self.receive(id, actor_id, deadline, limits.timeout) {
                Ok(got) => got,
                Err(e) => return Err(self.fail(p, e, handler)),
            };
            if got.kind == Kind::Error {
                let error = match ActorError::parse(got.value) {
                    Ok(a) => WorkerError::Actor(a),
                    Err(e) => return Err(self.fail(p, e.into(), handler)),
                };
                if error.fate() == crate::Fate::Kill {
                    return Err(self.fail(p, error, handler));
                }
                p.pop(handler);
                handler.failed(error);
                continue;
            }
            let tx = &mut self.tx;
            let mut reply = |kind: Kind, value: &Value| -> Result<(), WorkerError> {
                super::send_on(tx, id, actor_id, kind, &value.encode()?, deadline)
            };
            match invocation_step(&mut reply, got, limits, &mut head.counts, handler) {
                Ok(None) => {}
                Ok(Some(outputs)) => {
                    p.pop(handler);
                    handler.done(outputs);
                }
                Err(e) => return Err(self.fail(p, e, handler)),
            }
        }
    }

    /// Ends the stream: the client is poisoned, the head gets `error`.
    fn fail(
        &mut self,
        p: Pipeline,
        error: WorkerError,
        handler: &mut dyn InvokeHandler,
    ) -> StreamEnd {
        self.poisoned = true;
        p.end(error, handler)
    }

    /// Takes messages from `next` and writes them while the window has
    /// room and the ring takes them. With nothing in flight, the next
    /// message is written even if that means waiting for ring space (up to
    /// its timeout).
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        p: &mut Pipeline,
        actor_id: &str,
        config: &Value,
        limits: &Limits,
        window: Window,
        next: &mut dyn FnMut() -> Option<Value>,
        handler: &dyn StreamHandler,
    ) -> Result<(), WorkerError> {
        if self.poisoned {
            return Err(WorkerError::Poisoned);
        }
        while p.in_flight.len() < window.messages.max(1) {
            let entry = match p.waiting.take() {
                Some(entry) => entry,
                None if !handler.more() => return Ok(()),
                None => match next() {
                    Some(inputs) => Entry::new(inputs, config, limits),
                    None => return Ok(()),
                },
            };
            let mut entry = entry;
            let Ok(payload) = &entry.payload else {
                p.in_flight.push_back(entry);
                continue;
            };
            let alone = p.in_flight.is_empty();
            if !alone && p.bytes + payload.len() > window.bytes {
                p.waiting = Some(entry);
                return Ok(());
            }
            let id = self.next_id;
            let meta = record_meta(id, actor_id, Kind::Invoke);
            let written = if alone {
                self.tx.send(&meta, payload, limits.timeout)
            } else {
                self.tx.try_send(&meta, payload)
            };
            match written {
                Ok(()) => {
                    self.next_id += 1;
                    entry.id = Some(id);
                    entry.sent = Instant::now();
                    p.bytes += payload.len();
                    p.in_flight.push_back(entry);
                }
                Err(RingError::Full { .. }) if !alone => {
                    p.waiting = Some(entry);
                    return Ok(());
                }
                Err(RingError::TooLarge { capacity, .. }) => {
                    entry.payload = Err(larger_than_ring(payload.len(), capacity));
                    p.in_flight.push_back(entry);
                }
                Err(RingError::Timeout(_)) if alone => {
                    p.in_flight.push_back(entry);
                    return Err(WorkerError::Timeout(limits.timeout));
                }
                Err(e) => {
                    p.in_flight.push_back(entry);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
