//! Where the generated text sits in streamed events of each wire format, so the gateway
//! can hand text deltas to an `OutputGuard` and put the guarded text back.
//!
//! - OpenAI chat completions: `choices[i].delta.content`, `.refusal`, `.reasoning_content`
//!   and `.reasoning`, each its own stream (key: [`chat_key`] of choice and field).
//! - Anthropic Messages: `content_block_delta` events, `delta.text`, `delta.thinking` or a
//!   tool call's `delta.partial_json` (key: block index).
//! - OpenAI Responses: the `delta` of output text, refusal, function-call argument and
//!   reasoning-summary delta events (key: [`responses_key`] of the event), and the events
//!   that close each of those streams with its whole text.

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

/// The text fields of OpenAI chat deltas; a stream's key says which (see [`chat_key`]).
pub const CHAT_FIELDS: &[&str] = &["content", "refusal", "reasoning_content", "reasoning"];

/// The stream key of `CHAT_FIELDS[field]` of choice `choice`.
pub fn chat_key(choice: u64, field: usize) -> u64 {
    choice.saturating_mul(CHAT_FIELDS.len() as u64) + field as u64
}

/// The choice and delta field of a chat stream key.
pub fn chat_key_parts(key: u64) -> (u64, &'static str) {
    let n = CHAT_FIELDS.len() as u64;
    (key / n, CHAT_FIELDS[(key % n) as usize])
}

/// Responses streams: (delta event, closing event, the closing event's whole-text field).
pub const RESPONSES_STREAMS: &[(&str, &str, &str)] = &[
    ("response.output_text.delta", "response.output_text.done", "text"),
    ("response.refusal.delta", "response.refusal.done", "refusal"),
    (
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "arguments",
    ),
    (
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "text",
    ),
];

/// The stream of a Responses text: output item, kind (index into `RESPONSES_STREAMS`) and
/// part (content or summary index, 0 for function calls), packed in one key.
pub fn responses_stream_key(output_index: u64, kind: usize, part: u64) -> u64 {
    (output_index.min(u64::MAX >> 16) << 16) | ((kind as u64) << 8) | part.min(255)
}

/// The stream key of a Responses delta or closing event, and whether it closes the stream.
pub fn responses_key(event: &Value) -> Option<(u64, bool)> {
    let kind_name = event.get("type")?.as_str()?;
    let (kind, closes) = RESPONSES_STREAMS.iter().enumerate().find_map(|(k, (delta, done, _))| {
        if *delta == kind_name {
            Some((k, false))
        } else if *done == kind_name {
            Some((k, true))
        } else {
            None
        }
    })?;
    let index = |name: &str| event.get(name).and_then(Value::as_u64).unwrap_or(0);
    let part = index(if kind == 3 { "summary_index" } else { "content_index" });
    Some((responses_stream_key(index("output_index"), kind, part), closes))
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
                    .flat_map(|(i, c)| {
                        let choice = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                        let delta = c.get("delta");
                        CHAT_FIELDS.iter().enumerate().filter_map(move |(f, name)| {
                            let text = delta?.get(*name)?.as_str()?;
                            Some((chat_key(choice, f), text))
                        })
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
        StreamFormat::Responses => match responses_key(event) {
            Some((key, false)) => event
                .get("delta")
                .and_then(Value::as_str)
                .map(|t| vec![(key, t)])
                .unwrap_or_default(),
            _ => Vec::new(),
        },
    }
}

/// Replaces the text delta of stream `key` in `event`; false when the event has none.
pub fn set_text_delta(format: StreamFormat, event: &mut Value, key: u64, text: String) -> bool {
    let slot = match format {
        StreamFormat::OpenAiChat => {
            let (choice, field) = chat_key_parts(key);
            event
                .get_mut("choices")
                .and_then(Value::as_array_mut)
                .and_then(|choices| {
                    choices
                        .iter_mut()
                        .enumerate()
                        .find(|(i, c)| c.get("index").and_then(Value::as_u64).unwrap_or(*i as u64) == choice)
                        .and_then(|(_, c)| c.get_mut("delta"))
                        .and_then(|d| d.get_mut(field))
                })
        }
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

        let two = json!({"choices": [{"index": 1, "delta": {"reasoning_content": "think", "content": "say"}}]});
        assert_eq!(
            text_deltas(StreamFormat::OpenAiChat, &two),
            vec![(chat_key(1, 0), "say"), (chat_key(1, 2), "think")]
        );
        assert_eq!(chat_key_parts(chat_key(1, 2)), (1, "reasoning_content"));

        let mut rs = json!({"type": "response.output_text.delta", "output_index": 0, "delta": "ok"});
        assert_eq!(text_deltas(StreamFormat::Responses, &rs), vec![(0, "ok")]);
        let args = json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{"});
        let done = json!({"type": "response.function_call_arguments.done", "output_index": 2, "arguments": "{}"});
        let key = responses_stream_key(2, 2, 0);
        assert_eq!(text_deltas(StreamFormat::Responses, &args), vec![(key, "{")]);
        assert_eq!(responses_key(&done), Some((key, true)));
        assert!(text_deltas(StreamFormat::Responses, &done).is_empty());
        assert!(set_text_delta(StreamFormat::Responses, &mut rs, 0, "OK".into()));
        assert!(!set_text_delta(
            StreamFormat::OpenAiChat,
            &mut json!({"choices": []}),
            0,
            "x".into()
        ));
    }
}
