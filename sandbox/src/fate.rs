//! What a failure leaves of a sandbox VM: the one rule every owner of a
//! worker follows (the worker client, which stops talking to a worker that
//! broke, and the Reflow adapter's nodes, which keep, retire or kill the
//! VM behind it).

use crate::protocol::{ActorError, ErrorKind};
use crate::worker::WorkerError;

/// What to do with a VM after a call to its worker failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Nothing went wrong with the VM or its actor (the actor raised, or
    /// the message was refused before it was sent): keep serving.
    Keep,
    /// The worker still follows the protocol, but its actor is not usable
    /// (it did not load, or the worker could not read a message): the VM
    /// must not serve this actor again; a fresh clone takes its place.
    Retire,
    /// The worker broke the protocol, missed its deadline, went past a
    /// limit or died: stop talking to it and kill the VM.
    Kill,
}

impl Fate {
    /// Whether the VM may go on serving the actor.
    pub fn keeps_vm(self) -> bool {
        self == Fate::Keep
    }
}

impl ActorError {
    /// The VM's fate after the worker reported this error.
    pub fn fate(&self) -> Fate {
        match self.kind {
            ErrorKind::Run => Fate::Keep,
            ErrorKind::Load | ErrorKind::Protocol => Fate::Retire,
        }
    }
}

impl WorkerError {
    /// The VM's fate after this error.
    pub fn fate(&self) -> Fate {
        match self {
            WorkerError::Actor(a) => a.fate(),
            // Refused before anything reached the ring.
            WorkerError::Encode(_) | WorkerError::MessageTooLarge { .. } => Fate::Keep,
            WorkerError::Timeout(_)
            | WorkerError::Hostile(_)
            | WorkerError::Ring(_)
            | WorkerError::Poisoned
            | WorkerError::Died
            | WorkerError::Limit(_) => Fate::Kill,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn actor(kind: ErrorKind) -> WorkerError {
        WorkerError::Actor(ActorError {
            kind,
            message: "m".into(),
            traceback: String::new(),
        })
    }

    #[test]
    fn only_a_raising_actor_or_a_refused_message_keeps_the_vm() {
        assert_eq!(actor(ErrorKind::Run).fate(), Fate::Keep);
        assert_eq!(actor(ErrorKind::Load).fate(), Fate::Retire);
        assert_eq!(actor(ErrorKind::Protocol).fate(), Fate::Retire);
        let too_large = WorkerError::MessageTooLarge {
            len: 2,
            max: 1,
            what: "max_message_size",
        };
        assert_eq!(too_large.fate(), Fate::Keep);
        for e in [
            WorkerError::Timeout(Duration::from_secs(1)),
            WorkerError::Hostile("x".into()),
            WorkerError::Poisoned,
            WorkerError::Died,
            WorkerError::Limit("x".into()),
        ] {
            assert_eq!(e.fate(), Fate::Kill, "{e}");
            assert!(!e.fate().keeps_vm());
        }
    }
}
