//! The serial console: agent marker lines out (logs only; requests come
//! over vsock).

use std::io::Write;

use reflow_agent_protocol::console::AgentLine;

/// Prints one agent line on the console. Agent lines start on a fresh line so
/// that kernel messages printed meanwhile cannot glue onto the marker.
pub fn say(line: &AgentLine) {
    let mut out = std::io::stdout().lock();
    // The console is the only channel we have; a failed write has nowhere to
    // be reported.
    let _ = writeln!(out, "\n{line}");
    let _ = out.flush();
}
