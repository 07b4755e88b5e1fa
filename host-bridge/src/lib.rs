//! Runs sandboxed Python and JavaScript actors as ordinary Reflow actors.
//!
//! Placeholder crate: `SandboxActor`, the VM pool, the state service,
//! discovery and the `reflow-sandbox` CLI arrive with the host-bridge issue.
//! The crate exists now so the workspace has its final shape.
