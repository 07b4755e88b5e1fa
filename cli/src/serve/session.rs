//! One WebSocket session: a graph node of a deployed function. Calls wait
//! in a bounded queue (a call beyond it is answered "busy" at once) and
//! stream through the node's VM ([`super::calls`]): run one at a time, in
//! the order they came, as a node's messages are; outputs an actor sends
//! while it runs go out as `output` notifications before the call's
//! response.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

use super::calls::Queued;
use super::functions::Session;
use super::rpc::{self, code, Call, RpcError};

/// Calls that may wait behind the running one.
pub const MAX_QUEUED: usize = 64;
/// Bytes (of their frames) the waiting calls may hold in all: one frame of
/// the largest size may always wait.
pub const MAX_WAITING_BYTES: usize = 32 << 20;
/// How long a frame may wait for the client to take it.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `ws` as `session` until the client closes it (or breaks it).
pub async fn run<S>(ws: WebSocketStream<S>, session: Session)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (to_client, mut outgoing) = mpsc::channel::<String>(MAX_QUEUED);
    let writer = tokio::spawn(async move {
        while let Some(text) = outgoing.recv().await {
            // A client that stops reading gets WRITE_TIMEOUT to drain, then
            // its session ends (its VM and session slot go back).
            match tokio::time::timeout(WRITE_TIMEOUT, sink.send(Frame::text(text))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::info!("serve: a session's client stopped reading; ending it");
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });
    let (calls, queued) = mpsc::channel::<Queued>(MAX_QUEUED);
    // Bytes of the calls waiting (their frames' sizes): bounded as well as
    // their number, so 64 frames of 16 MiB cannot wait at once.
    let waiting = Arc::new(AtomicUsize::new(0));
    let session = Arc::new(session);
    let runner = tokio::spawn(super::calls::run(
        session.clone(),
        queued,
        to_client.clone(),
        waiting.clone(),
    ));
    let fid = session.function.short_id().to_string();
    while let Some(frame) = stream.next().await {
        let reply = match frame {
            Ok(Frame::Text(text)) => match rpc::read(text.as_str()) {
                Ok(Call::Process { id, params }) => {
                    let size = text.len();
                    let busy = |id: &Value| {
                        Some(rpc::error(
                            id,
                            &RpcError::new(
                                code::BUSY,
                                format!(
                                    "this session's queue is full ({MAX_QUEUED} calls or \
                                     {MAX_WAITING_BYTES} bytes wait behind the running one)"
                                ),
                            ),
                        ))
                    };
                    if waiting.fetch_add(size, Ordering::SeqCst) + size > MAX_WAITING_BYTES {
                        waiting.fetch_sub(size, Ordering::SeqCst);
                        busy(&id)
                    } else {
                        match calls.try_send(Queued { id, params, size }) {
                            Ok(()) => None,
                            Err(mpsc::error::TrySendError::Full(q)) => {
                                waiting.fetch_sub(size, Ordering::SeqCst);
                                busy(&q.id)
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        }
                    }
                }
                Err((id, e)) => Some(rpc::error(&id, &e)),
            },
            Ok(Frame::Binary(_)) => Some(rpc::error(
                &Value::Null,
                &RpcError::new(
                    code::INVALID_REQUEST,
                    "binary frames are not JSON-RPC: send text",
                ),
            )),
            Ok(Frame::Close(_)) => break,
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(function = %fid, error = %e, "session ended badly");
                break;
            }
        };
        if let Some(reply) = reply {
            if to_client.send(reply).await.is_err() {
                break;
            }
        }
    }
    drop(calls);
    let _ = runner.await;
    drop(to_client);
    let _ = writer.await;
}
