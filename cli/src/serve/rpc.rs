//! JSON-RPC 2.0 as Reflow 0.2.1's `WebSocketRpcClient` speaks it: requests
//! read and checked (every field bounded, every mistake answered with the
//! standard error codes), responses and notifications written.

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// JSON-RPC's error codes.
pub mod code {
    pub const PARSE: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const NO_METHOD: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    /// Server-defined: the session's queue of calls is full.
    pub const BUSY: i32 = -32000;
}

/// Longest `actor_id` or `namespace` a call may name (they become part of
/// state keys).
pub const MAX_NAME_LEN: usize = 128;

/// A JSON-RPC error to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

/// A `process` call's parameters (Reflow's `ScriptActorContext`; the
/// `redis_url` it carries is ignored: a host keeps state in its own store
/// and never connects where a client points it).
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// Inputs by port.
    pub payload: Map<String, Value>,
    /// The node's config.
    pub config: Map<String, Value>,
    /// Whose state: the namespace and actor the client names.
    pub namespace: String,
    pub actor_id: String,
}

/// A request read from a text frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `process`, to be answered with `id`.
    Process { id: Value, params: Process },
}

/// Reads one text frame: a call, or the error to answer it with (and the
/// id to answer, `null` where there is none).
pub fn read(text: &str) -> Result<Call, (Value, RpcError)> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        (
            Value::Null,
            RpcError::new(code::PARSE, format!("not JSON: {e}")),
        )
    })?;
    let Value::Object(mut req) = v else {
        let what = if v.is_array() {
            "batches are not supported: send one request per frame"
        } else {
            "a request is a JSON object"
        };
        return Err((Value::Null, RpcError::new(code::INVALID_REQUEST, what)));
    };
    let id = req.remove("id").unwrap_or(Value::Null);
    let invalid = |m: &str| (id.clone(), RpcError::new(code::INVALID_REQUEST, m));
    if !matches!(id, Value::String(_) | Value::Number(_) | Value::Null) {
        return Err((
            Value::Null,
            RpcError::new(code::INVALID_REQUEST, "id must be a string or a number"),
        ));
    }
    if req.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(invalid("jsonrpc must be \"2.0\""));
    }
    let method = match req.get("method") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(invalid("method must be a string")),
    };
    if method != "process" {
        return Err((
            id,
            RpcError::new(
                code::NO_METHOD,
                format!("no method {method:?}: this host answers \"process\""),
            ),
        ));
    }
    if id.is_null() {
        return Err(invalid("process is a call: it needs an id"));
    }
    let params = req.remove("params").unwrap_or(Value::Null);
    match process(params) {
        Ok(params) => Ok(Call::Process { id, params }),
        Err(m) => Err((id, RpcError::new(code::INVALID_PARAMS, m))),
    }
}

#[derive(Deserialize)]
struct RawProcess {
    payload: Value,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    state: Option<RawState>,
    #[serde(default)]
    actor_id: Option<String>,
}

#[derive(Deserialize)]
struct RawState {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    actor_id: Option<String>,
}

fn process(params: Value) -> Result<Process, String> {
    let raw: RawProcess =
        serde_json::from_value(params).map_err(|e| format!("process params: {e}"))?;
    let Value::Object(payload) = raw.payload else {
        return Err("payload must be an object of inputs by port".into());
    };
    let config = match raw.config {
        Value::Object(c) => c,
        Value::Null => Map::new(),
        _ => return Err("config must be an object".into()),
    };
    let (namespace, state_actor) = match raw.state {
        Some(s) => (s.namespace, s.actor_id),
        None => (None, None),
    };
    let namespace = namespace.unwrap_or_else(|| "default".into());
    let actor_id = state_actor
        .or(raw.actor_id)
        .unwrap_or_else(|| "default".into());
    for (what, s) in [("namespace", &namespace), ("actor_id", &actor_id)] {
        let ok = (1..=MAX_NAME_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(format!(
                "state.{what} {s:?}: 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 - _ ."
            ));
        }
    }
    Ok(Process {
        payload,
        config,
        namespace,
        actor_id,
    })
}

/// A response carrying `result`.
pub fn result(id: &Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

/// A response carrying `error`.
pub fn error(id: &Value, error: &RpcError) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": error.code, "message": error.message},
    })
    .to_string()
}

/// The `output` notification of an output sent while a call runs
/// (Reflow's `ScriptOutput`).
pub fn output(actor_id: &str, port: &str, data: Value, timestamp: u64) -> String {
    json!({
        "jsonrpc": "2.0",
        "method": "output",
        "params": {"actor_id": actor_id, "port": port, "data": data, "timestamp": timestamp},
    })
    .to_string()
}

/// A call's result (Reflow's `ScriptExecutionResult`): its returned
/// outputs, or its error. `error` is left out on success: Reflow's client
/// takes any `error` key, even `null`, as a failure.
pub fn execution(outcome: Result<Map<String, Value>, String>) -> Value {
    match outcome {
        Ok(outputs) => json!({"outputs": outputs}),
        Err(e) => json!({"outputs": null, "error": e}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (Value, i32, String) {
        let (id, e) = read(text).unwrap_err();
        (id, e.code, e.message)
    }

    #[test]
    fn reflows_request_reads() {
        let text = r#"{"jsonrpc":"2.0","id":"a1","method":"process","params":{
            "payload":{"in":{"x":1}},"config":{},"state":{"namespace":"default",
            "actor_id":"Scale","redis_url":"redis://elsewhere"},"actor_id":"Scale",
            "timestamp":1}}"#;
        let Call::Process { id, params } = read(text).unwrap();
        assert_eq!(id, json!("a1"));
        assert_eq!(params.payload["in"], json!({"x": 1}));
        assert_eq!(
            (params.namespace.as_str(), params.actor_id.as_str()),
            ("default", "Scale")
        );
    }

    #[test]
    fn mistakes_get_standard_codes() {
        assert_eq!(err("{").1, code::PARSE);
        assert_eq!(
            err("[]").2,
            "batches are not supported: send one request per frame"
        );
        assert_eq!(err("3").1, code::INVALID_REQUEST);
        let no_version = r#"{"id":1,"method":"process","params":{"payload":{}}}"#;
        assert_eq!(
            err(no_version),
            (
                json!(1),
                code::INVALID_REQUEST,
                "jsonrpc must be \"2.0\"".into()
            )
        );
        let other = r#"{"jsonrpc":"2.0","id":2,"method":"eval","params":{}}"#;
        assert_eq!(err(other).1, code::NO_METHOD);
        let no_id = r#"{"jsonrpc":"2.0","method":"process","params":{"payload":{}}}"#;
        assert_eq!(err(no_id).1, code::INVALID_REQUEST);
        let bad_id = r#"{"jsonrpc":"2.0","id":{},"method":"process"}"#;
        assert_eq!(err(bad_id).0, Value::Null);
        let no_payload = r#"{"jsonrpc":"2.0","id":3,"method":"process","params":{}}"#;
        assert_eq!(err(no_payload).1, code::INVALID_PARAMS);
        let list = r#"{"jsonrpc":"2.0","id":3,"method":"process","params":{"payload":[]}}"#;
        assert_eq!(err(list).1, code::INVALID_PARAMS);
        let key = r#"{"jsonrpc":"2.0","id":3,"method":"process","params":{"payload":{},
            "state":{"namespace":"a:b","actor_id":"x"}}}"#;
        assert!(err(key).2.contains("state.namespace \"a:b\""));
    }

    #[test]
    fn success_has_no_error_key() {
        let ok = execution(Ok(Map::new()));
        assert!(ok.get("error").is_none());
        assert_eq!(execution(Err("boom".into()))["error"], json!("boom"));
    }
}
