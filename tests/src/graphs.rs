//! Reflow graph files for tests: script nodes written next to the graph,
//! native nodes, connections and initial packets; and a bridge over the
//! test images.

use reflow_host_bridge::state::StateStore;
use reflow_host_bridge::{Bridge, BridgeConfig};
use reflow_sandbox::setup::{self, Sizes};
use reflow_sandbox::{GraphFile, Outcome};
use reflow_sandbox_core::Language;
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
    /// A script node in `language`: `source` is written to
    /// `<component>.actor.<extension>`; `config` (an object) is the node's
    /// config.
    pub fn script_in(
        &mut self,
        language: Language,
        id: &str,
        component: &str,
        source: &str,
        config: Value,
        timeout_seconds: Option<u32>,
    ) -> &mut Self {
        let file = format!("{component}.actor.{}", language.extension());
        std::fs::write(self.dir.path().join(&file), source).expect("script written");
        let mut script = json!({"runtime": language.to_string(), "source": "file", "path": file});
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

    /// A Python script node, as [`GraphBuilder::script_in`].
    pub fn script(
        &mut self,
        id: &str,
        component: &str,
        source: &str,
        config: Value,
        timeout_seconds: Option<u32>,
    ) -> &mut Self {
        self.script_in(
            Language::Python,
            id,
            component,
            source,
            config,
            timeout_seconds,
        )
    }

    /// A JavaScript script node, as [`GraphBuilder::script_in`].
    pub fn js_script(
        &mut self,
        id: &str,
        component: &str,
        source: &str,
        config: Value,
        timeout_seconds: Option<u32>,
    ) -> &mut Self {
        self.script_in(
            Language::JavaScript,
            id,
            component,
            source,
            config,
            timeout_seconds,
        )
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

/// A bridge over the test images with a Python runtime (its golden is the
/// one the actor tests use). Call within a tokio runtime.
pub fn bridge(store: StateStore, config: BridgeConfig) -> Bridge {
    bridge_for(&[Language::Python], store, config)
}

/// A Python bridge for one node's tests: one clone preloaded, at most
/// four VMs, state embedded under `namespace`.
pub fn small_bridge(namespace: &str) -> Bridge {
    let config = BridgeConfig {
        pool: reflow_sandbox_core::PoolConfig {
            preload_count: 1,
            max_size: 4,
            ..Default::default()
        },
        namespace: namespace.into(),
        ..BridgeConfig::default()
    };
    bridge(StateStore::embedded(), config)
}

/// A bridge with a runtime for each of `languages`, default sizes.
pub fn bridge_for(languages: &[Language], store: StateStore, config: BridgeConfig) -> Bridge {
    let languages: Vec<(Language, Sizes)> = languages
        .iter()
        .map(|&l| (l, Sizes::default_for(l)))
        .collect();
    setup::bridge_for(
        &crate::bridge_images(),
        &languages,
        &reflow_vmm::cache_root(),
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
