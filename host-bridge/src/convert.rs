//! Reflow [`Message`]s to guest [`Value`]s and back, faithfully where the
//! two can say the same thing and never by panicking (reflow's own
//! `Message -> serde_json::Value` conversion panics on NaN and on a bad
//! `Encoded` payload; this one does not).
//!
//! Top-level scalars, strings, bytes and floats (NaN and infinities
//! included) map one to one. Reflow carries structured values (`Object`,
//! `Array` items, `Event`, `Any`, `Optional`) as JSON, so inside those:
//! byte strings become arrays of numbers (reflow's own convention) and NaN
//! or infinite floats become null. Streams, remote references and network
//! events cannot cross into a sandbox and are errors.

use std::sync::Arc;

use reflow_actor::message::{EncodableValue, Message};
use reflow_ring::Value;

use crate::state::json::{from_json_value, to_json_value};

/// Deepest `Encoded` nesting unwrapped.
const MAX_ENCODED_DEPTH: usize = 8;

/// Why a message cannot be given to a script actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The message is of a kind script actors cannot receive (which kind).
    #[error("a {0} cannot be passed to a script actor")]
    Unsupported(&'static str),
    /// An `Encoded` message does not decode, or nests too deep (why).
    #[error("an Encoded message does not decode: {0}")]
    Encoded(String),
}

fn json(v: &EncodableValue) -> Value {
    from_json_value(serde_json::Value::from(v.clone()))
}

/// The guest value for an input message.
pub fn to_value(m: &Message) -> Result<Value, ConvertError> {
    to_value_at(m, 0)
}

fn to_value_at(m: &Message, depth: usize) -> Result<Value, ConvertError> {
    Ok(match m {
        Message::Flow => Value::None,
        Message::Boolean(b) => Value::Bool(*b),
        Message::Integer(i) => Value::Int(*i),
        Message::Float(f) => Value::Float(*f),
        Message::String(s) => Value::Str(s.as_str().to_string()),
        Message::Bytes(b) => Value::Bytes(b.as_ref().clone()),
        Message::Event(v) => json(v),
        Message::Object(v) | Message::Any(v) => json(v),
        Message::Array(items) => Value::List(items.iter().map(json).collect()),
        Message::Optional(None) => Value::None,
        Message::Optional(Some(v)) => json(v),
        Message::Error(e) => Value::Map(vec![("error".into(), Value::Str(e.as_str().into()))]),
        Message::Encoded(bytes) => {
            if depth >= MAX_ENCODED_DEPTH {
                return Err(ConvertError::Encoded("nested too deep".into()));
            }
            let inner: Message =
                bitcode::decode(bytes).map_err(|e| ConvertError::Encoded(e.to_string()))?;
            to_value_at(&inner, depth + 1)?
        }
        Message::StreamHandle(_) => return Err(ConvertError::Unsupported("stream handle")),
        Message::RemoteReference { .. } => {
            return Err(ConvertError::Unsupported("remote reference"))
        }
        Message::NetworkEvent { .. } => return Err(ConvertError::Unsupported("network event")),
    })
}

/// JSON for a value nested in a structure: bytes as arrays of numbers,
/// NaN and infinities as null.
fn lenient_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Bytes(b) => serde_json::Value::Array(b.iter().map(|&x| x.into()).collect()),
        Value::Float(f) if !f.is_finite() => serde_json::Value::Null,
        Value::List(items) => serde_json::Value::Array(items.iter().map(lenient_json).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), lenient_json(v)))
                .collect(),
        ),
        other => to_json_value(other).unwrap_or(serde_json::Value::Null),
    }
}

fn encodable(v: &Value) -> EncodableValue {
    EncodableValue::from(lenient_json(v))
}

/// The message for an output value.
pub fn to_message(v: &Value) -> Message {
    match v {
        Value::None => Message::Optional(None),
        Value::Bool(b) => Message::Boolean(*b),
        Value::Int(i) => Message::Integer(*i),
        Value::Float(f) => Message::Float(*f),
        Value::Str(s) => Message::String(Arc::new(s.clone())),
        Value::Bytes(b) => Message::Bytes(Arc::new(b.clone())),
        Value::List(items) => Message::Array(Arc::new(items.iter().map(encodable).collect())),
        Value::Map(_) => Message::Object(Arc::new(encodable(v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(j: serde_json::Value) -> Message {
        Message::Object(Arc::new(EncodableValue::from(j)))
    }

    #[test]
    fn scalars_strings_bytes_and_special_floats_round_trip() {
        let values = [
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(2.5),
            Value::Float(f64::INFINITY),
            Value::Str("hé".into()),
            Value::Bytes(vec![0, 255, 7]),
            Value::None,
        ];
        for v in values {
            assert_eq!(to_value(&to_message(&v)).unwrap(), v);
        }
        match to_value(&to_message(&Value::Float(f64::NAN))).unwrap() {
            Value::Float(f) => assert!(f.is_nan()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn structures_travel_as_json() {
        let v = Value::Map(vec![
            ("n".into(), Value::Int(1)),
            (
                "l".into(),
                Value::List(vec![Value::Str("x".into()), Value::None]),
            ),
        ]);
        assert_eq!(to_value(&to_message(&v)).unwrap(), v);
        let list = Value::List(vec![Value::Int(1), Value::Map(vec![])]);
        assert_eq!(to_value(&to_message(&list)).unwrap(), list);
        // Inside structures: bytes as numbers, NaN as null; no panic.
        let odd = Value::Map(vec![
            ("b".into(), Value::Bytes(vec![1, 2])),
            ("f".into(), Value::Float(f64::NAN)),
        ]);
        assert_eq!(
            to_value(&to_message(&odd)).unwrap(),
            Value::Map(vec![
                ("b".into(), Value::List(vec![Value::Int(1), Value::Int(2)])),
                ("f".into(), Value::None),
            ])
        );
        assert_eq!(
            to_value(&obj(serde_json::json!({"a": [1, 2.5]}))).unwrap(),
            Value::Map(vec![(
                "a".into(),
                Value::List(vec![Value::Int(1), Value::Float(2.5)])
            )])
        );
    }

    #[test]
    fn other_messages_convert_or_are_refused() {
        assert_eq!(to_value(&Message::Flow).unwrap(), Value::None);
        assert_eq!(
            to_value(&Message::Error(Arc::new("boom".into()))).unwrap(),
            Value::Map(vec![("error".into(), Value::Str("boom".into()))])
        );
        let inner = bitcode::encode(&Message::Integer(5));
        assert_eq!(
            to_value(&Message::Encoded(Arc::new(inner))).unwrap(),
            Value::Int(5)
        );
        assert!(matches!(
            to_value(&Message::Encoded(Arc::new(vec![0xff; 3]))),
            Err(ConvertError::Encoded(_))
        ));
        let remote = Message::RemoteReference {
            network_id: "n".into(),
            actor_id: "a".into(),
            port: "p".into(),
        };
        assert_eq!(
            to_value(&remote),
            Err(ConvertError::Unsupported("remote reference"))
        );
    }
}
