//! The agent's requests.
//!
//! [`Request`] is what the host asks of the agent. It travels in frames on
//! the vsock control channel ([`crate::control`]); it also has a one-line
//! text form, used for `reflow.cmd=` boot requests, the monitor's
//! `--request` flag and logs.

use std::fmt;

/// Longest request line the agent accepts.
pub const MAX_REQUEST_LEN: usize = 4096;
/// Most bytes a single `read-block`, `random` or `read-file` request may return.
pub const MAX_READ_BLOCK_LEN: u64 = 4096;
/// Most stdout bytes a `run` answer carries.
pub const MAX_RUN_OUTPUT: usize = 64 * 1024;
/// Most entropy bytes one `reseed` request may carry.
pub const MAX_RESEED_LEN: usize = 512;

/// What follows the leading `words` of `line` (each followed by
/// whitespace), verbatim but for surrounding whitespace.
fn rest_after<'a>(line: &'a str, words: &[&str]) -> &'a str {
    let mut rest = line.trim_start();
    for w in words {
        rest = rest.get(w.len()..).unwrap_or("").trim_start();
    }
    rest.trim_end_matches(['\r', '\n'])
}

/// A name safe to use as a file name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A request from the host: a frame on the control channel, or a line of
/// text (from `reflow.cmd=` on the kernel command line, several separated
/// by `;`).
#[derive(Debug, Clone, PartialEq, Eq, bitcode::Encode, bitcode::Decode)]
pub enum Request {
    /// `ping`: answers `OK ping pong`.
    Ping,
    /// `uptime`: answers `OK uptime <ms>`.
    Uptime,
    /// `echo <text>`: answers the text (the rest of the line): a control
    /// channel round trip with a payload, for benchmarks.
    Echo {
        /// Sent back verbatim.
        text: String,
    },
    /// `read-block <device> <offset> <len>`: reads `len` bytes (at most
    /// [`MAX_READ_BLOCK_LEN`]) at `offset` and answers them in hex.
    ReadBlock {
        /// The block device, e.g. `/dev/vda`.
        device: String,
        /// Byte offset to read at.
        offset: u64,
        /// Bytes to read.
        len: u64,
    },
    /// `exec <program> [args...]`: runs a program, answers its exit status.
    Exec {
        /// The program to run.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// `spawn <program> [args...]`: starts a long-running program (a language
    /// worker) in the background, its output on the console; answers
    /// `pid=<n>`.
    Spawn {
        /// The program to start.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// `run <program> [args...]`: runs a program and answers what it wrote
    /// on stdout (at most [`MAX_RUN_OUTPUT`] bytes, lossy UTF-8); fails with
    /// its status and the end of its stderr if it does not exit 0. Programs
    /// run inside the language image when one is mounted.
    Run {
        /// The program to run.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// `poweroff [status]`: reports `status` (default 0) and powers off.
    Poweroff {
        /// The status the guest reports.
        status: i32,
    },
    /// `reseed <hex>`: mixes host entropy into the kernel RNG and reseeds
    /// it at once (sent to every VM restored from a snapshot, before
    /// anything else runs).
    Reseed {
        /// 1 to [`MAX_RESEED_LEN`] bytes of host entropy.
        entropy: Vec<u8>,
    },
    /// `settime <unix_ns>`: sets the guest wall clock.
    SetTime {
        /// Nanoseconds since the Unix epoch.
        unix_ns: u64,
    },
    /// `random <n>`: answers `n` bytes from the kernel RNG in hex.
    Random {
        /// Bytes wanted (at most [`MAX_READ_BLOCK_LEN`]).
        len: u64,
    },
    /// `write-file <path> <text>`: writes the rest of the line to a file.
    WriteFile {
        /// The file to write.
        path: String,
        /// Its new contents.
        text: String,
    },
    /// `read-file <path>`: answers the file's contents (at most
    /// [`MAX_READ_BLOCK_LEN`] bytes, lossy UTF-8 on one line).
    ReadFile {
        /// The file to read.
        path: String,
    },
    /// `shm-probe <byte>`: maps the shared-memory region from user space,
    /// fills it with `byte` (then [`SHM_PROBE_MARKER`] at offset 0) and
    /// answers its size and the write/read bandwidth measured in the guest.
    ShmProbe {
        /// The fill byte.
        byte: u8,
    },
    /// `ring-echo`: starts a service that sends every message arriving on
    /// the host->guest ring back, unchanged, on the guest->host ring.
    RingEcho,
    /// `health`: answers `uptime_ms=<n> mem_available_kb=<n> ring=<state>`.
    Health,
    /// `map-ring`: maps the shared region, checks its ring layout and
    /// answers its geometry (`bytes=<n> capacity=<n>`).
    MapRing,
    /// `load <name> <source>`: stores an actor's source (the rest of the
    /// line) under `/run/reflow/actors/<name>` for the language worker.
    Load {
        /// The actor's file name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// Its source.
        source: String,
    },
    /// `ring-fault <magic|version|checksum|length|position>`: publishes one
    /// deliberately broken record on the guest->host ring. For tests that
    /// prove the host survives a hostile guest.
    RingFault {
        /// Which field to break.
        fault: String,
    },
}

/// What `shm-probe` leaves at the start of the shared region.
pub const SHM_PROBE_MARKER: &[u8] = b"REFLOW-SHM-PROBE";

/// Decodes lowercase or uppercase hex.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Encodes bytes as lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a request line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nothing but whitespace.
    #[error("empty request")]
    Empty,
    /// Over [`MAX_REQUEST_LEN`] bytes.
    #[error("request longer than {MAX_REQUEST_LEN} bytes")]
    TooLong,
    /// Not a command the agent knows.
    #[error("unknown command {0:?} (known: ping, uptime, echo, health, read-block, exec, run, spawn, poweroff, reseed, settime, random, write-file, read-file, load, shm-probe, map-ring, ring-echo, ring-fault)")]
    Unknown(String),
    /// Wrong arguments for the command; carries its usage.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// A read over [`MAX_READ_BLOCK_LEN`] bytes.
    #[error("read length {0} is over the limit of {MAX_READ_BLOCK_LEN} bytes")]
    ReadTooLong(u64),
    /// Entropy that is not 1 to [`MAX_RESEED_LEN`] bytes of hex.
    #[error("reseed needs 1 to {MAX_RESEED_LEN} bytes of hex entropy")]
    BadEntropy,
}

impl Request {
    /// The command word, as echoed in replies.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Uptime => "uptime",
            Request::Echo { .. } => "echo",
            Request::ReadBlock { .. } => "read-block",
            Request::Exec { .. } => "exec",
            Request::Run { .. } => "run",
            Request::Spawn { .. } => "spawn",
            Request::Poweroff { .. } => "poweroff",
            Request::Reseed { .. } => "reseed",
            Request::SetTime { .. } => "settime",
            Request::Random { .. } => "random",
            Request::WriteFile { .. } => "write-file",
            Request::ReadFile { .. } => "read-file",
            Request::ShmProbe { .. } => "shm-probe",
            Request::RingEcho => "ring-echo",
            Request::Health => "health",
            Request::MapRing => "map-ring",
            Request::Load { .. } => "load",
            Request::RingFault { .. } => "ring-fault",
        }
    }

    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Request, RequestError> {
        if line.len() > MAX_REQUEST_LEN {
            return Err(RequestError::TooLong);
        }
        let mut words = line.split_whitespace();
        let command = words.next().ok_or(RequestError::Empty)?;
        let args: Vec<&str> = words.collect();
        match (command, args.as_slice()) {
            ("ping", []) => Ok(Request::Ping),
            ("ping", _) => Err(RequestError::Usage("ping")),
            ("uptime", []) => Ok(Request::Uptime),
            ("uptime", _) => Err(RequestError::Usage("uptime")),
            ("echo", [_, ..]) => Ok(Request::Echo {
                text: rest_after(line, &["echo"]).to_string(),
            }),
            ("echo", _) => Err(RequestError::Usage("echo <text>")),
            ("read-block", [device, offset, len]) => {
                const USAGE: &str = "read-block <device> <offset> <len>";
                let offset = offset.parse().map_err(|_| RequestError::Usage(USAGE))?;
                let len: u64 = len.parse().map_err(|_| RequestError::Usage(USAGE))?;
                if len > MAX_READ_BLOCK_LEN {
                    return Err(RequestError::ReadTooLong(len));
                }
                Ok(Request::ReadBlock {
                    device: device.to_string(),
                    offset,
                    len,
                })
            }
            ("read-block", _) => Err(RequestError::Usage("read-block <device> <offset> <len>")),
            ("exec", [program, rest @ ..]) => Ok(Request::Exec {
                program: program.to_string(),
                args: rest.iter().map(|s| s.to_string()).collect(),
            }),
            ("exec", []) => Err(RequestError::Usage("exec <program> [args...]")),
            ("run", [program, rest @ ..]) => Ok(Request::Run {
                program: program.to_string(),
                args: rest.iter().map(|s| s.to_string()).collect(),
            }),
            ("run", []) => Err(RequestError::Usage("run <program> [args...]")),
            ("spawn", [program, rest @ ..]) => Ok(Request::Spawn {
                program: program.to_string(),
                args: rest.iter().map(|s| s.to_string()).collect(),
            }),
            ("spawn", []) => Err(RequestError::Usage("spawn <program> [args...]")),
            ("poweroff", []) => Ok(Request::Poweroff { status: 0 }),
            ("poweroff", [status]) => Ok(Request::Poweroff {
                status: status
                    .parse()
                    .map_err(|_| RequestError::Usage("poweroff [status]"))?,
            }),
            ("poweroff", _) => Err(RequestError::Usage("poweroff [status]")),
            ("reseed", [hex]) => match decode_hex(hex) {
                Some(entropy) if !entropy.is_empty() && entropy.len() <= MAX_RESEED_LEN => {
                    Ok(Request::Reseed { entropy })
                }
                _ => Err(RequestError::BadEntropy),
            },
            ("reseed", _) => Err(RequestError::Usage("reseed <hex>")),
            ("settime", [ns]) => Ok(Request::SetTime {
                unix_ns: ns
                    .parse()
                    .map_err(|_| RequestError::Usage("settime <unix_ns>"))?,
            }),
            ("settime", _) => Err(RequestError::Usage("settime <unix_ns>")),
            ("random", [n]) => {
                let len: u64 = n.parse().map_err(|_| RequestError::Usage("random <n>"))?;
                if len > MAX_READ_BLOCK_LEN {
                    return Err(RequestError::ReadTooLong(len));
                }
                Ok(Request::Random { len })
            }
            ("random", _) => Err(RequestError::Usage("random <n>")),
            ("write-file", [path, _, ..]) => Ok(Request::WriteFile {
                path: path.to_string(),
                // The text is the rest of the line after the path, verbatim.
                text: rest_after(line, &["write-file", path]).to_string(),
            }),
            ("write-file", _) => Err(RequestError::Usage("write-file <path> <text>")),
            ("read-file", [path]) => Ok(Request::ReadFile {
                path: path.to_string(),
            }),
            ("read-file", _) => Err(RequestError::Usage("read-file <path>")),
            ("shm-probe", [byte]) => Ok(Request::ShmProbe {
                byte: byte
                    .parse()
                    .map_err(|_| RequestError::Usage("shm-probe <byte 0-255>"))?,
            }),
            ("shm-probe", _) => Err(RequestError::Usage("shm-probe <byte 0-255>")),
            ("ring-echo", []) => Ok(Request::RingEcho),
            ("ring-echo", _) => Err(RequestError::Usage("ring-echo")),
            ("health", []) => Ok(Request::Health),
            ("health", _) => Err(RequestError::Usage("health")),
            ("map-ring", []) => Ok(Request::MapRing),
            ("map-ring", _) => Err(RequestError::Usage("map-ring")),
            ("load", [name, _, ..]) if valid_name(name) => Ok(Request::Load {
                name: name.to_string(),
                source: rest_after(line, &["load", name]).to_string(),
            }),
            ("load", _) => Err(RequestError::Usage(
                "load <name: letters, digits, - _ .> <source>",
            )),
            ("ring-fault", [fault]) => Ok(Request::RingFault {
                fault: fault.to_string(),
            }),
            ("ring-fault", _) => Err(RequestError::Usage(
                "ring-fault <magic|version|checksum|length|position>",
            )),
            (other, _) => Err(RequestError::Unknown(other.to_string())),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Ping
            | Request::Uptime
            | Request::RingEcho
            | Request::Health
            | Request::MapRing => f.write_str(self.name()),
            Request::Load { name, source } => write!(f, "load {name} {source}"),
            Request::Echo { text } => write!(f, "echo {text}"),
            Request::RingFault { fault } => write!(f, "ring-fault {fault}"),
            Request::ReadBlock {
                device,
                offset,
                len,
            } => write!(f, "read-block {device} {offset} {len}"),
            Request::Exec { program, args } => {
                write!(f, "exec {program}")?;
                args.iter().try_for_each(|a| write!(f, " {a}"))
            }
            Request::Run { program, args } | Request::Spawn { program, args } => {
                write!(f, "{} {program}", self.name())?;
                args.iter().try_for_each(|a| write!(f, " {a}"))
            }
            Request::Poweroff { status } => write!(f, "poweroff {status}"),
            Request::Reseed { entropy } => write!(f, "reseed {}", encode_hex(entropy)),
            Request::SetTime { unix_ns } => write!(f, "settime {unix_ns}"),
            Request::Random { len } => write!(f, "random {len}"),
            Request::WriteFile { path, text } => write!(f, "write-file {path} {text}"),
            Request::ReadFile { path } => write!(f, "read-file {path}"),
            Request::ShmProbe { byte } => write!(f, "shm-probe {byte}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for text in [
            "ping",
            "uptime",
            "read-block /dev/vda 512 64",
            "exec /bin/true",
            "exec /bin/echo a b",
            "run /usr/bin/python3 -V",
            "spawn /usr/bin/python3 /opt/reflow/ring_echo.py 0x100000000 0x1000000",
            "poweroff 3",
            "reseed 00ff10",
            "settime 1700000000000000000",
            "random 16",
            "write-file /tmp/x hello  world",
            "read-file /tmp/x",
            "shm-probe 165",
            "ring-echo",
            "health",
            "map-ring",
            "load multiplier.py def f(x):  return x",
            "ring-fault checksum",
            "echo hello  there",
        ] {
            let req = Request::parse(text).unwrap();
            assert_eq!(req.to_string(), text);
        }
        assert_eq!(
            Request::parse("poweroff").unwrap(),
            Request::Poweroff { status: 0 }
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(Request::parse("  "), Err(RequestError::Empty));
        for bad in [
            "load ../etc/passwd x",
            "load .. x",
            "load name",
            "health now",
        ] {
            assert!(
                matches!(Request::parse(bad), Err(RequestError::Usage(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Request::parse("format c:"),
            Err(RequestError::Unknown(_))
        ));
        assert!(matches!(
            Request::parse("read-block /dev/vda x 1"),
            Err(RequestError::Usage(_))
        ));
        assert_eq!(
            Request::parse("read-block /dev/vda 0 999999"),
            Err(RequestError::ReadTooLong(999_999))
        );
        assert!(matches!(
            Request::parse("poweroff a"),
            Err(RequestError::Usage(_))
        ));
        assert_eq!(
            Request::parse(&"x".repeat(MAX_REQUEST_LEN + 1)),
            Err(RequestError::TooLong)
        );
        assert_eq!(Request::parse("reseed 0"), Err(RequestError::BadEntropy));
        assert_eq!(Request::parse("reseed zz"), Err(RequestError::BadEntropy));
        assert_eq!(
            Request::parse(&format!("reseed {}", "00".repeat(MAX_RESEED_LEN + 1))),
            Err(RequestError::BadEntropy)
        );
        assert_eq!(
            Request::parse("random 5000"),
            Err(RequestError::ReadTooLong(5000))
        );
        assert!(matches!(
            Request::parse("write-file /tmp/x"),
            Err(RequestError::Usage(_))
        ));
        assert!(matches!(
            Request::parse("settime soon"),
            Err(RequestError::Usage(_))
        ));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(decode_hex("00ffA0"), Some(vec![0, 255, 160]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("g0"), None);
        assert_eq!(encode_hex(&[1, 171]), "01ab");
    }
}
