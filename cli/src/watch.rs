//! `run --watch`: the workspace is read again (statically, as discovery
//! always reads it: nothing is run on the host) every [`EVERY`], and each
//! component of the graph whose script changed is sent as a new version
//! (see `reflow_host_bridge::versions`). A script that no longer reads
//! (a problem in its metadata) or is gone is reported once, and its nodes
//! keep the version they have; one that reads but does not load in the
//! guest is refused by each node, which says so.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reflow_sandbox_core::Script;

use crate::workspace::Workspace;

/// How often the workspace is read again.
pub const EVERY: Duration = Duration::from_millis(500);

/// Stops the watch when dropped.
pub struct Watch {
    stop: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What the run does to each script before it runs it (reflow.yaml's
/// per-actor settings), done to each new version too.
pub type Prepare = Box<dyn Fn(&str, &mut Script) + Send>;

/// Watches the workspace at `root` whose graph runs `scripts` (component
/// -> script, as the run started): new versions, each given `prepare`,
/// come on the receiver.
pub fn start(
    root: PathBuf,
    scripts: HashMap<String, Script>,
    prepare: Prepare,
) -> std::io::Result<(flume::Receiver<(String, Script)>, Watch)> {
    let (tx, rx) = flume::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("reflow-watch".into())
        .spawn(move || {
            let mut seen = Seen::new(scripts);
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(EVERY);
                for (component, mut script) in seen.changes(&root) {
                    prepare(&component, &mut script);
                    if tx.send((component, script)).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok((rx, Watch { stop }))
}

/// What the watch has seen: each component's latest script, and what it
/// has already reported (each problem once).
struct Seen {
    scripts: HashMap<String, Script>,
    reported: HashSet<String>,
}

impl Seen {
    fn new(scripts: HashMap<String, Script>) -> Seen {
        Seen {
            scripts,
            reported: HashSet::new(),
        }
    }

    /// Reports `text` unless it was reported already.
    fn once(&mut self, text: String) {
        if self.reported.insert(text.clone()) {
            tracing::warn!(target: "reflow_sandbox::script", "watch: {text}");
        }
    }

    /// The graph's components whose script differs from the last seen.
    fn changes(&mut self, root: &std::path::Path) -> Vec<(String, Script)> {
        let ws = match Workspace::load(root) {
            Ok(ws) => ws,
            Err(e) => {
                self.once(format!(
                    "cannot read the workspace ({e}); nodes keep their versions"
                ));
                return Vec::new();
            }
        };
        for p in &ws.discovery.problems {
            self.once(format!(
                "{p} (nodes of a script that no longer reads keep the version they have)"
            ));
        }
        let mut found = HashMap::new();
        for c in &ws.discovery.components {
            match c.script() {
                Ok(s) => {
                    found.insert(c.metadata.component.clone(), s);
                }
                Err(e) => self.once(format!("{}: {e}", c.metadata.component)),
            }
        }
        let mut changed = Vec::new();
        let components: Vec<String> = self.scripts.keys().cloned().collect();
        for component in components {
            match found.remove(&component) {
                Some(script) if script.source != self.scripts[&component].source => {
                    self.scripts.insert(component.clone(), script.clone());
                    changed.push((component, script));
                }
                Some(_) => {}
                None => self.once(format!(
                    "component {component} is not in the workspace now (its script is gone, or has a \
                     problem said above); its nodes keep the version they have"
                )),
            }
        }
        for component in found.keys() {
            self.once(format!(
                "component {component} is new; the graph has no node of it, so nothing switches"
            ));
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str =
        "@actor(name='A', inports=['i'], outports=['o'])\ndef a(context):\n    return {'o': 1}\n";
    const V2: &str =
        "@actor(name='A', inports=['i'], outports=['o'])\ndef a(context):\n    return {'o': 2}\n";

    #[test]
    fn a_changed_script_is_a_change_once_and_a_gone_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.actor.py");
        std::fs::write(&file, V1).unwrap();
        let ws = Workspace::load(dir.path()).unwrap();
        let mut seen = Seen::new(ws.scripts().unwrap());
        assert!(seen.changes(dir.path()).is_empty());
        std::fs::write(&file, V2).unwrap();
        let changed = seen.changes(dir.path());
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0, "A");
        assert_eq!(changed[0].1.source, V2);
        assert!(seen.changes(dir.path()).is_empty(), "reported once");
        std::fs::write(
            &file,
            "@actor(name='A', inports=['i', 'i'])\ndef a(c):\n    pass\n",
        )
        .unwrap();
        assert!(
            seen.changes(dir.path()).is_empty(),
            "a script that no longer reads"
        );
        assert_eq!(seen.reported.len(), 2, "{:?}", seen.reported);
        std::fs::remove_file(&file).unwrap();
        assert!(seen.changes(dir.path()).is_empty());
        std::fs::write(&file, V1).unwrap();
        let back = seen.changes(dir.path());
        assert_eq!(back.len(), 1, "back to the first version is a change");
    }
}
