//! What one message of a sandboxed actor may do: how long it may run, how
//! big its input, each output and each stored value may be, and how many
//! outputs and state operations it may make. The bridge has defaults
//! ([`Limits::default`], the documented security model), each runtime and
//! each actor may override any of them ([`LimitOverrides`]), most specific
//! last.

use std::time::Duration;

/// Every limit of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest one message may run; past it the VM is killed and the
    /// message answered with an error.
    pub timeout: Duration,
    /// Largest message (its inputs and config, encoded) the host passes to
    /// the actor; a larger one is answered with an error without reaching
    /// the VM. A message must also fit the VM's host-to-guest ring (about
    /// half the shared region: 20 MiB of the default 40 MiB).
    pub max_message_bytes: usize,
    /// Largest single output (a `send_output` value, or everything the
    /// actor returns, encoded); past it the message fails and the VM is
    /// discarded. The guest-to-host ring bounds it too.
    pub max_output_bytes: usize,
    /// Most outputs one message may make (sent and returned); past it the
    /// message fails and the VM is discarded (a flood would otherwise fill
    /// the graph's queues without bound).
    pub max_outputs: usize,
    /// Most bytes all of one message's outputs may add up to (encoded);
    /// past it the message fails and the VM is discarded. With
    /// [`Limits::max_outputs`] it bounds what one input can make a guest
    /// queue toward a slow downstream node.
    pub max_output_total_bytes: usize,
    /// Most state operations one message may make; past it the message
    /// fails and the VM is discarded.
    pub max_state_ops: usize,
    /// Largest value one `set` or `push` may store (encoded); a larger one
    /// is refused with an error raised in the actor, which goes on.
    pub max_state_value_bytes: usize,
    /// Most lines of printed output one message may log; the rest are
    /// counted as dropped (the message goes on).
    pub max_log_lines: usize,
    /// Most bytes of printed output one message may log; the rest are
    /// counted as dropped (the message goes on).
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(30),
            max_message_bytes: 32 << 20,
            max_output_bytes: 32 << 20,
            max_outputs: 10_000,
            max_output_total_bytes: 128 << 20,
            max_state_ops: 10_000,
            max_state_value_bytes: 1 << 20,
            max_log_lines: 1000,
            max_log_bytes: 64 << 10,
        }
    }
}

/// Some limits, over others (`None`: keep the one below).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// Replaces [`Limits::timeout`] when set.
    pub timeout: Option<Duration>,
    /// Replaces [`Limits::max_message_bytes`] when set.
    pub max_message_bytes: Option<usize>,
    /// Replaces [`Limits::max_output_bytes`] when set.
    pub max_output_bytes: Option<usize>,
    /// Replaces [`Limits::max_outputs`] when set.
    pub max_outputs: Option<usize>,
    /// Replaces [`Limits::max_output_total_bytes`] when set.
    pub max_output_total_bytes: Option<usize>,
    /// Replaces [`Limits::max_state_ops`] when set.
    pub max_state_ops: Option<usize>,
    /// Replaces [`Limits::max_state_value_bytes`] when set.
    pub max_state_value_bytes: Option<usize>,
    /// Replaces [`Limits::max_log_lines`] when set.
    pub max_log_lines: Option<usize>,
    /// Replaces [`Limits::max_log_bytes`] when set.
    pub max_log_bytes: Option<usize>,
}

impl Limits {
    /// The default limits with another timeout.
    pub fn with_timeout(timeout: Duration) -> Limits {
        Limits {
            timeout,
            ..Limits::default()
        }
    }

    /// These limits with `o`'s set ones in their place.
    pub fn with(self, o: &LimitOverrides) -> Limits {
        Limits {
            timeout: o.timeout.unwrap_or(self.timeout),
            max_message_bytes: o.max_message_bytes.unwrap_or(self.max_message_bytes),
            max_output_bytes: o.max_output_bytes.unwrap_or(self.max_output_bytes),
            max_outputs: o.max_outputs.unwrap_or(self.max_outputs),
            max_output_total_bytes: o
                .max_output_total_bytes
                .unwrap_or(self.max_output_total_bytes),
            max_state_ops: o.max_state_ops.unwrap_or(self.max_state_ops),
            max_state_value_bytes: o
                .max_state_value_bytes
                .unwrap_or(self.max_state_value_bytes),
            max_log_lines: o.max_log_lines.unwrap_or(self.max_log_lines),
            max_log_bytes: o.max_log_bytes.unwrap_or(self.max_log_bytes),
        }
    }
}

impl LimitOverrides {
    /// `self` with `over`'s set ones in their place.
    pub fn then(self, over: &LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            timeout: over.timeout.or(self.timeout),
            max_message_bytes: over.max_message_bytes.or(self.max_message_bytes),
            max_output_bytes: over.max_output_bytes.or(self.max_output_bytes),
            max_outputs: over.max_outputs.or(self.max_outputs),
            max_output_total_bytes: over.max_output_total_bytes.or(self.max_output_total_bytes),
            max_state_ops: over.max_state_ops.or(self.max_state_ops),
            max_state_value_bytes: over.max_state_value_bytes.or(self.max_state_value_bytes),
            max_log_lines: over.max_log_lines.or(self.max_log_lines),
            max_log_bytes: over.max_log_bytes.or(self.max_log_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_setting_wins() {
        let runtime = LimitOverrides {
            timeout: Some(Duration::from_secs(5)),
            max_outputs: Some(7),
            ..LimitOverrides::default()
        };
        let actor = LimitOverrides {
            max_outputs: Some(3),
            max_state_value_bytes: Some(10),
            ..LimitOverrides::default()
        };
        let l = Limits::default().with(&runtime.then(&actor));
        assert_eq!(l.timeout, Duration::from_secs(5));
        assert_eq!(l.max_outputs, 3);
        assert_eq!(l.max_state_value_bytes, 10);
        assert_eq!(l.max_state_ops, Limits::default().max_state_ops);
        assert_eq!(
            Limits::default().with(&LimitOverrides::default()),
            Limits::default()
        );
    }
}
