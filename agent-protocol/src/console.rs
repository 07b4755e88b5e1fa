//! The marker lines the agent prints on the serial console.
//!
//! The serial console carries logs only, and a few marker lines the host
//! scans for (everything else there is ignored):
//! - `REFLOW-AGENT-OK <command> <result...>`: a boot request succeeded.
//! - `REFLOW-AGENT-ERR <command> <message>`: a boot request or the agent
//!   failed.
//! - `REFLOW-AGENT-EXIT status=<n>`: the agent is powering the guest off.

use std::fmt;

/// Marker for a successful reply.
pub const OK: &str = "REFLOW-AGENT-OK";
/// Marker for a failed request.
pub const ERR: &str = "REFLOW-AGENT-ERR";
/// Marker for the line the agent prints right before powering off.
pub const EXIT: &str = "REFLOW-AGENT-EXIT";

/// A line the agent printed, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentLine {
    /// A request succeeded.
    Ok {
        /// The request's command word.
        command: String,
        /// What it answered.
        result: String,
    },
    /// A request failed.
    Err {
        /// The request's command word (`agent` for the agent itself).
        command: String,
        /// Why.
        message: String,
    },
    /// The agent is about to power the guest off with this status.
    Exit {
        /// The status the guest reports.
        status: i32,
    },
}

impl fmt::Display for AgentLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentLine::Ok { command, result } => write!(f, "{OK} {command} {result}"),
            AgentLine::Err { command, message } => write!(f, "{ERR} {command} {message}"),
            AgentLine::Exit { status } => write!(f, "{EXIT} status={status}"),
        }
    }
}

impl AgentLine {
    /// Parses one console line. Returns `None` for lines that are not agent
    /// lines or are malformed (the console carries untrusted guest output, so
    /// a malformed marker line is treated as ordinary output).
    pub fn parse(line: &str) -> Option<AgentLine> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (marker, rest) = line.split_once(' ').unwrap_or((line, ""));
        match marker {
            OK => {
                let (command, result) = rest.split_once(' ').unwrap_or((rest, ""));
                (!command.is_empty()).then(|| AgentLine::Ok {
                    command: command.to_string(),
                    result: result.to_string(),
                })
            }
            ERR => {
                let (command, message) = rest.split_once(' ').unwrap_or((rest, ""));
                (!command.is_empty()).then(|| AgentLine::Err {
                    command: command.to_string(),
                    message: message.to_string(),
                })
            }
            EXIT => Some(AgentLine::Exit {
                status: field(rest, "status")?.parse().ok()?,
            }),
            _ => None,
        }
    }
}

fn field<'a>(rest: &'a str, name: &str) -> Option<&'a str> {
    rest.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lines_round_trip() {
        let lines = [
            AgentLine::Ok {
                command: "read-block".into(),
                result: "00ff".into(),
            },
            AgentLine::Err {
                command: "exec".into(),
                message: "no such file".into(),
            },
            AgentLine::Exit { status: -3 },
        ];
        for line in lines {
            assert_eq!(AgentLine::parse(&line.to_string()), Some(line));
        }
    }

    #[test]
    fn agent_line_tolerates_crlf_and_rejects_garbage() {
        assert_eq!(
            AgentLine::parse("REFLOW-AGENT-EXIT status=7\r\n"),
            Some(AgentLine::Exit { status: 7 })
        );
        assert_eq!(
            AgentLine::parse("[    1.0] Run /init as init process"),
            None
        );
        assert_eq!(AgentLine::parse("REFLOW-AGENT-EXIT status=x"), None);
        assert_eq!(AgentLine::parse("REFLOW-AGENT-READY uptime_ms=5"), None);
        assert_eq!(AgentLine::parse("REFLOW-AGENT-OK"), None);
        assert_eq!(AgentLine::parse("REFLOW-AGENT-EXITstatus=1"), None);
    }
}
