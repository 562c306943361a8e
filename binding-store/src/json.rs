//! JSON values read with the first repeated member name noted, at any depth.
//!
//! `serde_json` keeps the last of two equal member names, so a record holding
//! `"tenant_id": "initech", ..., "tenant_id": "globex"` would route globex to initech's
//! instance while whoever reads or reviews the file sees initech. Records are read as
//! [`Checked`] values, and one that repeats a name is refused as a whole (tokens and
//! `tenant import` refuse such JSON too). Noting instead of failing lets a bindings file
//! refuse that one record while the others load.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// A JSON value, and the member names its objects (at any depth) repeat, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Checked {
    pub(crate) value: Value,
    /// Every repeat noted (a record may repeat `plan` and then `tenant_id`: the tenant it
    /// names is then in doubt too, whatever came first).
    pub(crate) repeated: Vec<String>,
}

impl Checked {
    fn plain(value: Value) -> Self {
        Self {
            value,
            repeated: Vec::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

impl Serialize for Checked {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Checked, E> {
        Ok(Checked::plain(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Checked, E> {
        Ok(Checked::plain(Value::Number(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Checked, E> {
        Ok(Checked::plain(Value::Number(v.into())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Checked, E> {
        // JSON has no NaN or infinity, so every number read here has a `Number`.
        Number::from_f64(v)
            .map(|n| Checked::plain(Value::Number(n)))
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Checked, E> {
        Ok(Checked::plain(Value::String(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Checked, E> {
        Ok(Checked::plain(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked::plain(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked::plain(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        Checked::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let mut items = Vec::new();
        let mut repeated = Vec::new();
        while let Some(item) = seq.next_element::<Checked>()? {
            repeated.extend(item.repeated);
            items.push(item.value);
        }
        Ok(Checked {
            value: Value::Array(items),
            repeated,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut members = Map::new();
        let mut repeated = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let item = map.next_value::<Checked>()?;
            repeated.extend(item.repeated);
            if members.contains_key(&name) {
                repeated.push(name);
            } else {
                members.insert(name, item.value);
            }
        }
        Ok(Checked {
            value: Value::Object(members),
            repeated,
        })
    }
}

/// Whether JSON text is an object: its first byte past blanks is `{`. serde's derived readers
/// take a JSON array for a struct too, its elements as the fields in order: `["nexus-edge.
/// bindings/v1", null, null, [...]]` loaded as a bindings document, and a record stored as an
/// array was served by replicas that `write.lua` and the admin CLI read as no record at all.
pub(crate) fn is_object_text(bytes: &[u8]) -> bool {
    first_byte(bytes) == Some(b'{')
}

/// Whether JSON text is an array: what serde's derived readers would take for a struct (see
/// [`is_object_text`]). Any other text that is no object they refuse themselves, saying where.
pub(crate) fn is_array_text(bytes: &[u8]) -> bool {
    first_byte(bytes) == Some(b'[')
}

/// The first byte of JSON text past its blanks.
fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes
        .iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// `bytes` without a leading UTF-8 byte order mark, which some editors write and which
/// RFC 8259 §8.1 lets a reader ignore.
pub(crate) fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// A member name as a message quotes it: cut short, as a name can be megabytes long.
pub(crate) fn shown_name(name: &str) -> String {
    const SHOWN: usize = 64;
    match name.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}... ({} bytes)", &name[..end], name.len()),
        None => format!("{name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Checked {
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn the_first_repeated_name_is_noted_at_any_depth() {
        let flat = read(r#"{"tenant_id":"initech","x":1,"tenant_id":"globex"}"#);
        assert_eq!(flat.repeated, ["tenant_id"]);
        // The first value is kept; the record is refused anyway.
        assert_eq!(flat.value["tenant_id"], "initech");
        let two = read(r#"{"tenant_id":"initech","plan":"a","plan":"a","tenant_id":"globex"}"#);
        assert_eq!(two.repeated, ["plan", "tenant_id"]);
        let deep = read(r#"[{"a":{"b":[{"c":1,"c":2}]}},{"d":1,"d":1}]"#);
        assert_eq!(deep.repeated, ["c", "d"]);
        let clean = read(r#"{"a":[1,-2,3.5,"s",null,true,{"a":1}],"b":{"a":2}}"#);
        assert!(clean.repeated.is_empty());
        assert_eq!(
            clean.value,
            serde_json::json!({"a":[1,-2,3.5,"s",null,true,{"a":1}],"b":{"a":2}})
        );
        // Names compare after unescaping: `\u0061` is `a`.
        assert_eq!(read(r#"{"a":1,"\u0061":2}"#).repeated, ["a"]);
    }

    #[test]
    fn a_bom_is_dropped_and_long_names_are_cut() {
        assert_eq!(without_bom(b"\xEF\xBB\xBF{}"), b"{}");
        assert_eq!(without_bom(b"{}"), b"{}");
        assert_eq!(shown_name("tenant_id"), "\"tenant_id\"");
        let long = "x".repeat(100_000);
        let shown = shown_name(&long);
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("(100000 bytes)"), "{shown}");
    }
}
