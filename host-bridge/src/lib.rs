//! Runs sandboxed Python and JavaScript actors as ordinary Reflow actors.
//!
//! Today: [`worker`], the host end of the script worker's ring protocol
//! (load a script, invoke it, stream its outputs, answer its state
//! requests), with every record from the guest treated as hostile; and
//! [`state`], the state service (embedded or Redis).
//! `SandboxActor`, the VM pool, the state service, discovery and the
//! `reflow-sandbox` CLI arrive with the host-bridge issue.

pub mod actor;
pub mod bridge;
pub mod config;
pub mod convert;
pub mod discovery;
pub mod handler;
mod node;
pub mod pool;
pub mod protocol;
#[cfg(feature = "network")]
pub mod registry;
pub mod runtime;
pub mod sandbox;
pub mod script;
pub mod state;
pub mod worker;

pub use actor::{SandboxActor, ERROR_PORT};
pub use bridge::{Bridge, BridgeConfig, BridgeError};
pub use handler::StoreHandler;
pub use node::ActorFailure;
pub use pool::{PoolConfig, PoolError, PooledVm, VmPool};
pub use protocol::{ActorError, ErrorKind, Kind, StateOp, StateRequest};
pub use runtime::{GuestImages, Language, Runtime, RuntimeError};
pub use sandbox::{SandboxError, SandboxVm, VmSpec};
pub use script::{Script, ScriptError};
pub use worker::{ClientState, InvokeHandler, Loaded, WorkerClient, WorkerError};
