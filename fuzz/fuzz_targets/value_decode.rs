//! Message values from the guest: the tagged value decoder. Errors, never
//! panics; whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reflow_ring::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Value::decode(data) {
        assert_eq!(v.encode().expect("a decoded value re-encodes"), data);
    }
});
