//! Reading a Reflow graph file (Reflow's `GraphExport` JSON) and checking
//! it before Reflow sees it: Reflow 0.2.1 panics on a graph without a name
//! and on a connection to a node that does not exist.
//!
//! Script nodes carry Reflow's component spec in their metadata:
//!
//! ```json
//! "double": {
//!   "component": "Double",
//!   "metadata": {
//!     "componentSpec": {"type": "script", "script": {
//!       "runtime": "python", "source": "file", "path": "double.actor.py",
//!       "timeoutSeconds": 30}},
//!     "factor": 2
//!   }
//! }
//! ```
//!
//! `path` is relative to the graph file; `"source": "inline"` with `code`
//! works too. `"isolation": "vm" | "process"` in a script node's metadata
//! chooses what runs it, over `reflow.yaml`'s. Every other metadata key is
//! the node's config (`context.config` in the script).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reflow_graph::types::{ComponentSpec, GraphExport, ScriptSourceType, ScriptSpec};
use reflow_sandbox_core::{IsolationKind, Language, Script, ScriptError};

use crate::natives::{inport, NATIVES};
use crate::packages::Dependency;
use crate::run::port_of;

/// Why a graph file cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("cannot read graph {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("graph {} is not a Reflow graph: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("graph {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("graph {}, node {node:?}: {source}", path.display())]
    Script {
        path: PathBuf,
        node: String,
        source: ScriptError,
    },
}

/// A checked graph and the scripts of its script components.
#[derive(Debug)]
pub struct GraphFile {
    pub path: PathBuf,
    pub export: GraphExport,
    /// Script component name -> its script.
    pub scripts: HashMap<String, Script>,
    /// Nodes no connection leaves: their outputs are the graph's results.
    pub sinks: Vec<String>,
    /// What the script nodes' specs say they depend on (checked against
    /// their images before anything runs).
    pub dependencies: Vec<Dependency>,
}

impl GraphFile {
    /// The languages of the graph's scripts, each once, Python first.
    pub fn languages(&self) -> Vec<Language> {
        let mut out: Vec<Language> = self.scripts.values().map(|s| s.language).collect();
        out.sort_by_key(|l| *l != Language::Python);
        out.dedup();
        out
    }

    /// Reads and checks the graph at `path`.
    pub fn load(path: &Path) -> Result<GraphFile, GraphError> {
        GraphFile::load_with(path, &HashMap::new())
    }

    /// Reads and checks the graph at `path`, whose nodes may also name the
    /// (discovered) components of `known` without a component spec.
    pub fn load_with(
        path: &Path,
        known: &HashMap<String, Script>,
    ) -> Result<GraphFile, GraphError> {
        let text = std::fs::read_to_string(path).map_err(|source| GraphError::Read {
            path: path.into(),
            source,
        })?;
        let export: GraphExport =
            serde_json::from_str(&text).map_err(|source| GraphError::Parse {
                path: path.into(),
                source,
            })?;
        let invalid = |message: String| GraphError::Invalid {
            path: path.into(),
            message,
        };
        if !export
            .properties
            .get("name")
            .is_some_and(serde_json::Value::is_string)
        {
            return Err(invalid("`properties.name` must be a string".into()));
        }
        if export.processes.is_empty() {
            return Err(invalid("it has no processes".into()));
        }
        for (id, node) in &export.processes {
            if node.id != *id {
                return Err(invalid(format!(
                    "process {id:?} says its id is {:?}",
                    node.id
                )));
            }
        }
        for c in &export.connections {
            let ends = [(&c.to, "to")]
                .into_iter()
                .chain(c.data.is_none().then_some((&c.from, "from")));
            for (end, which) in ends {
                if !export.processes.contains_key(&end.node_id) {
                    return Err(invalid(format!(
                        "a connection's `{which}` names node {:?}, which is not among the processes",
                        end.node_id
                    )));
                }
            }
        }
        check_native_ports(&export).map_err(invalid)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut scripts: HashMap<String, Script> = HashMap::new();
        let mut dependencies = Vec::new();
        // Nodes in id order: which two disagree is then said the same way
        // on every run.
        let mut nodes: Vec<_> = export.processes.iter().collect();
        nodes.sort_by_key(|(id, _)| id.as_str());
        // Script component -> the node that set its script first.
        let mut first_node: HashMap<&str, &str> = HashMap::new();
        for (id, node) in nodes {
            let isolation = isolation_of(node).map_err(|m| invalid(format!("node {id:?}: {m}")))?;
            let mut made = match node.component_spec() {
                Some(ComponentSpec::Script { script }) => {
                    let made = script_of(&script, base).map_err(|e| match e {
                        Either::Script(source) => GraphError::Script {
                            path: path.into(),
                            node: id.clone(),
                            source,
                        },
                        Either::Message(m) => invalid(format!("node {id:?}: {m}")),
                    })?;
                    let mut declared: Vec<_> = script.dependencies.iter().collect();
                    declared.sort();
                    for (name, version) in declared {
                        let d = Dependency::declared(&node.component, made.language, name, version);
                        if !dependencies.contains(&d) {
                            dependencies.push(d);
                        }
                    }
                    made
                }
                None if known.contains_key(&node.component) => known[&node.component].clone(),
                Some(ComponentSpec::Native) | None => {
                    if !NATIVES.contains(&node.component.as_str()) {
                        return Err(invalid(format!(
                            "node {id:?}: component {:?} is neither a script (give it a \
                             `componentSpec` of type \"script\"), nor discovered in the workspace, \
                             nor a built-in native actor ({})",
                            node.component,
                            NATIVES.join(", ")
                        )));
                    }
                    if isolation.is_some() {
                        return Err(invalid(format!(
                            "node {id:?}: `{ISOLATION_KEY}` chooses what runs a script; {:?} is \
                             a built-in native actor, which runs in the host",
                            node.component
                        )));
                    }
                    continue;
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "node {id:?}: component spec {other:?} is not supported"
                    )))
                }
            };
            if isolation.is_some() {
                made.shape.isolation = isolation;
            }
            if let Some(seen) = scripts.get(&node.component) {
                if *seen != made {
                    let other = first_node[node.component.as_str()];
                    let what = if seen.shape.isolation != made.shape.isolation {
                        "different isolation (a component runs one way in a graph)"
                    } else {
                        "different scripts"
                    };
                    return Err(invalid(format!(
                        "nodes {other:?} and {id:?} give component {:?} {what}",
                        node.component
                    )));
                }
            }
            first_node.entry(&node.component).or_insert(id);
            scripts.insert(node.component.clone(), made);
        }
        let sources: HashSet<&str> = export
            .connections
            .iter()
            .filter(|c| c.data.is_none())
            .map(|c| c.from.node_id.as_str())
            .collect();
        let mut sinks: Vec<String> = export
            .processes
            .keys()
            .filter(|id| !sources.contains(id.as_str()))
            .cloned()
            .collect();
        sinks.sort();
        Ok(GraphFile {
            path: path.into(),
            export,
            scripts,
            sinks,
            dependencies,
        })
    }
}

/// Connections to and from built-in natives must use their ports (a
/// packet to a port nobody reads would vanish without a word).
fn check_native_ports(export: &GraphExport) -> Result<(), String> {
    let native_of = |node: &str| {
        export
            .processes
            .get(node)
            .filter(|n| n.component_spec().is_none())
            .and_then(|n| inport(&n.component).map(|i| (n.component.as_str(), i)))
    };
    for c in &export.connections {
        if let Some((component, want)) = native_of(&c.to.node_id) {
            let port = port_of(&c.to);
            if port != want {
                return Err(format!(
                    "node {:?} ({component}) has no inport {port:?}; its inport is {want:?}",
                    c.to.node_id
                ));
            }
        }
        if c.data.is_some() {
            continue;
        }
        if let Some((component, _)) = native_of(&c.from.node_id) {
            let port = port_of(&c.from);
            if port != "out" {
                return Err(format!(
                    "node {:?} ({component}) has no outport {port:?}; its outport is \"out\"",
                    c.from.node_id
                ));
            }
        }
    }
    Ok(())
}

/// The metadata key that chooses what runs a script node.
pub const ISOLATION_KEY: &str = "isolation";

/// What a node's metadata says runs it (`isolation`), if it says.
fn isolation_of(node: &reflow_graph::types::GraphNode) -> Result<Option<IsolationKind>, String> {
    let Some(value) = node.metadata.as_ref().and_then(|m| m.get(ISOLATION_KEY)) else {
        return Ok(None);
    };
    value
        .as_str()
        .and_then(IsolationKind::named)
        .map(Some)
        .ok_or_else(|| format!("`{ISOLATION_KEY}` is {value}; it must be \"vm\" or \"process\""))
}

enum Either {
    Script(ScriptError),
    Message(String),
}

fn script_of(spec: &ScriptSpec, base: &Path) -> Result<Script, Either> {
    let language = Language::named(&spec.runtime).ok_or_else(|| {
        Either::Message(format!(
            "runtime {:?} is not available (python and javascript are)",
            spec.runtime
        ))
    })?;
    let mut script = match spec.source {
        ScriptSourceType::File => {
            let rel = spec.path.as_deref().ok_or_else(|| {
                Either::Message("a script with `\"source\": \"file\"` needs a `path`".into())
            })?;
            Script::from_file(&base.join(rel), Some(language)).map_err(Either::Script)?
        }
        ScriptSourceType::Inline => {
            let code = spec
                .code
                .as_deref()
                .ok_or_else(|| Either::Message("an inline script needs its `code`".into()))?;
            let name = format!("inline.actor.{}", language.extension());
            Script::inline(language, &name, code)
        }
    };
    if let Some(s) = spec.timeout_seconds {
        if s == 0 {
            return Err(Either::Message(
                "`timeoutSeconds` must be at least 1".into(),
            ));
        }
        script.limits.timeout = Some(Duration::from_secs(s.into()));
    }
    if let Some(mb) = spec.memory_mb {
        let range = reflow_sandbox_core::shape::MEMORY_MIB;
        if !range.contains(&mb) {
            return Err(Either::Message(format!(
                "`memoryMb` {mb} is outside {}..{}",
                range.start(),
                range.end()
            )));
        }
        script.shape.mem_mib = Some(mb);
    }
    Ok(script)
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
