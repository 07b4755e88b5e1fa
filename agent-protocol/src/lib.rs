//! What the monitor and the guest agent both speak, defined once.
//!
//! - [`control`]: length-prefixed bitcode frames on the vsock control
//!   channel, and the messages they carry.
//! - [`request`]: the requests the host makes of the agent, with their
//!   one-line text form.
//! - [`console`]: the marker lines the agent prints on the serial console.
//! - [`cmdline`]: the agent's `reflow.*` kernel command-line parameters.
//! - [`paths`]: the guest paths and addresses both sides rely on.
//!
//! Everything here that decodes guest output treats it as hostile: lengths
//! are bounded before anything is allocated, and malformed input is an
//! error, never a panic.

#![warn(missing_docs)]

pub mod cmdline;
pub mod console;
pub mod control;
pub mod paths;
pub mod request;
