//! Reading and writing a socket against one deadline for a whole frame.
//!
//! A socket timeout bounds each `read()` or `write()` call, not a frame: a
//! guest that trickles a byte just before every timeout would hold the host
//! thread for as long as it likes (a 4 MiB frame at one byte per timeout is
//! months). [`Deadline`] sets the socket's timeout to what is left of one
//! deadline before every call and fails with `TimedOut` once it has passed.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// `stream` read from and written to until `until`, in total.
pub(super) struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl<'a> Deadline<'a> {
    /// Every read and write on `stream` through this must be done within
    /// `limit` from now.
    pub(super) fn new(stream: &'a UnixStream, limit: Duration) -> Deadline<'a> {
        Deadline {
            stream,
            until: Instant::now() + limit,
        }
    }

    /// What is left, or `TimedOut` once nothing is.
    fn left(&self) -> io::Result<Duration> {
        match self.until.checked_duration_since(Instant::now()) {
            // A zero timeout would mean "block forever" to the socket.
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(io::Error::new(
                ErrorKind::TimedOut,
                "the frame did not complete before its deadline",
            )),
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        let mut stream = self.stream;
        stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that sends one byte every 20 ms never lets a per-call
    /// timeout of 200 ms fire; the deadline ends the read anyway.
    #[test]
    fn a_trickling_peer_runs_into_the_deadline() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let trickle = std::thread::spawn(move || {
            let mut theirs = theirs;
            for _ in 0..100 {
                if theirs.write_all(&[0]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let mut buf = [0u8; 100];
        let err = Deadline::new(&ours, Duration::from_millis(200))
            .read_exact(&mut buf)
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock),
            "{err}"
        );
        drop(ours);
        trickle.join().unwrap();
    }

    #[test]
    fn a_prompt_peer_is_read_in_full() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        Deadline::new(&ours, Duration::from_secs(5))
            .read_exact(&mut buf)
            .unwrap();
        assert_eq!(&buf, b"hello");
    }
}
