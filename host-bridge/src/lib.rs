//! Runs sandboxed script actors as ordinary Reflow actors.
//!
//! [`Bridge`] makes [`SandboxActor`]s (`reflow_actor::Actor`s whose code
//! runs in a microVM cloned from a [`Runtime`]'s golden snapshot, taken
//! from a [`VmPool`]) that share a [`state::StateStore`] (embedded or
//! Redis); [`worker`] is the host end of the guest worker's ring protocol,
//! with every record from the guest treated as hostile; [`discovery`]
//! finds script actors in a workspace and reads their metadata without
//! running them; [`config`] reads `reflow.yaml`; with the `network`
//! feature, `registry` registers discovered actors into a
//! `reflow_network::Network`.

pub mod actor;
pub mod bridge;
pub mod config;
pub mod convert;
pub mod discovery;
pub mod handler;
pub mod limits;
mod node;
pub mod pool;
pub mod protocol;
#[cfg(feature = "network")]
pub mod registry;
pub mod runtime;
pub mod sandbox;
pub mod script;
pub mod shape;
pub mod state;
pub mod warmup;
pub mod worker;

pub use actor::{SandboxActor, ERROR_PORT};
pub use bridge::{Bridge, BridgeConfig, BridgeError};
pub use handler::StoreHandler;
pub use limits::{LimitOverrides, Limits};
pub use node::ActorFailure;
pub use pool::{PoolConfig, PoolError, PooledVm, VmPool};
pub use protocol::{ActorError, ErrorKind, Kind, StateOp, StateRequest};
pub use runtime::{GuestImages, Language, Runtime, RuntimeError};
pub use sandbox::{SandboxError, SandboxVm, VmSpec};
pub use script::{Script, ScriptError};
pub use shape::{ShapeOverrides, VmShape};
pub use worker::{ClientState, InvokeHandler, Loaded, WorkerClient, WorkerError};
