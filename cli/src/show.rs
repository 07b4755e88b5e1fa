//! Messages as one line of text for people (never panics: NaN, bytes and
//! undecodable payloads included).

use reflow_actor::message::Message;
use reflow_host_bridge::convert::to_value;
use reflow_host_bridge::state::json::to_json;

/// Longest byte string shown in full (as hex).
const SHOWN_BYTES: usize = 32;

/// `message` as one line: JSON where it is JSON, `error: ...` for errors,
/// a length and a hex prefix for bytes.
pub fn message(message: &Message) -> String {
    match message {
        Message::Error(e) => format!("error: {e}"),
        Message::Bytes(b) => {
            let hex: String = b
                .iter()
                .take(SHOWN_BYTES)
                .map(|x| format!("{x:02x}"))
                .collect();
            let more = if b.len() > SHOWN_BYTES { "..." } else { "" };
            format!("<{} bytes: {hex}{more}>", b.len())
        }
        Message::Float(x) if !x.is_finite() => x.to_string(),
        other => match to_value(other).map(|v| to_json(&v)) {
            Ok(Ok(json)) => json,
            _ => format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_as_one_line() {
        assert_eq!(message(&Message::Integer(3)), "3");
        assert_eq!(message(&Message::string("a".into())), "\"a\"");
        assert_eq!(message(&Message::Float(f64::NAN)), "NaN");
        assert_eq!(message(&Message::error("boom".into())), "error: boom");
        assert_eq!(
            message(&Message::Bytes(std::sync::Arc::new(vec![1, 255]))),
            "<2 bytes: 01ff>"
        );
    }
}
