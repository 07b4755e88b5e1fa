//! What the command's test files share.

use std::path::Path;

/// Whether /dev/kvm exists; under `CI=true` its absence fails the test (the
/// integration tests' `missing` rule: this crate does not depend on them).
pub fn kvm() -> bool {
    let ok = Path::new("/dev/kvm").exists();
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true and /dev/kvm is absent: this test boots real guests"
        );
        eprintln!("SKIPPED: /dev/kvm is absent");
    }
    ok
}

/// Process output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
