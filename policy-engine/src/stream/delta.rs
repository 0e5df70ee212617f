//! Where the generated text sits in streamed events of each wire format, so the gateway
//! can hand text deltas to an `OutputGuard` and put the guarded text back.
//!
//! - OpenAI chat completions: `choices[i].delta.content` (stream key: choice index).
//! - Anthropic Messages: `content_block_delta` events, `delta.text`, `delta.thinking` or a
//!   tool call's `delta.partial_json` (key: block index).
//! - OpenAI Responses: `response.output_text.delta` events, `delta` (key: output index).

use serde_json::Value;

/// The text fields of Anthropic `content_block_delta` deltas: `text_delta`,
/// `thinking_delta` and a tool call's `input_json_delta` (each block is one stream).
pub const ANTHROPIC_FIELDS: &[&str] = &["text", "thinking", "partial_json"];

/// The delta type whose text is carried in `field`.
pub fn anthropic_delta_type(field: &str) -> &'static str {
    match field {
        "thinking" => "thinking_delta",
        "partial_json" => "input_json_delta",
        _ => "text_delta",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    OpenAiChat,
    Anthropic,
    Responses,
}

/// Text deltas carried by one event's JSON, with the key of the stream each belongs to.
pub fn text_deltas(format: StreamFormat, event: &Value) -> Vec<(u64, &str)> {
    match format {
        StreamFormat::OpenAiChat => event
            .get("choices")
            .and_then(Value::as_array)
            .map(|choices| {
                choices
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        let key = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                        c.get("delta")?.get("content")?.as_str().map(|t| (key, t))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        StreamFormat::Anthropic => {
            if event.get("type").and_then(Value::as_str) != Some("content_block_delta") {
                return Vec::new();
            }
            let key = event.get("index").and_then(Value::as_u64).unwrap_or(0);
            let delta = event.get("delta");
            ANTHROPIC_FIELDS
                .iter()
                .find_map(|f| delta.and_then(|d| d.get(*f)).and_then(Value::as_str))
                .map(|t| vec![(key, t)])
                .unwrap_or_default()
        }
        StreamFormat::Responses => {
            if event.get("type").and_then(Value::as_str) != Some("response.output_text.delta") {
                return Vec::new();
            }
            let key = event.get("output_index").and_then(Value::as_u64).unwrap_or(0);
            event
                .get("delta")
                .and_then(Value::as_str)
                .map(|t| vec![(key, t)])
                .unwrap_or_default()
        }
    }
}

/// Replaces the text delta of stream `key` in `event`; false when the event has none.
pub fn set_text_delta(format: StreamFormat, event: &mut Value, key: u64, text: String) -> bool {
    let slot = match format {
        StreamFormat::OpenAiChat => event
            .get_mut("choices")
            .and_then(Value::as_array_mut)
            .and_then(|choices| {
                choices
                    .iter_mut()
                    .enumerate()
                    .find(|(i, c)| c.get("index").and_then(Value::as_u64).unwrap_or(*i as u64) == key)
                    .and_then(|(_, c)| c.get_mut("delta"))
                    .and_then(|d| d.get_mut("content"))
            }),
        StreamFormat::Anthropic => event.get_mut("delta").and_then(|d| {
            let field = ANTHROPIC_FIELDS.iter().find(|f| d.get(**f).is_some())?;
            d.get_mut(*field)
        }),
        StreamFormat::Responses => event.get_mut("delta"),
    };
    match slot {
        Some(v @ Value::String(_)) => {
            *v = Value::String(text);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_rewrites_each_format() {
        let mut oa = json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]});
        assert_eq!(text_deltas(StreamFormat::OpenAiChat, &oa), vec![(0, "Hel")]);
        assert!(set_text_delta(StreamFormat::OpenAiChat, &mut oa, 0, "Hi".into()));
        assert_eq!(oa["choices"][0]["delta"]["content"], "Hi");

        let mut an = json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "yo"}});
        assert_eq!(text_deltas(StreamFormat::Anthropic, &an), vec![(1, "yo")]);
        assert!(set_text_delta(StreamFormat::Anthropic, &mut an, 1, "[EMAIL]".into()));
        assert_eq!(an["delta"]["text"], "[EMAIL]");
        assert!(text_deltas(StreamFormat::Anthropic, &json!({"type": "message_stop"})).is_empty());
        let mut th =
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}});
        assert_eq!(text_deltas(StreamFormat::Anthropic, &th), vec![(0, "hm")]);
        assert!(set_text_delta(StreamFormat::Anthropic, &mut th, 0, "HM".into()));
        assert_eq!(th["delta"]["thinking"], "HM");
        let tool = json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"q\": \"a@b"}});
        assert_eq!(text_deltas(StreamFormat::Anthropic, &tool), vec![(2, "{\"q\": \"a@b")]);

        let mut rs = json!({"type": "response.output_text.delta", "output_index": 0, "delta": "ok"});
        assert_eq!(text_deltas(StreamFormat::Responses, &rs), vec![(0, "ok")]);
        assert!(set_text_delta(StreamFormat::Responses, &mut rs, 0, "OK".into()));
        assert!(!set_text_delta(
            StreamFormat::OpenAiChat,
            &mut json!({"choices": []}),
            0,
            "x".into()
        ));
    }
}
