//! `reflow-guest-agent`: PID 1 inside a Reflow sandbox microVM.
//!
//! Boot sequence: mount the pseudo filesystems, read the boot parameters from
//! `/proc/cmdline`, mount the language image and map the shared region if
//! there are any, run the boot requests, then connect to the host over
//! vsock and serve its control requests until told to power off (see
//! `reflow_agent_protocol::control`). PID 1 must never exit (the kernel would
//! panic), so every failure ends in a reported power-off.

mod channel;
mod console;
mod entropy;
#[cfg(feature = "testing")]
mod hooks;
mod mounts;
mod power;
mod rootfs;
mod serve;
mod shm;
mod vsock;

use reflow_agent_protocol::{cmdline, console::AgentLine};

fn main() {
    let status = match run() {
        Ok(status) => status,
        Err(e) => {
            console::say(&AgentLine::Err {
                command: "agent".into(),
                message: e.to_string(),
            });
            1
        }
    };
    power::poweroff(status)
}

/// Errors that end the agent.
#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("reading /proc/cmdline: {0}")]
    Cmdline(std::io::Error),
}

fn run() -> Result<i32, AgentError> {
    mounts::mount_all()?;
    let raw = std::fs::read_to_string("/proc/cmdline").map_err(AgentError::Cmdline)?;
    let params = cmdline::parse(&raw);
    for unknown in &params.unknown {
        console::say(&AgentLine::Err {
            command: "cmdline".into(),
            message: format!("ignoring unknown boot parameter {unknown}"),
        });
    }
    let mut server = serve::Server::new(params.quiet, params.shm, params.doorbell);
    // Map the shared region and doorbell now, before the host is told we
    // are ready: a golden snapshot then holds the mappings and no clone pays
    // for them (mapping /dev/mem fills every page-table entry, seconds per
    // 100 MiB where the guest kernel is emulated). A restored region sits at
    // the same guest address, so the mappings stay valid.
    if let Some(device) = &params.root {
        if let Err(e) = server.mount_image(device) {
            console::say(&AgentLine::Err {
                command: "root".into(),
                message: e.to_string(),
            });
        }
    }
    if let Err(e) = server.premap() {
        console::say(&AgentLine::Err {
            command: "map-ring".into(),
            message: e.to_string(),
        });
    }
    for line in &params.boot_requests {
        if let Some(status) = server.handle_line(line) {
            return Ok(status);
        }
    }
    Ok(channel::serve(&mut server))
}
