//! The state service: actors' `state.get/set/increment/push/pop/expire`,
//! performed by the host in a store the guest never reaches. Keys are
//! `{namespace}:{actor_id}:{key}` with JSON values, as in the documented Redis
//! layout, in an embedded in-process store (the default; it outlives VMs,
//! not the host process) or in Redis. Both follow Redis's semantics, so an
//! actor sees the same behaviour on either: `set` clears a TTL, a list
//! whose last item is popped disappears, `increment` needs an integer, a
//! list is not a string (`WRONGTYPE`), `expire` with a TTL of 0 or less
//! deletes.

mod embedded;
pub mod json;
mod redis_store;

pub use embedded::Embedded;
pub use redis_store::RedisStore;

use reflow_ring::Value;

use json::JsonError;
use reflow_sandbox_core::protocol::{StateOp, StateRequest};

/// Largest JSON text one state value may take.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The actor asked for something malformed (raised in the actor).
    #[error("{0}")]
    BadRequest(String),
    /// The key holds a list where a string is needed, or the reverse.
    #[error("WRONGTYPE: key {0:?} holds a value of another kind")]
    WrongType(String),
    /// A value has no JSON form, or stored text is not JSON.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The operation would take the actor over its quota in the embedded
    /// store (raised in the actor; nothing was stored).
    #[error("state quota: {0}")]
    Quota(String),
    /// The store itself failed (Redis unreachable, ...).
    #[error("state store failed: {0}")]
    Backend(String),
}

/// Whose keys an operation may touch: the host fixes the namespace and the
/// actor; the guest names only the key under them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    prefix: String,
}

impl Scope {
    /// The keys of `actor_id` in `namespace`. `%` and `:` in either are
    /// escaped, so no two scopes share a prefix.
    pub fn new(namespace: &str, actor_id: &str) -> Scope {
        let esc = |s: &str| s.replace('%', "%25").replace(':', "%3A");
        Scope {
            prefix: format!("{}:{}:", esc(namespace), esc(actor_id)),
        }
    }

    /// The store key for the actor's `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// One operation, its arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Reads the key's value.
    Get,
    /// JSON text.
    Set(String),
    /// Adds this amount to the key's integer value.
    Increment(i64),
    /// JSON text.
    Push(String),
    /// Removes and returns the list's first item.
    Pop,
    /// Seconds; 0 or less deletes.
    Expire(i64),
}

impl Op {
    /// Checks a guest's request's arguments.
    pub fn parse(req: &StateRequest) -> Result<Op, StateError> {
        let bad =
            |m: &str| StateError::BadRequest(format!("state {:?} {:?}: {m}", req.op, req.key));
        let json = |v: &Value| -> Result<String, StateError> {
            let text = json::to_json(v)?;
            if text.len() > MAX_VALUE_LEN {
                return Err(bad(&format!(
                    "a {}-byte value is over the {MAX_VALUE_LEN}-byte limit",
                    text.len()
                )));
            }
            Ok(text)
        };
        let int = |v: Option<&Value>, default: Option<i64>| match (v, default) {
            (Some(Value::Int(i)), _) => Ok(*i),
            (None, Some(d)) => Ok(d),
            _ => Err(bad("needs an integer argument")),
        };
        let args = &req.args;
        let (op, most) = match req.op {
            StateOp::Get => (Op::Get, 0),
            StateOp::Set => (
                Op::Set(json(args.first().ok_or_else(|| bad("needs a value"))?)?),
                1,
            ),
            StateOp::Increment => (Op::Increment(int(args.first(), Some(1))?), 1),
            StateOp::Push => (
                Op::Push(json(args.first().ok_or_else(|| bad("needs a value"))?)?),
                1,
            ),
            StateOp::Pop => (Op::Pop, 0),
            StateOp::Expire => (Op::Expire(int(args.first(), None)?), 1),
        };
        if args.len() > most {
            return Err(bad(&format!(
                "takes {most} argument(s), got {}",
                args.len()
            )));
        }
        Ok(op)
    }
}

/// What one actor (one `{namespace}:{actor_id}` scope) may hold in the
/// embedded store, which lives in the host process: keys, and bytes (keys,
/// values' JSON text, 16 per list item). Redis enforces its own limits
/// (`maxmemory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most keys.
    pub max_keys: usize,
    /// Most bytes.
    pub max_bytes: usize,
}

impl Default for Quota {
    /// 100,000 keys and 64 MiB per actor.
    fn default() -> Quota {
        Quota {
            max_keys: 100_000,
            max_bytes: 64 << 20,
        }
    }
}

/// Where state lives.
pub enum StateStore {
    /// The in-process store (outlives VMs, not the host process).
    Embedded(Embedded),
    /// A Redis server.
    Redis(RedisStore),
}

impl StateStore {
    /// The in-process store, each actor's keys within [`Quota::default`].
    pub fn embedded() -> StateStore {
        StateStore::Embedded(Embedded::default())
    }

    /// The in-process store, each actor's keys within `quota`.
    pub fn embedded_with(quota: Quota) -> StateStore {
        StateStore::Embedded(Embedded::with_quota(quota))
    }

    /// Redis at `url` (`redis://host:port/db`), connected now.
    pub async fn redis(url: &str) -> Result<StateStore, StateError> {
        Ok(StateStore::Redis(RedisStore::connect(url).await?))
    }

    /// Performs a guest's request in `scope`; the reply value is what the
    /// actor's call returns.
    pub async fn apply(&self, scope: &Scope, req: &StateRequest) -> Result<Value, StateError> {
        let op = Op::parse(req)?;
        let key = scope.key(&req.key);
        match self {
            StateStore::Embedded(e) => e.apply(&key, op),
            StateStore::Redis(r) => r.apply(&key, op).await,
        }
    }
}
