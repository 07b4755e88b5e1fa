//! The HTTP side of a sandbox host (hyper, HTTP/1.1): routes, bounded
//! request bodies, authentication, and the upgrade of `/ws/{id}` to a
//! WebSocket session.
//!
//! Routes (all but `/health` need a client's token):
//! - `GET /health`
//! - `POST /api/v1/functions` (deploy), `GET /api/v1/functions` (list)
//! - `GET /api/v1/functions/{id}`, `DELETE /api/v1/functions/{id}`,
//!   `POST /api/v1/functions/{id}/undeploy`
//! - `GET /ws/{id}`: the JSON-RPC session. The function id is the
//!   capability (Reflow's `WebSocketRpcClient` sends no headers); a token
//!   sent anyway must be the owner's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::api::{self, refuse, Answer};
use super::auth::AuthError;
use super::Server;

/// Largest request body (a deploy's code is at most 256 KiB).
pub const MAX_BODY: usize = 1 << 20;
/// Most of a too-large body read (and dropped) before the connection is
/// cut.
const MAX_DRAIN: usize = 16 << 20;
/// Largest WebSocket message (a call's inputs; the shared region carries
/// 16 MiB each way).
pub const MAX_FRAME: usize = 16 << 20;
/// Time a client has to send a request's head, and its body.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one connection (plain TCP or TLS) until it closes.
pub async fn connection<S>(server: Arc<Server>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(route(server, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "serve: a connection ended badly");
    }
}

async fn route(server: Arc<Server>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    if let ["ws", id] = parts.as_slice() {
        return websocket(server, req, id.to_string());
    }
    if parts == ["health"] {
        return reply(api::health(&server));
    }
    let client = match &server.tokens {
        Some(tokens) => match tokens.check(req.headers()) {
            Ok(c) => c,
            Err(e) => return unauthorized(&e),
        },
        None => Arc::from("anonymous"),
    };
    let answer = match (method, parts.as_slice()) {
        (Method::POST, ["api", "v1", "functions"]) => match body(req).await {
            Ok(b) => api::deploy(&server, client, &b).await,
            Err(a) => a,
        },
        (Method::GET, ["api", "v1", "functions"]) => api::list(&server, &client),
        (Method::GET, ["api", "v1", "functions", id]) => api::get(&server, &client, id),
        (Method::DELETE, ["api", "v1", "functions", id])
        | (Method::POST, ["api", "v1", "functions", id, "undeploy"]) => {
            api::undeploy(&server, &client, id)
        }
        (_, ["api", "v1", "functions", ..]) => {
            refuse(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        _ => refuse(
            StatusCode::NOT_FOUND,
            "not found: the API is at /api/v1/functions, sessions at /ws/{function_id}",
        ),
    };
    reply(answer)
}

/// A request's body, at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
/// A larger one is read to its end (up to [`MAX_DRAIN`], kept nowhere) so
/// that the client, still sending, gets its 413 rather than a reset
/// connection.
async fn body(req: Request<Incoming>) -> Result<Bytes, Answer> {
    let mut body = req.into_body();
    let read = async {
        let mut kept = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY {
                kept.extend_from_slice(&data);
            } else if seen > MAX_DRAIN {
                break;
            }
        }
        if seen > MAX_BODY {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY} bytes"),
            ));
        }
        Ok(Bytes::from(kept))
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(read) => read,
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
        )),
    }
}

fn reply((status, value): Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn unauthorized(e: &AuthError) -> Response<Full<Bytes>> {
    let mut r = reply(refuse(StatusCode::UNAUTHORIZED, e));
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// `GET /ws/{id}`: checks the handshake and the function, answers 101 and
/// runs the session on the upgraded connection.
fn websocket(server: Arc<Server>, mut req: Request<Incoming>, id: String) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let is_upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec());
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let (true, Some(key), true, &Method::GET) = (is_upgrade, key, version_ok, req.method()) else {
        return reply(refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake (GET, Upgrade: websocket, version 13) is expected here",
        ));
    };
    if let (Some(tokens), Some(_)) = (&server.tokens, headers.get(hyper::header::AUTHORIZATION)) {
        let owner = server.functions.by_id(&id).map(|f| f.owner.clone());
        match tokens.check(headers) {
            Ok(c) if Some(&c) == owner.as_ref() || owner.is_none() => {}
            Ok(_) => return reply(refuse(StatusCode::NOT_FOUND, "no such function")),
            Err(e) => return unauthorized(&e),
        }
    }
    let session = match server.functions.open(&id) {
        Ok(s) => s,
        Err(e @ super::functions::SessionError::Unknown) => {
            return reply(refuse(StatusCode::NOT_FOUND, e))
        }
        Err(e) => return reply(refuse(StatusCode::TOO_MANY_REQUESTS, e)),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_FRAME))
                    .max_frame_size(Some(MAX_FRAME));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                super::session::run(ws, session).await;
            }
            Err(e) => tracing::debug!(error = %e, "serve: a WebSocket upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert("sec-websocket-accept", accept);
    }
    r
}
