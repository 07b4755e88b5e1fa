//! The sandbox hosts a graph's script nodes run on (`reflow-sandbox serve`
//! processes), which are reachable, and where each node goes: the
//! reachable host with the fewest of this client's nodes. A host that
//! fails is left alone for [`RETRY_AFTER`], and the functions deployed on
//! it are forgotten (a host that comes back has lost them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use reflow_sandbox_core::Script;

/// How long a failed host is not picked.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a deploy or a session's handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a host cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// A host URL that is not `http://HOST:PORT`.
    #[error("sandbox host {0:?}: expected http://HOST:PORT (https hosts are not supported by this client yet)")]
    Url(String),
    /// No hosts were given.
    #[error("no sandbox hosts were given")]
    NoHosts,
    /// The host refused or failed a request (its words).
    #[error("sandbox host {host}: {why}")]
    Host {
        /// The host, `HOST:PORT`.
        host: String,
        /// What went wrong.
        why: String,
    },
}

/// One host.
struct Host {
    /// `http://HOST:PORT`.
    api: String,
    /// `HOST:PORT`, as errors name it.
    name: String,
    /// Nodes of this client placed on it now.
    placed: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
}

/// The hosts of a run and the client's token (the same on every host).
pub struct RemoteHosts {
    hosts: Vec<Host>,
    token: String,
    http: reqwest::Client,
    /// Function ids by host and script digest.
    deployed: Mutex<HashMap<(usize, String), String>>,
    /// Messages answered with an error, in all.
    failures: AtomicUsize,
    /// Messages in flight, in all.
    busy: AtomicUsize,
}

impl RemoteHosts {
    /// The hosts at `urls` (`http://HOST:PORT`), reached with `token`.
    pub fn new(urls: &[String], token: String) -> Result<Arc<RemoteHosts>, RemoteError> {
        if urls.is_empty() {
            return Err(RemoteError::NoHosts);
        }
        let mut hosts = Vec::new();
        for url in urls {
            let name = url
                .trim_end_matches('/')
                .strip_prefix("http://")
                .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('@'))
                .ok_or_else(|| RemoteError::Url(url.clone()))?;
            hosts.push(Host {
                api: format!("http://{name}"),
                name: name.to_string(),
                placed: AtomicUsize::new(0),
                down_until: Mutex::new(None),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| RemoteError::Url(format!("cannot make an HTTP client: {e}")))?;
        Ok(Arc::new(RemoteHosts {
            hosts,
            token,
            http,
            deployed: Mutex::new(HashMap::new()),
            failures: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
        }))
    }

    /// The host `i`'s name (`HOST:PORT`).
    pub fn name(&self, i: usize) -> &str {
        &self.hosts[i].name
    }

    /// The reachable host with the fewest placed nodes, other than those
    /// in `tried`.
    pub(crate) fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        (0..self.hosts.len())
            .filter(|i| !tried.contains(i))
            .filter(|&i| self.hosts[i].down_until.lock().is_none_or(|t| t <= now))
            .min_by_key(|&i| self.hosts[i].placed.load(Ordering::SeqCst))
    }

    /// Counts a node placed on (`+1`) or moved off (`-1`) host `i`.
    pub(crate) fn place(&self, i: usize, on: bool) {
        let placed = &self.hosts[i].placed;
        if on {
            placed.fetch_add(1, Ordering::SeqCst);
        } else {
            let _ = placed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    /// Host `i` failed: not picked for [`RETRY_AFTER`], its deployments
    /// forgotten.
    pub(crate) fn mark_down(&self, i: usize, why: &str) {
        tracing::warn!(host = %self.hosts[i].name, %why, "sandbox host unreachable");
        *self.hosts[i].down_until.lock() = Some(Instant::now() + RETRY_AFTER);
        self.deployed.lock().retain(|(h, _), _| *h != i);
    }

    /// The id of `script` deployed on host `i` (deployed now if it is not
    /// yet).
    pub(crate) async fn deploy(&self, i: usize, script: &Script) -> Result<String, RemoteError> {
        let digest = hex::encode(Sha256::digest(
            format!("{}\n{}\n{}", script.language, script.name, script.source).as_bytes(),
        ));
        let key = (i, digest);
        if let Some(id) = self.deployed.lock().get(&key) {
            return Ok(id.clone());
        }
        let host = &self.hosts[i];
        let fail = |why: String| RemoteError::Host {
            host: host.name.clone(),
            why,
        };
        let stem = script
            .name
            .rsplit_once('.')
            .map_or(script.name.as_str(), |(s, _)| s);
        let name: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(128)
            .collect();
        let body = serde_json::json!({
            "name": if name.is_empty() { "script".to_string() } else { name },
            "runtime": script.language.to_string(),
            "code": script.source,
            "handler": "",
            "timeout_seconds": script.limits.timeout.map(|t| t.as_secs().max(1)),
        });
        let answer = self
            .http
            .post(format!("{}/api/v1/functions", host.api))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| fail(format!("cannot deploy: {e}")))?;
        let status = answer.status();
        let v: serde_json::Value = answer
            .json()
            .await
            .map_err(|e| fail(format!("a deploy answer that is not JSON ({status}): {e}")))?;
        let Some(id) = v["function_id"].as_str().filter(|_| v["success"] == true) else {
            let why = v["error"].as_str().unwrap_or("no reason given");
            return Err(fail(format!("refused the deploy ({status}): {why}")));
        };
        self.deployed.lock().insert(key, id.to_string());
        Ok(id.to_string())
    }

    /// The WebSocket URL of function `id` on host `i`.
    pub(crate) fn session_url(&self, i: usize, id: &str) -> String {
        format!("ws://{}/ws/{id}", self.hosts[i].name)
    }

    /// The token, for a session's handshake.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    pub(crate) fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn busy_guard(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Messages answered with an error so far.
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    /// Messages in flight now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }
}

/// A message in flight (counted until dropped).
pub(crate) struct Busy(Arc<RemoteHosts>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Arc<RemoteHosts> {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9000 + i))
            .collect();
        RemoteHosts::new(&urls, "t".into()).unwrap()
    }

    #[test]
    fn urls_must_be_plain_http_host_and_port() {
        for bad in [
            "https://a:1",
            "a:1",
            "http://",
            "http://a:1/x",
            "http://u:p@a:1",
        ] {
            assert!(
                matches!(
                    RemoteHosts::new(&[bad.into()], "t".into()),
                    Err(RemoteError::Url(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            RemoteHosts::new(&[], "t".into()),
            Err(RemoteError::NoHosts)
        ));
        assert_eq!(hosts(1).name(0), "127.0.0.1:9000");
    }

    #[test]
    fn nodes_spread_and_avoid_failed_hosts() {
        let h = hosts(2);
        let a = h.pick(&[]).unwrap();
        h.place(a, true);
        let b = h.pick(&[]).unwrap();
        assert_ne!(a, b, "the second node goes to the emptier host");
        h.place(b, true);
        h.mark_down(b, "test");
        assert_eq!(h.pick(&[]), Some(a));
        assert_eq!(h.pick(&[a]), None, "the failed host waits its turn");
        h.place(a, false);
        h.place(a, false);
        assert_eq!(h.pick(&[]), Some(a));
    }
}
