//! One graph node on a sandbox host: its session (a WebSocket to the
//! function its script is deployed as) and its messages, one at a time.
//!
//! A message is answered exactly once. Before it is sent, a host that
//! cannot be reached is skipped for the next one; once it is sent, a host
//! lost before answering (the connection breaks, or no answer within the
//! message's timeout and a grace period) answers it with an error naming
//! the host, and the node moves to another host for its next message
//! (state follows when the hosts share a Redis store).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reflow_actor::message::Message;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::hosts::{RemoteHosts, CONNECT_TIMEOUT};
use reflow_sandbox_core::Script;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Time past a message's own timeout before its host counts as lost.
const GRACE: Duration = Duration::from_secs(30);

/// An open session on a host.
struct Session {
    host: usize,
    ws: Ws,
    next_id: u64,
}

/// What one message gave.
pub(crate) struct Answer {
    /// Outputs sent while it ran, each as it came.
    pub streamed: Vec<(String, Message)>,
    /// Its returned outputs, or why it failed.
    pub result: Result<HashMap<String, Message>, String>,
}

/// A node's connection to its host.
pub(crate) struct RemoteNode {
    hosts: Arc<RemoteHosts>,
    script: Arc<Script>,
    session: tokio::sync::Mutex<Option<Session>>,
}

impl RemoteNode {
    pub(crate) fn new(hosts: Arc<RemoteHosts>, script: Arc<Script>) -> RemoteNode {
        RemoteNode {
            hosts,
            script,
            session: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs one message: `inputs` by port, the node's `config`, state
    /// under `actor_id` in `namespace`.
    pub(crate) async fn run(
        &self,
        inputs: Map<String, Value>,
        config: Map<String, Value>,
        namespace: &str,
        actor_id: &str,
    ) -> Answer {
        let _busy = self.hosts.busy_guard();
        let mut slot = self.session.lock().await;
        let session = match slot.take() {
            Some(s) => s,
            None => match self.open().await {
                Ok(s) => s,
                Err(why) => return failed(why),
            },
        };
        let host = session.host;
        let timeout = self
            .script
            .limits
            .timeout
            .unwrap_or(Duration::from_secs(30))
            + GRACE;
        let params = json!({
            "payload": inputs, "config": config,
            "state": {"namespace": namespace, "actor_id": actor_id},
            "actor_id": actor_id, "timestamp": 0,
        });
        let mut session = session;
        match tokio::time::timeout(timeout, call(&mut session, params)).await {
            Ok(Ok(answer)) => {
                *slot = Some(session);
                answer
            }
            Ok(Err(why)) => self.lost(host, &why),
            Err(_) => self.lost(host, &format!("no answer within {}s", timeout.as_secs())),
        }
    }

    /// The host was lost with a message in flight: the message fails, the
    /// node moves on its next message.
    fn lost(&self, host: usize, why: &str) -> Answer {
        self.hosts.mark_down(host, why);
        self.hosts.place(host, false);
        failed(format!(
            "sandbox host {} was lost during this message: {why}",
            self.hosts.name(host)
        ))
    }

    /// A session on the emptiest reachable host (deploying the script
    /// there first); hosts that fail are marked and the next is tried.
    async fn open(&self) -> Result<Session, String> {
        let mut tried = Vec::new();
        let mut why = Vec::new();
        while let Some(i) = self.hosts.pick(&tried) {
            tried.push(i);
            match self.connect(i).await {
                Ok(ws) => {
                    self.hosts.place(i, true);
                    return Ok(Session {
                        host: i,
                        ws,
                        next_id: 1,
                    });
                }
                Err(e) => {
                    self.hosts.mark_down(i, &e);
                    why.push(e);
                }
            }
        }
        Err(if why.is_empty() {
            "no sandbox host is reachable now (every one failed within the last few seconds)".into()
        } else {
            format!("no sandbox host could take it: {}", why.join("; "))
        })
    }

    /// A session on host `i`. A host that no longer knows the function
    /// (it restarted) answers 404: the script is deployed again, once.
    async fn connect(&self, i: usize) -> Result<Ws, String> {
        match self.session_on(i).await {
            Err(Refused::Unknown(_)) => {
                self.hosts.forget(i);
                self.session_on(i).await.map_err(Refused::into_text)
            }
            other => other.map_err(Refused::into_text),
        }
    }

    async fn session_on(&self, i: usize) -> Result<Ws, Refused> {
        let text = Refused::Other;
        let id = self
            .hosts
            .deploy(i, &self.script)
            .await
            .map_err(|e| text(e.to_string()))?;
        let mut req = self
            .hosts
            .session_url(i, &id)
            .into_client_request()
            .map_err(|e| text(e.to_string()))?;
        let auth = format!("Bearer {}", self.hosts.token())
            .parse()
            .map_err(|_| text("the token is not a valid header value".into()))?;
        req.headers_mut().insert("authorization", auth);
        // No Nagle: a call is one small frame, and waiting to batch it with
        // the next (there is none until the answer) costs a delayed ACK.
        let connector = tokio_tungstenite::Connector::Rustls(self.hosts.tls());
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector));
        let name = self.hosts.name(i);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) if r.status() == 404 => {
                Err(Refused::Unknown(format!(
                    "sandbox host {name}: it does not know the function"
                )))
            }
            Ok(Err(e)) => Err(text(format!("sandbox host {name}: session: {e}"))),
            Err(_) => Err(text(format!(
                "sandbox host {name}: no session within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Why a session could not be opened.
enum Refused {
    /// The host does not know the function id (404).
    Unknown(String),
    Other(String),
}

impl Refused {
    fn into_text(self) -> String {
        match self {
            Refused::Unknown(t) | Refused::Other(t) => t,
        }
    }
}

impl Drop for RemoteNode {
    fn drop(&mut self) {
        // The node ends: its host has one node fewer of this client's.
        if let Ok(slot) = self.session.try_lock() {
            if let Some(s) = slot.as_ref() {
                self.hosts.place(s.host, false);
            }
        }
    }
}

fn failed(why: String) -> Answer {
    Answer {
        streamed: Vec::new(),
        result: Err(why),
    }
}

/// Sends one `process` call and reads up to its response. `Err` is a
/// broken session (the host is lost); an answer may still be a failed
/// message.
async fn call(session: &mut Session, params: Value) -> Result<Answer, String> {
    let id = session.next_id;
    session.next_id += 1;
    let request = json!({"jsonrpc": "2.0", "id": id, "method": "process", "params": params});
    session
        .ws
        .send(Frame::text(request.to_string()))
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut streamed = Vec::new();
    loop {
        let frame = match session.ws.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(format!("the session broke: {e}")),
            None => return Err("the session closed".into()),
        };
        let text = match frame {
            Frame::Text(t) => t,
            Frame::Close(_) => return Err("the host closed the session".into()),
            _ => continue,
        };
        let v: Value = serde_json::from_str(text.as_str())
            .map_err(|e| format!("the host sent a frame that is not JSON: {e}"))?;
        if v["method"] == "output" {
            let port = v["params"]["port"].as_str().unwrap_or_default().to_string();
            streamed.push((port, Message::from(v["params"]["data"].clone())));
            continue;
        }
        if v["id"] != json!(id) {
            return Err(format!("the host answered id {} to call {id}", v["id"]));
        }
        let result = if let Some(e) = v.get("error") {
            Err(format!(
                "the host refused the call: {}",
                e["message"].as_str().unwrap_or("no reason given")
            ))
        } else if let Some(e) = v["result"].get("error").and_then(Value::as_str) {
            Err(e.to_string())
        } else {
            Ok(v["result"]["outputs"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), Message::from(v.clone())))
                        .collect()
                })
                .unwrap_or_default())
        };
        return Ok(Answer { streamed, result });
    }
}
