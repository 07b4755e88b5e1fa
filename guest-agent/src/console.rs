//! The serial console: agent lines out, request lines in.

use std::io::{BufRead, Read, Write};

use reflow_guest_agent::protocol::{AgentLine, MAX_REQUEST_LEN};

use crate::serve::Server;

/// Errors reading requests from the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("reading the console: {0}")]
    Read(std::io::Error),
    #[error("the console closed before a poweroff request")]
    Closed,
}

/// Prints one agent line on the console. Agent lines start on a fresh line so
/// that kernel messages printed meanwhile cannot glue onto the marker.
pub fn say(line: &AgentLine) {
    let mut out = std::io::stdout().lock();
    // The console is the only channel we have; a failed write has nowhere to
    // be reported.
    let _ = writeln!(out, "\n{line}");
    let _ = out.flush();
}

/// Turns off echo on the console so requests typed by the host are not
/// printed back into the host's log.
fn disable_echo() {
    // SAFETY: termios is plain data; tcgetattr fills it before we use it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is our console; `t` is a valid termios to fill.
    if unsafe { libc::tcgetattr(0, &mut t) } == 0 {
        t.c_lflag &= !(libc::ECHO | libc::ECHONL);
        // SAFETY: fd 0 is our console; `t` came from tcgetattr.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
    }
}

/// Serves requests from the console until one powers the guest off, and
/// returns the status to power off with.
pub fn serve(server: &mut Server) -> Result<i32, ConsoleError> {
    disable_echo();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = Read::by_ref(&mut input)
            .take(MAX_REQUEST_LEN as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(ConsoleError::Read)?;
        if n == 0 {
            return Err(ConsoleError::Closed);
        }
        if line.last() != Some(&b'\n') && n > MAX_REQUEST_LEN {
            // Drop the rest of an over-long line, then refuse it.
            let mut sink = Vec::new();
            input
                .read_until(b'\n', &mut sink)
                .map_err(ConsoleError::Read)?;
        }
        let text = String::from_utf8_lossy(&line);
        if let Some(status) = server.handle_line(&text) {
            return Ok(status);
        }
    }
}
