//! The script worker's message protocol (see the Python SDK's
//! `reflow/worker.py`): record kinds, and the guest's structured messages
//! parsed from [`Value`]s with every field checked.

use reflow_ring::Value;

/// A record's kind, carried in its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// host -> guest `{"name", "source"}`: load a script as the actor.
    Load = 1,
    /// guest -> host `{"metadata": {...}}`.
    Loaded = 2,
    /// host -> guest `{"inputs": {...}, "config": {...}}`.
    Invoke = 3,
    /// guest -> host: one output value; the port is in the metadata.
    Output = 4,
    /// guest -> host: the returned outputs; the invocation is over.
    Done = 5,
    /// guest -> host `{"op", "key", "args"}`.
    State = 6,
    /// host -> guest `{"ok": value}` or `{"error": message}`.
    StateReply = 7,
    /// guest -> host `{"kind", "message", "traceback"}`.
    Error = 8,
    /// guest -> host: a line the script printed, or what the guest dropped
    /// (see [`crate::guest_log`]).
    Log = 9,
    /// host -> guest `{}`: collect garbage now, answered by `Done`
    /// `{"ms": float, "heap": int}` (see [`crate::WorkerClient::collect`]).
    Collect = 10,
}

impl Kind {
    /// The kind with wire number `n`.
    pub fn from_wire(n: u32) -> Option<Kind> {
        Some(match n {
            1 => Kind::Load,
            2 => Kind::Loaded,
            3 => Kind::Invoke,
            4 => Kind::Output,
            5 => Kind::Done,
            6 => Kind::State,
            7 => Kind::StateReply,
            8 => Kind::Error,
            9 => Kind::Log,
            10 => Kind::Collect,
            _ => return None,
        })
    }

    /// Its wire number.
    pub fn wire(self) -> u32 {
        self as u32
    }
}

/// Why the guest's message is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The message is not a map (the kind of value it is instead).
    #[error("expected a map, got {0}")]
    NotAMap(&'static str),
    /// A required string field (the one named) is absent or not a string.
    #[error("field {0:?} is missing or not a string")]
    Field(&'static str),
    /// A numeric field (the one named) is absent, not a number, negative
    /// or not finite.
    #[error("field {0:?} is missing or not a number the host accepts")]
    Number(&'static str),
    /// A state request names an operation the host does not know (cut to
    /// 64 bytes).
    #[error("unknown state operation {0:?}")]
    UnknownOp(String),
    /// An error report names a kind the host does not know (cut to 64
    /// bytes).
    #[error("unknown error kind {0:?}")]
    UnknownErrorKind(String),
    /// A field is longer than the host accepts.
    #[error("a {what} of {len} bytes is over the {max}-byte limit")]
    TooLong {
        /// What the field is (for example `"state key"`).
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}

/// What a worker's garbage collection took, as it reported it (see
/// [`crate::WorkerClient::collect`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Collected {
    /// The collection's duration in the guest, in milliseconds.
    pub ms: f64,
    /// The interpreter's used heap in bytes afterwards, where the runtime
    /// tells (V8); 0 where it does not (CPython).
    pub heap: u64,
}

impl Collected {
    /// Parses the `DONE` answer to a `COLLECT`: `{"ms": float, "heap":
    /// int}`, the time finite and not negative, the heap not negative.
    pub fn parse(v: Value) -> Result<Collected, MessageError> {
        let fields = into_map(v)?;
        let find = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let ms = match find("ms") {
            Some(Value::Float(ms)) if ms.is_finite() && *ms >= 0.0 => *ms,
            Some(Value::Int(ms)) if *ms >= 0 => *ms as f64,
            _ => return Err(MessageError::Number("ms")),
        };
        let heap = match find("heap") {
            Some(Value::Int(heap)) => {
                u64::try_from(*heap).map_err(|_| MessageError::Number("heap"))?
            }
            _ => return Err(MessageError::Number("heap")),
        };
        Ok(Collected { ms, heap })
    }
}

/// Longest state key the host accepts.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest error message or traceback kept (longer ones are cut).
pub const MAX_ERROR_TEXT: usize = 64 * 1024;

/// The state operations a guest may request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOp {
    /// Reads the key's value (`"get"`).
    Get,
    /// Stores a value under the key (`"set"`).
    Set,
    /// Adds an integer (1 by default) to the key's value (`"increment"`).
    Increment,
    /// Appends a value to the list at the key (`"push"`).
    Push,
    /// Removes and returns the first item of the list at the key (`"pop"`).
    Pop,
    /// Sets the key's time to live in seconds (`"expire"`).
    Expire,
}

impl StateOp {
    fn parse(s: &str) -> Result<StateOp, MessageError> {
        Ok(match s {
            "get" => StateOp::Get,
            "set" => StateOp::Set,
            "increment" => StateOp::Increment,
            "push" => StateOp::Push,
            "pop" => StateOp::Pop,
            "expire" => StateOp::Expire,
            other => return Err(MessageError::UnknownOp(truncate(other, 64))),
        })
    }
}

/// A state request from an actor (its namespace is the host's to add).
#[derive(Debug, Clone, PartialEq)]
pub struct StateRequest {
    /// The operation.
    pub op: StateOp,
    /// The actor's key (at most [`MAX_KEY_LEN`] bytes).
    pub key: String,
    /// The operation's arguments (empty when the guest sent none).
    pub args: Vec<Value>,
}

impl StateRequest {
    /// Parses a `STATE` record's value.
    pub fn parse(v: Value) -> Result<StateRequest, MessageError> {
        let mut fields = into_map(v)?;
        let op = StateOp::parse(&take_str(&mut fields, "op")?)?;
        let key = take_str(&mut fields, "key")?;
        if key.len() > MAX_KEY_LEN {
            return Err(MessageError::TooLong {
                what: "state key",
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        let args = match take(&mut fields, "args") {
            Some(Value::List(args)) => args,
            _ => Vec::new(),
        };
        Ok(StateRequest { op, key, args })
    }

    /// The value of a successful reply.
    pub fn ok(value: Value) -> Value {
        Value::Map(vec![("ok".into(), value)])
    }

    /// The value of a failed reply (raised in the actor).
    pub fn error(message: impl Into<String>) -> Value {
        Value::Map(vec![("error".into(), Value::Str(message.into()))])
    }
}

/// Where an actor failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The script did not load (syntax error, no `@actor`, import failed).
    Load,
    /// The actor raised.
    Run,
    /// The worker could not understand the host's message.
    Protocol,
}

/// An actor's failure, as the worker reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorError {
    /// Where the actor failed.
    pub kind: ErrorKind,
    /// The error message (cut to [`MAX_ERROR_TEXT`] bytes).
    pub message: String,
    /// The guest's traceback (cut to [`MAX_ERROR_TEXT`] bytes; empty when
    /// the worker sent none).
    pub traceback: String,
}

impl std::fmt::Display for ActorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ErrorKind::Load => "load error",
            ErrorKind::Run => "actor raised",
            ErrorKind::Protocol => "worker protocol error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for ActorError {}

impl ActorError {
    /// Parses an `ERROR` record's value (texts cut to [`MAX_ERROR_TEXT`]).
    pub fn parse(v: Value) -> Result<ActorError, MessageError> {
        let mut fields = into_map(v)?;
        let kind = match take_str(&mut fields, "kind")?.as_str() {
            "load" => ErrorKind::Load,
            "run" => ErrorKind::Run,
            "protocol" => ErrorKind::Protocol,
            other => return Err(MessageError::UnknownErrorKind(truncate(other, 64))),
        };
        let message = truncate(&take_str(&mut fields, "message")?, MAX_ERROR_TEXT);
        let traceback = match take(&mut fields, "traceback") {
            Some(Value::Str(t)) => truncate(&t, MAX_ERROR_TEXT),
            _ => String::new(),
        };
        Ok(ActorError {
            kind,
            message,
            traceback,
        })
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::None => "none",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
    }
}

/// The entries of a map value.
pub fn into_map(v: Value) -> Result<Vec<(String, Value)>, MessageError> {
    match v {
        Value::Map(entries) => Ok(entries),
        other => Err(MessageError::NotAMap(type_name(&other))),
    }
}

fn take(fields: &mut Vec<(String, Value)>, key: &str) -> Option<Value> {
    let at = fields.iter().position(|(k, _)| k == key)?;
    Some(fields.swap_remove(at).1)
}

fn take_str(fields: &mut Vec<(String, Value)>, key: &'static str) -> Result<String, MessageError> {
    match take(fields, key) {
        Some(Value::Str(s)) => Ok(s),
        _ => Err(MessageError::Field(key)),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A map value from pairs.
    pub(crate) fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn kinds_round_trip_and_unknown_ones_are_none() {
        for n in 1..=10 {
            assert_eq!(Kind::from_wire(n).unwrap().wire(), n);
        }
        assert_eq!(Kind::from_wire(0), None);
        assert_eq!(Kind::from_wire(11), None);
    }

    #[test]
    fn state_requests_are_parsed_and_checked() {
        let req = StateRequest::parse(map(&[
            ("op", Value::Str("increment".into())),
            ("key", Value::Str("calls".into())),
            ("args", Value::List(vec![Value::Int(2)])),
        ]))
        .unwrap();
        assert_eq!(req.op, StateOp::Increment);
        assert_eq!(req.args, vec![Value::Int(2)]);
        let bad = [
            (Value::Int(1), MessageError::NotAMap("an int")),
            (
                map(&[("key", Value::Str("k".into()))]),
                MessageError::Field("op"),
            ),
            (
                map(&[
                    ("op", Value::Str("drop".into())),
                    ("key", Value::Str("k".into())),
                ]),
                MessageError::UnknownOp("drop".into()),
            ),
            (
                map(&[("op", Value::Str("get".into()))]),
                MessageError::Field("key"),
            ),
            (
                map(&[
                    ("op", Value::Str("get".into())),
                    ("key", Value::Str("k".repeat(2000))),
                ]),
                MessageError::TooLong {
                    what: "state key",
                    len: 2000,
                    max: MAX_KEY_LEN,
                },
            ),
        ];
        for (value, want) in bad {
            assert_eq!(StateRequest::parse(value), Err(want));
        }
    }

    #[test]
    fn actor_errors_are_parsed_and_long_texts_cut() {
        let e = ActorError::parse(map(&[
            ("kind", Value::Str("run".into())),
            ("message", Value::Str("é".repeat(MAX_ERROR_TEXT))),
            ("traceback", Value::Str("Traceback".into())),
        ]))
        .unwrap();
        assert_eq!(e.kind, ErrorKind::Run);
        assert!(e.message.len() <= MAX_ERROR_TEXT + '…'.len_utf8());
        assert_eq!(e.traceback, "Traceback");
        assert!(e.to_string().starts_with("actor raised: éé"));
        assert_eq!(
            ActorError::parse(map(&[("kind", Value::Str("odd".into()))])),
            Err(MessageError::UnknownErrorKind("odd".into()))
        );
    }
}
