//! Running a checked graph in a Reflow `Network` until it has nothing left
//! to do, handing the outputs of its sink nodes to the caller as they come.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reflow_actor::message::Message;
use reflow_graph::types::GraphEdge;
use reflow_host_bridge::remote::{RemoteHosts, RemoteSandboxActor};
use reflow_host_bridge::{Bridge, BridgeError, ScriptUpdater};
use reflow_network::connector::{ConnectionPoint, Connector, InitialPacket};
use reflow_network::network::{Network, NetworkConfig};
use reflow_sandbox_core::Script;

use crate::graph::GraphFile;
use crate::natives::native;
use crate::tracked::{Activity, Tracked};

/// How often sinks are read and activity checked.
const POLL: Duration = Duration::from_millis(20);

/// When a run ends.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The graph is done once nothing has run and no queue held a packet
    /// for this long.
    pub settle: Duration,
    /// Give up after this long.
    pub timeout: Option<Duration>,
    /// New versions of the graph's scripts, by component (hot reload:
    /// `run --watch`), applied as they come; each node switches between
    /// messages.
    pub updates: Option<flume::Receiver<(String, Script)>>,
    /// Reflow's tracing server (`ws://...`): when set, the network traces
    /// its native actors there, and the sandbox its events (see
    /// `reflow_host_bridge`'s trace events).
    pub trace_server: Option<String>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            settle: Duration::from_millis(300),
            timeout: None,
            updates: None,
            trace_server: None,
        }
    }
}

/// Why a graph could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error("reflow refused the graph: {0}")]
    Network(anyhow::Error),
    #[error("the graph was still busy after {0:?}")]
    Timeout(Duration),
}

/// One output of a sink node.
#[derive(Debug, Clone)]
pub struct Output {
    pub node: String,
    pub port: String,
    pub message: Message,
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct Outcome {
    pub outputs: Vec<Output>,
    /// Messages the sandboxed actors answered with an error during the run.
    pub failures: usize,
}

/// Adds the graph's nodes, connections and initial packets. (Not
/// `Network::with_graph`: in Reflow 0.2.1 it drops the port of every
/// initial packet of a loaded graph and replays the graph's load events
/// into the network a second time.)
fn wire(n: &mut Network, graph: &GraphFile) -> anyhow::Result<()> {
    for (id, node) in &graph.export.processes {
        n.add_node(id, &node.component, node.metadata.clone())?;
    }
    for c in &graph.export.connections {
        let to = ConnectionPoint {
            actor: c.to.node_id.clone(),
            port: port_of(&c.to),
            initial_data: None,
        };
        match &c.data {
            Some(data) => n.add_initial(InitialPacket {
                to: ConnectionPoint {
                    initial_data: Some(Message::from(data.clone())),
                    ..to
                },
            }),
            None => n.add_connection(Connector {
                from: ConnectionPoint {
                    actor: c.from.node_id.clone(),
                    port: port_of(&c.from),
                    initial_data: None,
                },
                to,
            }),
        }
    }
    Ok(())
}

/// A connection end's port: its `portId`, else its `portName`.
pub(crate) fn port_of(edge: &GraphEdge) -> String {
    if edge.port_id.is_empty() {
        edge.port_name.clone()
    } else {
        edge.port_id.clone()
    }
}

/// The network configuration we run with: Reflow's tracing (which would
/// dial ws://localhost:8080 by default) off, or on toward `trace_server`.
pub fn network_config_tracing(trace_server: Option<&str>) -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.tracing.enabled = trace_server.is_some();
    if let Some(url) = trace_server {
        config.tracing.server_url = url.to_string();
    }
    config
}

/// [`network_config_tracing`] with Reflow's tracing off.
pub fn network_config() -> NetworkConfig {
    network_config_tracing(None)
}

/// Where a graph's script nodes run.
#[derive(Clone, Copy)]
pub enum Sandboxes<'a> {
    /// In this machine's VMs.
    Local(&'a Bridge),
    /// On sandbox hosts (`reflow-sandbox serve`), state under `namespace`
    /// in the hosts' store.
    Remote {
        hosts: &'a Arc<RemoteHosts>,
        namespace: &'a str,
    },
}

impl Sandboxes<'_> {
    fn failures(&self) -> usize {
        match self {
            Sandboxes::Local(b) => b.failures(),
            Sandboxes::Remote { hosts, .. } => hosts.failures(),
        }
    }

    fn busy(&self) -> usize {
        match self {
            Sandboxes::Local(b) => b.busy(),
            Sandboxes::Remote { hosts, .. } => hosts.busy(),
        }
    }
}

/// Runs `graph` with its script actors in `bridge`'s sandboxes; `on_output`
/// hears each sink output as it arrives. Must run within a tokio runtime.
pub async fn run(
    graph: &GraphFile,
    bridge: &Bridge,
    options: &RunOptions,
    on_output: impl FnMut(&Output),
) -> Result<Outcome, RunError> {
    run_on(graph, Sandboxes::Local(bridge), options, on_output).await
}

/// [`run`] with the script nodes where `sandboxes` says (hot reload is for
/// local ones only).
pub async fn run_on(
    graph: &GraphFile,
    sandboxes: Sandboxes<'_>,
    options: &RunOptions,
    mut on_output: impl FnMut(&Output),
) -> Result<Outcome, RunError> {
    let failed_before = sandboxes.failures();
    let activity = Arc::new(Activity::default());
    let network = Mutex::new(Network::new(network_config_tracing(
        options.trace_server.as_deref(),
    )));
    let mut updaters: std::collections::HashMap<String, ScriptUpdater> = Default::default();
    {
        let mut n = network.lock();
        let mut registered = std::collections::HashSet::new();
        for node in graph.export.processes.values() {
            if !registered.insert(node.component.clone()) {
                continue;
            }
            // Script nodes keep their own dispatch loop (a window of
            // messages in flight, idle VMs held); natives run in Reflow's.
            let tracked = match graph.scripts.get(&node.component) {
                Some(script) => match sandboxes {
                    Sandboxes::Local(bridge) => {
                        let actor = bridge.actor(script.clone())?;
                        updaters.insert(node.component.clone(), actor.updater());
                        Tracked::with_own_process(Arc::new(actor), activity.clone())
                    }
                    Sandboxes::Remote { hosts, namespace } => {
                        let actor =
                            RemoteSandboxActor::new(hosts.clone(), script.clone(), namespace);
                        Tracked::with_own_process(Arc::new(actor), activity.clone())
                    }
                },
                None => match native(&node.component) {
                    Some(native) => Tracked::new(Arc::new(native), activity.clone()),
                    None => continue, // GraphFile::load checked every component
                },
            };
            n.register_actor_arc(&node.component, Arc::new(tracked))
                .map_err(RunError::Network)?;
        }
        wire(&mut n, graph).map_err(RunError::Network)?;
        n.start().map_err(RunError::Network)?;
    }
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut outcome = Outcome::default();
    let result = loop {
        tokio::time::sleep(POLL).await;
        for (component, script) in options.updates.iter().flat_map(|u| u.try_iter()) {
            match updaters.get(&component) {
                Some(updater) => {
                    let version = updater.update(script);
                    tracing::info!(
                        target: "reflow_sandbox::script",
                        component,
                        version = version.number,
                        hash = %version.hash,
                        "new script version published"
                    );
                }
                None => tracing::warn!(
                    target: "reflow_sandbox::script",
                    component,
                    "a changed script is not a component of this graph; ignored"
                ),
            }
        }
        let mut got = false;
        {
            let n = network.lock();
            for sink in &graph.sinks {
                for (port, message) in n.read_actor_output(sink) {
                    if matches!(message, Message::Optional(None)) {
                        continue;
                    }
                    got = true;
                    let output = Output {
                        node: sink.clone(),
                        port,
                        message,
                    };
                    on_output(&output);
                    outcome.outputs.push(output);
                }
            }
        }
        if got || !activity.idle() || sandboxes.busy() > 0 {
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= options.settle {
            break Ok(());
        }
        if let Some(limit) = options.timeout {
            if started.elapsed() > limit {
                break Err(RunError::Timeout(limit));
            }
        }
    };
    activity.mark_all_busy();
    network.lock().shutdown();
    outcome.failures = sandboxes.failures() - failed_before;
    result.map(|()| outcome)
}
