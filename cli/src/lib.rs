//! `reflow-sandbox`: runs Reflow graphs whose script actors run in
//! microVMs (see the README's "reflow-sandbox" section). The library half
//! serves the binary and the integration tests.

pub mod cache;
pub mod error_text;
pub mod graph;
pub mod hosts;
pub mod metrics_server;
pub mod natives;
pub mod packages;
pub mod run;
pub mod serve;
pub mod setup;
pub mod show;
pub mod tracked;
pub mod watch;
pub mod workspace;

pub use graph::{GraphError, GraphFile};
pub use run::{run, Outcome, Output, RunError, RunOptions};
