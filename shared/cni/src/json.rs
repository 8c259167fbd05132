//! JSON helpers: Go-compatible output and case-insensitive input keys.
//!
//! Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029 and the reference prints
//! results and errors with 4-space indentation; [`to_go_pretty`] reproduces those bytes.
//! Go also matches object keys to struct fields case-insensitively (containerd sends
//! `HostPort`); [`canonicalize_keys`] rewrites any casing of a known field name to that name
//! so that ordinary serde derives can be used afterwards.

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::{Map, Value};
use std::io;

/// A pretty formatter with Go's indentation (4 spaces) and Go's HTML-safe escaping.
struct GoFormatter<'a> {
    inner: PrettyFormatter<'a>,
}

fn write_escaped<W: ?Sized + io::Write>(writer: &mut W, fragment: &str) -> io::Result<()> {
    let mut start = 0;
    for (i, c) in fragment.char_indices() {
        let esc: Option<&str> = match c {
            '<' => Some("\\u003c"),
            '>' => Some("\\u003e"),
            '&' => Some("\\u0026"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            _ => None,
        };
        if let Some(esc) = esc {
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
    }
    writer.write_all(&fragment.as_bytes()[start..])
}

impl Formatter for GoFormatter<'_> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_escaped(writer, fragment)
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_object_value(w)
    }
}

/// Serializes like Go's `json.MarshalIndent(v, "", "    ")`: 4-space indent, HTML-safe
/// escaping, no trailing newline.
pub fn to_go_pretty<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(256);
    let fmt = GoFormatter {
        inner: PrettyFormatter::with_indent(b"    "),
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing our own plain data types into a Vec cannot fail; fall back to an empty
    // object rather than panicking if it ever did.
    if value.serialize(&mut ser).is_err() {
        return "{}".to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| "{}".to_string())
}

/// Rewrites, recursively, every object key that equals one of `known` ASCII-case-insensitively
/// into that exact spelling. When several keys of one object fold to the same name, the last
/// one in document order wins, as in Go. Unknown keys are left alone.
pub fn canonicalize_keys(value: &mut Value, known: &[&str]) {
    match value {
        Value::Object(map) => {
            let needs_work = map.keys().any(|k| {
                known
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(k) && *n != k.as_str())
            }) || map.values().any(|v| v.is_object() || v.is_array());
            if !needs_work {
                return;
            }
            let old = std::mem::take(map);
            let mut new = Map::with_capacity(old.len());
            for (k, mut v) in old {
                canonicalize_keys(&mut v, known);
                let key = known
                    .iter()
                    .find(|n| n.eq_ignore_ascii_case(&k))
                    .map(|n| n.to_string())
                    .unwrap_or(k);
                // Last occurrence wins and takes the later position.
                new.shift_remove(&key);
                new.insert(key, v);
            }
            *map = new;
        }
        Value::Array(items) => {
            for v in items {
                canonicalize_keys(v, known);
            }
        }
        _ => {}
    }
}

/// Deserializes `value` into `T`, naming the offending field path in the error
/// (`ipam.ranges[0][0].subnet: invalid IP network`). Structs are decoded from JSON objects
/// only ([`Strict`]), as Go does.
pub fn from_value<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(Strict(value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// A deserializer over a [`Value`] that is `serde_json`'s own, except that a struct can only
/// be decoded from an object: serde's derives also accept an array (fields in declaration
/// order), so `"ipam": ["host-local"]` or `"runtimeConfig": []` would be taken for objects.
/// Go's `encoding/json` (the reference) refuses them, and so do we: a wrong type is an error
/// naming the field.
struct Strict<'a>(&'a Value);

struct StrictSeq<'a>(std::slice::Iter<'a, Value>);

struct StrictMap<'a> {
    iter: serde_json::map::Iter<'a>,
    value: Option<&'a Value>,
}

impl<'de> serde::de::SeqAccess<'de> for StrictSeq<'de> {
    type Error = serde_json::Error;
    fn next_element_seed<S: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, serde_json::Error> {
        match self.0.next() {
            Some(v) => seed.deserialize(Strict(v)).map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

impl<'de> serde::de::MapAccess<'de> for StrictMap<'de> {
    type Error = serde_json::Error;
    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, serde_json::Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(k))
                    .map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(Strict(v)),
            None => Err(serde::de::Error::custom("value is missing")),
        }
    }
}

macro_rules! forward_scalars {
    ($($name:ident)*) => {
        $(
            fn $name<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
                self.0.$name(visitor)
            }
        )*
    };
}

impl<'de> serde::Deserializer<'de> for Strict<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(StrictSeq(items.iter())),
            Value::Object(map) => visitor.visit_map(StrictMap {
                iter: map.iter(),
                value: None,
            }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            Value::Array(_) => Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Seq,
                &visitor,
            )),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_seq<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self.0 {
            Value::Array(_) => self.deserialize_any(visitor),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_tuple<V: serde::de::Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        visitor.visit_unit()
    }

    forward_scalars! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    fn deserialize_unit_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_escaping_and_indent() {
        let s = to_go_pretty(&json!({"a": "<x> & \u{2028}", "b": [], "c": {}}));
        assert_eq!(
            s,
            "{\n    \"a\": \"\\u003cx\\u003e \\u0026 \\u2028\",\n    \"b\": [],\n    \"c\": {}\n}"
        );
    }

    #[test]
    fn keys_are_matched_case_insensitively_last_wins() {
        let mut v: Value = serde_json::from_str(
            r#"{"HostPort": 1, "hostport": 2, "Nested": {"CONTAINERPORT": 3}, "list": [{"HOSTPORT": 4}], "Other": 5}"#,
        )
        .unwrap();
        canonicalize_keys(&mut v, &["hostPort", "containerPort", "nested"]);
        assert_eq!(v["hostPort"], 2);
        assert_eq!(v["nested"]["containerPort"], 3);
        assert_eq!(v["list"][0]["hostPort"], 4);
        assert_eq!(v["Other"], 5);
        assert!(v.get("HostPort").is_none());
    }

    #[test]
    fn from_value_names_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            mtu: u32,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            inner: Vec<Inner>,
        }
        let e = from_value::<Outer>(&json!({"inner": [{"mtu": "x"}]})).unwrap_err();
        assert!(e.starts_with("inner[0].mtu: invalid type"), "{e}");
        // A struct is an object, never an array (serde's derives would take one).
        let e = from_value::<Outer>(&json!({"inner": [[5]]})).unwrap_err();
        assert!(e.starts_with("inner[0]: invalid type: sequence"), "{e}");
        let e = from_value::<Outer>(&json!([[]])).unwrap_err();
        assert!(e.starts_with("invalid type: sequence"), "{e}");
        let ok: Outer =
            from_value(&json!({"inner": [{"mtu": 1}], "other": [1, {"a": []}]})).unwrap();
        assert_eq!(ok.inner.len(), 1);
    }
}
