//! A record of what a guest did that it must not: malformed vsock packets,
//! broken descriptor chains, protocol violations. The host survives every
//! one; whoever owns the VM decides whether to keep it (a pool discards a
//! VM with any entry).

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::Arc;

use parking_lot::Mutex;
use vmm_sys_util::eventfd::EventFd;

/// Most recent reports kept (the count covers all).
pub const KEPT: usize = 16;

/// Longest report kept or logged, in bytes.
pub const MAX_TEXT: usize = 512;

/// Reports logged in full before only every power-of-two-th is.
pub const LOGGED: u64 = 3;

#[derive(Debug, Default)]
struct Inner {
    count: u64,
    recent: VecDeque<String>,
    /// Reports are not logged (a copy of another process's log, which
    /// logged them there).
    silent: bool,
    /// Signalled on every report (see [`HostileLog::notify`]).
    notify: Option<Arc<EventFd>>,
}

/// Shared between the devices that detect violations and the VM's owner.
#[derive(Debug, Clone, Default)]
pub struct HostileLog(Arc<Mutex<Inner>>);

impl HostileLog {
    /// A log whose reports are counted and kept but not logged: the
    /// bridge's copy of a monitor process's log, which logs its own.
    pub fn silent() -> HostileLog {
        let log = HostileLog::default();
        log.0.lock().silent = true;
        log
    }

    /// Records a violation detected by `source` (a device name). The guest
    /// decides how often this happens, so what reaches the host's log is
    /// bounded: each report is cut to [`MAX_TEXT`] bytes, and only the first
    /// [`LOGGED`] and then every power-of-two-th are logged (all are
    /// counted).
    pub fn report(&self, source: &str, what: impl Display) {
        let mut text = format!("{source}: {what}");
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("...");
        }
        let mut inner = self.0.lock();
        inner.count += 1;
        let count = inner.count;
        if !inner.silent && (count <= LOGGED || count.is_power_of_two()) {
            tracing::warn!(%text, count, "hostile guest input");
        }
        if inner.recent.len() == KEPT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(text);
        if let Some(fd) = &inner.notify {
            let _ = fd.write(1);
        }
    }

    /// Signals `fd` on every report from now on, so its owner can wait
    /// for reports instead of polling the count.
    pub fn notify(&self, fd: Arc<EventFd>) {
        self.0.lock().notify = Some(fd);
    }

    /// Violations so far.
    pub fn count(&self) -> u64 {
        self.0.lock().count
    }

    /// The latest reports, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.0.lock().recent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_tail_and_a_full_count() {
        let log = HostileLog::default();
        for i in 0..(KEPT + 4) {
            log.clone().report("test", i);
        }
        assert_eq!(log.count(), (KEPT + 4) as u64);
        let recent = log.recent();
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent.last().unwrap(), &format!("test: {}", KEPT + 3));
    }

    #[test]
    fn long_reports_are_cut_on_a_character_boundary() {
        let log = HostileLog::default();
        log.report("vsock", "é".repeat(MAX_TEXT));
        let text = &log.recent()[0];
        assert!(text.len() <= MAX_TEXT + 3, "{}", text.len());
        assert!(text.ends_with("..."));
    }
}
