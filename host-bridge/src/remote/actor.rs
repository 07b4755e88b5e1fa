//! [`RemoteSandboxActor`]: a script actor whose messages run on sandbox
//! hosts (`reflow-sandbox serve`) instead of this machine's VMs, as an
//! ordinary `reflow_actor::Actor`. Each graph node (instance) has its own
//! session on a host, so its own VM and state scope there; a failed
//! message puts one `Message::Error` on [`crate::ERROR_PORT`], as a local
//! node does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorBehavior, ActorConfig, ActorContext, ActorLoad, Port};
use reflow_sandbox_core::Script;
use reflow_tracing_protocol::client::TracingIntegration;
use serde_json::{Map, Value};

use super::hosts::RemoteHosts;
use super::node::{Answer, RemoteNode, Reply};
use crate::convert::to_value;
use crate::state::json::to_wire_json;
use crate::ERROR_PORT;

/// A script actor on sandbox hosts (see the module docs).
pub struct RemoteSandboxActor {
    parts: Parts,
    inports: Port,
    outports: Port,
    load: Arc<ActorLoad>,
}

impl RemoteSandboxActor {
    /// An actor running `script` on `hosts`, its state under `namespace`
    /// on the hosts' store.
    pub fn new(hosts: Arc<RemoteHosts>, script: Script, namespace: &str) -> RemoteSandboxActor {
        RemoteSandboxActor::with(hosts, Arc::new(script), namespace.to_string())
    }

    fn with(hosts: Arc<RemoteHosts>, script: Arc<Script>, namespace: String) -> RemoteSandboxActor {
        RemoteSandboxActor {
            parts: Parts {
                node: Arc::new(RemoteNode::new(hosts.clone(), script.clone())),
                hosts,
                script,
                namespace,
            },
            inports: flume::unbounded(),
            outports: flume::unbounded(),
            load: Arc::new(ActorLoad::new(0)),
        }
    }
}

/// The JSON of a packet's inputs (`None`: a packet of nothing but
/// Reflow's `Optional(None)` routing artifacts, which is no input).
fn inputs_json(payload: &HashMap<String, Message>) -> Option<Result<Map<String, Value>, String>> {
    if payload
        .values()
        .all(|m| matches!(m, Message::Optional(None)))
    {
        return None;
    }
    let mut out = Map::new();
    for (port, m) in payload {
        let v = to_value(m)
            .map_err(|e| e.to_string())
            .and_then(|v| to_wire_json(&v).map_err(|e| e.to_string()));
        match v {
            Ok(v) => {
                out.insert(port.clone(), v);
            }
            Err(e) => return Some(Err(format!("input on port {port}: {e}"))),
        }
    }
    Some(Ok(out))
}

/// A node id as the hosts' state scope takes it: itself when it is 1-128
/// of `A-Z a-z 0-9 - _ .`, else a digest of it.
fn scope_name(node_id: &str) -> String {
    let ok = (1..=128).contains(&node_id.len())
        && node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        node_id.to_string()
    } else {
        use sha2::Digest;
        format!(
            "n-{}",
            &hex::encode(sha2::Sha256::digest(node_id.as_bytes()))[..24]
        )
    }
}

/// What every instance's node is made of.
#[derive(Clone)]
struct Parts {
    hosts: Arc<RemoteHosts>,
    script: Arc<Script>,
    node: Arc<RemoteNode>,
    namespace: String,
}

/// Everything one node needs to run its messages.
#[derive(Clone)]
struct Runner {
    hosts: Arc<RemoteHosts>,
    script: Arc<Script>,
    node: Arc<RemoteNode>,
    namespace: String,
    node_id: String,
    config: Map<String, Value>,
}

impl Runner {
    fn new(parts: &Parts, config: &ActorConfig) -> Runner {
        Runner {
            hosts: parts.hosts.clone(),
            script: parts.script.clone(),
            node: parts.node.clone(),
            namespace: scope_name(&parts.namespace),
            node_id: config.get_node_id().to_string(),
            config: config
                .config
                .iter()
                .filter(|(k, _)| k.as_str() != "componentSpec")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Runs one packet; `None` when it was no input.
    async fn run(&self, payload: &HashMap<String, Message>) -> Option<Answer> {
        let inputs = match inputs_json(payload)? {
            Ok(i) => i,
            Err(why) => {
                return Some(Answer {
                    streamed: Vec::new(),
                    result: Err(why),
                })
            }
        };
        let scope = scope_name(&self.node_id);
        Some(
            self.node
                .run(inputs, self.config.clone(), &self.namespace, &scope)
                .await,
        )
    }

    /// The text a failure is reported with.
    fn failure(&self, why: &str) -> String {
        self.hosts.count_failure();
        let text = format!("{} ({}): {why}", self.script.name, self.node_id);
        tracing::warn!("{text}");
        text
    }
}

impl Actor for RemoteSandboxActor {
    fn get_behavior(&self) -> ActorBehavior {
        let parts = self.parts.clone();
        Box::new(move |ctx: ActorContext| {
            let runner = Runner::new(&parts, &ctx.config);
            Box::pin(async move {
                let Some(answer) = runner.run(&ctx.payload).await else {
                    return Ok(HashMap::new());
                };
                for (port, m) in answer.streamed {
                    let _ = ctx.outports.0.send(HashMap::from([(port, m)]));
                }
                answer
                    .result
                    .map_err(|why| anyhow::anyhow!(runner.failure(&why)))
            })
        })
    }

    fn get_outports(&self) -> Port {
        self.outports.clone()
    }

    fn get_inports(&self) -> Port {
        self.inports.clone()
    }

    fn inport_names(&self) -> Vec<String> {
        self.parts.script.inports.clone()
    }

    fn outport_names(&self) -> Vec<String> {
        crate::actor::with_error_port(&self.parts.script.outports)
    }

    fn load_count(&self) -> Arc<ActorLoad> {
        self.load.clone()
    }

    fn create_process(
        &self,
        config: ActorConfig,
        _tracing: Option<TracingIntegration>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let runner = Runner::new(&self.parts, &config);
        let (inports, outports, load) = (
            self.inports.1.clone(),
            self.outports.0.clone(),
            self.load.clone(),
        );
        Box::pin(async move {
            // Messages stream through the node's session with a window in
            // flight; each gets its answers in order.
            let scope = scope_name(&runner.node_id);
            while let Ok(first) = inports.recv_async().await {
                load.inc();
                let mut reply = |r: Reply| match r {
                    Reply::Output(port, m) => {
                        let _ = outports.send(HashMap::from([(port, m)]));
                    }
                    Reply::Done(outputs) => {
                        if !outputs.is_empty() {
                            let _ = outports.send(outputs);
                        }
                    }
                    Reply::Failed(why) => {
                        let text = runner.failure(&why);
                        let _ = outports.send(HashMap::from([(
                            ERROR_PORT.to_string(),
                            Message::error(text),
                        )]));
                    }
                };
                runner
                    .node
                    .stream(
                        first,
                        &inports,
                        &inputs_json,
                        (&runner.config, &runner.namespace, &scope),
                        &mut reply,
                    )
                    .await;
                load.reset();
            }
        })
    }

    fn create_instance(&self) -> Arc<dyn Actor> {
        Arc::new(RemoteSandboxActor::with(
            self.parts.hosts.clone(),
            self.parts.script.clone(),
            self.parts.namespace.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_are_kept_or_digested() {
        assert_eq!(scope_name("count-1"), "count-1");
        let d = scope_name("my node/1");
        assert!(d.starts_with("n-") && d.len() == 26, "{d}");
        assert_eq!(d, scope_name("my node/1"));
    }

    #[test]
    fn inputs_become_reflows_json() {
        let p = HashMap::from([("b".to_string(), Message::Bytes(Arc::new(vec![1, 2])))]);
        assert_eq!(
            inputs_json(&p).unwrap().unwrap()["b"],
            serde_json::json!([1, 2])
        );
        let none = HashMap::from([("a".to_string(), Message::Optional(None))]);
        assert!(inputs_json(&none).is_none());
        let nan = HashMap::from([("f".to_string(), Message::Float(f64::NAN))]);
        assert!(inputs_json(&nan).unwrap().unwrap_err().contains("port f"));
    }
}
