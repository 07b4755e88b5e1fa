//! Monitor processes' standard error, relayed line by line into this
//! process's own.
//!
//! A monitor writes its log lines into a pipe, never into a file: given
//! the bridge's standard error, which may be a log file, a monitor a guest
//! took over could fill the disk through it. With a pipe the monitor holds
//! no regular file it may grow, and it runs with `RLIMIT_FSIZE` 0 (a golden
//! boot's, which writes its snapshot, with the snapshot's size).
//!
//! One thread here reads every monitor's pipe (`poll(2)`, no thread per
//! VM) and writes whole lines to standard error, as the monitor wrote them
//! (text or JSON, as `REFLOW_LOG_FORMAT` told it), each cut at
//! [`MAX_LINE`] bytes, at most [`LINES_PER_SECOND`] a second per monitor
//! after a burst of [`BURST`]. What is dropped is counted and told, with
//! the monitor's pid, when lines flow again or its pipe closes. Lines a
//! monitor writes just before this process exits may be lost with it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ChildStderr;
use std::sync::{mpsc, OnceLock};
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use crate::rate::Bucket;

/// The longest line relayed; the rest of a longer one is dropped.
pub const MAX_LINE: usize = 4096;

/// Lines a monitor may have relayed per second, once its burst is spent.
pub const LINES_PER_SECOND: f64 = 200.0;

/// Lines a monitor may have relayed at once.
pub const BURST: f64 = 1000.0;

/// Why a monitor's standard error cannot be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The relay thread or its wake-up could not be made.
    #[error("starting the monitors' standard error relay: {0}")]
    Start(String),
    /// The relay thread is gone.
    #[error("the monitors' standard error relay has ended")]
    Gone,
    /// The relay thread could not be woken.
    #[error("waking the monitors' standard error relay: {0}")]
    Wake(std::io::Error),
}

/// Relays `stderr`, the pipe from monitor process `pid`'s standard error,
/// until the monitor closes it.
pub fn relay(pid: u32, stderr: ChildStderr) -> Result<(), RelayError> {
    relay_into(pid, stderr, Box::new(std::io::stderr()))
}

/// [`relay`], writing each line (with its newline) to `out` in one
/// `write_all`; `out` is dropped when the pipe closes.
fn relay_into(pid: u32, stderr: ChildStderr, out: Box<dyn Write + Send>) -> Result<(), RelayError> {
    static RELAY: OnceLock<Result<Relay, String>> = OnceLock::new();
    let relay = RELAY
        .get_or_init(|| Relay::start().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| RelayError::Start(e.clone()))?;
    let source = Source::new(pid, OwnedFd::from(stderr), out);
    relay.sources.send(source).map_err(|_| RelayError::Gone)?;
    relay.wake.write(1).map_err(RelayError::Wake)
}

/// The way to the relay thread.
struct Relay {
    sources: mpsc::Sender<Source>,
    wake: EventFd,
}

impl Relay {
    fn start() -> Result<Relay, std::io::Error> {
        let wake = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        let theirs = wake.try_clone()?;
        let (sources, arrivals) = mpsc::channel();
        std::thread::Builder::new()
            .name("monitor-stderr".into())
            .spawn(move || run(arrivals, theirs))?;
        Ok(Relay { sources, wake })
    }
}

/// The relay thread: sleeps in `poll` until a pipe has something or a new
/// one arrives; never wakes on a timer.
fn run(arrivals: mpsc::Receiver<Source>, wake: EventFd) {
    let mut sources: Vec<Source> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(wake.as_raw_fd())
            .chain(sources.iter().map(|s| s.pipe.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds that lives
        // across the call; no timeout.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            // EINTR, or ENOMEM (EFAULT and EINVAL cannot come from this
            // call): try again, after a pause unless interrupted.
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            continue;
        }
        let mut ended = Vec::new();
        for (i, (source, fd)) in sources.iter_mut().zip(&fds[1..]).enumerate() {
            if fd.revents == 0 {
                continue;
            }
            match (&source.pipe).read(&mut buf) {
                Ok(0) => ended.push(i),
                Ok(n) => source.take(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => ended.push(i),
            }
        }
        // Highest first, so each index still names its source.
        for i in ended.into_iter().rev() {
            sources.swap_remove(i).finish();
        }
        // New pipes join after the polled ones were read.
        if fds[0].revents != 0 {
            let _ = wake.read();
            sources.extend(arrivals.try_iter());
        }
    }
}

/// One monitor's pipe and what is known of its stream.
struct Source {
    pid: u32,
    pipe: File,
    out: Box<dyn Write + Send>,
    lines: Lines,
    bucket: Bucket,
    dropped: u64,
}

impl Source {
    fn new(pid: u32, pipe: OwnedFd, out: Box<dyn Write + Send>) -> Source {
        Source {
            pid,
            pipe: File::from(pipe),
            out,
            lines: Lines::default(),
            bucket: Bucket::new(LINES_PER_SECOND, BURST),
            dropped: 0,
        }
    }

    fn take(&mut self, chunk: &[u8]) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.push(chunk, &mut |line| self.emit(line));
        self.lines = lines;
    }

    /// The pipe closed: its unfinished last line, and what was dropped.
    fn finish(mut self) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.finish(&mut |line| self.emit(line));
        self.tell_dropped();
    }

    fn emit(&mut self, line: &[u8]) {
        if !self.bucket.take(Instant::now()) {
            self.dropped += 1;
            return;
        }
        self.tell_dropped();
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line);
        out.push(b'\n');
        let _ = self.out.write_all(&out);
    }

    fn tell_dropped(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                monitor = self.pid,
                dropped = self.dropped,
                "a monitor process wrote more lines to its standard error than are relayed \
                 ({LINES_PER_SECOND} a second after a burst of {BURST}); lines dropped"
            );
            self.dropped = 0;
        }
    }
}

/// Cuts a byte stream into lines (without their newlines), each at most
/// [`MAX_LINE`] bytes: a longer line is cut there and the rest of it, up
/// to its newline, dropped.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    /// The line being read was cut; skip to its end.
    cut: bool,
}

impl Lines {
    /// Adds `chunk`, calling `line` with each line it completes.
    fn push(&mut self, chunk: &[u8], line: &mut dyn FnMut(&[u8])) {
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            let ends = piece.last() == Some(&b'\n');
            let body = if ends {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            if !self.cut {
                let room = MAX_LINE - self.partial.len();
                if body.len() > room {
                    self.partial.extend_from_slice(&body[..room]);
                    line(&self.partial);
                    self.partial.clear();
                    self.cut = true;
                } else {
                    self.partial.extend_from_slice(body);
                }
            }
            if ends {
                if !self.cut {
                    line(&self.partial);
                }
                self.partial.clear();
                self.cut = false;
            }
        }
    }

    /// The end of the stream: its last line, if it had no newline.
    fn finish(&mut self, line: &mut dyn FnMut(&[u8])) {
        if !self.partial.is_empty() && !self.cut {
            line(&self.partial);
        }
        self.partial.clear();
        self.cut = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            lines.push(c, &mut |l| out.push(l.to_vec()));
        }
        lines.finish(&mut |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_are_whole_across_chunks_and_the_last_one_counts() {
        assert_eq!(
            cut(&[b"one\ntw", b"o\n\nthr", b"ee"]),
            [&b"one"[..], b"two", b"", b"three"]
        );
        assert_eq!(cut(&[b"a\n"]), [b"a"]);
        assert!(cut(&[b""]).is_empty());
    }

    #[test]
    fn a_long_line_is_cut_and_its_rest_dropped() {
        let long = vec![b'x'; MAX_LINE * 3 + 5];
        let half = MAX_LINE / 2;
        let got = cut(&[&long[..half], &long[half..], b"\nnext\n", &long, b"tail"]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], vec![b'x'; MAX_LINE]);
        assert_eq!(got[1], b"next");
        // The unfinished last line was cut: its rest (and "tail") dropped.
        assert_eq!(got[2], vec![b'x'; MAX_LINE]);
        // Exactly MAX_LINE bytes is a whole line.
        let exact = [vec![b'y'; MAX_LINE], b"\nz\n".to_vec()].concat();
        assert_eq!(cut(&[&exact]), [vec![b'y'; MAX_LINE], b"z".to_vec()]);
    }

    /// Each line written to it, as a message.
    struct Sink(mpsc::Sender<Vec<u8>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_childs_standard_error_arrives_in_whole_lines_and_a_flood_is_cut() {
        let script = "exec 1>&2; printf 'one\\ntw'; sleep 0.1; printf 'o\\n'; \
                      i=0; while [ $i -lt 3000 ]; do echo flood; i=$((i+1)); done";
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        relay_into(child.id(), child.stderr.take().unwrap(), Box::new(Sink(tx))).unwrap();
        assert!(child.wait().unwrap().success());
        // The relay drops its end of the channel when the pipe closes.
        let got: Vec<Vec<u8>> = rx.iter().collect();
        assert_eq!(got[..2], [b"one\n".to_vec(), b"two\n".to_vec()]);
        assert!(got[2..].iter().all(|l| l == b"flood\n"));
        // The burst, and what the rate added while the flood ran; not all.
        let flood = got.len() - 2;
        assert!(
            flood >= BURST as usize - 2 && flood < 3000,
            "{flood} of 3000 lines relayed"
        );
    }
}
