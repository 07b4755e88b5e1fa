//! Executes host requests.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::Command;

use reflow_agent_protocol::console::AgentLine;
use reflow_agent_protocol::control::Outcome;
use reflow_agent_protocol::paths::ACTORS_DIR;
use reflow_agent_protocol::request::{encode_hex, Request, MAX_READ_BLOCK_LEN, MAX_RUN_OUTPUT};

use crate::entropy::{self, EntropyError};
use crate::rootfs::RootfsError;
use crate::shm::{Shm, ShmError};
use crate::{console, power};

/// Why a request failed; its text is the error the host gets.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the echo service is already running")]
    EchoRunning,
    /// A file or block device could not be read or written.
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("{program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    /// A program `run` started failed; `stderr` is the end of what it said.
    #[error("{program} exited with status {status}: {stderr}")]
    Exited {
        program: String,
        status: i32,
        stderr: String,
    },
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// A test hook asked of an agent built without them.
    #[cfg(not(feature = "testing"))]
    #[error("{0}: this agent was built without the testing feature")]
    NoTestHooks(&'static str),
}

/// Makes an I/O error on `path` a [`ServeError::File`].
fn file(path: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let path = path.into();
    move |source| ServeError::File { path, source }
}

/// What a request asks of the caller.
pub enum Action {
    /// Send this answer.
    Reply(Outcome),
    /// Answer, then power off with this status.
    PowerOff(i32),
}

/// Executes requests.
pub struct Server {
    quiet: bool,
    shm: Shm,
    echo_running: bool,
    /// Whether a language image is mounted (programs run inside it).
    image: bool,
    /// Programs started with `spawn`.
    children: Vec<std::process::Child>,
}

impl Server {
    pub fn new(quiet: bool, shm: Option<(u64, u64)>, doorbell: Option<u64>) -> Server {
        Server {
            quiet,
            shm: Shm::new(shm, doorbell),
            echo_running: false,
            image: false,
            children: Vec::new(),
        }
    }

    /// Mounts the language image on `device`; programs run inside it from
    /// now on.
    pub fn mount_image(&mut self, device: &str) -> Result<(), RootfsError> {
        crate::rootfs::mount_image(device)?;
        self.image = true;
        Ok(())
    }

    /// Maps the shared region and the doorbell, if the VM has them.
    pub fn premap(&mut self) -> Result<(), ShmError> {
        if self.shm.configured() {
            self.shm.mapping()?;
            self.shm.doorbell()?;
        }
        Ok(())
    }

    /// Whether to keep the console quiet.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Executes one request.
    pub fn handle(&mut self, request: Request) -> Action {
        if !self.quiet {
            println!("reflow-agent: {}", summary(&request));
        }
        if let Request::Poweroff { status } = request {
            return Action::PowerOff(status);
        }
        Action::Reply(match self.answer(request) {
            Ok(r) => Outcome::Ok(r),
            Err(e) => Outcome::Err(e.to_string()),
        })
    }

    /// The answer to any request but `poweroff`.
    fn answer(&mut self, request: Request) -> Result<String, ServeError> {
        if request == Request::RingEcho && self.echo_running {
            return Err(ServeError::EchoRunning);
        }
        // Reap spawned programs that ended (PID 1 must not collect zombies).
        self.children
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        if let Request::Spawn { program, args } = &request {
            let child = command(program, args, self.image)
                .spawn()
                .map_err(|source| ServeError::Start {
                    program: program.clone(),
                    source,
                })?;
            let pid = child.id();
            self.children.push(child);
            return Ok(format!("pid={pid}"));
        }
        let echo = request == Request::RingEcho;
        let result = execute(request, &mut self.shm, self.echo_running, self.image);
        if echo && result.is_ok() {
            self.echo_running = true;
        }
        result
    }

    /// Handles one request line from the kernel command line and reports
    /// the result on the console. Returns `Some(status)` when the request
    /// asks to power off.
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
        let command = request.name().to_string();
        let reply = match self.handle(request) {
            Action::PowerOff(status) => return Some(status),
            Action::Reply(Outcome::Ok(result)) => AgentLine::Ok { command, result },
            Action::Reply(Outcome::Err(message)) => AgentLine::Err { command, message },
        };
        console::say(&reply);
        None
    }
}

/// A request as logged: long arguments (sources, entropy) cut short.
fn summary(request: &Request) -> String {
    let mut text = request.to_string();
    if text.len() > 120 {
        let mut cut = 117;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// A program to run, inside the language image when one is mounted.
fn command(program: &str, args: &[String], image: bool) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    if image {
        crate::rootfs::enter(&mut c);
    }
    c
}

fn execute(request: Request, shm: &mut Shm, echo: bool, image: bool) -> Result<String, ServeError> {
    // Only the test hooks use the region from here; premap maps it.
    #[cfg(not(feature = "testing"))]
    let _ = shm;
    let command = |program: &str, args: &[String]| command(program, args, image);
    let start = |program: String| move |source| ServeError::Start { program, source };
    match request {
        Request::Ping => Ok("pong".into()),
        Request::Uptime => Ok(power::uptime_ms().to_string()),
        Request::ReadBlock {
            device,
            offset,
            len,
        } => read_block(&device, offset, len).map_err(file(device)),
        Request::Exec { program, args } => {
            let status = command(&program, &args).status().map_err(start(program))?;
            Ok(format!("status={}", exit_code(status)))
        }
        Request::Run { program, args } => {
            let out = command(&program, &args)
                .output()
                .map_err(start(program.clone()))?;
            if out.status.success() {
                let n = out.stdout.len().min(MAX_RUN_OUTPUT);
                return Ok(String::from_utf8_lossy(&out.stdout[..n]).into_owned());
            }
            let from = out.stderr.len().saturating_sub(2048);
            Err(ServeError::Exited {
                program,
                status: exit_code(out.status),
                stderr: String::from_utf8_lossy(&out.stderr[from..])
                    .trim_end()
                    .to_string(),
            })
        }
        Request::Poweroff { .. } => unreachable!("handled by the caller"),
        Request::Reseed { entropy } => {
            entropy::reseed(&entropy)?;
            Ok("ok".into())
        }
        Request::SetTime { unix_ns } => {
            entropy::set_time(unix_ns)?;
            Ok("ok".into())
        }
        Request::Random { len } => Ok(encode_hex(&entropy::random(len as usize)?)),
        Request::WriteFile { path, text } => {
            std::fs::write(&path, text).map_err(file(path))?;
            Ok("ok".into())
        }
        Request::ReadFile { path } => read_file(&path).map_err(file(path)),
        Request::Health => Ok(format!(
            "uptime_ms={} mem_available_kb={} ring={}",
            power::uptime_ms(),
            mem_available_kb().unwrap_or(0),
            if echo { "echo" } else { "idle" }
        )),
        Request::Load { name, source } => load(&name, &source),
        #[cfg(feature = "testing")]
        hook @ (Request::Echo { .. }
        | Request::ShmProbe { .. }
        | Request::MapRing
        | Request::RingEcho
        | Request::RingFault { .. }) => Ok(crate::hooks::execute(hook, shm)?),
        #[cfg(not(feature = "testing"))]
        hook @ (Request::Echo { .. }
        | Request::ShmProbe { .. }
        | Request::MapRing
        | Request::RingEcho
        | Request::RingFault { .. }) => Err(ServeError::NoTestHooks(hook.name())),
        Request::Spawn { .. } => unreachable!("handled by the caller"),
    }
}

/// A process's exit status as a shell would report it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    })
}

fn load(name: &str, source: &str) -> Result<String, ServeError> {
    std::fs::create_dir_all(ACTORS_DIR).map_err(file(ACTORS_DIR))?;
    let path = format!("{ACTORS_DIR}/{name}");
    std::fs::write(&path, source).map_err(file(path.clone()))?;
    Ok(format!("stored {} bytes in {path}", source.len()))
}

fn mem_available_kb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(request: Request) -> Outcome {
        match Server::new(true, None, None).handle(request) {
            Action::Reply(outcome) => outcome,
            Action::PowerOff(status) => panic!("powered off with {status}"),
        }
    }

    /// The host sees the text of each error, as it did when errors were
    /// strings.
    #[test]
    fn failures_answer_with_their_text() {
        let err = |text: &str| Outcome::Err(text.into());
        #[cfg(feature = "testing")]
        assert_eq!(
            reply(Request::MapRing),
            err("no shared-memory region (reflow.shm= not set)")
        );
        #[cfg(not(feature = "testing"))]
        assert_eq!(
            reply(Request::MapRing),
            err("map-ring: this agent was built without the testing feature")
        );
        assert_eq!(
            reply(Request::ReadFile {
                path: "/nonexistent/reflow".into()
            }),
            err("/nonexistent/reflow: No such file or directory (os error 2)")
        );
        assert_eq!(
            reply(Request::Exec {
                program: "/nonexistent/program".into(),
                args: vec![],
            }),
            err("/nonexistent/program: No such file or directory (os error 2)")
        );
        assert_eq!(
            reply(Request::Run {
                program: "sh".into(),
                args: vec!["-c".into(), "echo oops >&2; exit 3".into()],
            }),
            err("sh exited with status 3: oops")
        );
        assert_eq!(reply(Request::Ping), Outcome::Ok("pong".into()));
    }
}
