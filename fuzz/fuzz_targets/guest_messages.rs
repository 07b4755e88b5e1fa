//! The worker protocol's structured messages from the guest (state
//! requests, error reports, printed lines, collection reports): whatever value decodes, parsing
//! it errors or yields bounded fields, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reflow_ring::Value;
use reflow_sandbox_core::guest_log::{LogRecord, MAX_LINE};
use reflow_sandbox_core::protocol::{ActorError, Collected, MAX_ERROR_TEXT, MAX_KEY_LEN};
use reflow_sandbox_core::StateRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = Value::decode(data) else { return };
    if let Ok(LogRecord::Line(line)) = LogRecord::parse(v.clone()) {
        // An escaped control character is at most 6 characters.
        assert!(line.text.len() <= 6 * MAX_LINE);
        assert!(!line.text.chars().any(|c| c.is_control() && c != '\t'));
    }
    if let Ok(e) = ActorError::parse(v.clone()) {
        assert!(e.message.len() <= MAX_ERROR_TEXT + 3);
        assert!(e.traceback.len() <= MAX_ERROR_TEXT + 3);
    }
    if let Ok(c) = Collected::parse(v.clone()) {
        assert!(c.ms.is_finite() && c.ms >= 0.0);
    }
    if let Ok(r) = StateRequest::parse(v) {
        assert!(r.key.len() <= MAX_KEY_LEN);
    }
});
