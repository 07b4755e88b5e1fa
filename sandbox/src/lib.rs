//! The sandbox core: script workers in KVM microVMs, with no Reflow
//! dependency.
//!
//! A [`Runtime`] is one language's VM (kernel, initramfs, root image,
//! memory, shared region) and the warm golden snapshot its actor VMs are
//! cloned from ([`warmup`] watches the golden's warm-up by progress). A
//! [`VmPool`] keeps restored clones ready; each [`SandboxVm`] is one clone
//! with its [`WorkerClient`], the host end of the guest worker's ring
//! protocol ([`protocol`]), where every record from the guest is hostile
//! input. [`Limits`] bound what a worker may do, [`VmShape`] what its VM
//! gets, and a [`Script`] is what to run.

#![warn(missing_docs)]

pub mod component;
pub mod fate;
pub mod guest_log;
pub mod language;
pub mod limits;
pub mod pool;
pub mod prepare;
pub mod process;
pub mod protocol;
pub mod runtime;
pub mod sandbox;
pub mod script;
pub mod shape;
pub mod warmup;
pub mod worker;

pub use component::{ComponentError, ComponentGolden, ComponentSettings};
pub use fate::Fate;
pub use guest_log::{LogLine, LogStream};
pub use language::Language;
pub use limits::{LimitOverrides, Limits};
pub use pool::{PoolConfig, PoolError, PooledVm, VmPool};
pub use protocol::{ActorError, Collected, ErrorKind, Kind, StateOp, StateRequest};
pub use runtime::{GuestImages, Runtime, RuntimeError};
pub use sandbox::{
    HoldError, Isolation, IsolationKind, SandboxError, SandboxOutcome, SandboxVm, SnapshotError,
    StopHandle, VmSpec, WorkerCheckError,
};
pub use script::{Script, ScriptError};
pub use shape::{ShapeOverrides, VmShape};
pub use worker::{
    ClientState, InvokeHandler, Loaded, StreamEnd, StreamHandler, Window, WorkerClient, WorkerError,
};
