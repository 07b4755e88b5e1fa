//! A Reflow workspace as the sandbox sees it: [`discovery`] finds the
//! script actors in it and reads their metadata without running them
//! (ruff's Python parser, oxc's JavaScript parser); [`config`] reads its
//! `reflow.yaml` into the sandbox core's settings.

#![warn(missing_docs)]

pub mod config;
pub mod discovery;
pub mod redact;

pub use config::{Config, ConfigError};
pub use discovery::{discover, Discovery, DiscoveryConfig};
