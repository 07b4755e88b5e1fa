//! The embedded store: a map in this process, with Redis's semantics for
//! the six operations (see the module docs of `state`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reflow_ring::Value;

use super::json::from_json;
use super::{Op, StateError};

/// Operations between sweeps of expired keys.
const SWEEP_EVERY: u64 = 1024;

enum Data {
    Str(String),
    List(VecDeque<String>),
}

struct Entry {
    data: Data,
    expires: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    ops: u64,
}

/// An in-process key-value store.
#[derive(Default)]
pub struct Embedded {
    inner: Mutex<Inner>,
}

impl Embedded {
    /// Performs `op` on `key`.
    pub fn apply(&self, key: &str, op: Op) -> Result<Value, StateError> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        inner.ops += 1;
        if inner.ops.is_multiple_of(SWEEP_EVERY) {
            inner.map.retain(|_, e| e.expires.is_none_or(|t| t > now));
        }
        let map = &mut inner.map;
        if map
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
        {
            map.remove(key);
        }
        let wrong = || StateError::WrongType(key.to_string());
        match op {
            Op::Get => match map.get(key).map(|e| &e.data) {
                None => Ok(Value::None),
                Some(Data::Str(s)) => Ok(from_json(s)?),
                Some(Data::List(_)) => Err(wrong()),
            },
            Op::Set(json) => {
                map.insert(
                    key.to_string(),
                    Entry {
                        data: Data::Str(json),
                        expires: None,
                    },
                );
                Ok(Value::None)
            }
            Op::Increment(by) => {
                let entry = map.entry(key.to_string()).or_insert(Entry {
                    data: Data::Str("0".into()),
                    expires: None,
                });
                let Data::Str(s) = &mut entry.data else {
                    return Err(wrong());
                };
                let n = s
                    .parse::<i64>()
                    .ok()
                    .and_then(|n| n.checked_add(by))
                    .ok_or_else(|| {
                        StateError::BadRequest(format!(
                            "increment {key:?}: the value is not an integer or would overflow"
                        ))
                    })?;
                *s = n.to_string();
                Ok(Value::Int(n))
            }
            Op::Push(json) => {
                let entry = map.entry(key.to_string()).or_insert(Entry {
                    data: Data::List(VecDeque::new()),
                    expires: None,
                });
                let Data::List(list) = &mut entry.data else {
                    return Err(wrong());
                };
                list.push_back(json);
                Ok(Value::Int(list.len() as i64))
            }
            Op::Pop => {
                let Some(entry) = map.get_mut(key) else {
                    return Ok(Value::None);
                };
                let Data::List(list) = &mut entry.data else {
                    return Err(wrong());
                };
                let item = list.pop_front();
                if list.is_empty() {
                    map.remove(key);
                }
                item.map_or(Ok(Value::None), |s| Ok(from_json(&s)?))
            }
            Op::Expire(secs) => {
                let Some(entry) = map.get_mut(key) else {
                    return Ok(Value::Bool(false));
                };
                if secs <= 0 {
                    map.remove(key);
                } else {
                    entry.expires = now.checked_add(Duration::from_secs(secs as u64));
                }
                Ok(Value::Bool(true))
            }
        }
    }
}
