//! The control channel: a vsock connection to the host, re-established
//! whenever it breaks (after a snapshot restore the transport is reset, so
//! each clone reconnects to its own host).

use std::fs::File;
use std::time::Duration;

use reflow_agent_protocol::control::{
    read_frame, write_frame, FrameError, GuestMessage, HostMessage, Outcome, CONTROL_PORT,
    HOST_CID, PROTOCOL_VERSION,
};

use crate::serve::{Action, Server};
use crate::{entropy, power, vsock};

/// Longest pause between connection attempts.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Serves the host until it asks to power off; returns the status.
pub fn serve(server: &mut Server) -> i32 {
    let mut connection = 0u64;
    let mut retry = Duration::from_millis(5);
    let mut reported = false;
    loop {
        let mut sock = match vsock::connect(HOST_CID, CONTROL_PORT) {
            Ok(s) => s,
            Err(e) => {
                if !reported {
                    eprintln!("reflow-agent: no host control listener yet ({e}); retrying");
                    reported = true;
                }
                std::thread::sleep(retry);
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        retry = Duration::from_millis(5);
        reported = false;
        connection += 1;
        match session(&mut sock, server, connection) {
            Ok(status) => return status,
            Err(e) => {
                if !server.quiet() {
                    eprintln!("reflow-agent: control connection {connection} ended: {e}");
                }
            }
        }
    }
}

/// Errors that end one connection (the agent then reconnects).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the host sent {0} where a welcome was due")]
    NoWelcome(&'static str),
    #[error("applying the host's welcome: {0}")]
    Welcome(entropy::EntropyError),
}

fn session(sock: &mut File, server: &mut Server, connection: u64) -> Result<i32, SessionError> {
    write_frame(
        sock,
        &GuestMessage::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: power::uptime_ms(),
            connection,
        },
    )?;
    match read_frame::<HostMessage>(sock)? {
        HostMessage::Welcome { entropy, unix_ns } => {
            if !entropy.is_empty() {
                entropy::reseed(&entropy).map_err(SessionError::Welcome)?;
            }
            if unix_ns != 0 {
                entropy::set_time(unix_ns).map_err(SessionError::Welcome)?;
            }
        }
        HostMessage::Request { .. } => return Err(SessionError::NoWelcome("a request")),
    }
    write_frame(
        sock,
        &GuestMessage::Ready {
            uptime_ms: power::uptime_ms(),
        },
    )?;
    loop {
        let (id, request) = match read_frame::<HostMessage>(sock)? {
            HostMessage::Request { id, request } => (id, request),
            HostMessage::Welcome { .. } => continue,
        };
        match server.handle(request) {
            Action::Reply(outcome) => write_frame(sock, &GuestMessage::Reply { id, outcome })?,
            Action::PowerOff(status) => {
                let outcome = Outcome::Ok("powering off".into());
                // The host may be gone already; powering off is what matters.
                let _ = write_frame(sock, &GuestMessage::Reply { id, outcome });
                return Ok(status);
            }
        }
    }
}
