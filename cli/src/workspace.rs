//! A workspace directory: its `reflow.yaml` (optional), its discovered
//! script actors, and the graph it runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use reflow_sandbox_core::Script;
use reflow_workspace::config::{Config, ConfigError, FILE_NAME};
use reflow_workspace::discovery::{discover, Discovery, WalkError};

/// Why a workspace cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("{component}: {source}")]
    Script {
        component: String,
        source: reflow_sandbox_core::ScriptError,
    },
}

/// A loaded workspace.
pub struct Workspace {
    pub root: PathBuf,
    pub config: Config,
    /// Whether the configuration came from a file.
    pub configured: bool,
    pub discovery: Discovery,
}

impl Workspace {
    /// Loads `root/reflow.yaml` (the defaults if there is none) and
    /// discovers the scripts (unless the file turns discovery off).
    pub fn load(root: &Path) -> Result<Workspace, WorkspaceError> {
        let file = root.join(FILE_NAME);
        let (config, configured) = if file.is_file() {
            (Config::load(&file)?, true)
        } else {
            (Config::default(), false)
        };
        let discovery = if config.workspace.discover_scripts {
            discover(&config.discovery(root))?
        } else {
            Discovery::default()
        };
        Ok(Workspace {
            root: root.into(),
            config,
            configured,
            discovery,
        })
    }

    /// The graph file: `graph` of reflow.yaml, else `graph.json`.
    pub fn graph_path(&self) -> PathBuf {
        let rel = self
            .config
            .graph
            .clone()
            .unwrap_or_else(|| "graph.json".into());
        self.root.join(rel)
    }

    /// Each discovered component's script, by component name.
    pub fn scripts(&self) -> Result<HashMap<String, Script>, WorkspaceError> {
        self.discovery
            .components
            .iter()
            .map(|c| {
                let script = c.script().map_err(|source| WorkspaceError::Script {
                    component: c.metadata.component.clone(),
                    source,
                })?;
                Ok((c.metadata.component.clone(), script))
            })
            .collect()
    }
}

/// The discovered components as a table (one line each).
pub fn table(discovery: &Discovery) -> String {
    let rows: Vec<[String; 6]> = discovery
        .components
        .iter()
        .map(|c| {
            let m = &c.metadata;
            let ports = |ps: &[reflow_workspace::discovery::Port]| {
                ps.iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            [
                m.component.clone(),
                m.runtime.to_string(),
                m.namespace.clone(),
                ports(&m.inports),
                ports(&m.outports),
                format!("{}:{}", m.file, m.line),
            ]
        })
        .collect();
    let head = [
        "COMPONENT",
        "RUNTIME",
        "NAMESPACE",
        "INPORTS",
        "OUTPORTS",
        "FILE",
    ]
    .map(String::from);
    let mut widths = head.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |r: &[String; 6]| {
        r.iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    std::iter::once(line(&head))
        .chain(rows.iter().map(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The discovered components and problems as JSON.
pub fn json(discovery: &Discovery) -> serde_json::Value {
    serde_json::json!({
        "components": discovery.components.iter().map(|c| &c.metadata).collect::<Vec<_>>(),
        "problems": discovery.problems.iter().map(|p| serde_json::json!({
            "file": p.file, "line": p.line, "message": p.message,
        })).collect::<Vec<_>>(),
    })
}
