//! JSON parsing that refuses duplicate member names.
//!
//! `serde_json` keeps the last of two equal keys, so `{"tenant_id":"a","tenant_id":"b"}` would
//! mean "b" here and maybe "a" to another parser. RFC 7515 §5.2 lets a verifier reject such
//! input and RFC 8725 recommends it: this parser rejects duplicates at every depth.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Marker text used to tell a duplicate from other syntax errors.
const DUPLICATE: &str = "duplicate member name";

/// Why strict parsing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrictError {
    /// Not JSON, or not an object at the top.
    Invalid,
    /// A member name appears twice in one object.
    Duplicate,
}

/// Parses `bytes` as one JSON object, rejecting duplicate names anywhere inside.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match StrictValue::deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        Ok(StrictValue(Value::Object(m))) => Ok(m),
        Ok(_) => Err(StrictError::Invalid),
        Err(e) if e.to_string().contains(DUPLICATE) => Err(StrictError::Duplicate),
        Err(_) => Err(StrictError::Invalid),
    }
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            // The map itself tells a repeated name: no second set of keys to hash and copy.
            if out.insert(key, v).is_some() {
                return Err(de::Error::custom(DUPLICATE));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: [(&str, Result<(), StrictError>); 9] = [
            (r#"{"a":1,"b":"x"}"#, Ok(())),
            (r#"{"a":{"b":[1,{"c":true}]}}"#, Ok(())),
            (r#"{"a":1,"a":1}"#, Err(StrictError::Duplicate)),
            (r#"{"a":1,"\u0061":2}"#, Err(StrictError::Duplicate)),
            (r#"{"x":{"a":1,"a":2}}"#, Err(StrictError::Duplicate)),
            (r#"{"x":[{"a":1,"a":2}]}"#, Err(StrictError::Duplicate)),
            (r#"[1,2]"#, Err(StrictError::Invalid)),
            (r#"{"a":1} trailing"#, Err(StrictError::Invalid)),
            (r#"{"a":"#, Err(StrictError::Invalid)),
        ];
        for (json, want) in cases {
            assert_eq!(parse_object(json.as_bytes()).map(|_| ()), want, "{json}");
        }
    }
}
