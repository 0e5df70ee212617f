//! Token usage as providers report it: OpenAI's `prompt_tokens`/`completion_tokens`, or
//! Anthropic's and the Responses API's `input_tokens`/`output_tokens`, read straight from
//! an answer's bytes (no tree) or from a tree.
//!
//! Reading is lenient: a count that is not a non-negative integer counts as absent, other
//! fields are skipped, and a `usage` that is not an object is no usage. Odd usage never
//! makes an answer unreadable.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// An answer's token counts. There is usage only when a prompt (input) count is given; a
/// missing completion (output) count is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    fn from_counts(c: Counts) -> Option<Usage> {
        Some(Usage {
            prompt: c.prompt.or(c.input)?,
            completion: c.completion.or(c.output).unwrap_or(0),
        })
    }

    /// The usage of a `usage` object in a tree.
    pub fn from_value(usage: &Value) -> Option<Usage> {
        let get = |k: &str| usage.get(k).and_then(Value::as_u64);
        Usage::from_counts(Counts {
            prompt: get("prompt_tokens"),
            completion: get("completion_tokens"),
            input: get("input_tokens"),
            output: get("output_tokens"),
        })
    }
}

#[derive(Default)]
struct Counts {
    prompt: Option<u64>,
    completion: Option<u64>,
    input: Option<u64>,
    output: Option<u64>,
}

/// A `usage` field read from bytes: `Usage::from_value` of the same JSON, without the tree.
/// Use it as a `#[serde(default)]` field of a borrowed view.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AnswerUsage(pub Option<Usage>);

impl<'de> de::Deserialize<'de> for AnswerUsage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UsageVisitor)
    }
}

/// Takes any JSON value: an object is read for its counts, anything else is consumed.
struct UsageVisitor;

impl<'de> Visitor<'de> for UsageVisitor {
    type Value = AnswerUsage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnswerUsage, A::Error> {
        let mut c = Counts::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Prompt => &mut c.prompt,
                Key::Completion => &mut c.completion,
                Key::Input => &mut c.input,
                Key::Output => &mut c.output,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            // The last of duplicate keys wins, as in a tree.
            *slot = map.next_value::<Count>()?.0;
        }
        Ok(AnswerUsage(Usage::from_counts(c)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnswerUsage, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(AnswerUsage(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<AnswerUsage, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_none<E>(self) -> Result<AnswerUsage, E> {
        Ok(AnswerUsage(None))
    }
    fn visit_unit<E>(self) -> Result<AnswerUsage, E> {
        Ok(AnswerUsage(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<AnswerUsage, E> {
        Ok(AnswerUsage(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<AnswerUsage, E> {
        Ok(AnswerUsage(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<AnswerUsage, E> {
        Ok(AnswerUsage(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<AnswerUsage, E> {
        Ok(AnswerUsage(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<AnswerUsage, E> {
        Ok(AnswerUsage(None))
    }
}

/// The usage keys the gateway reads; the rest are skipped.
enum Key {
    Prompt,
    Completion,
    Input,
    Output,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, k: &str) -> Result<Key, E> {
                Ok(match k {
                    "prompt_tokens" => Key::Prompt,
                    "completion_tokens" => Key::Completion,
                    "input_tokens" => Key::Input,
                    "output_tokens" => Key::Output,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// A count: a non-negative integer, or absent for any other value (which is consumed).
struct Count(Option<u64>);

impl<'de> de::Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_none<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Count, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        d.deserialize_any(CountVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        usage: AnswerUsage,
    }

    #[test]
    fn bytes_and_trees_give_the_same_usage() {
        let cases = [
            r#"{"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
            r#"{"usage":{"input_tokens":3,"output_tokens":4,"cache_creation_input_tokens":0}}"#,
            r#"{"usage":{"prompt_tokens":5,"total_tokens":5}}"#,
            r#"{"usage":{"prompt_tokens":5,"completion_tokens":"7"}}"#,
            r#"{"usage":{"prompt_tokens":2.5,"input_tokens":9}}"#,
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":1}}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2,"completion_tokens_details":{"reasoning_tokens":3},"x":[1,{"a":[]}]}}"#,
            r#"{"usage":{"prompt_tokens":{"a":1},"input_tokens":[1],"completion_tokens":null}}"#,
            r#"{"usage":{"prompt_\u0074okens":4}}"#,
            r#"{"usage":{}}"#,
            r#"{"usage":null}"#,
            r#"{"usage":"n/a"}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":true}"#,
            r#"{"usage":18446744073709551615}"#,
            r#"{}"#,
        ];
        for text in cases {
            let tree: Value = serde_json::from_str(text).expect("json");
            let want = tree.get("usage").and_then(Usage::from_value);
            let got: Answer = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got.usage.0, want, "{text}");
        }
        let u = Usage::from_value(&serde_json::json!({"input_tokens": 3, "output_tokens": 4})).expect("usage");
        assert_eq!((u.prompt, u.completion, u.total()), (3, 4, 7));
        let u = Usage::from_value(&serde_json::json!({"prompt_tokens": 5})).expect("usage");
        assert_eq!(u.completion, 0);
        assert_eq!(Usage::from_value(&serde_json::json!({"completion_tokens": 5})), None);
    }

    #[test]
    fn broken_json_is_still_refused() {
        for text in [
            r#"{"usage":{"prompt_tokens":1,}}"#,
            r#"{"usage":{"prompt_tokens":}"#,
            r#"{"usage":"#,
        ] {
            assert!(serde_json::from_str::<Answer>(text).is_err(), "{text}");
        }
    }
}
