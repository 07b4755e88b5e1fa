//! The REST half of a sandbox host, as Reflow 0.2.1's `DynASBClient`
//! calls it: deploy, status, list, undeploy, and an unauthenticated
//! health check. Every answer is JSON; every refusal is
//! `{"success": false, "error": "..."}` with a 4xx status (the shape the
//! client parses a deploy answer as, whatever its status).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{json, Value};

use super::functions::{DeployError, DeployRequest, Function};
use super::Server;

/// An answer: a status and a JSON body.
pub type Answer = (StatusCode, Value);

/// A refusal.
pub fn refuse(status: StatusCode, why: impl std::fmt::Display) -> Answer {
    (status, json!({"success": false, "error": why.to_string()}))
}

/// `GET /health`: up, how full, and its capacity.
pub fn health(server: &Server) -> Answer {
    let (functions, sessions) = server.functions.totals();
    let (live_vms, max_vms) = server.vms();
    (
        StatusCode::OK,
        json!({
            "status": "ok",
            "functions": functions,
            "sessions": sessions,
            "busy_vms": server.bridge.busy(),
            "live_vms": live_vms,
            "max_vms": max_vms,
            "runtimes": server.runtimes(),
        }),
    )
}

/// `POST /api/v1/functions` with `body`.
pub async fn deploy(server: &Arc<Server>, client: Arc<str>, body: &[u8]) -> Answer {
    let req: DeployRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("the deploy request: {e}")),
    };
    let s = server.clone();
    let deployed =
        tokio::task::spawn_blocking(move || s.functions.deploy(&s.bridge, &client, req)).await;
    match deployed {
        Ok(Ok(f)) => (
            StatusCode::OK,
            json!({
                "success": true,
                "function_id": f.id,
                "vm_id": null,
                "endpoint": format!("/ws/{}", f.id),
                "deployment_time_ms": f.deploy_time.as_millis() as u64,
                "inports": f.inports,
                "outports": f.outports,
            }),
        ),
        Ok(Err(e @ DeployError::TooMany { .. })) => refuse(StatusCode::TOO_MANY_REQUESTS, e),
        Ok(Err(e)) => refuse(StatusCode::BAD_REQUEST, e),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the deploy failed: {e}"),
        ),
    }
}

/// A function's status. Reflow's client reads it in camelCase (`vmId`,
/// `invocationCount`) and needs `vmId` to be a string; the snake_case
/// names are there too for other clients.
pub fn status(f: &Function) -> Value {
    let calls = f.invocations.load(Ordering::Relaxed);
    json!({
        "id": f.id,
        "name": f.name,
        "runtime": f.runtime.to_string(),
        "handler": f.handler,
        "component": f.component,
        "state": if f.removed.load(Ordering::SeqCst) { "stopped" } else { "ready" },
        "vmId": "",
        "vm_id": "",
        "invocationCount": calls,
        "invocation_count": calls,
        "inports": f.inports,
        "outports": f.outports,
    })
}

/// `GET /api/v1/functions`: the client's functions.
pub fn list(server: &Server, client: &str) -> Answer {
    let all: Vec<Value> = server
        .functions
        .list(client)
        .iter()
        .map(|f| status(f))
        .collect();
    (StatusCode::OK, json!({"functions": all}))
}

/// `GET /api/v1/functions/{id}`.
pub fn get(server: &Server, client: &str, id: &str) -> Answer {
    match server.functions.get(client, id) {
        Some(f) => (StatusCode::OK, status(&f)),
        None => refuse(StatusCode::NOT_FOUND, "no such function"),
    }
}

/// `POST /api/v1/functions/{id}/undeploy` or `DELETE /api/v1/functions/{id}`.
pub fn undeploy(server: &Server, client: &str, id: &str) -> Answer {
    match server.functions.undeploy(client, id) {
        Some(_) => (StatusCode::OK, json!({"success": true})),
        None => refuse(StatusCode::NOT_FOUND, "no such function"),
    }
}
