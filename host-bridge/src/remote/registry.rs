//! A fleet's membership in the Redis it already shares for state: each
//! host (`serve --announce`) keeps a key `reflow:sandbox-hosts:URL` holding
//! its address, capacity and load, written every [`HEARTBEAT`] with a TTL
//! of [`TTL`]; clients read the keys there. A host that dies stops
//! writing and its key expires; one that stops cleanly deletes it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::hosts::{RemoteError, RemoteHosts};

/// The keys' prefix.
pub const KEY_PREFIX: &str = "reflow:sandbox-hosts:";
/// How often a host writes its key, and a client reads them.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a key outlives its last write.
pub const TTL: Duration = Duration::from_secs(6);
/// Most hosts a client reads from a registry.
const MAX_HOSTS: usize = 1024;

/// What a host says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// Where clients reach it: `http://HOST:PORT`.
    pub url: String,
    /// Functions deployed on it.
    pub functions: usize,
    /// WebSocket sessions open on it.
    pub sessions: usize,
    /// VMs running a message now.
    pub busy_vms: usize,
    /// VMs alive now (busy, lent to idle sessions, or ready in a pool).
    #[serde(default)]
    pub live_vms: usize,
    /// The most VMs its pools keep alive at once: its capacity.
    #[serde(default)]
    pub max_vms: usize,
    /// The runtimes it serves.
    pub runtimes: Vec<String>,
}

impl Announcement {
    /// How loaded it is, for placement: its sessions and busy VMs; a host
    /// with a session for every VM it may run counts as full.
    pub fn load(&self) -> usize {
        if self.max_vms > 0 && self.sessions >= self.max_vms {
            return usize::MAX / 2;
        }
        self.sessions + self.busy_vms
    }
}

fn registry_error(url: &str, e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Host {
        host: format!("registry {}", reflow_workspace::redact::redact_url(url)),
        why: e.to_string(),
    }
}

async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection, RemoteError> {
    let client = redis::Client::open(url).map_err(|e| registry_error(url, e))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| registry_error(url, "no connection within 10 s"))?
    .map_err(|e| registry_error(url, e))
}

/// Announces a host in the registry at `redis_url` every [`HEARTBEAT`],
/// with what `now` says, until the task is dropped. Fails only when the
/// registry cannot be reached at first; later failures are logged (the key
/// then expires and clients stop placing nodes here).
pub async fn announce(
    redis_url: &str,
    now: impl Fn() -> Announcement + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, RemoteError> {
    let mut conn = connect(redis_url).await?;
    let first = now();
    let key = format!("{KEY_PREFIX}{}", first.url);
    write(&mut conn, &key, &first)
        .await
        .map_err(|e| registry_error(redis_url, e))?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = write(&mut conn, &key, &now()).await {
                tracing::warn!(error = %e, "cannot announce this host in its registry");
            }
        }
    }))
}

async fn write(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    a: &Announcement,
) -> Result<(), String> {
    let value = serde_json::to_string(a).map_err(|e| e.to_string())?;
    conn.set_ex::<_, _, ()>(key, value, TTL.as_secs())
        .await
        .map_err(|e| e.to_string())
}

/// Removes the host at `url` from the registry (a clean stop).
pub async fn withdraw(redis_url: &str, url: &str) -> Result<(), RemoteError> {
    let mut conn = connect(redis_url).await?;
    conn.del::<_, ()>(format!("{KEY_PREFIX}{url}"))
        .await
        .map_err(|e| registry_error(redis_url, e))
}

/// The hosts announced in the registry at `redis_url` now, by URL.
pub async fn announced(redis_url: &str) -> Result<Vec<Announcement>, RemoteError> {
    let mut conn = connect(redis_url).await?;
    read(&mut conn)
        .await
        .map_err(|e| registry_error(redis_url, e))
}

async fn read(conn: &mut redis::aio::MultiplexedConnection) -> Result<Vec<Announcement>, String> {
    let mut keys: Vec<String> = Vec::new();
    {
        let mut it = conn
            .scan_match::<_, String>(format!("{KEY_PREFIX}*"))
            .await
            .map_err(|e| e.to_string())?;
        use futures_util::StreamExt;
        while let Some(k) = it.next().await {
            keys.push(k);
            if keys.len() >= MAX_HOSTS {
                break;
            }
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> = conn.mget(&keys).await.map_err(|e| e.to_string())?;
    let mut all: Vec<Announcement> = values
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_str(&v).ok())
        .collect();
    all.sort_by(|a, b| a.url.cmp(&b.url));
    Ok(all)
}

impl RemoteHosts {
    /// The hosts announced in the registry at `redis_url`, reached with
    /// `token` (and TLS trusting `ca`, as [`RemoteHosts::new`]); read again every [`HEARTBEAT`] while the hosts are in use
    /// (hosts that join are used, hosts whose key expired are not).
    pub async fn from_registry(
        redis_url: &str,
        token: String,
        ca: Option<&std::path::Path>,
    ) -> Result<Arc<RemoteHosts>, RemoteError> {
        let mut conn = connect(redis_url).await?;
        let hosts = RemoteHosts::empty(token, ca)?;
        let first = read(&mut conn)
            .await
            .map_err(|e| registry_error(redis_url, e))?;
        if first.is_empty() {
            return Err(registry_error(
                redis_url,
                "no sandbox host is announced there (serve --announce)",
            ));
        }
        hosts.update(&loads(&first));
        let weak: Weak<RemoteHosts> = Arc::downgrade(&hosts);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let Some(hosts) = weak.upgrade() else { return };
                match read(&mut conn).await {
                    Ok(all) => hosts.update(&loads(&all)),
                    Err(e) => tracing::warn!(error = %e, "cannot read the sandbox host registry"),
                }
            }
        });
        Ok(hosts)
    }
}

fn loads(all: &[Announcement]) -> Vec<(String, usize)> {
    all.iter().map(|a| (a.url.clone(), a.load())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_host_weighs_more_than_any_busy_one() {
        let a = |sessions, busy_vms, max_vms| Announcement {
            url: "http://h:1".into(),
            functions: 1,
            sessions,
            busy_vms,
            live_vms: 0,
            max_vms,
            runtimes: vec![],
        };
        assert_eq!(a(3, 2, 20).load(), 5);
        assert!(a(20, 0, 20).load() > a(19, 19, 20).load());
        assert_eq!(a(3, 2, 0).load(), 5, "an older host that says no capacity");
        let old: Announcement = serde_json::from_str(
            r#"{"url":"http://h:1","functions":0,"sessions":0,"busy_vms":0,"runtimes":[]}"#,
        )
        .unwrap();
        assert_eq!(old.max_vms, 0);
    }
}
