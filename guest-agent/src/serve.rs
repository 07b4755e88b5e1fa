//! Executes host requests.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::Command;

use reflow_guest_agent::protocol::{encode_hex, AgentLine, Request, MAX_READ_BLOCK_LEN};

use crate::{console, entropy, power};

/// Executes requests and reports each result on the console.
pub struct Server {
    quiet: bool,
    shm: Option<(u64, u64)>,
}

impl Server {
    pub fn new(quiet: bool, shm: Option<(u64, u64)>) -> Server {
        Server { quiet, shm }
    }

    /// Handles one request line. Returns `Some(status)` when the request asks
    /// to power off.
    pub fn handle_line(&mut self, line: &str) -> Option<i32> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let request = match Request::parse(line) {
            Ok(r) => r,
            Err(e) => {
                console::say(&AgentLine::Err {
                    command: line.split_whitespace().next().unwrap_or("").to_string(),
                    message: e.to_string(),
                });
                return None;
            }
        };
        if !self.quiet {
            println!("reflow-agent: {request}");
        }
        if let Request::Poweroff { status } = request {
            return Some(status);
        }
        let command = request.name().to_string();
        let reply = match execute(request, self.shm) {
            Ok(result) => AgentLine::Ok { command, result },
            Err(message) => AgentLine::Err { command, message },
        };
        console::say(&reply);
        None
    }
}

fn execute(request: Request, shm: Option<(u64, u64)>) -> Result<String, String> {
    match request {
        Request::Ping => Ok("pong".into()),
        Request::Uptime => Ok(power::uptime_ms().to_string()),
        Request::ReadBlock {
            device,
            offset,
            len,
        } => read_block(&device, offset, len).map_err(|e| format!("{device}: {e}")),
        Request::Exec { program, args } => {
            match Command::new(&program).args(&args).status() {
                Ok(status) => Ok(format!(
                    "status={}",
                    status.code().unwrap_or_else(|| 128
                        + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0))
                )),
                Err(e) => Err(format!("{program}: {e}")),
            }
        }
        Request::Poweroff { .. } => unreachable!("handled by the caller"),
        Request::Reseed { entropy } => entropy::reseed(&entropy).map(|()| "ok".into()),
        Request::SetTime { unix_ns } => entropy::set_time(unix_ns).map(|()| "ok".into()),
        Request::Random { len } => entropy::random(len as usize).map(|b| encode_hex(&b)),
        Request::WriteFile { path, text } => std::fs::write(&path, text)
            .map(|()| "ok".into())
            .map_err(|e| format!("{path}: {e}")),
        Request::ReadFile { path } => read_file(&path).map_err(|e| format!("{path}: {e}")),
        Request::ShmProbe { byte } => crate::shm::probe(shm, byte),
        Request::RingEcho => crate::shm::start_echo(shm).map(|()| "started".into()),
    }
}

fn read_file(path: &str) -> std::io::Result<String> {
    let mut buf = Vec::new();
    File::open(path)?
        .take(MAX_READ_BLOCK_LEN)
        .read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).replace(['\n', '\r'], " "))
}

fn read_block(device: &str, offset: u64, len: u64) -> std::io::Result<String> {
    let mut f = File::open(device)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    Ok(encode_hex(&buf))
}
