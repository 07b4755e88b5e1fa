//! Reflow graph files for tests: script nodes written next to the graph,
//! native nodes, connections and initial packets; and a bridge over the
//! test images.

use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::{Bridge, BridgeConfig, GuestImages};
use reflow_sandbox::{setup, GraphFile, Outcome};
use serde_json::{json, Map, Value};

fn edge(node: &str, port: &str) -> Value {
    json!({"nodeId": node, "portName": port, "portId": port, "expose": false,
           "portType": {"type": "any"}})
}

/// A graph under construction in a temporary directory.
pub struct GraphBuilder {
    dir: tempfile::TempDir,
    processes: Map<String, Value>,
    connections: Vec<Value>,
}

impl Default for GraphBuilder {
    fn default() -> GraphBuilder {
        GraphBuilder {
            dir: tempfile::tempdir().expect("a temporary directory"),
            processes: Map::new(),
            connections: Vec::new(),
        }
    }
}

impl GraphBuilder {
    /// A Python script node: `source` is written to `<component>.actor.py`;
    /// `config` (an object) is the node's config.
    pub fn script(
        &mut self,
        id: &str,
        component: &str,
        source: &str,
        config: Value,
        timeout_seconds: Option<u32>,
    ) -> &mut Self {
        let file = format!("{component}.actor.py");
        std::fs::write(self.dir.path().join(&file), source).expect("script written");
        let mut script = json!({"runtime": "python", "source": "file", "path": file});
        if let Some(t) = timeout_seconds {
            script["timeoutSeconds"] = json!(t);
        }
        let mut metadata = config.as_object().cloned().unwrap_or_default();
        metadata.insert(
            "componentSpec".into(),
            json!({"type": "script", "script": script}),
        );
        self.processes.insert(
            id.into(),
            json!({"id": id, "component": component, "metadata": metadata}),
        );
        self
    }

    /// A built-in native node.
    pub fn native(&mut self, id: &str, component: &str, config: Value) -> &mut Self {
        self.processes.insert(
            id.into(),
            json!({"id": id, "component": component, "metadata": config}),
        );
        self
    }

    pub fn connect(&mut self, from: &str, out: &str, to: &str, inp: &str) -> &mut Self {
        self.connections
            .push(json!({"from": edge(from, out), "to": edge(to, inp)}));
        self
    }

    /// An initial packet.
    pub fn initial(&mut self, to: &str, port: &str, data: Value) -> &mut Self {
        self.connections
            .push(json!({"from": edge(to, port), "to": edge(to, port), "data": data}));
        self
    }

    /// Writes the graph file and loads it as the CLI does.
    pub fn load(&self) -> GraphFile {
        let graph = json!({"caseSensitive": true, "properties": {"name": "test"},
                           "processes": self.processes, "connections": self.connections});
        let path = self.dir.path().join("graph.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&graph).unwrap()).unwrap();
        GraphFile::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A bridge over the test images (the Python runtime's golden is the one
/// the actor tests use). Call within a tokio runtime.
pub fn bridge(store: StateStore, config: BridgeConfig) -> Bridge {
    let images = crate::guest_images();
    let images = GuestImages {
        kernel: images.kernel,
        initramfs: images.initramfs,
        python: crate::python_image(),
    };
    setup::bridge(
        &images,
        &reflow_guest_image::cache_root(),
        store,
        config,
        false,
    )
    .expect("a bridge")
}

/// The outputs of `node` on `port`, shown as the CLI shows them.
pub fn shown(outcome: &Outcome, node: &str, port: &str) -> Vec<String> {
    outcome
        .outputs
        .iter()
        .filter(|o| o.node == node && o.port == port)
        .map(|o| reflow_sandbox::show::message(&o.message))
        .collect()
}
