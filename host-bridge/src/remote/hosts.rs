//! The sandbox hosts a graph's script nodes run on (`reflow-sandbox serve`
//! processes), which are reachable, and where each node goes: the
//! reachable host with the fewest of this client's nodes. A host that
//! fails is left alone for [`RETRY_AFTER`], and the functions deployed on
//! it are forgotten (a host that comes back has lost them).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};

use reflow_sandbox_core::Script;

/// How long a failed host is not picked.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a deploy or a session's handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a host cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// A host URL that is not `http://HOST:PORT` or `https://HOST:PORT`.
    #[error("sandbox host {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    Url(String),
    /// TLS cannot be set up (why).
    #[error("TLS toward sandbox hosts: {0}")]
    Tls(String),
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
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    api: String,
    /// Whether it speaks TLS (`https`, `wss`).
    tls: bool,
    /// `HOST:PORT`, as errors name it.
    name: String,
    /// Nodes of this client placed on it now.
    placed: AtomicUsize,
    /// Its own count of busy VMs and open sessions, as it last announced.
    load: AtomicUsize,
    /// No longer announced (hosts from a registry only).
    gone: AtomicBool,
    down_until: Mutex<Option<Instant>>,
}

impl Host {
    /// The host at `url` (`http://HOST:PORT`).
    fn at(url: &str) -> Result<Host, RemoteError> {
        let url_ = url.trim_end_matches('/');
        let (tls, rest) = match (url_.strip_prefix("http://"), url_.strip_prefix("https://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err(RemoteError::Url(url.to_string())),
        };
        let name = Some(rest)
            .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('@'))
            .ok_or_else(|| RemoteError::Url(url.to_string()))?;
        Ok(Host {
            api: format!("{}://{name}", if tls { "https" } else { "http" }),
            tls,
            name: name.to_string(),
            placed: AtomicUsize::new(0),
            load: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            down_until: Mutex::new(None),
        })
    }
}

/// The hosts of a run and the client's token (the same on every host).
/// Hosts are only ever added (their index names them); a host that leaves
/// a registry is marked gone.
pub struct RemoteHosts {
    hosts: RwLock<Vec<Arc<Host>>>,
    token: String,
    http: reqwest::Client,
    /// TLS for `wss://` sessions.
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    /// Function ids by host and script digest.
    deployed: Mutex<HashMap<(usize, String), String>>,
    /// Messages answered with an error, in all.
    failures: AtomicUsize,
    /// Messages in flight, in all.
    busy: AtomicUsize,
}

impl RemoteHosts {
    /// The hosts at `urls` (`http://HOST:PORT` or `https://HOST:PORT`),
    /// reached with `token`; TLS trusts the public roots and the
    /// certificates in the PEM file `ca`, if given.
    pub fn new(
        urls: &[String],
        token: String,
        ca: Option<&Path>,
    ) -> Result<Arc<RemoteHosts>, RemoteError> {
        if urls.is_empty() {
            return Err(RemoteError::NoHosts);
        }
        let hosts = urls
            .iter()
            .map(|u| Host::at(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        RemoteHosts::with(hosts, token, ca)
    }

    /// No hosts yet (a registry adds them).
    pub(crate) fn empty(token: String, ca: Option<&Path>) -> Result<Arc<RemoteHosts>, RemoteError> {
        RemoteHosts::with(Vec::new(), token, ca)
    }

    fn with(
        hosts: Vec<Arc<Host>>,
        token: String,
        ca: Option<&Path>,
    ) -> Result<Arc<RemoteHosts>, RemoteError> {
        let (http, tls) = super::tls::clients(ca)?;
        Ok(Arc::new(RemoteHosts {
            hosts: RwLock::new(hosts),
            token,
            http,
            tls,
            deployed: Mutex::new(HashMap::new()),
            failures: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
        }))
    }

    /// What a registry says now: hosts at `urls` with their `load`s; known
    /// ones not among them are gone.
    pub(crate) fn update(&self, announced: &[(String, usize)]) {
        let mut hosts = self.hosts.write();
        for h in hosts.iter() {
            let found = announced
                .iter()
                .find(|(u, _)| Host::at(u).is_ok_and(|n| n.name == h.name));
            h.gone.store(found.is_none(), Ordering::SeqCst);
            if let Some((_, load)) = found {
                h.load.store(*load, Ordering::SeqCst);
            }
        }
        for (url, load) in announced {
            match Host::at(url) {
                Ok(h) if !hosts.iter().any(|k| k.name == h.name) => {
                    h.load.store(*load, Ordering::SeqCst);
                    tracing::info!(host = %h.name, "sandbox host announced");
                    hosts.push(Arc::new(h));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%e, "a registry announces a host this client cannot use"),
            }
        }
    }

    fn host(&self, i: usize) -> Arc<Host> {
        self.hosts.read()[i].clone()
    }

    /// The hosts' URLs (`http://HOST:PORT`), with whether each is usable
    /// now (not gone from its registry, not failed in the last few seconds).
    pub fn list(&self) -> Vec<(String, bool)> {
        let now = Instant::now();
        self.hosts
            .read()
            .iter()
            .map(|h| (h.api.clone(), usable(h, now)))
            .collect()
    }

    /// The host `i`'s name (`HOST:PORT`).
    pub fn name(&self, i: usize) -> String {
        self.host(i).name.clone()
    }

    /// The reachable host with the fewest placed nodes, other than those
    /// in `tried`.
    pub(crate) fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let hosts = self.hosts.read();
        (0..hosts.len())
            .filter(|i| !tried.contains(i))
            .filter(|&i| usable(&hosts[i], now))
            .min_by_key(|&i| {
                let h = &hosts[i];
                (
                    h.placed.load(Ordering::SeqCst),
                    h.load.load(Ordering::SeqCst),
                )
            })
    }

    /// Counts a node placed on (`+1`) or moved off (`-1`) host `i`.
    pub(crate) fn place(&self, i: usize, on: bool) {
        let host = self.host(i);
        let placed = &host.placed;
        if on {
            placed.fetch_add(1, Ordering::SeqCst);
        } else {
            let _ = placed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    /// Forgets what was deployed on host `i` (it restarted).
    pub(crate) fn forget(&self, i: usize) {
        self.deployed.lock().retain(|(h, _), _| *h != i);
    }

    /// Host `i` failed: not picked for [`RETRY_AFTER`], its deployments
    /// forgotten.
    pub(crate) fn mark_down(&self, i: usize, why: &str) {
        let host = self.host(i);
        tracing::warn!(host = %host.name, %why, "sandbox host unreachable");
        *host.down_until.lock() = Some(Instant::now() + RETRY_AFTER);
        self.forget(i);
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
        let host = self.host(i);
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
        let host = self.host(i);
        let scheme = if host.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/ws/{id}", host.name)
    }

    /// The TLS configuration of `wss://` sessions.
    pub(crate) fn tls(&self) -> Arc<tokio_rustls::rustls::ClientConfig> {
        self.tls.clone()
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

/// Whether `h` may take nodes now.
fn usable(h: &Host, now: Instant) -> bool {
    !h.gone.load(Ordering::SeqCst) && h.down_until.lock().is_none_or(|t| t <= now)
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
        RemoteHosts::new(&urls, "t".into(), None).unwrap()
    }

    #[test]
    fn urls_must_be_plain_http_host_and_port() {
        for bad in [
            "ftp://a:1",
            "a:1",
            "http://",
            "https://a:1/x",
            "http://u:p@a:1",
        ] {
            assert!(
                matches!(
                    RemoteHosts::new(&[bad.into()], "t".into(), None),
                    Err(RemoteError::Url(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            RemoteHosts::new(&[], "t".into(), None),
            Err(RemoteError::NoHosts)
        ));
        let tls = RemoteHosts::new(&["https://h:443/".into()], "t".into(), None).unwrap();
        assert_eq!(tls.session_url(0, "f"), "wss://h:443/ws/f");
        assert_eq!(hosts(1).session_url(0, "f"), "ws://127.0.0.1:9000/ws/f");
        let missing = Path::new("/nonexistent/ca.pem");
        assert!(matches!(
            RemoteHosts::new(&["https://h:1".into()], "t".into(), Some(missing)),
            Err(RemoteError::Tls(_))
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

    #[test]
    fn a_registry_adds_hosts_weighs_their_load_and_marks_them_gone() {
        let h = RemoteHosts::empty("t".into(), None).unwrap();
        assert_eq!(h.pick(&[]), None);
        h.update(&[("http://a:1".into(), 5), ("http://b:2".into(), 1)]);
        assert_eq!(h.name(h.pick(&[]).unwrap()), "b:2", "the less loaded host");
        h.update(&[("http://a:1".into(), 5)]);
        assert_eq!(h.name(h.pick(&[]).unwrap()), "a:1", "b is gone");
        assert_eq!(
            h.list(),
            vec![("http://a:1".into(), true), ("http://b:2".into(), false)]
        );
    }
}
