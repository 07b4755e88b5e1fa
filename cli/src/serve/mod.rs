//! `reflow-sandbox serve`: this host's sandboxes over the network, behind
//! the REST and JSON-RPC-over-WebSocket API that Reflow 0.2.1's
//! `websocket_rpc` client (`DynASBClient`, `WebSocketScriptActor`) speaks.
//! See docs/serve.md for the protocol, the security rules and what of
//! Reflow's client needed working around.

mod api;
pub mod auth;
mod calls;
mod functions;
mod http;
pub mod rpc;
mod session;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use reflow_host_bridge::remote::registry::Announcement;
use reflow_host_bridge::Bridge;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use auth::Tokens;
pub use functions::ClientLimits;
use functions::Functions;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// A sandbox host's shared state.
pub struct Server {
    bridge: Bridge,
    /// `None` only when the operator opted out of authentication.
    tokens: Option<Tokens>,
    functions: Arc<Functions>,
}

impl Server {
    /// A host serving `bridge`'s runtimes to the clients of `tokens`.
    pub fn new(bridge: Bridge, tokens: Option<Tokens>, limits: ClientLimits) -> Arc<Server> {
        Arc::new(Server {
            bridge,
            tokens,
            functions: Arc::new(Functions::new(limits)),
        })
    }

    /// The runtimes this host serves (`python`, `javascript`).
    fn runtimes(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .bridge
            .pools()
            .map(|(language, _, _)| language.to_string())
            .collect();
        all.dedup();
        all
    }

    /// VMs alive now and the most its pools keep, over all runtimes.
    fn vms(&self) -> (usize, usize) {
        self.bridge
            .pools()
            .fold((0, 0), |(live, max), (_, _, pool)| {
                (live + pool.counts().1, max + pool.max_size())
            })
    }

    /// What this host announces in a registry, reached at `url`.
    pub fn announcement(&self, url: &str) -> Announcement {
        let (functions, sessions) = self.functions.totals();
        let (live_vms, max_vms) = self.vms();
        Announcement {
            url: url.to_string(),
            functions,
            sessions,
            busy_vms: self.bridge.busy(),
            live_vms,
            max_vms,
            runtimes: self.runtimes(),
        }
    }

    /// The bridge (for shutting it down).
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }
}

/// Serves `server` on `listener` (TLS when `tls` is given) until the task
/// is dropped or aborted.
/// At most [`MAX_CONNECTIONS`] connections are served at once; one beyond
/// that is closed at once (and logged once a second at most).
pub async fn serve(listener: TcpListener, server: Arc<Server>, tls: Option<TlsAcceptor>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "serve: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                tracing::warn!("serve: {MAX_CONNECTIONS} connections open; refusing more");
                last_warning = Some(std::time::Instant::now());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (server, tls) = (server.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => http::connection(server, stream).await,
                Some(tls) => {
                    match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
                        Ok(Ok(stream)) => http::connection(server, stream).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "serve: a TLS handshake failed"),
                        Err(_) => tracing::debug!("serve: a TLS handshake timed out"),
                    }
                }
            }
        });
    }
}
