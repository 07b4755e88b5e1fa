//! One graph node on a sandbox host: its session (a WebSocket to the
//! function its script is deployed as) and its messages, one at a time.
//!
//! A message is answered exactly once. Before it is sent, a host that
//! cannot be reached is skipped for the next one; once it is sent, a host
//! lost before answering (the connection breaks, or no answer within the
//! message's timeout and a grace period) answers it with an error naming
//! the host, and the node moves to another host for its next message
//! (state follows when the hosts share a Redis store).

use std::collections::{HashMap, VecDeque};
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

/// Makes a packet a call's inputs (`None`: the packet is no input).
pub(crate) type Convert =
    dyn Fn(&HashMap<String, Message>) -> Option<Result<Map<String, Value>, String>> + Sync;

/// Calls a node keeps in flight on its session (the host queues up to 64).
pub(crate) const WINDOW: usize = 32;
/// Bytes of the calls in flight (the host lets 32 MiB wait); a larger
/// call still goes, alone.
const WINDOW_BYTES: usize = 16 << 20;
/// The largest call frame a host takes (its WebSocket message limit).
const MAX_CALL_BYTES: usize = 16 << 20;

/// What a stream says of its messages, in order.
pub(crate) enum Reply {
    /// An output of the oldest message not answered yet.
    Output(String, Message),
    /// A message is done: its returned outputs.
    Done(HashMap<String, Message>),
    /// A message failed (why).
    Failed(String),
}

/// A message of a stream, waiting for its answer.
enum Slot {
    /// Sent as call `id`, a frame of this many bytes.
    Sent(u64, usize),
    /// Not sent: answered with this error in its turn.
    Refused(String),
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
        let timeout = self.patience();
        let params = params(inputs, &config, namespace, actor_id);
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

    /// Streams messages through the node's session: `first`, then each
    /// packet `inports` holds, keeping up to [`WINDOW`] calls in flight
    /// (the host runs them in order, through its VM's own window). Each
    /// packet `convert` makes inputs of gets exactly one `Done` or
    /// `Failed`, in order, its `Output`s before it; a packet it makes
    /// nothing of (`None`) is skipped. Returns once nothing is in flight
    /// and no packet waits.
    pub(crate) async fn stream(
        &self,
        first: HashMap<String, Message>,
        inports: &flume::Receiver<HashMap<String, Message>>,
        convert: &Convert,
        call: (&Map<String, Value>, &str, &str),
        reply: &mut (dyn FnMut(Reply) + Send),
    ) {
        let (config, namespace, actor_id) = call;
        let _busy = self.hosts.busy_guard();
        let mut slot = self.session.lock().await;
        let timeout = self.patience();
        let mut waiting: VecDeque<HashMap<String, Message>> = VecDeque::from([first]);
        let mut inflight: VecDeque<Slot> = VecDeque::new();
        let mut closed = false;
        // Inputs made of a packet that the window had no byte room for.
        let mut held: Option<Map<String, Value>> = None;
        loop {
            while inflight.len() < WINDOW {
                let inputs = match held.take() {
                    Some(inputs) => inputs,
                    None => {
                        let packet = match waiting.pop_front() {
                            Some(p) => p,
                            None => match inports.try_recv() {
                                Ok(p) => p,
                                Err(_) => break,
                            },
                        };
                        match convert(&packet) {
                            None => continue,
                            Some(Err(why)) => {
                                inflight.push_back(Slot::Refused(why));
                                continue;
                            }
                            Some(Ok(inputs)) => inputs,
                        }
                    }
                };
                if slot.is_none() {
                    match self.open().await {
                        Ok(s) => *slot = Some(s),
                        Err(why) => {
                            inflight.push_back(Slot::Refused(why));
                            continue;
                        }
                    }
                }
                let Some(session) = slot.as_mut() else {
                    continue;
                };
                let text = request(
                    session.next_id,
                    params(inputs.clone(), config, namespace, actor_id),
                );
                if text.len() > MAX_CALL_BYTES {
                    inflight.push_back(Slot::Refused(format!(
                        "the message is {} bytes as a call; a sandbox host takes at most {MAX_CALL_BYTES}",
                        text.len()
                    )));
                    continue;
                }
                let sent: usize = inflight
                    .iter()
                    .map(|s| match s {
                        Slot::Sent(_, n) => *n,
                        Slot::Refused(_) => 0,
                    })
                    .sum();
                if sent > 0 && sent + text.len() > WINDOW_BYTES {
                    // The window is full by bytes: it waits its turn.
                    held = Some(inputs);
                    break;
                }
                let id = session.next_id;
                match send_text(session, text.clone()).await {
                    Ok(()) => inflight.push_back(Slot::Sent(id, text.len())),
                    Err(why) => {
                        inflight.push_back(Slot::Sent(id, text.len()));
                        self.lose_all(&mut slot, &mut inflight, &why, reply);
                    }
                }
            }
            // Refusals at the front are answered now, in their turn.
            while matches!(inflight.front(), Some(Slot::Refused(_))) {
                if let Some(Slot::Refused(why)) = inflight.pop_front() {
                    reply(Reply::Failed(why));
                }
            }
            let Some(session) = slot.as_mut().filter(|_| !inflight.is_empty()) else {
                if inflight.is_empty() && waiting.is_empty() && held.is_none() {
                    return;
                }
                continue;
            };
            let room = inflight.len() < WINDOW && !closed;
            tokio::select! {
                event = tokio::time::timeout(timeout, read_event(session)) => match event {
                    Ok(Ok(Event::Output(port, m))) => reply(Reply::Output(port, m)),
                    Ok(Ok(Event::Response(id, result))) => {
                        if matches!(inflight.front(), Some(Slot::Sent(want, _)) if *want == id) {
                            inflight.pop_front();
                            reply(match result {
                                Ok(outputs) => Reply::Done(outputs),
                                Err(why) => Reply::Failed(why),
                            });
                        } else {
                            let why = format!("the host answered call {id} out of turn");
                            self.lose_all(&mut slot, &mut inflight, &why, reply);
                        }
                    }
                    Ok(Err(why)) => self.lose_all(&mut slot, &mut inflight, &why, reply),
                    Err(_) => {
                        let why = format!("no answer within {}s", timeout.as_secs());
                        self.lose_all(&mut slot, &mut inflight, &why, reply);
                    }
                },
                packet = inports.recv_async(), if room => match packet {
                    Ok(p) => waiting.push_back(p),
                    Err(_) => closed = true,
                },
            }
        }
    }

    /// The session's host was lost: every message in flight fails (naming
    /// it), and the node moves to another host for the next.
    fn lose_all(
        &self,
        slot: &mut Option<Session>,
        inflight: &mut VecDeque<Slot>,
        why: &str,
        reply: &mut (dyn FnMut(Reply) + Send),
    ) {
        let name = match slot.take() {
            Some(s) => self.drop_host(s.host, why),
            None => "?".into(),
        };
        for s in inflight.drain(..) {
            reply(Reply::Failed(match s {
                Slot::Sent(..) => lost_during_message(&name, why),
                Slot::Refused(why) => why,
            }));
        }
    }

    /// Marks `host` down and takes this node off it; returns its name.
    fn drop_host(&self, host: usize, why: &str) -> String {
        self.hosts.mark_down(host, why);
        self.hosts.place(host, false);
        self.hosts.name(host)
    }

    /// How long the host may say nothing while messages are in flight:
    /// the message timeout, plus a grace period.
    fn patience(&self) -> Duration {
        self.script
            .limits
            .timeout
            .unwrap_or(Duration::from_secs(30))
            + GRACE
    }

    /// The host was lost with a message in flight: the message fails, the
    /// node moves on its next message.
    fn lost(&self, host: usize, why: &str) -> Answer {
        failed(lost_during_message(&self.drop_host(host, why), why))
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

/// What a host sent on a session.
enum Event {
    /// An output of the oldest call not answered yet.
    Output(String, Message),
    /// The response to call `id`.
    Response(u64, Result<HashMap<String, Message>, String>),
}

/// The params of a `process` call.
fn params(
    inputs: Map<String, Value>,
    config: &Map<String, Value>,
    namespace: &str,
    actor_id: &str,
) -> Value {
    json!({
        "payload": inputs, "config": config,
        "state": {"namespace": namespace, "actor_id": actor_id},
        "actor_id": actor_id, "timestamp": 0,
    })
}

/// A `process` call's frame.
fn request(id: u64, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "process", "params": params}).to_string()
}

/// Sends a call's frame (made with the session's next id). `Err`: the
/// session broke.
async fn send_text(session: &mut Session, text: String) -> Result<(), String> {
    session.next_id += 1;
    session
        .ws
        .send(Frame::text(text))
        .await
        .map_err(|e| format!("cannot send: {e}"))
}

/// Sends one `process` call; its id. `Err`: the session broke.
async fn send_call(session: &mut Session, params: Value) -> Result<u64, String> {
    let id = session.next_id;
    send_text(session, request(id, params)).await?;
    Ok(id)
}

/// The next thing the host says. `Err`: the session broke (or the host
/// broke the protocol).
async fn read_event(session: &mut Session) -> Result<Event, String> {
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
            return Ok(Event::Output(
                port,
                Message::from(v["params"]["data"].clone()),
            ));
        }
        let Some(id) = v["id"].as_u64() else {
            return Err(format!(
                "the host sent a frame that is no answer: {}",
                v["id"]
            ));
        };
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
        return Ok(Event::Response(id, result));
    }
}

/// Sends one `process` call and reads up to its response. `Err` is a
/// broken session (the host is lost); an answer may still be a failed
/// message.
async fn call(session: &mut Session, params: Value) -> Result<Answer, String> {
    let id = send_call(session, params).await?;
    let mut streamed = Vec::new();
    loop {
        match read_event(session).await? {
            Event::Output(port, m) => streamed.push((port, m)),
            Event::Response(got, result) if got == id => return Ok(Answer { streamed, result }),
            Event::Response(got, _) => {
                return Err(format!(
                    "the host answered call {got} while {id} was running"
                ))
            }
        }
    }
}

/// What a message in flight on a lost host fails with.
fn lost_during_message(host: &str, why: &str) -> String {
    format!("sandbox host {host} was lost during this message: {why}")
}
