//! Stream metering against a hard budget's reservation. A budgeted request reserves its
//! output maximum and is sent with it, so a provider that honours `max_tokens` never
//! passes it. One that does not (a self-hosted server that ignores the field, a
//! compatible API that reads another one) is caught as the stream passes: an upstream
//! event carrying generated text carries at least one token, so the count of such events
//! is a lower bound of the tokens produced. Once it exceeds the tokens reserved, the
//! reservation is spent: the relay sends nothing more of the answer and ends the stream
//! with a `budget_exceeded` error event.
//!
//! Counting reads the event's bytes (no JSON tree): an event counts when one of its
//! format's text fields holds a non-empty string. A field name followed by a colon cannot
//! occur inside a JSON string, whose quotes are escaped, so text the model writes cannot
//! forge a count, and an event counts once however many fields it carries, so a provider
//! repeating text in two fields is not cut early. Field names spelled with escapes are not
//! recognised: the count stays a lower bound.

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
        // `text`: content sent as an array of parts.
        StreamFormat::OpenAiChat => &[
            "content",
            "refusal",
            "reasoning_content",
            "reasoning",
            "arguments",
            "text",
        ],
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

    /// Counts one upstream event; whether the reservation is now spent (the event goes
    /// beyond it and must not be sent).
    pub fn spent_by(&mut self, data: &str) -> bool {
        let Some(limit) = self.limit else { return false };
        self.seen = self.seen.saturating_add(u64::from(carries_text(data, self.fields)));
        self.seen > limit
    }

    /// Whether a stream was ended by this meter.
    pub fn tripped(&self) -> bool {
        self.limit.is_some_and(|l| self.seen > l)
    }

    /// The tokens counted (before the event that went beyond).
    pub fn counted(&self) -> u64 {
        match self.limit {
            Some(l) => self.seen.min(l),
            None => self.seen,
        }
    }

    /// The index of the first of `events` that goes beyond the reservation, if any.
    pub fn first_beyond<'e>(&mut self, events: impl IntoIterator<Item = &'e str>) -> Option<usize> {
        self.limit?;
        events.into_iter().position(|data| self.spent_by(data))
    }
}

/// Whether one event's JSON text holds a non-empty string under one of `fields` (JSON
/// whitespace allowed around the colon).
fn carries_text(data: &str, fields: &[&str]) -> bool {
    const WS: [char; 4] = [' ', '\t', '\r', '\n'];
    data.match_indices(':').any(|(at, _)| {
        let before = data[..at].trim_end_matches(WS);
        let Some(name) = before.strip_suffix('"') else {
            return false;
        };
        // The key's opening quote: a field name holds no quote or backslash.
        let Some(open) = name.rfind(['"', '\\']) else {
            return false;
        };
        if name.as_bytes()[open] != b'"' || !fields.contains(&&name[open + 1..]) {
            return false;
        }
        let mut value = data[at + 1..].trim_start_matches(WS).chars();
        value.next() == Some('"') && value.next().is_some_and(|c| c != '"')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str) -> String {
        serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]}).to_string()
    }

    #[test]
    fn an_event_with_generated_text_counts_once() {
        let f = fields(StreamFormat::OpenAiChat);
        assert!(carries_text(&chat("hello"), f));
        assert!(!carries_text(&chat(""), f));
        assert!(!carries_text(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#, f));
        assert!(!carries_text(r#"{"choices":[{"delta":{"content":null}}]}"#, f));
        // Whitespace around the colon, as pretty printers write it.
        assert!(carries_text("{\"choices\":[{\"delta\":{\"content\" :\n \"a\"}}]}", f));
        // Content as an array of parts.
        assert!(carries_text(
            r#"{"choices":[{"delta":{"content":[{"type":"text","text":"a"}]}}]}"#,
            f
        ));
        let call = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#;
        assert!(carries_text(call, f));
        let a = fields(StreamFormat::Anthropic);
        let delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        assert!(carries_text(delta, a));
        let start = r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        assert!(!carries_text(start, a));
        let r = fields(StreamFormat::Responses);
        assert!(carries_text(r#"{"type":"response.output_text.delta","delta":"Hi"}"#, r));
        assert!(!carries_text(
            r#"{"type":"response.output_text.done","text":"Hi there"}"#,
            r
        ));
        // Two fields repeating one text count once.
        let mut m = Meter::new(Some(10), StreamFormat::OpenAiChat);
        m.spent_by(r#"{"choices":[{"delta":{"reasoning":"x","reasoning_content":"x"}}]}"#);
        assert_eq!(m.counted(), 1);
    }

    #[test]
    fn text_the_model_writes_cannot_forge_a_count() {
        let f = fields(StreamFormat::Anthropic);
        let forged = serde_json::json!({"delta": {"type": "x", "note": "\"text\":\"y\", \"text\" : \"z"}}).to_string();
        assert!(!carries_text(&forged, f), "{forged}");
        let escaped_key = serde_json::json!({"note": "a\\\"text\":\"y"}).to_string();
        assert!(!carries_text(&escaped_key, f), "{escaped_key}");
    }

    #[test]
    fn a_meter_trips_at_the_first_event_beyond_its_limit() {
        let mut m = Meter::new(Some(2), StreamFormat::OpenAiChat);
        let events = [chat(""), chat("a"), chat("b"), chat(""), chat("c"), chat("d")];
        assert_eq!(m.first_beyond(events.iter().map(String::as_str)), Some(4));
        assert!(m.tripped());
        assert_eq!(m.counted(), 2);
        let mut off = Meter::off();
        assert_eq!(off.first_beyond(events.iter().map(String::as_str)), None);
        let mut later = Meter::new(Some(3), StreamFormat::OpenAiChat);
        assert_eq!(later.first_beyond(events[..3].iter().map(String::as_str)), None);
        assert_eq!(later.first_beyond(events[3..].iter().map(String::as_str)), Some(2));
    }
}
