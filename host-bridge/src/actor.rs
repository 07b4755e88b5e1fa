//! [`SandboxActor`]: a script actor as an ordinary `reflow_actor::Actor`.
//! Each graph node (Reflow calls `create_instance` once per node) gets its
//! own channels, its own VM and its own state scope. In a network, its
//! dispatch loop streams queued packets through the VM with a window in
//! flight (see [`crate::node`]); its behavior runs one message.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorBehavior, ActorConfig, ActorContext, ActorLoad, Port};
use reflow_ring::Value;
use reflow_tracing_protocol::client::TracingIntegration;

use crate::trace_events::ReflowTrace;

use crate::convert::{to_message, to_value};
use crate::node::{ActorFailure, Answers, Node};
use crate::shared::Shared;
use crate::state::json::from_json_value;
use crate::versions::{ScriptUpdater, ScriptVersions};
use reflow_sandbox_core::Script;

/// The outport every sandboxed actor has: each failed message puts one
/// `Message::Error` on it.
pub const ERROR_PORT: &str = "error";

/// The node metadata key Reflow keeps the component spec in; it is not
/// passed to the actor as config.
const SPEC_KEY: &str = "componentSpec";

/// A sandboxed script actor (see the module docs). Made by
/// [`crate::Bridge::actor`].
pub struct SandboxActor {
    shared: Arc<Shared>,
    script: Arc<Script>,
    /// The script's versions, shared with every instance (hot reload).
    versions: Arc<ScriptVersions>,
    node: Arc<Node>,
    inports: Port,
    outports: Port,
    load: Arc<ActorLoad>,
}

impl SandboxActor {
    /// An instance running `script` on VMs of `shared.pools[pool]`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        versions: Arc<ScriptVersions>,
        pool: usize,
    ) -> SandboxActor {
        let script = versions.latest().script;
        SandboxActor {
            node: Node::new(shared.clone(), versions.clone(), pool),
            shared,
            script,
            versions,
            inports: flume::unbounded(),
            outports: flume::unbounded(),
            load: Arc::new(ActorLoad::new(0)),
        }
    }

    /// The script this actor was made with (its first version).
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// Publishes new versions of the script to this actor and every node
    /// made from it: each switches between messages (see
    /// [`crate::versions`]).
    pub fn updater(&self) -> ScriptUpdater {
        ScriptUpdater(self.versions.clone())
    }

    /// Whether this instance holds a VM now (it takes one on its first
    /// message and gives it back when idle or broken).
    pub fn has_vm(&self) -> bool {
        self.node.has_vm()
    }

    /// Whether its VM is held now: in a network, a node idle for the
    /// bridge's `idle_hold` holds its VM's vCPUs until its next message.
    pub fn is_vm_held(&self) -> bool {
        self.node.is_held()
    }

    /// The process id of its VM's monitor, if it has a VM.
    pub fn vm_monitor_pid(&self) -> Option<u32> {
        self.node.monitor_pid()
    }

    /// A new node of this actor, as `create_instance` makes one (its own
    /// VM and state scope), as this type.
    pub fn new_node(&self) -> SandboxActor {
        SandboxActor::new(self.shared.clone(), self.versions.clone(), self.node.pool())
    }

    /// Runs each message `next` gives (until it gives `None`) on this node
    /// as graph node `node_id` (its state scope) with `config`, keeping a
    /// window of them in flight in its VM, as a node in a network does;
    /// each gets exactly one answer in `answers`, in the order taken (an
    /// `Err` from `next` is answered in its place). Messages are guest
    /// values: a map of inputs by port. Blocks: call it from a blocking
    /// thread.
    pub fn stream(
        &self,
        node_id: &str,
        config: &HashMap<String, serde_json::Value>,
        next: &mut dyn FnMut() -> Option<Result<Value, ActorFailure>>,
        answers: &mut dyn Answers,
    ) {
        self.node
            .serve(node_id, config_value(config), next, answers);
    }
}

/// A script actor's outports: the script's, and [`ERROR_PORT`].
pub(crate) fn with_error_port(outports: &[String]) -> Vec<String> {
    let mut ports = outports.to_vec();
    if !ports.iter().any(|p| p == ERROR_PORT) {
        ports.push(ERROR_PORT.into());
    }
    ports
}

/// The guest value of a node's config: its metadata without the component
/// spec.
fn config_value(config: &HashMap<String, serde_json::Value>) -> Value {
    let mut entries: Vec<(String, Value)> = config
        .iter()
        .filter(|(k, _)| k.as_str() != SPEC_KEY)
        .map(|(k, v)| (k.clone(), from_json_value(v.clone())))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Map(entries)
}

/// The guest value of a packet's inputs. Reflow 0.2.1 forwards every
/// packet of a node along every connection out of it, with
/// `Optional(None)` in place of ports the packet does not carry: a packet
/// of nothing but those is no input at all (`None` here).
fn inputs_value(payload: &HashMap<String, Message>) -> Result<Option<Value>, ActorFailure> {
    if payload
        .values()
        .all(|m| matches!(m, Message::Optional(None)))
    {
        return Ok(None);
    }
    let mut entries = Vec::with_capacity(payload.len());
    for (port, message) in payload {
        let value = to_value(message).map_err(|e| ActorFailure::Input {
            port: port.clone(),
            reason: e.to_string(),
        })?;
        entries.push((port.clone(), value));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(Value::Map(entries)))
}

fn outputs_map(done: Value) -> HashMap<String, Message> {
    match done {
        Value::Map(entries) => entries
            .into_iter()
            .map(|(port, value)| (port, to_message(&value)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Sends a node's answers to its outports: outputs as they come, returned
/// outputs when a message is done, and each failure (logged and counted)
/// as one `Message::Error` on [`ERROR_PORT`].
struct PortAnswers {
    shared: Arc<Shared>,
    script: Arc<Script>,
    node_id: String,
    outports: flume::Sender<HashMap<String, Message>>,
    /// Whether `done` sends the returned outputs (a behavior returns them
    /// to Reflow's loop instead, which sends them).
    send_done: bool,
    /// What the last message ended with (for a behavior's result).
    last: Option<Result<HashMap<String, Message>, String>>,
    /// The script version its failures name, once the node was reloaded.
    version: Option<String>,
}

impl PortAnswers {
    fn new(
        shared: Arc<Shared>,
        script: Arc<Script>,
        node_id: String,
        outports: flume::Sender<HashMap<String, Message>>,
    ) -> PortAnswers {
        PortAnswers {
            shared,
            script,
            node_id,
            outports,
            send_done: true,
            last: None,
            version: None,
        }
    }
}

impl Answers for PortAnswers {
    fn reloaded(&mut self, version: &str) {
        self.version = Some(version.to_string());
    }

    fn output(&mut self, port: &str, value: Value) {
        let _ = self
            .outports
            .send(HashMap::from([(port.to_string(), to_message(&value))]));
    }

    fn done(&mut self, outputs: Value) {
        let outputs = outputs_map(outputs);
        if self.send_done && !outputs.is_empty() {
            let _ = self.outports.send(outputs);
            self.last = Some(Ok(HashMap::new()));
        } else {
            self.last = Some(Ok(outputs));
        }
    }

    fn failed(&mut self, failure: ActorFailure) {
        let failure = failure.with_traceback();
        let text = match &self.version {
            Some(v) => format!(
                "{} ({}, version {v}): {failure}",
                self.script.name, self.node_id
            ),
            None => format!("{} ({}): {failure}", self.script.name, self.node_id),
        };
        tracing::warn!("{text}");
        self.shared.count_failure();
        let _ = self.outports.send(HashMap::from([(
            ERROR_PORT.to_string(),
            Message::error(text.clone()),
        )]));
        self.last = Some(Err(text));
    }
}

/// One message as a behavior (for callers that invoke the behavior
/// themselves): the outputs it returned, or its failure (also on the
/// error port).
async fn behave(
    shared: Arc<Shared>,
    node: Arc<Node>,
    script: Arc<Script>,
    ctx: ActorContext,
) -> Result<HashMap<String, Message>, anyhow::Error> {
    let node_id = ctx.config.get_node_id().to_string();
    let mut answers = PortAnswers::new(shared, script, node_id.clone(), ctx.outports.0.clone());
    answers.send_done = false;
    let mut inputs = match inputs_value(&ctx.payload) {
        Ok(Some(inputs)) => Some(Ok(inputs)),
        Ok(None) => return Ok(HashMap::new()),
        Err(e) => Some(Err(e)),
    };
    let config = config_value(&ctx.config.config);
    let ran = tokio::task::spawn_blocking(move || {
        node.serve(&node_id, config, &mut || inputs.take(), &mut answers);
        answers
    })
    .await;
    match ran {
        Ok(answers) => match answers.last {
            Some(Ok(outputs)) => Ok(outputs),
            Some(Err(text)) => Err(anyhow::anyhow!(text)),
            None => Err(anyhow::anyhow!("the message got no answer")),
        },
        Err(join) => Err(anyhow::anyhow!("the host thread running it failed: {join}")),
    }
}

/// The node's dispatch loop (in place of Reflow's `ActorProcess`, which
/// awaits each message's answer before taking the next): whenever packets
/// arrive, a blocking thread streams them through the node, taking each
/// packet queued behind them as the window has room, until none is left.
/// Each packet fires the actor (a sandboxed actor awaits no particular
/// inports, as Reflow's default); outputs and failures go to the outports
/// in the packets' order. A node idle for `idle_hold` holds its VM
/// ([`Node::hold_idle`]) until its next packet.
async fn process_loop(
    shared: Arc<Shared>,
    node: Arc<Node>,
    script: Arc<Script>,
    inports: flume::Receiver<HashMap<String, Message>>,
    outports: flume::Sender<HashMap<String, Message>>,
    load: Arc<ActorLoad>,
    config: ActorConfig,
) {
    let node_id = config.get_node_id().to_string();
    let config_value = config_value(&config.config);
    let hold_after = shared.config.idle_hold;
    let isolation = node.isolation();
    let answers = || {
        PortAnswers::new(
            shared.clone(),
            script.clone(),
            node_id.clone(),
            outports.clone(),
        )
    };
    loop {
        let first = match tokio::time::timeout(hold_after, inports.recv_async()).await {
            Ok(Ok(packet)) => packet,
            Ok(Err(_)) => break,
            Err(_) => {
                // Idle: hold the VM until the next packet.
                let node = node.clone();
                let _ = tokio::task::spawn_blocking(move || node.hold_idle()).await;
                match inports.recv_async().await {
                    Ok(packet) => packet,
                    Err(_) => break,
                }
            }
        };
        load.inc();
        let (node, inports, id, config_value) = (
            node.clone(),
            inports.clone(),
            node_id.clone(),
            config_value.clone(),
        );
        let mut port_answers = answers();
        let ran = tokio::task::spawn_blocking(move || {
            let mut first = Some(first);
            let mut next = || loop {
                let packet = match first.take() {
                    Some(p) => p,
                    None => inports.try_recv().ok()?,
                };
                match inputs_value(&packet) {
                    Ok(Some(inputs)) => return Some(Ok(inputs)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            };
            node.serve(&id, config_value, &mut next, &mut port_answers);
        })
        .await;
        load.reset();
        if let Err(join) = ran {
            answers().failed(ActorFailure::Hostile(
                isolation,
                format!("the host thread running it failed: {join}"),
            ));
        }
    }
}

impl Actor for SandboxActor {
    fn get_behavior(&self) -> ActorBehavior {
        let (shared, node, script) = (self.shared.clone(), self.node.clone(), self.script.clone());
        Box::new(move |ctx: ActorContext| {
            Box::pin(behave(shared.clone(), node.clone(), script.clone(), ctx))
        })
    }

    fn get_outports(&self) -> Port {
        self.outports.clone()
    }

    fn get_inports(&self) -> Port {
        self.inports.clone()
    }

    fn inport_names(&self) -> Vec<String> {
        self.script.inports.clone()
    }

    fn outport_names(&self) -> Vec<String> {
        with_error_port(&self.script.outports)
    }

    fn load_count(&self) -> Arc<ActorLoad> {
        self.load.clone()
    }

    fn create_process(
        &self,
        config: ActorConfig,
        tracing: Option<TracingIntegration>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        if let Some(integration) = tracing {
            let trace = ReflowTrace::new(integration, self.shared.tokio.clone());
            self.node.set_trace(Arc::new(trace));
        }
        Box::pin(process_loop(
            self.shared.clone(),
            self.node.clone(),
            self.script.clone(),
            self.inports.1.clone(),
            self.outports.0.clone(),
            self.load.clone(),
            config,
        ))
    }

    fn create_instance(&self) -> Arc<dyn Actor> {
        Arc::new(self.new_node())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_artifacts_are_no_input_and_real_inputs_convert() {
        let none = HashMap::from([("a".to_string(), Message::Optional(None))]);
        assert_eq!(inputs_value(&none).unwrap(), None);
        let some = HashMap::from([
            ("b".to_string(), Message::Integer(2)),
            ("a".to_string(), Message::Optional(None)),
        ]);
        assert_eq!(
            inputs_value(&some).unwrap(),
            Some(Value::Map(vec![
                ("a".into(), Value::None),
                ("b".into(), Value::Int(2))
            ]))
        );
    }

    #[test]
    fn config_leaves_out_the_component_spec() {
        let config = HashMap::from([
            ("factor".to_string(), serde_json::json!(3)),
            (SPEC_KEY.to_string(), serde_json::json!({"type": "script"})),
        ]);
        assert_eq!(
            config_value(&config),
            Value::Map(vec![("factor".into(), Value::Int(3))])
        );
    }

    #[test]
    fn returned_outputs_become_messages() {
        let done = Value::Map(vec![
            ("n".into(), Value::Int(1)),
            ("b".into(), Value::Bytes(vec![1, 2])),
        ]);
        let out = outputs_map(done);
        assert!(matches!(out["n"], Message::Integer(1)));
        assert!(matches!(&out["b"], Message::Bytes(b) if **b == [1, 2]));
        assert!(outputs_map(Value::None).is_empty());
    }
}
