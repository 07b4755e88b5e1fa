//! Driving a worker's actors from a test: values, one tokio runtime for
//! the state stores, and invocations with state in a store.

use std::sync::OnceLock;

use reflow_host_bridge::state::{Scope, StateStore};
use reflow_host_bridge::{StoreHandler, WorkerClient, WorkerError};
use reflow_ring::Value;

use crate::LIMIT;

/// A map value from `(key, value)` pairs.
pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// The entry `key` of a map value.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

/// A string value's text, or the value's debug form.
pub fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Str(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// One runtime for the state stores of every test in a binary.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().expect("a tokio runtime"))
}

/// Invokes `actor` with its state in `store` (scoped to the actor) and
/// returns its streamed outputs and returned map.
pub fn invoke(
    c: &mut WorkerClient<'_>,
    store: &StateStore,
    actor: &str,
    inputs: Value,
    config: Value,
) -> Result<(Vec<(String, Value)>, Value), WorkerError> {
    let scope = Scope::new("test", actor);
    let mut outputs = Vec::new();
    let mut handler = StoreHandler {
        store,
        scope: &scope,
        runtime: runtime().handle(),
        on_output: |port: &str, value: Value| outputs.push((port.to_string(), value)),
    };
    let done = c.invoke(actor, inputs, config, LIMIT, &mut handler)?;
    Ok((outputs, done))
}
