//! A script's versions over a run (hot reload): an actor and every node
//! made from it share one [`ScriptVersions`]; [`ScriptUpdater::update`]
//! publishes a new version, and each node switches to it between
//! messages (see [`crate::node`]): messages it had taken finish on the
//! version they started on, later ones run on the new one, and a version
//! that does not load is refused while the node keeps serving the one it
//! has.

use std::sync::Arc;

use parking_lot::Mutex;
use reflow_sandbox_core::Script;
use sha2::{Digest, Sha256};

/// One version of a script: the script, its number (1 for the first,
/// counting up) and its content hash (what events and metrics show).
#[derive(Debug, Clone)]
pub struct Version {
    /// The script.
    pub script: Arc<Script>,
    /// 1 for the first version, counting up.
    pub number: u64,
    /// The first 12 hex digits of its content hash ([`content_hash`]).
    pub hash: String,
}

impl Version {
    fn of(script: Arc<Script>, number: u64) -> Version {
        let hash = content_hash(&script);
        Version {
            script,
            number,
            hash,
        }
    }
}

/// The first 12 hex digits of the SHA-256 of a script's name and source.
pub fn content_hash(script: &Script) -> String {
    let mut h = Sha256::new();
    h.update(script.name.as_bytes());
    h.update([0]);
    h.update(script.source.as_bytes());
    hex::encode(&h.finalize()[..6])
}

/// The versions of one actor's script: the latest.
#[derive(Debug)]
pub struct ScriptVersions {
    latest: Mutex<Version>,
}

impl ScriptVersions {
    /// Versions starting at `script` (version 1).
    pub fn new(script: Arc<Script>) -> Arc<ScriptVersions> {
        Arc::new(ScriptVersions {
            latest: Mutex::new(Version::of(script, 1)),
        })
    }

    /// The latest version.
    pub fn latest(&self) -> Version {
        self.latest.lock().clone()
    }

    /// The latest version's number.
    pub fn number(&self) -> u64 {
        self.latest.lock().number
    }
}

/// Publishes new versions of an actor's script to every node made from
/// it (cheap to clone).
#[derive(Debug, Clone)]
pub struct ScriptUpdater(pub(crate) Arc<ScriptVersions>);

impl ScriptUpdater {
    /// Makes `script` the latest version (if its source differs from the
    /// latest's); returns the latest version.
    pub fn update(&self, script: Script) -> Version {
        let mut latest = self.0.latest.lock();
        if latest.script.source != script.source || latest.script.name != script.name {
            let number = latest.number + 1;
            *latest = Version::of(Arc::new(script), number);
        }
        latest.clone()
    }

    /// The latest version.
    pub fn latest(&self) -> Version {
        self.0.latest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflow_sandbox_core::Language;

    #[test]
    fn an_update_makes_a_new_version_only_when_the_script_changed() {
        let s = |src: &str| Script::inline(Language::Python, "a.actor.py", src);
        let versions = ScriptVersions::new(Arc::new(s("one")));
        let up = ScriptUpdater(versions.clone());
        let first = versions.latest();
        assert_eq!((first.number, first.hash.len()), (1, 12));
        assert_eq!(up.update(s("one")).number, 1, "same source, same version");
        let second = up.update(s("two"));
        assert_eq!(second.number, 2);
        assert_ne!(second.hash, first.hash);
        assert_eq!(versions.number(), 2);
        assert_eq!(content_hash(&s("one")), first.hash, "stable");
    }
}
