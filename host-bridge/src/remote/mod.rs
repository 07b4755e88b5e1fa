//! Script actors on sandbox hosts: a graph's script nodes run on
//! `reflow-sandbox serve` processes elsewhere instead of this machine's
//! VMs ([`RemoteSandboxActor`]), placed on the reachable host with the
//! fewest of this client's nodes and moved to another when theirs is lost
//! ([`RemoteHosts`]), from a static list or from the fleet's [`registry`]
//! in Redis. The protocol is docs/serve.md's.

mod actor;
mod hosts;
mod node;
pub mod registry;
mod tls;

pub use actor::RemoteSandboxActor;
pub use hosts::{RemoteError, RemoteHosts, RETRY_AFTER};
