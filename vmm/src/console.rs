//! The guest console: serial output goes to the user's sink and is scanned,
//! line by line, for what the host needs to know (the agent's protocol lines
//! and kernel panics). Everything printed by the guest is untrusted: lines
//! are bounded and malformed marker lines are treated as ordinary output.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reflow_guest_agent::protocol::AgentLine;

use crate::devices::bus::lock;

/// Longest console line we scan; the rest of a longer line is still passed
/// to the sink but not kept.
pub const MAX_LINE: usize = 4096;
/// Console lines kept for error reports.
pub const TAIL_LINES: usize = 40;
const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// The agent said it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentReady {
    /// Guest uptime when the agent said so.
    pub guest_uptime: Duration,
    /// Host time from VM start to the line arriving.
    pub host_elapsed: Duration,
}

/// Something the guest reported on its console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEvent {
    /// The agent is ready (sent once, for the first ready line).
    Ready(AgentReady),
    /// Any agent protocol line, the ready line included.
    Agent(AgentLine),
    /// The guest kernel panicked; the panic line.
    KernelPanic(String),
}

/// What the console learnt, for the VM's outcome.
#[derive(Debug, Default, Clone)]
pub struct ConsoleState {
    pub ready: Option<AgentReady>,
    pub exit_status: Option<i32>,
    pub panic: Option<String>,
    pub tail: VecDeque<String>,
}

/// Which line means "the agent is ready".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyOn {
    /// A booted guest: the agent's `REFLOW-AGENT-READY` line.
    AgentReadyLine,
    /// A restored clone (whose ready line is in the past): the answer to the
    /// `uptime` request the monitor sends after reseeding it.
    RestoredUptime,
}

/// The serial device's output.
pub struct ConsoleSink {
    ready_on: ReadyOn,
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    state: Arc<Mutex<ConsoleState>>,
    events: Option<Sender<GuestEvent>>,
    started: Instant,
}

impl ConsoleSink {
    /// Writes guest output to `out`; reports events to `events`.
    pub fn new(
        out: Box<dyn Write + Send>,
        events: Option<Sender<GuestEvent>>,
        started: Instant,
        ready_on: ReadyOn,
    ) -> (ConsoleSink, Arc<Mutex<ConsoleState>>) {
        let state = Arc::new(Mutex::new(ConsoleState::default()));
        let sink = ConsoleSink {
            ready_on,
            out,
            line: Vec::with_capacity(256),
            state: state.clone(),
            events,
            started,
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
        let mut state = lock(&self.state);
        if state.tail.len() == TAIL_LINES {
            state.tail.pop_front();
        }
        state.tail.push_back(text.clone());
        if let Some(agent) = AgentLine::parse(&text) {
            let ready_uptime = match (&agent, self.ready_on) {
                (AgentLine::Ready { uptime_ms, .. }, ReadyOn::AgentReadyLine) => Some(*uptime_ms),
                (AgentLine::Ok { command, result }, ReadyOn::RestoredUptime)
                    if command == "uptime" =>
                {
                    result.trim().parse().ok()
                }
                _ => None,
            };
            let mut newly_ready = None;
            if let (Some(uptime_ms), None) = (ready_uptime, state.ready) {
                let ready = AgentReady {
                    guest_uptime: Duration::from_millis(uptime_ms),
                    host_elapsed: self.started.elapsed(),
                };
                state.ready = Some(ready);
                newly_ready = Some(ready);
            }
            if let AgentLine::Exit { status } = agent {
                state.exit_status = Some(status);
            }
            drop(state);
            if let Some(ready) = newly_ready {
                self.emit(GuestEvent::Ready(ready));
            }
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
        let (s, state) = ConsoleSink::new(
            Box::new(std::io::sink()),
            Some(tx),
            Instant::now(),
            ReadyOn::AgentReadyLine,
        );
        (s, state, rx)
    }

    #[test]
    fn finds_ready_and_exit_across_split_writes() {
        let (mut s, state, rx) = sink();
        s.write_all(b"[ 1.0] booting\nREFLOW-AGENT-REA").unwrap();
        s.write_all(b"DY version=0.1.0 uptime_ms=1500\r\nREFLOW-AGENT-EXIT status=3\n")
            .unwrap();
        let st = lock(&state).clone();
        assert_eq!(st.ready.unwrap().guest_uptime, Duration::from_millis(1500));
        assert_eq!(st.exit_status, Some(3));
        assert_eq!(st.tail.len(), 3);
        assert!(matches!(rx.try_recv().unwrap(), GuestEvent::Ready(_)));
        assert!(matches!(
            rx.try_recv().unwrap(),
            GuestEvent::Agent(AgentLine::Ready { .. })
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
        assert!(lock(&state).panic.as_deref().unwrap().contains("kill init"));
        assert!(matches!(rx.try_recv().unwrap(), GuestEvent::KernelPanic(_)));
    }

    #[test]
    fn long_lines_are_bounded_and_tail_is_bounded() {
        let (mut s, state, _rx) = sink();
        s.write_all(&vec![b'x'; MAX_LINE * 3]).unwrap();
        s.write_all(b"\n").unwrap();
        assert_eq!(lock(&state).tail[0].len(), MAX_LINE);
        for i in 0..TAIL_LINES * 2 {
            writeln!(s, "line {i}").unwrap();
        }
        let st = lock(&state);
        assert_eq!(st.tail.len(), TAIL_LINES);
        assert_eq!(
            st.tail.back().unwrap(),
            &format!("line {}", TAIL_LINES * 2 - 1)
        );
    }

    #[test]
    fn restored_clone_is_ready_on_its_uptime_answer() {
        let (tx, _rx) = mpsc::channel();
        let (mut s, state) = ConsoleSink::new(
            Box::new(std::io::sink()),
            Some(tx),
            Instant::now(),
            ReadyOn::RestoredUptime,
        );
        s.write_all(
            b"REFLOW-AGENT-OK reseed ok
",
        )
        .unwrap();
        assert!(lock(&state).ready.is_none());
        s.write_all(
            b"REFLOW-AGENT-OK uptime 12345
",
        )
        .unwrap();
        assert_eq!(
            lock(&state).ready.unwrap().guest_uptime,
            Duration::from_millis(12345)
        );
    }

    #[test]
    fn only_first_ready_counts() {
        let (mut s, state, _rx) = sink();
        s.write_all(b"REFLOW-AGENT-READY version=1 uptime_ms=5\n")
            .unwrap();
        s.write_all(b"REFLOW-AGENT-READY version=1 uptime_ms=9\n")
            .unwrap();
        assert_eq!(
            lock(&state).ready.unwrap().guest_uptime,
            Duration::from_millis(5)
        );
    }
}
