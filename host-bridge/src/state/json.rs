//! State values are JSON (as in the documented Redis layout): conversions
//! between guest [`Value`]s and JSON text, refusing what JSON cannot carry.

use reflow_ring::Value;
use serde_json::Number;

/// Why a value cannot be stored or read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The value has no JSON form (what it is: a byte string, NaN, ...).
    #[error("{0} cannot be stored as JSON")]
    NotJson(&'static str),
    /// Stored text does not parse as JSON (the parser's error).
    #[error("the stored value is not JSON: {0}")]
    Stored(String),
}

/// `v` as JSON text.
pub fn to_json(v: &Value) -> Result<String, JsonError> {
    Ok(to_json_value(v)?.to_string())
}

pub(crate) fn to_json_value(v: &Value) -> Result<serde_json::Value, JsonError> {
    json_value(v, false)
}

/// `v` as a JSON value the way Reflow's `Message` becomes JSON: byte
/// strings as arrays of numbers (Reflow's own form), NaN and infinities
/// refused.
pub fn to_wire_json(v: &Value) -> Result<serde_json::Value, JsonError> {
    json_value(v, true)
}

fn json_value(v: &Value, bytes_as_numbers: bool) -> Result<serde_json::Value, JsonError> {
    let each = |v: &Value| json_value(v, bytes_as_numbers);
    Ok(match v {
        Value::None => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::Number((*i).into()),
        Value::Float(f) => serde_json::Value::Number(
            Number::from_f64(*f).ok_or(JsonError::NotJson("NaN or an infinite float"))?,
        ),
        Value::Str(s) => serde_json::Value::String(s.clone()),
        Value::Bytes(b) if bytes_as_numbers => {
            b.iter().map(|&b| serde_json::Value::from(b)).collect()
        }
        Value::Bytes(_) => return Err(JsonError::NotJson("a byte string")),
        Value::List(items) => {
            serde_json::Value::Array(items.iter().map(each).collect::<Result<_, _>>()?)
        }
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), each(v)?)))
                .collect::<Result<_, JsonError>>()?,
        ),
    })
}

/// JSON text read back from the store as a value (integers that fit i64
/// stay integers; others become floats).
pub fn from_json(text: &str) -> Result<Value, JsonError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| JsonError::Stored(e.to_string()))?;
    Ok(from_json_value(v))
}

/// A JSON value as a guest value (integers that fit i64 stay integers;
/// others become floats).
pub fn from_json_value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::None,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Array(items) => {
            Value::List(items.into_iter().map(from_json_value).collect())
        }
        serde_json::Value::Object(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k, from_json_value(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_json_carries_bytes_as_numbers_and_refuses_nan() {
        let v = Value::Map(vec![("b".into(), Value::Bytes(vec![0, 255]))]);
        assert_eq!(
            to_wire_json(&v).unwrap(),
            serde_json::json!({"b": [0, 255]})
        );
        assert!(to_json_value(&v).is_err());
        assert_eq!(
            to_wire_json(&Value::List(vec![Value::Float(f64::NAN)])),
            Err(JsonError::NotJson("NaN or an infinite float"))
        );
    }

    #[test]
    fn values_round_trip_through_json() {
        let v = Value::Map(vec![
            ("n".into(), Value::Int(-3)),
            ("x".into(), Value::Float(1.5)),
            ("s".into(), Value::Str("hé \"q\"".into())),
            (
                "l".into(),
                Value::List(vec![Value::None, Value::Bool(true)]),
            ),
        ]);
        assert_eq!(from_json(&to_json(&v).unwrap()).unwrap(), v);
        assert_eq!(to_json(&Value::Int(5)).unwrap(), "5");
        assert_eq!(
            from_json("18446744073709551615").unwrap(),
            Value::Float(1.8446744073709552e19)
        );
    }

    #[test]
    fn what_json_cannot_carry_is_refused() {
        assert_eq!(
            to_json(&Value::Bytes(vec![1])),
            Err(JsonError::NotJson("a byte string"))
        );
        for f in [f64::NAN, f64::INFINITY] {
            assert!(to_json(&Value::List(vec![Value::Float(f)])).is_err());
        }
        assert!(matches!(from_json("{nope"), Err(JsonError::Stored(_))));
    }
}
