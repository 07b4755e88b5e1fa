//! The Reflow guest agent: PID 1 inside a sandbox microVM.
//!
//! The library half holds what the host shares with the agent: the vsock
//! control protocol ([`control`]), the requests it carries and the lines
//! the agent prints on the serial console ([`protocol`]), and the parser for
//! its boot parameters ([`cmdline`]). The binary half (`main.rs`)
//! is the agent itself and only builds for Linux guests.

pub mod cmdline;
pub mod control;
pub mod protocol;
