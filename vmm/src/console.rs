//! The guest console: serial output goes to the user's sink and is scanned,
//! line by line, for what the host needs to know (the agent's marker lines
//! and kernel panics). Readiness comes from the vsock control channel
//! (`vm::control`), which records it here too. Everything printed by the guest is untrusted: lines
//! are bounded and malformed marker lines are treated as ordinary output.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use reflow_agent_protocol::console::AgentLine;

/// Longest console line we scan; the rest of a longer line is still passed
/// to the sink but not kept.
pub const MAX_LINE: usize = 4096;
/// Console lines kept for error reports.
pub const TAIL_LINES: usize = 40;
const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// The agent completed its control handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentReady {
    /// Guest uptime when it said so.
    pub guest_uptime: Duration,
    /// Host time from VM start to the line arriving.
    pub host_elapsed: Duration,
}

/// Something the guest reported on its console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEvent {
    /// The agent is ready (sent once, for its first control handshake).
    Ready(AgentReady),
    /// An agent marker line on the console.
    Agent(AgentLine),
    /// The guest kernel panicked; the panic line.
    KernelPanic(String),
}

/// What the console learnt, for the VM's outcome.
#[derive(Debug, Default, Clone)]
pub struct ConsoleState {
    /// The agent's readiness, once its control handshake is done; None
    /// before.
    pub ready: Option<AgentReady>,
    /// The status from the agent's exit marker line; None until it prints
    /// one.
    pub exit_status: Option<i32>,
    /// The first kernel panic line, if the guest kernel panicked.
    pub panic: Option<String>,
    /// The last [`TAIL_LINES`] console lines, oldest first.
    pub tail: VecDeque<String>,
}

/// The serial device's output.
pub struct ConsoleSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    state: Arc<Mutex<ConsoleState>>,
    events: Option<Sender<GuestEvent>>,
}

impl ConsoleSink {
    /// Writes guest output to `out`; reports events to `events`.
    pub fn new(
        out: Box<dyn Write + Send>,
        events: Option<Sender<GuestEvent>>,
    ) -> (ConsoleSink, Arc<Mutex<ConsoleState>>) {
        let state = Arc::new(Mutex::new(ConsoleState::default()));
        let sink = ConsoleSink {
            out,
            line: Vec::with_capacity(256),
            state: state.clone(),
            events,
        };
        (sink, state)
    }

    fn emit(&self, event: GuestEvent) {
        if let Some(tx) = &self.events {
            // A caller that stopped listening is not an error.
            let _ = tx.send(event);
        }
    }

    fn end_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line)
            .trim_end_matches('\r')
            .to_string();
        self.line.clear();
        let mut state = self.state.lock();
        if state.tail.len() == TAIL_LINES {
            state.tail.pop_front();
        }
        state.tail.push_back(text.clone());
        if let Some(agent) = AgentLine::parse(&text) {
            if let AgentLine::Exit { status } = agent {
                state.exit_status = Some(status);
            }
            drop(state);
            self.emit(GuestEvent::Agent(agent));
        } else if text.contains(PANIC_MARKER) {
            state.panic.get_or_insert_with(|| text.clone());
            drop(state);
            self.emit(GuestEvent::KernelPanic(text));
        }
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The user's sink failing (a closed pipe) must not stop the scan.
        let _ = self.out.write_all(buf);
        for &b in buf {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.out.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn sink() -> (
        ConsoleSink,
        Arc<Mutex<ConsoleState>>,
        mpsc::Receiver<GuestEvent>,
    ) {
        let (tx, rx) = mpsc::channel();
        let (s, state) = ConsoleSink::new(Box::new(std::io::sink()), Some(tx));
        (s, state, rx)
    }

    #[test]
    fn finds_agent_lines_and_exit_across_split_writes() {
        let (mut s, state, rx) = sink();
        s.write_all(b"[ 1.0] booting\nREFLOW-AGENT-O").unwrap();
        s.write_all(b"K ping pong\r\nREFLOW-AGENT-EXIT status=3\n")
            .unwrap();
        let st = state.lock().clone();
        assert_eq!(st.exit_status, Some(3));
        assert_eq!(st.tail.len(), 3);
        assert!(
            st.ready.is_none(),
            "readiness comes from the control channel"
        );
        assert!(matches!(
            rx.try_recv().unwrap(),
            GuestEvent::Agent(AgentLine::Ok { .. })
        ));
        assert_eq!(
            rx.try_recv().unwrap(),
            GuestEvent::Agent(AgentLine::Exit { status: 3 })
        );
    }

    #[test]
    fn detects_kernel_panic() {
        let (mut s, state, rx) = sink();
        s.write_all(b"Kernel panic - not syncing: Attempted to kill init!\n")
            .unwrap();
        assert!(state.lock().panic.as_deref().unwrap().contains("kill init"));
        assert!(matches!(rx.try_recv().unwrap(), GuestEvent::KernelPanic(_)));
    }

    #[test]
    fn long_lines_are_bounded_and_tail_is_bounded() {
        let (mut s, state, _rx) = sink();
        s.write_all(&vec![b'x'; MAX_LINE * 3]).unwrap();
        s.write_all(b"\n").unwrap();
        assert_eq!(state.lock().tail[0].len(), MAX_LINE);
        for i in 0..TAIL_LINES * 2 {
            writeln!(s, "line {i}").unwrap();
        }
        let st = state.lock();
        assert_eq!(st.tail.len(), TAIL_LINES);
        assert_eq!(
            st.tail.back().unwrap(),
            &format!("line {}", TAIL_LINES * 2 - 1)
        );
    }
}
