//! Request bodies parsed once and strictly: a JSON object whose keys repeat anywhere in the
//! document is refused. Parsers disagree on which copy of a repeated key wins (serde_json
//! and most Python parsers keep the last, some providers the first), so a body with one
//! would let the policies check one value while the provider reads another.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body could not be read as a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// An object repeats a key (the key, truncated for the message).
    #[error("the request body repeats the key \"{0}\" in one object; send each key once")]
    DuplicateKey(String),
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
}

impl BodyError {
    /// The reason code a client sees.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::DuplicateKey(_) => "duplicate_key",
            BodyError::Syntax(_) => "invalid_json",
        }
    }
}

/// Marks the custom error a repeated key raises inside serde_json, so it can be told apart
/// from syntax errors without a second pass.
const DUPLICATE: &str = "\u{1}duplicate key\u{1}";
/// Longest key quoted back in an error message.
const KEY_QUOTE: usize = 64;

/// Parses `bytes` as one JSON value, refusing any object that repeats a key.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, BodyError> {
    let text = utf8(bytes).map_err(BodyError::Syntax)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

/// `bytes` as text, validated once as a whole: a JSON document is UTF-8, and parsing it from
/// a `str` spares the parser a validation of every string on its own.
pub fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("the body is not UTF-8 (byte {})", e.valid_up_to()))
}

/// Objects with at most this many keys are searched in order: comparing a few short keys
/// costs less than hashing the one looked for (request messages have two or three).
const SCAN_KEYS: usize = 8;

/// `v[key]` when `v` is an object that has it.
pub fn member<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let Value::Object(o) = v else { return None };
    if o.len() <= SCAN_KEYS {
        o.iter().find(|(k, _)| k.as_str() == key).map(|(_, x)| x)
    } else {
        o.get(key)
    }
}

fn classify(e: serde_json::Error) -> BodyError {
    let text = e.to_string();
    match text.strip_prefix(DUPLICATE) {
        Some(rest) => {
            // serde_json appends " at line L column C" to custom errors.
            let key = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
            BodyError::DuplicateKey(key.to_owned())
        }
        None => BodyError::Syntax(text),
    }
}

/// Builds a `serde_json::Value` as serde_json's own impl does, except that a repeated
/// object key is an error.
#[derive(Clone, Copy)]
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
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
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match out.entry(key) {
                serde_json::map::Entry::Occupied(o) => {
                    let key: String = o.key().chars().take(KEY_QUOTE).collect();
                    return Err(de::Error::custom(format_args!("{DUPLICATE}{key}")));
                }
                serde_json::map::Entry::Vacant(v) => {
                    v.insert(map.next_value_seed(self)?);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_finds_keys_in_small_and_large_objects() {
        let small = serde_json::json!({"role": "user", "content": "hi"});
        assert_eq!(member(&small, "content"), Some(&Value::from("hi")));
        assert_eq!(member(&small, "name"), None);
        let large: Map<String, Value> = (0..40).map(|i| (format!("k{i}"), Value::from(i))).collect();
        let large = Value::Object(large);
        assert_eq!(member(&large, "k0"), Some(&Value::from(0)));
        assert_eq!(member(&large, "k39"), Some(&Value::from(39)));
        assert_eq!(member(&large, "k40"), None);
        assert_eq!(member(&Value::from("content"), "content"), None);
        assert_eq!(member(&Value::Array(vec![small.clone()]), "role"), None);
    }

    #[test]
    fn a_repeated_key_anywhere_is_refused() {
        for body in [
            r#"{"model":"m","model":"n"}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"messages":[]}"#,
            r#"{"messages":[{"role":"user","content":"SSN 078-05-1120","content":"hi"}]}"#,
            r#"{"a":{"b":{"c":[{"d":1,"d":2}]}}}"#,
            r#"{"k\u0065y":1,"key":2}"#,
        ] {
            let e = parse_strict(body.as_bytes()).expect_err(body);
            assert_eq!(e.code(), "duplicate_key", "{body}: {e}");
        }
        let e = parse_strict(br#"{"model":"m","model":"n"}"#).expect_err("dup");
        assert_eq!(e, BodyError::DuplicateKey("model".into()));
        assert!(e.to_string().contains("\"model\""), "{e}");
    }

    #[test]
    fn strict_parsing_gives_what_serde_json_gives_otherwise() {
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi \u00e9 \ud83d\ude00"}],"temperature":0.5,"n":1,"seed":-3,"stop":null,"stream":false,"big":18446744073709551615}"#,
            r#"[1,"two",{"three":[]}]"#,
            r#""just a string""#,
            r#"{"same":{"k":1},"other":{"k":2}}"#,
        ] {
            let strict = parse_strict(body.as_bytes()).expect(body);
            let loose: Value = serde_json::from_str(body).expect(body);
            assert_eq!(strict, loose, "{body}");
            assert_eq!(serde_json::to_string(&strict).ok(), serde_json::to_string(&loose).ok());
        }
    }

    #[test]
    fn bad_json_is_a_syntax_error_and_deep_nesting_is_bounded() {
        for body in [
            "",
            "{",
            r#"{"a":1} trailing"#,
            r#"{"a":}"#,
            "{\"a\":\"\u{0}\"}",
            r#"{"a":"\ud800"}"#,
        ] {
            assert_eq!(
                parse_strict(body.as_bytes()).map_err(|e| e.code()),
                Err("invalid_json"),
                "{body:?}"
            );
        }
        for body in [&b"{\"a\":\"\xff\"}"[..], b"{\"a\":\"\xc3\"}", b"\xef\xbb\xbf{}"] {
            let e = parse_strict(body).expect_err("not UTF-8 or a byte-order mark");
            assert_eq!(e.code(), "invalid_json", "{body:?}");
        }
        let e = parse_strict(b"{\"a\":\"\xff\"}").expect_err("not UTF-8");
        assert!(e.to_string().contains("not UTF-8 (byte 6)"), "{e}");
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_strict(deep.as_bytes()).map_err(|e| e.code()), Err("invalid_json"));
        let long_key = "k".repeat(10_000);
        let e = parse_strict(format!(r#"{{"{long_key}":1,"{long_key}":2}}"#).as_bytes()).expect_err("dup");
        assert!(e.to_string().len() < 200, "the quoted key is bounded: {e}");
    }
}
