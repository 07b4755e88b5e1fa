//! [`SandboxActor`]: a script actor as an ordinary `reflow_actor::Actor`.
//! Each graph node (Reflow calls `create_instance` once per node) gets its
//! own channels, its own VM and its own state scope.

use std::collections::HashMap;
use std::sync::Arc;

use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorBehavior, ActorContext, ActorLoad, Port};
use reflow_ring::Value;

use crate::convert::{to_message, to_value};
use crate::node::{ActorFailure, Node};
use crate::shared::Shared;
use crate::state::json::from_json_value;
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
    node: Arc<Node>,
    inports: Port,
    outports: Port,
    load: Arc<ActorLoad>,
}

impl SandboxActor {
    /// An instance running `script` on VMs of `shared.pools[pool]`.
    pub(crate) fn new(shared: Arc<Shared>, script: Arc<Script>, pool: usize) -> SandboxActor {
        SandboxActor {
            node: Node::new(shared.clone(), script.clone(), pool),
            shared,
            script,
            inports: flume::unbounded(),
            outports: flume::unbounded(),
            load: Arc::new(ActorLoad::new(0)),
        }
    }

    /// The script this actor runs.
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// Whether this instance holds a VM now (it takes one on its first
    /// message and gives it back when idle or broken).
    pub fn has_vm(&self) -> bool {
        self.node.has_vm()
    }
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

async fn behave(
    shared: Arc<Shared>,
    node: Arc<Node>,
    script: Arc<Script>,
    ctx: ActorContext,
) -> Result<HashMap<String, Message>, anyhow::Error> {
    let node_id = ctx.config.get_node_id().to_string();
    let outports = ctx.outports.0.clone();
    let fail = |e: ActorFailure| {
        let mut text = format!("{} ({node_id}): {e}", script.name);
        if let ActorFailure::Actor(a) = &e {
            if !a.traceback.is_empty() {
                text = format!("{text}\n{}", a.traceback.trim_end());
            }
        }
        tracing::warn!("{text}");
        shared.count_failure();
        let _ = outports.send(HashMap::from([(
            ERROR_PORT.to_string(),
            Message::error(text.clone()),
        )]));
        anyhow::anyhow!(text)
    };
    let inputs = match inputs_value(&ctx.payload) {
        Ok(Some(inputs)) => inputs,
        Ok(None) => return Ok(HashMap::new()),
        Err(e) => return Err(fail(e)),
    };
    let config = config_value(&ctx.config.config);
    let stream = outports.clone();
    let id = node_id.clone();
    let ran = tokio::task::spawn_blocking(move || {
        node.invoke(&id, inputs, config, |port, value| {
            let _ = stream.send(HashMap::from([(port.to_string(), to_message(&value))]));
        })
    })
    .await;
    match ran {
        Ok(Ok(done)) => Ok(outputs_map(done)),
        Ok(Err(e)) => Err(fail(e)),
        Err(join) => Err(fail(ActorFailure::Hostile(format!(
            "the host thread running it failed: {join}"
        )))),
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
        let mut ports = self.script.outports.clone();
        if !ports.iter().any(|p| p == ERROR_PORT) {
            ports.push(ERROR_PORT.into());
        }
        ports
    }

    fn load_count(&self) -> Arc<ActorLoad> {
        self.load.clone()
    }

    fn create_instance(&self) -> Arc<dyn Actor> {
        Arc::new(SandboxActor::new(
            self.shared.clone(),
            self.script.clone(),
            self.node.pool(),
        ))
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
