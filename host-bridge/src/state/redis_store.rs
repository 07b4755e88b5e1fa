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
        let client = redis::Client::open(url)
            .map_err(|e| StateError::Backend(format!("bad Redis URL {url:?}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(CONNECT_RETRIES)
            .set_max_delay(RETRY_MAX_DELAY_MS)
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| StateError::Backend(format!("cannot connect to Redis at {url}: {e}")))?;
        Ok(RedisStore { conn })
    }

    /// Performs `op` on `key`.
    pub async fn apply(&self, key: &str, op: Op) -> Result<Value, StateError> {
        let mut conn = self.conn.clone();
        let error = |e: redis::RedisError| match e.code() {
            Some("WRONGTYPE") => StateError::WrongType(key.to_string()),
            Some("ERR") => StateError::BadRequest(format!("{key:?}: {e}")),
            _ => backend(e),
        };
        let stored = |s: Option<String>| s.map_or(Ok(Value::None), |s| Ok(from_json(&s)?));
        match op {
            Op::Get => {
                let s: Option<String> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .map_err(error)?;
                stored(s)
            }
            Op::Set(json) => {
                let () = redis::cmd("SET")
                    .arg(key)
                    .arg(json)
                    .query_async(&mut conn)
                    .await
                    .map_err(error)?;
                Ok(Value::None)
            }
            Op::Increment(by) => {
                let n: i64 = redis::cmd("INCRBY")
                    .arg(key)
                    .arg(by)
                    .query_async(&mut conn)
                    .await
                    .map_err(error)?;
                Ok(Value::Int(n))
            }
            Op::Push(json) => {
                let n: i64 = redis::cmd("RPUSH")
                    .arg(key)
                    .arg(json)
                    .query_async(&mut conn)
                    .await
                    .map_err(error)?;
                Ok(Value::Int(n))
            }
            Op::Pop => {
                let s: Option<String> = redis::cmd("LPOP")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .map_err(error)?;
                stored(s)
            }
            Op::Expire(secs) => {
                let existed: bool = redis::cmd("EXPIRE")
                    .arg(key)
                    .arg(secs)
                    .query_async(&mut conn)
                    .await
                    .map_err(error)?;
                Ok(Value::Bool(existed))
            }
        }
    }
}
