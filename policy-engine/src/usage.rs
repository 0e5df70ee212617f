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
///
/// `prompt` is every input token: Anthropic's cache reads and writes, which it reports
/// beside `input_tokens`, are added in. `cached` is the part of `prompt` read from the
/// provider's prompt cache (`prompt_tokens_details.cached_tokens`,
/// `input_tokens_details.cached_tokens`, `cache_read_input_tokens`) and `reasoning` the
/// part of `completion` spent reasoning (`completion_tokens_details.reasoning_tokens`,
/// `output_tokens_details.reasoning_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub reasoning: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    fn from_counts(c: Counts) -> Option<Usage> {
        let (read, written) = (c.cache_read.unwrap_or(0), c.cache_creation.unwrap_or(0));
        let prompt = c.prompt.or(c.input)?.saturating_add(read).saturating_add(written);
        let completion = c.completion.or(c.output).unwrap_or(0);
        let cached = c.prompt_cached.or(c.input_cached).unwrap_or(0).saturating_add(read);
        let reasoning = c.completion_reasoning.or(c.output_reasoning).unwrap_or(0);
        Some(Usage {
            prompt,
            completion,
            cached: cached.min(prompt),
            reasoning: reasoning.min(completion),
        })
    }

    /// The usage of a `usage` object in a tree.
    pub fn from_value(usage: &Value) -> Option<Usage> {
        let get = |k: &str| usage.get(k).and_then(Value::as_u64);
        let detail = |k: &str, field: &str| {
            usage
                .get(k)
                .filter(|d| d.is_object())
                .and_then(|d| d.get(field))
                .and_then(Value::as_u64)
        };
        Usage::from_counts(Counts {
            prompt: get("prompt_tokens"),
            completion: get("completion_tokens"),
            input: get("input_tokens"),
            output: get("output_tokens"),
            cache_read: get("cache_read_input_tokens"),
            cache_creation: get("cache_creation_input_tokens"),
            prompt_cached: detail("prompt_tokens_details", "cached_tokens"),
            input_cached: detail("input_tokens_details", "cached_tokens"),
            completion_reasoning: detail("completion_tokens_details", "reasoning_tokens"),
            output_reasoning: detail("output_tokens_details", "reasoning_tokens"),
        })
    }
}

#[derive(Default)]
struct Counts {
    prompt: Option<u64>,
    completion: Option<u64>,
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
    prompt_cached: Option<u64>,
    input_cached: Option<u64>,
    completion_reasoning: Option<u64>,
    output_reasoning: Option<u64>,
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
                Key::CacheRead => &mut c.cache_read,
                Key::CacheCreation => &mut c.cache_creation,
                Key::Details(which) => {
                    let d = map.next_value::<Details>()?;
                    match which {
                        DetailsOf::Prompt => c.prompt_cached = d.cached,
                        DetailsOf::Input => c.input_cached = d.cached,
                        DetailsOf::Completion => c.completion_reasoning = d.reasoning,
                        DetailsOf::Output => c.output_reasoning = d.reasoning,
                    }
                    continue;
                }
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
    CacheRead,
    CacheCreation,
    Details(DetailsOf),
    Other,
}

/// Which `*_tokens_details` object.
#[derive(Clone, Copy)]
enum DetailsOf {
    Prompt,
    Input,
    Completion,
    Output,
}

/// The two counts read from a `*_tokens_details` object (the last of duplicate keys wins);
/// anything that is not an object has none.
#[derive(Default)]
struct Details {
    cached: Option<u64>,
    reasoning: Option<u64>,
}

impl<'de> de::Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DetailsVisitor;
        impl<'de> Visitor<'de> for DetailsVisitor {
            type Value = Details;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token details object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
                let mut d = Details::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "cached_tokens" => d.cached = map.next_value::<Count>()?.0,
                        "reasoning_tokens" => d.reasoning = map.next_value::<Count>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Details, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Details::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Details, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_none<E>(self) -> Result<Details, E> {
                Ok(Details::default())
            }
            fn visit_unit<E>(self) -> Result<Details, E> {
                Ok(Details::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Details, E> {
                Ok(Details::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Details, E> {
                Ok(Details::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Details, E> {
                Ok(Details::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Details, E> {
                Ok(Details::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Details, E> {
                Ok(Details::default())
            }
        }
        d.deserialize_any(DetailsVisitor)
    }
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
                    "cache_read_input_tokens" => Key::CacheRead,
                    "cache_creation_input_tokens" => Key::CacheCreation,
                    "prompt_tokens_details" => Key::Details(DetailsOf::Prompt),
                    "input_tokens_details" => Key::Details(DetailsOf::Input),
                    "completion_tokens_details" => Key::Details(DetailsOf::Completion),
                    "output_tokens_details" => Key::Details(DetailsOf::Output),
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
            r#"{"usage":{"prompt_tokens":100,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":60,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":20}}}"#,
            r#"{"usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":90,"cache_creation_input_tokens":7}}"#,
            r#"{"usage":{"input_tokens":100,"output_tokens":9,"input_tokens_details":{"cached_tokens":40},"output_tokens_details":{"reasoning_tokens":4}}}"#,
            r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":500},"completion_tokens_details":{"reasoning_tokens":9}}}"#,
            r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":[1],"input_tokens_details":{"cached_tokens":2},"completion_tokens_details":"x"}}"#,
            r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":3}}}"#,
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
        // OpenAI counts cached tokens inside prompt_tokens; Anthropic reports cache reads
        // and writes beside input_tokens; counts of a part never exceed the whole.
        let u = |v: Value| Usage::from_value(&v).expect("usage");
        let openai = u(serde_json::json!({"prompt_tokens": 100, "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 20}}));
        assert_eq!(
            (openai.prompt, openai.cached, openai.completion, openai.reasoning),
            (100, 60, 50, 20)
        );
        let anthropic = u(serde_json::json!({"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 90, "cache_creation_input_tokens": 7}));
        assert_eq!((anthropic.prompt, anthropic.cached, anthropic.total()), (107, 90, 112));
        let odd = u(
            serde_json::json!({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 500},
            "completion_tokens_details": {"reasoning_tokens": 9}}),
        );
        assert_eq!((odd.cached, odd.reasoning), (5, 0));
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
