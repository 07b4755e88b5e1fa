//! One WebSocket session: a graph node of a deployed function. Calls run
//! one at a time, in the order they came (a node's messages do); outputs
//! an actor sends while it runs go out as `output` notifications before
//! the call's response; a bounded queue of calls waits behind the running
//! one, and a call beyond it is answered "busy" at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use reflow_actor::message::Message;
use reflow_actor::{ActorConfig, ActorContext, ActorLoad, MemoryState};
use reflow_host_bridge::convert::to_value;
use reflow_host_bridge::state::json::to_wire_json;
use reflow_host_bridge::ERROR_PORT;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

use super::functions::Session;
use super::rpc::{self, code, Call, Process, RpcError};

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
    let (calls, mut queued) = mpsc::channel::<(Value, Process, usize)>(MAX_QUEUED);
    // Bytes of the calls waiting (their frames' sizes): bounded as well as
    // their number, so 64 frames of 16 MiB cannot wait at once.
    let waiting = Arc::new(AtomicUsize::new(0));
    let session = Arc::new(session);
    let runner = {
        let (session, to_client, waiting) = (session.clone(), to_client.clone(), waiting.clone());
        tokio::spawn(async move {
            while let Some((id, params, size)) = queued.recv().await {
                waiting.fetch_sub(size, Ordering::SeqCst);
                let outcome = call(&session, params, &to_client).await;
                if to_client
                    .send(rpc::result(&id, rpc::execution(outcome)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
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
                        match calls.try_send((id, params, size)) {
                            Ok(()) => None,
                            Err(mpsc::error::TrySendError::Full((id, _, _))) => {
                                waiting.fetch_sub(size, Ordering::SeqCst);
                                busy(&id)
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

/// Runs one `process` call on the session's node: its returned outputs as
/// JSON, or why it failed. Outputs sent while it runs go to `to_client`
/// as notifications.
async fn call(
    session: &Session,
    params: Process,
    to_client: &mpsc::Sender<String>,
) -> Result<Map<String, Value>, String> {
    let function = &session.function;
    if function.removed.load(Ordering::SeqCst) {
        return Err(format!(
            "function {} was undeployed: deploy it again",
            function.name
        ));
    }
    function.invocations.fetch_add(1, Ordering::Relaxed);
    let payload: HashMap<String, Message> = params
        .payload
        .into_iter()
        .map(|(port, v)| (port, Message::from(v)))
        .collect();
    let mut config = ActorConfig::default();
    // The state scope: the client's own names, under the client's name (no
    // client reaches another's state).
    config.node.id = format!(
        "{}/{}/{}",
        function.owner, params.namespace, params.actor_id
    );
    config.node.component = function.component.clone();
    config.config = params.config.into_iter().collect();
    let outports = session.node.get_outports();
    let ctx = ActorContext::new(
        payload,
        outports.clone(),
        Arc::new(parking_lot::Mutex::new(MemoryState::default())),
        config,
        Arc::new(ActorLoad::new(0)),
    );
    let behavior = session.node.get_behavior();
    let mut running = behavior(ctx);
    let mut streamed = Vec::new();
    let result = loop {
        tokio::select! {
            r = &mut running => break r,
            m = outports.1.recv_async() => if let Ok(m) = m { streamed.push(m) },
        }
    };
    streamed.extend(outports.1.try_iter());
    let failure = result.as_ref().err().map(|e| e.to_string());
    let mut unsent = None;
    for packet in streamed {
        for (port, message) in packet {
            // A failure is also put on the error port (for graphs): here it
            // is the call's error instead.
            if port == ERROR_PORT
                && failure.is_some()
                && matches!(&message, Message::Error(e) if Some(e.as_str()) == failure.as_deref())
            {
                continue;
            }
            match wire(&message) {
                Ok(data) => {
                    let note = rpc::output(&params.actor_id, &port, data, now_ms());
                    if to_client.send(note).await.is_err() {
                        return Err("the session closed".into());
                    }
                }
                Err(e) => unsent = Some(format!("output on port {port}: {e}")),
            }
        }
    }
    let outputs = result.map_err(|e| e.to_string())?;
    if let Some(e) = unsent {
        return Err(e);
    }
    let mut out = Map::new();
    for (port, message) in outputs {
        let data = wire(&message).map_err(|e| format!("output on port {port}: {e}"))?;
        out.insert(port, data);
    }
    Ok(out)
}

/// A message as the JSON Reflow's client makes a `Message` from.
fn wire(m: &Message) -> Result<Value, String> {
    let v = to_value(m).map_err(|e| e.to_string())?;
    to_wire_json(&v).map_err(|e| e.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
