//! The Reflow adapter: sandboxed script actors as ordinary Reflow actors.
//!
//! [`Bridge`] makes [`SandboxActor`]s (`reflow_actor::Actor`s whose code
//! runs in a microVM of the sandbox core, `reflow_sandbox_core`) that share
//! a [`state::StateStore`] (embedded or Redis); [`convert`] turns Reflow
//! messages into ring values and back; with the `network` feature,
//! `registry` registers the script actors `reflow_workspace` discovers into
//! a `reflow_network::Network`; [`remote`] runs script actors on sandbox
//! hosts (`reflow-sandbox serve`) instead.

#![warn(missing_docs)]

pub mod actor;
pub mod bridge;
mod components;
pub mod config;
pub mod convert;
mod guest_logs;
pub mod handler;
pub mod metrics;
mod node;
#[cfg(feature = "network")]
pub mod registry;
pub mod remote;
mod shared;
pub mod state;
mod trace_events;
pub mod versions;

pub use actor::{SandboxActor, ERROR_PORT};
pub use bridge::{Bridge, BridgeError};
pub use config::BridgeConfig;
pub use handler::StoreHandler;
pub use node::{ActorFailure, Answers};
pub use versions::ScriptUpdater;
