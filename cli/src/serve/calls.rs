//! Running a session's calls: the calls waiting in its queue stream
//! through its node's VM with a window in flight, as a local node's
//! messages do, while the worker still runs them one at a time, in order.
//! Consecutive calls with the same config and state scope share one
//! stream; a call with others starts the next. Each call gets exactly one
//! response, in the order the calls came; outputs sent while one runs go
//! out as its notifications before its response.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reflow_host_bridge::state::json::{from_json_value, to_wire_json};
use reflow_host_bridge::{ActorFailure, Answers};
use reflow_ring::Value;
use serde_json::{Map, Value as Json};
use tokio::sync::mpsc;

use super::functions::Session;
use super::rpc::{self, Process};

/// A call waiting in a session's queue: its id, its params, the size of
/// its frame.
pub struct Queued {
    pub id: Json,
    pub params: Process,
    pub size: usize,
}

/// Runs the calls `queued` gives until it closes or the client goes;
/// answers go to `to_client`. Waits for calls without holding a thread;
/// each stream of them runs on a blocking thread while it lasts, so an
/// idle session costs no thread.
pub async fn run(
    session: Arc<Session>,
    mut queued: mpsc::Receiver<Queued>,
    to_client: mpsc::Sender<String>,
    waiting: Arc<AtomicUsize>,
) {
    let mut carry: Option<Queued> = None;
    loop {
        let first = match carry.take() {
            Some(q) => q,
            None => match queued.recv().await {
                Some(q) => {
                    waiting.fetch_sub(q.size, Ordering::SeqCst);
                    q
                }
                None => return,
            },
        };
        let (s, t, w) = (session.clone(), to_client.clone(), waiting.clone());
        let ran = tokio::task::spawn_blocking(move || {
            let ended = stream(&s, first, &mut queued, &t, &w);
            (queued, ended)
        })
        .await;
        match ran {
            Ok((back, Ended::Carry(next))) => {
                queued = back;
                carry = next.map(|q| *q);
            }
            Ok((_, Ended::Gone)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "serve: a session's calls stopped");
                return;
            }
        }
    }
}

/// How a stream ended.
enum Ended {
    /// Its calls are answered; the call that ended it (other config or
    /// scope), if any, starts the next.
    Carry(Option<Box<Queued>>),
    /// The client went.
    Gone,
}

/// Streams `first` and the calls queued behind it with the same config and
/// scope through the session's node. Blocks.
fn stream(
    session: &Session,
    first: Queued,
    queued: &mut mpsc::Receiver<Queued>,
    to_client: &mpsc::Sender<String>,
    waiting: &AtomicUsize,
) -> Ended {
    let mut carry: Option<Queued> = None;
    {
        let function = &session.function;
        if function.removed.load(Ordering::SeqCst) {
            let why = format!("function {} was undeployed: deploy it again", function.name);
            let answer = rpc::result(&first.id, rpc::execution(Err(why)));
            return match to_client.blocking_send(answer) {
                Ok(()) => Ended::Carry(None),
                Err(_) => Ended::Gone,
            };
        }
        let scope = (
            first.params.config.clone(),
            first.params.namespace.clone(),
            first.params.actor_id.clone(),
        );
        let node_id = format!("{}/{}/{}", function.owner, scope.1, scope.2);
        let config: HashMap<String, Json> = scope.0.clone().into_iter().collect();
        let taken: RefCell<VecDeque<(Json, String)>> = RefCell::new(VecDeque::new());
        let mut pending = Some(first);
        let mut stopped = false;
        let mut next = || -> Option<Result<Value, ActorFailure>> {
            if stopped {
                return None;
            }
            let q = match pending.take() {
                Some(q) => q,
                None => match queued.try_recv() {
                    Ok(q) => {
                        waiting.fetch_sub(q.size, Ordering::SeqCst);
                        q
                    }
                    Err(_) => return None,
                },
            };
            let same = (&q.params.config, &q.params.namespace, &q.params.actor_id)
                == (&scope.0, &scope.1, &scope.2);
            if !same || function.removed.load(Ordering::SeqCst) {
                // Its stream ends here; the call starts the next one.
                stopped = true;
                carry = Some(q);
                return None;
            }
            function.invocations.fetch_add(1, Ordering::Relaxed);
            taken.borrow_mut().push_back((q.id, q.params.actor_id));
            Some(Ok(inputs(q.params.payload)))
        };
        let mut answers = Wire {
            session,
            to_client,
            taken: &taken,
            spoiled: None,
            gone: false,
        };
        session
            .node
            .stream(&node_id, &config, &mut next, &mut answers);
        if answers.gone {
            return Ended::Gone;
        }
    }
    Ended::Carry(carry.map(Box::new))
}

/// A call's inputs as the guest value a node takes: a map by port.
fn inputs(payload: Map<String, Json>) -> Value {
    let mut entries: Vec<(String, Value)> = payload
        .into_iter()
        .map(|(port, v)| (port, from_json_value(v)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Map(entries)
}

/// A stream's answers, written to the client as JSON-RPC.
struct Wire<'a> {
    session: &'a Session,
    to_client: &'a mpsc::Sender<String>,
    /// The calls taken and not answered yet (id, actor id), oldest first.
    taken: &'a RefCell<VecDeque<(Json, String)>>,
    /// Why the oldest call must fail though it may end well (an output
    /// that JSON cannot carry).
    spoiled: Option<String>,
    /// The client is gone.
    gone: bool,
}

impl Wire<'_> {
    fn send(&mut self, text: String) {
        if !self.gone && self.to_client.blocking_send(text).is_err() {
            self.gone = true;
        }
    }

    fn answer(&mut self, outcome: Result<Map<String, Json>, String>) {
        let Some((id, _)) = self.taken.borrow_mut().pop_front() else {
            return;
        };
        let outcome = match self.spoiled.take() {
            Some(why) => Err(why),
            None => outcome,
        };
        self.send(rpc::result(&id, rpc::execution(outcome)));
    }
}

impl Answers for Wire<'_> {
    fn output(&mut self, port: &str, value: Value) {
        let Some(actor_id) = self.taken.borrow().front().map(|(_, a)| a.clone()) else {
            return;
        };
        match to_wire_json(&value) {
            Ok(data) => self.send(rpc::output(&actor_id, port, data, now_ms())),
            Err(e) => self.spoiled = Some(format!("output on port {port}: {e}")),
        }
    }

    fn done(&mut self, outputs: Value) {
        let mut out = Map::new();
        let mut bad = None;
        if let Value::Map(entries) = outputs {
            for (port, v) in entries {
                match to_wire_json(&v) {
                    Ok(data) => {
                        out.insert(port, data);
                    }
                    Err(e) => bad = Some(format!("output on port {port}: {e}")),
                }
            }
        }
        self.answer(match bad {
            Some(why) => Err(why),
            None => Ok(out),
        });
    }

    fn failed(&mut self, failure: ActorFailure) {
        let actor = self
            .taken
            .borrow()
            .front()
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        let name = &self.session.function.name;
        self.answer(Err(format!(
            "{name} ({actor}): {}",
            failure.with_traceback()
        )));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
