//! A monitor process's guest console, brought back to its starter: the
//! monitor writes what the guest prints into a pipe (non-blocking on its
//! side: output nobody reads fast enough is dropped, never waited for),
//! and a thread here copies it to the starter's writer (a terminal, a
//! file) until the monitor has gone.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;

/// Why a console pipe could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConsolePipeError {
    /// The pipe could not be made.
    #[error("making the console pipe: {0}")]
    Pipe(std::io::Error),
    /// The copying thread could not be started.
    #[error("starting the console thread: {0}")]
    Thread(std::io::Error),
}

/// The copying end of a monitor's console: hand [`ConsolePipe::fd`] to the
/// monitor ([`super::SpawnOptions::console`]), then [`ConsolePipe::started`].
pub struct ConsolePipe {
    writer: Option<OwnedFd>,
    copier: JoinHandle<()>,
}

/// Bytes copied at a time.
const CHUNK: usize = 64 * 1024;

/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> std::io::Result<(File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just made both descriptors; nothing else owns them.
    Ok(unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl ConsolePipe {
    /// A pipe whose output goes to `out`.
    pub fn new(mut out: Box<dyn Write + Send>) -> Result<ConsolePipe, ConsolePipeError> {
        let (mut reader, writer) = pipe().map_err(ConsolePipeError::Pipe)?;
        let copier = std::thread::Builder::new()
            .name("vm-console".into())
            .spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            // A writer that fails (a closed terminal) loses
                            // the console, not the VM.
                            let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            })
            .map_err(ConsolePipeError::Thread)?;
        Ok(ConsolePipe {
            writer: Some(writer),
            copier,
        })
    }

    /// The end the monitor writes to (until [`ConsolePipe::started`]).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.writer.as_ref().map(|w| w.as_fd())
    }

    /// The monitor holds its own copy of the write end now: this one is
    /// closed, so the copy ends when the monitor does.
    pub fn started(&mut self) {
        self.writer = None;
    }

    /// Waits until everything the monitor wrote has been copied (the
    /// monitor must have ended, or been told to end).
    pub fn finish(self) {
        drop(self.writer);
        let _ = self.copier.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn copies_what_another_holder_of_the_write_end_writes_until_it_closes() {
        let out = Shared::default();
        let mut pipe = ConsolePipe::new(Box::new(out.clone())).unwrap();
        // What a monitor does with the descriptor it received.
        let theirs = pipe.fd().unwrap().try_clone_to_owned().unwrap();
        pipe.started();
        assert!(pipe.fd().is_none());
        let mut theirs = std::fs::File::from(theirs);
        let big = vec![b'x'; 3 * CHUNK + 17];
        theirs.write_all(b"hello\n").unwrap();
        theirs.write_all(&big).unwrap();
        drop(theirs);
        pipe.finish();
        let got = out.0.lock().unwrap().clone();
        assert_eq!(&got[..6], b"hello\n");
        assert_eq!(got.len(), 6 + big.len());
    }

    #[test]
    fn finish_returns_when_nobody_else_holds_the_write_end() {
        let out = Shared::default();
        let pipe = ConsolePipe::new(Box::new(out.clone())).unwrap();
        pipe.finish();
        assert!(out.0.lock().unwrap().is_empty());
    }
}
