//! The functions deployed on a sandbox host: each is a script actor (one
//! per script, as in a workspace) that clients reach by its id, an
//! unguessable 128-bit value that only the deploying client is told.
//! Every WebSocket session on a function is its own graph node: its own VM
//! and its own state scope.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reflow_actor::Actor;
use reflow_host_bridge::{Bridge, SandboxActor};
use reflow_sandbox_core::{Language, Script};
use reflow_workspace::discovery::{self, Problem};
use serde::Deserialize;

/// What a client may hold on a host.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Functions deployed at once.
    pub functions: usize,
    /// WebSocket sessions open at once (each may hold a VM).
    pub sessions: usize,
    /// The longest `timeout_seconds` a deploy may ask for.
    pub max_timeout: Duration,
}

/// A deploy request, as Reflow's `DynASBClient::deploy` sends it.
#[derive(Debug, Deserialize)]
pub struct DeployRequest {
    pub name: String,
    pub runtime: String,
    pub code: String,
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub dependencies: Option<HashMap<String, String>>,
}

/// Why a deploy is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("name {0:?}: 1 to 128 of A-Z a-z 0-9 - _ .")]
    Name(String),
    #[error(
        "unknown runtime {0:?}: use \"python\" or \"javascript\" (also python3, nodejs, node)"
    )]
    Runtime(String),
    #[error("this host has no {0} runtime (it was started without its image)")]
    NoRuntime(Language),
    #[error("the script: {0}")]
    Script(Problem),
    #[error(
        "dependencies cannot be installed by a deploy: a host runs the packages of its own \
         images (`reflow-sandbox image build` on the host); deploy without `dependencies`"
    )]
    Dependencies,
    #[error("timeout_seconds {given}: this host allows 1 to {max}")]
    Timeout { given: u64, max: u64 },
    #[error(
        "client {client} has {have} functions deployed, the most this host allows \
         (--max-functions): undeploy one first"
    )]
    TooMany { client: Arc<str>, have: usize },
    #[error("{0}")]
    Bridge(String),
}

/// Why a session cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such function on this host")]
    Unknown,
    #[error(
        "client {client} has {have} sessions open, the most this host allows \
         (--max-sessions): close one first"
    )]
    TooMany { client: Arc<str>, have: usize },
}

/// A deployed function.
pub struct Function {
    pub id: String,
    pub owner: Arc<str>,
    pub name: String,
    pub runtime: Language,
    pub handler: String,
    pub component: String,
    pub inports: Vec<String>,
    pub outports: Vec<String>,
    /// The template every session's node is an instance of.
    pub actor: SandboxActor,
    pub invocations: AtomicU64,
    pub deploy_time: Duration,
    /// Set when undeployed: sessions still open refuse further calls.
    pub removed: AtomicBool,
}

impl Function {
    /// The id as logs show it: a prefix, never the whole capability.
    pub fn short_id(&self) -> &str {
        &self.id[..8]
    }
}

/// The functions of a host, and the sessions open on them.
pub struct Functions {
    by_id: Mutex<HashMap<String, Arc<Function>>>,
    sessions: Mutex<HashMap<Arc<str>, usize>>,
    limits: ClientLimits,
}

impl Functions {
    pub fn new(limits: ClientLimits) -> Functions {
        Functions {
            by_id: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// Deploys `req` for `client` on `bridge`. Parses the script on the
    /// host (never runs it here); blocks for that: call it from a blocking
    /// thread.
    pub fn deploy(
        &self,
        bridge: &Bridge,
        client: &Arc<str>,
        req: DeployRequest,
    ) -> Result<Arc<Function>, DeployError> {
        let started = Instant::now();
        let name_ok = (1..=128).contains(&req.name.len())
            && req
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(DeployError::Name(req.name));
        }
        let runtime = Language::named(&req.runtime)
            .ok_or_else(|| DeployError::Runtime(req.runtime.clone()))?;
        if bridge.pool(runtime).is_none() {
            return Err(DeployError::NoRuntime(runtime));
        }
        if req.dependencies.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(DeployError::Dependencies);
        }
        let timeout = match req.timeout_seconds {
            None => None,
            Some(s) if s >= 1 && s <= self.limits.max_timeout.as_secs() => {
                Some(Duration::from_secs(s))
            }
            Some(given) => {
                return Err(DeployError::Timeout {
                    given,
                    max: self.limits.max_timeout.as_secs(),
                })
            }
        };
        {
            let have = self.count(client);
            if have >= self.limits.functions {
                return Err(DeployError::TooMany {
                    client: client.clone(),
                    have,
                });
            }
        }
        let file = format!("{}.{}", req.name, runtime.extension());
        let meta =
            discovery::parse(req.code.clone(), runtime, &file).map_err(DeployError::Script)?;
        let mut script = Script::inline(runtime, &file, &req.code);
        script.inports = meta.inports.iter().map(|p| p.name.clone()).collect();
        script.outports = meta.outports.iter().map(|p| p.name.clone()).collect();
        script.limits.timeout = timeout;
        let actor = bridge
            .actor(script)
            .map_err(|e| DeployError::Bridge(e.to_string()))?;
        let function = Arc::new(Function {
            id: new_id(),
            owner: client.clone(),
            name: req.name,
            runtime,
            handler: req.handler.unwrap_or_default(),
            component: meta.component,
            inports: actor.inport_names(),
            outports: actor.outport_names(),
            actor,
            invocations: AtomicU64::new(0),
            deploy_time: started.elapsed(),
            removed: AtomicBool::new(false),
        });
        let mut by_id = self.by_id.lock();
        // Counted again under the lock: concurrent deploys cannot pass the
        // limit together.
        let have = by_id.values().filter(|f| f.owner == *client).count();
        if have >= self.limits.functions {
            return Err(DeployError::TooMany {
                client: client.clone(),
                have,
            });
        }
        by_id.insert(function.id.clone(), function.clone());
        tracing::info!(
            client = %client,
            function = function.short_id(),
            name = %function.name,
            "deployed"
        );
        Ok(function)
    }

    /// The function `id` if `client` deployed it (others' are unknown to
    /// it, as are ids that never existed).
    pub fn get(&self, client: &str, id: &str) -> Option<Arc<Function>> {
        self.by_id
            .lock()
            .get(id)
            .filter(|f| &*f.owner == client)
            .cloned()
    }

    /// The function `id`, whoever deployed it (the id is the capability).
    pub fn by_id(&self, id: &str) -> Option<Arc<Function>> {
        self.by_id.lock().get(id).cloned()
    }

    /// `client`'s functions, by name.
    pub fn list(&self, client: &str) -> Vec<Arc<Function>> {
        let mut all: Vec<_> = self
            .by_id
            .lock()
            .values()
            .filter(|f| &*f.owner == client)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        all
    }

    /// Removes `client`'s function `id`; its open sessions refuse further
    /// calls and their VMs go when they close.
    pub fn undeploy(&self, client: &str, id: &str) -> Option<Arc<Function>> {
        let mut by_id = self.by_id.lock();
        if by_id.get(id).is_none_or(|f| &*f.owner != client) {
            return None;
        }
        let f = by_id.remove(id)?;
        f.removed.store(true, Ordering::SeqCst);
        tracing::info!(client = %client, function = f.short_id(), "undeployed");
        Some(f)
    }

    /// How many functions `client` has deployed.
    pub fn count(&self, client: &str) -> usize {
        self.by_id
            .lock()
            .values()
            .filter(|f| &*f.owner == client)
            .count()
    }

    /// How many functions are deployed and sessions open, in all.
    pub fn totals(&self) -> (usize, usize) {
        (self.by_id.lock().len(), self.sessions.lock().values().sum())
    }

    /// A session on function `id`: a new node of it, counted against its
    /// owner's sessions until dropped.
    pub fn open(self: &Arc<Self>, id: &str) -> Result<Session, SessionError> {
        let function = self.by_id(id).ok_or(SessionError::Unknown)?;
        {
            let mut sessions = self.sessions.lock();
            let have = sessions.entry(function.owner.clone()).or_insert(0);
            if *have >= self.limits.sessions {
                return Err(SessionError::TooMany {
                    client: function.owner.clone(),
                    have: *have,
                });
            }
            *have += 1;
        }
        Ok(Session {
            node: function.actor.new_node(),
            function,
            functions: self.clone(),
        })
    }
}

/// An open session: one graph node of a function.
pub struct Session {
    pub function: Arc<Function>,
    /// This session's node (its own VM and state scope).
    pub node: SandboxActor,
    functions: Arc<Functions>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut sessions = self.functions.sessions.lock();
        if let Some(n) = sessions.get_mut(&self.function.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sessions.remove(&self.function.owner);
            }
        }
    }
}

/// A new function id: 128 random bits as hex.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // A host without a working getrandom(2) cannot make ids anyone could
    // not guess: better to stop than to hand out weak ones.
    getrandom::fill(&mut bytes).expect("getrandom(2) failed: cannot make function ids");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_random_bits() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
