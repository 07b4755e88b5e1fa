//! The Redis store: each operation is one command on a shared, reconnecting
//! connection (redis-rs's `ConnectionManager`): GET, SET, INCRBY, RPUSH,
//! LPOP, EXPIRE.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use reflow_ring::Value;

use super::json::from_json;
use super::{Op, StateError};

/// Connection attempts after the first fails (each waits longer, at most
/// `RETRY_MAX_DELAY_MS`), and how long one attempt may take.
const CONNECT_RETRIES: usize = 2;
const RETRY_MAX_DELAY_MS: u64 = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A command without an answer in this long fails (the actor sees an
/// error; the connection is re-established for the next one).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis connection for state.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
}

fn backend(e: redis::RedisError) -> StateError {
    StateError::Backend(e.to_string())
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`).
    pub async fn connect(url: &str) -> Result<RedisStore, StateError> {
        // The URL may carry a password: errors show it redacted.
        let shown = reflow_workspace::redact::redact_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| StateError::Backend(format!("bad Redis URL {shown:?}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(RETRY_MAX_DELAY_MS)
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| StateError::Backend(format!("cannot connect to Redis at {shown}: {e}")))?;
        Ok(RedisStore { conn })
    }

    /// Performs `op` on `key`.
    pub async fn apply(&self, key: &str, op: Op) -> Result<Value, StateError> {
        let stored = |s: Option<String>| s.map_or(Ok(Value::None), |s| Ok(from_json(&s)?));
        let cmd = |name: &str| {
            let mut c = redis::cmd(name);
            c.arg(key);
            c
        };
        match op {
            Op::Get => stored(self.query(key, &cmd("GET")).await?),
            Op::Set(json) => {
                let () = self.query(key, cmd("SET").arg(json)).await?;
                Ok(Value::None)
            }
            Op::Increment(by) => Ok(Value::Int(self.query(key, cmd("INCRBY").arg(by)).await?)),
            Op::Push(json) => Ok(Value::Int(self.query(key, cmd("RPUSH").arg(json)).await?)),
            Op::Pop => stored(self.query(key, &cmd("LPOP")).await?),
            Op::Expire(secs) => Ok(Value::Bool(self.query(key, cmd("EXPIRE").arg(secs)).await?)),
        }
    }

    /// Runs one command about `key`; Redis's errors become the actor's
    /// (`WRONGTYPE`, `ERR`: a bad request) or the store's (anything else).
    async fn query<T: redis::FromRedisValue>(
        &self,
        key: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, StateError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| match e.code() {
                Some("WRONGTYPE") => StateError::WrongType(key.to_string()),
                Some("ERR") => StateError::BadRequest(format!("{key:?}: {e}")),
                _ => backend(e),
            })
    }
}
