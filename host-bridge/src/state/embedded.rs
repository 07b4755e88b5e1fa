//! The embedded store: a map in this process, with Redis's semantics for
//! the six operations (see the module docs of `state`), and a [`Quota`] per
//! actor: the store lives in the host process, so a guest must not be able
//! to grow it without bound.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reflow_ring::Value;

use super::json::from_json;
use super::{Op, Quota, StateError};

/// Operations between sweeps of expired keys.
const SWEEP_EVERY: u64 = 1024;

/// Bytes a list item is charged beyond its text (so a million empty items
/// are not free).
const ITEM_OVERHEAD: usize = 16;

/// Bytes charged for an integer an `increment` may write (the longest
/// `i64` in decimal).
const INT_TEXT: usize = 20;

enum Data {
    Str(String),
    List(VecDeque<String>),
}

struct Entry {
    data: Data,
    expires: Option<Instant>,
    /// What the entry is charged: its key, its text, [`ITEM_OVERHEAD`] per
    /// list item.
    bytes: usize,
}

/// What one actor's keys take.
#[derive(Default, Clone, Copy)]
struct Usage {
    keys: usize,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Per actor scope (the key's prefix up to its second `:`).
    usage: HashMap<String, Usage>,
    ops: u64,
}

/// An in-process key-value store.
#[derive(Default)]
pub struct Embedded {
    inner: Mutex<Inner>,
    quota: Quota,
}

/// The scope part of a store key: up to and including its second `:`
/// (namespace and actor escape theirs; see `Scope`).
fn scope_of(key: &str) -> &str {
    let mut colons = key.match_indices(':').map(|(i, _)| i);
    match colons.nth(1) {
        Some(i) => &key[..=i],
        None => key,
    }
}

impl Inner {
    /// Accounts for `key`'s entry changing from `old` bytes (`None`: it
    /// did not exist) to what it is now.
    fn account(&mut self, key: &str, old: Option<usize>) {
        let new = self.map.get(key).map(|e| e.bytes);
        if old == new {
            return;
        }
        let scope = scope_of(key);
        let usage = self.usage.entry(scope.to_string()).or_default();
        usage.bytes = usage.bytes - old.unwrap_or(0) + new.unwrap_or(0);
        usage.keys = usage.keys - usize::from(old.is_some()) + usize::from(new.is_some());
        if usage.keys == 0 {
            self.usage.remove(scope);
        }
    }

    /// Removes `key`'s entry, accounting for it.
    fn remove(&mut self, key: &str) {
        let old = self.map.get(key).map(|e| e.bytes);
        self.map.remove(key);
        self.account(key, old);
    }

    /// Removes every expired entry.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .map
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }
}

impl Embedded {
    /// An empty store whose actors may each hold what `quota` allows.
    pub fn with_quota(quota: Quota) -> Embedded {
        Embedded {
            inner: Mutex::default(),
            quota,
        }
    }

    /// Performs `op` on `key`.
    pub fn apply(&self, key: &str, op: Op) -> Result<Value, StateError> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        inner.ops += 1;
        if inner.ops.is_multiple_of(SWEEP_EVERY) {
            inner.sweep(now);
        }
        if inner
            .map
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
        {
            inner.remove(key);
        }
        let old = inner.map.get(key).map(|e| e.bytes);
        self.check_quota(&inner, key, &op, old)?;
        let result = apply_op(&mut inner.map, key, op, now);
        inner.account(key, old);
        result
    }

    /// Refuses an operation that would take `key`'s actor over its quota
    /// (one that shrinks what the actor holds is always allowed).
    fn check_quota(
        &self,
        inner: &Inner,
        key: &str,
        op: &Op,
        old: Option<usize>,
    ) -> Result<(), StateError> {
        let new = match op {
            Op::Set(json) => key.len() + json.len(),
            Op::Push(json) => old.unwrap_or(key.len()) + json.len() + ITEM_OVERHEAD,
            Op::Increment(_) => key.len() + INT_TEXT,
            Op::Get | Op::Pop | Op::Expire(_) => return Ok(()),
        };
        let usage = inner.usage.get(scope_of(key)).copied().unwrap_or_default();
        let keys = usage.keys + usize::from(old.is_none());
        let bytes = usage.bytes - old.unwrap_or(0) + new;
        if bytes > usage.bytes && bytes > self.quota.max_bytes {
            return Err(StateError::Quota(format!(
                "the actor's state would take {bytes} bytes, over its {}-byte quota; nothing was \
                 stored",
                self.quota.max_bytes
            )));
        }
        if keys > usage.keys && keys > self.quota.max_keys {
            return Err(StateError::Quota(format!(
                "the actor already holds {} keys, its quota; nothing was stored",
                self.quota.max_keys
            )));
        }
        Ok(())
    }
}

/// Performs `op` on `key` in `map` (expired entries already removed).
fn apply_op(
    map: &mut HashMap<String, Entry>,
    key: &str,
    op: Op,
    now: Instant,
) -> Result<Value, StateError> {
    {
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
                        bytes: key.len() + json.len(),
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
                    bytes: key.len() + 1,
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
                entry.bytes = key.len() + s.len();
                Ok(Value::Int(n))
            }
            Op::Push(json) => {
                let entry = map.entry(key.to_string()).or_insert(Entry {
                    data: Data::List(VecDeque::new()),
                    expires: None,
                    bytes: key.len(),
                });
                let Data::List(list) = &mut entry.data else {
                    return Err(wrong());
                };
                entry.bytes += json.len() + ITEM_OVERHEAD;
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
                if let Some(i) = &item {
                    entry.bytes -= i.len() + ITEM_OVERHEAD;
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Scope;

    fn store(max_keys: usize, max_bytes: usize) -> Embedded {
        Embedded::with_quota(Quota {
            max_keys,
            max_bytes,
        })
    }

    fn usage(e: &Embedded, scope: &Scope) -> (usize, usize) {
        let inner = e.inner.lock();
        let u = inner
            .usage
            .get(scope_of(&scope.key("k")))
            .copied()
            .unwrap_or_default();
        (u.keys, u.bytes)
    }

    fn quota_error(r: Result<Value, StateError>) -> String {
        match r {
            Err(StateError::Quota(m)) => m,
            other => panic!("expected a quota error, got {other:?}"),
        }
    }

    #[test]
    fn an_actor_cannot_hold_more_keys_than_its_quota() {
        let e = store(3, 1 << 20);
        let a = Scope::new("ns", "a");
        for k in ["k1", "k2", "k3"] {
            e.apply(&a.key(k), Op::Set("1".into())).unwrap();
        }
        let m = quota_error(e.apply(&a.key("k4"), Op::Push("1".into())));
        assert!(m.contains("3 keys"), "{m}");
        assert!(e.apply(&a.key("k4"), Op::Get).unwrap() == Value::None);
        // Overwriting an existing key is no new key; another actor has its
        // own quota; deleting one makes room.
        e.apply(&a.key("k1"), Op::Set("2".into())).unwrap();
        e.apply(&Scope::new("ns", "b").key("k4"), Op::Set("1".into()))
            .unwrap();
        e.apply(&a.key("k1"), Op::Expire(0)).unwrap();
        e.apply(&a.key("k4"), Op::Increment(1)).unwrap();
        assert_eq!(usage(&e, &a).0, 3);
    }

    #[test]
    fn an_actor_cannot_hold_more_bytes_than_its_quota() {
        let e = store(1000, 1000);
        let a = Scope::new("ns", "a");
        let big = format!("\"{}\"", "x".repeat(600));
        e.apply(&a.key("s"), Op::Set(big.clone())).unwrap();
        let m = quota_error(e.apply(&a.key("t"), Op::Set(big.clone())));
        assert!(m.contains("1000-byte quota"), "{m}");
        // Pushing item after item runs into the same wall.
        let mut pushed = 0;
        while e
            .apply(&a.key("l"), Op::Push("\"0123456789\"".into()))
            .is_ok()
        {
            pushed += 1;
            assert!(pushed < 1000, "the quota never applied");
        }
        let (_, bytes) = usage(&e, &a);
        assert!(bytes <= 1000, "{bytes}");
        // Shrinking is always allowed, and frees room.
        e.apply(&a.key("s"), Op::Set("1".into())).unwrap();
        e.apply(&a.key("t"), Op::Set(big)).unwrap();
    }

    #[test]
    fn usage_follows_pops_expiry_and_sweeps() {
        let e = store(10, 10_000);
        let a = Scope::new("ns", "a");
        for _ in 0..3 {
            e.apply(&a.key("l"), Op::Push("\"ab\"".into())).unwrap();
        }
        let l = a.key("l");
        assert_eq!(usage(&e, &a), (1, l.len() + 3 * (4 + ITEM_OVERHEAD)));
        e.apply(&l, Op::Pop).unwrap();
        assert_eq!(usage(&e, &a), (1, l.len() + 2 * (4 + ITEM_OVERHEAD)));
        e.apply(&l, Op::Pop).unwrap();
        e.apply(&l, Op::Pop).unwrap();
        assert_eq!(usage(&e, &a), (0, 0));
        e.apply(&a.key("n"), Op::Increment(12345)).unwrap();
        assert_eq!(usage(&e, &a), (1, a.key("n").len() + 5));
        // An expired key is given back by the sweep.
        e.inner.lock().map.get_mut(&a.key("n")).unwrap().expires = Some(Instant::now());
        e.inner
            .lock()
            .sweep(Instant::now() + Duration::from_millis(1));
        assert_eq!(usage(&e, &a), (0, 0));
    }

    #[test]
    fn the_scope_of_a_key_is_its_namespace_and_actor() {
        let s = Scope::new("n:s", "a%b");
        assert_eq!(scope_of(&s.key("x:y")), "n%3As:a%25b:");
    }
}
