//! Stream metering against a budget reservation. A budgeted request reserves its output
//! maximum and is sent with it, so a provider that honours `max_tokens` never passes it.
//! One that does not (a self-hosted server that ignores the field, a compatible API that
//! reads another one) is caught as the stream passes: every upstream event whose text
//! field is non-empty carries at least one token, so the count of such fields is a lower
//! bound of the tokens produced. Once it exceeds the tokens reserved, the reservation is
//! spent: the relay sends nothing more of the answer and ends the stream with a
//! `budget_exceeded` error event.
//!
//! Counting reads the event's bytes (no JSON tree): a field name followed by `":"` cannot
//! occur inside a JSON string, whose quotes are escaped, so text the model writes cannot
//! forge a count.

use kt_policy::stream::StreamFormat;

/// The output tokens a stream may produce, and those seen so far.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    /// Tokens the reservation covers; `None`: not metered.
    limit: Option<u64>,
    seen: u64,
    fields: &'static [&'static str],
}

/// The text fields of each upstream stream format that carry generated tokens (fields
/// that repeat text already streamed, such as a Responses `.done` event's `text`, are
/// not among them).
fn fields(upstream: StreamFormat) -> &'static [&'static str] {
    match upstream {
        StreamFormat::OpenAiChat => &["content", "refusal", "reasoning_content", "reasoning", "arguments"],
        StreamFormat::Anthropic => &["text", "thinking", "partial_json"],
        StreamFormat::Responses => &["delta"],
    }
}

/// Why a metered stream ends early.
pub const SPENT: &str = "the answer reached the output tokens this request's budget reservation covers (the provider did not hold to the output maximum sent); the stream ends here";

impl Meter {
    /// A meter for a stream in `upstream`'s format, allowed `limit` output tokens.
    pub fn new(limit: Option<u64>, upstream: StreamFormat) -> Meter {
        Meter {
            limit,
            seen: 0,
            fields: fields(upstream),
        }
    }

    /// Not metered.
    #[cfg(test)]
    pub fn off() -> Meter {
        Meter::new(None, StreamFormat::OpenAiChat)
    }

    /// Counts the text of one upstream event; whether the reservation is now spent (the
    /// event goes beyond it and must not be sent).
    pub fn spent_by(&mut self, data: &str) -> bool {
        let Some(limit) = self.limit else { return false };
        self.seen = self.seen.saturating_add(text_fields(data, self.fields));
        self.seen > limit
    }

    /// The index of the first of `events` that goes beyond the reservation, if any.
    pub fn first_beyond<'e>(&mut self, events: impl IntoIterator<Item = &'e str>) -> Option<usize> {
        self.limit?;
        events.into_iter().position(|data| self.spent_by(data))
    }
}

/// The non-empty string values of `fields` in one event's JSON text.
fn text_fields(data: &str, fields: &[&str]) -> u64 {
    let mut n = 0;
    for (at, _) in data.match_indices("\":") {
        let before = &data[..at];
        let Some(open) = before.rfind('"') else { continue };
        if !fields.contains(&&before[open + 1..]) {
            continue;
        }
        let value = data[at + 2..].trim_start_matches([' ', '\t', '\r', '\n']);
        let mut chars = value.chars();
        if chars.next() == Some('"') && chars.next().is_some_and(|c| c != '"') {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str) -> String {
        serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]}).to_string()
    }

    #[test]
    fn each_non_empty_text_field_counts_one_token() {
        let f = fields(StreamFormat::OpenAiChat);
        assert_eq!(text_fields(&chat("hello"), f), 1);
        assert_eq!(text_fields(&chat(""), f), 0);
        assert_eq!(text_fields(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#, f), 0);
        assert_eq!(
            text_fields(
                r#"{"choices":[{"delta":{"content": "a"}},{"delta":{"content":"b"}}]}"#,
                f
            ),
            2
        );
        assert_eq!(text_fields(r#"{"choices":[{"delta":{"content":null}}]}"#, f), 0);
        let call = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#;
        assert_eq!(text_fields(call, f), 1);
        let a = fields(StreamFormat::Anthropic);
        let delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        assert_eq!(text_fields(delta, a), 1);
        let start = r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        assert_eq!(text_fields(start, a), 0);
        let r = fields(StreamFormat::Responses);
        assert_eq!(
            text_fields(r#"{"type":"response.output_text.delta","delta":"Hi"}"#, r),
            1
        );
        assert_eq!(
            text_fields(r#"{"type":"response.output_text.done","text":"Hi there"}"#, r),
            0
        );
    }

    #[test]
    fn text_the_model_writes_cannot_forge_a_count() {
        let f = fields(StreamFormat::OpenAiChat);
        let forged = chat(r#"x","content":"y","content":"z"#);
        assert_eq!(text_fields(&forged, f), 1);
        let nested = chat("\"content\": \"\\\"content\\\":\\\"");
        assert_eq!(text_fields(&nested, f), 1);
    }

    #[test]
    fn a_meter_trips_at_the_first_event_beyond_its_limit() {
        let mut m = Meter::new(Some(2), StreamFormat::OpenAiChat);
        let events = [chat(""), chat("a"), chat("b"), chat(""), chat("c"), chat("d")];
        assert_eq!(m.first_beyond(events.iter().map(String::as_str)), Some(4));
        let mut off = Meter::off();
        assert_eq!(off.first_beyond(events.iter().map(String::as_str)), None);
        let mut later = Meter::new(Some(3), StreamFormat::OpenAiChat);
        assert_eq!(later.first_beyond(events[..3].iter().map(String::as_str)), None);
        assert_eq!(later.first_beyond(events[3..].iter().map(String::as_str)), Some(2));
    }
}
