//! Anthropic Messages ⇄ OpenAI chat completions for Anthropic clients (`POST /v1/messages`)
//! of OpenAI-compatible targets: the request goes out as a chat-completions request and the
//! chat completion comes back as a Messages response.

use serde_json::{Map, Value, json};

use super::WireError;

fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(a) => a.clone(),
        _ => Vec::new(),
    }
}

fn block_text(b: &Value) -> Option<String> {
    match b {
        Value::String(s) => Some(s.clone()),
        _ => b.get("text").and_then(Value::as_str).map(str::to_owned),
    }
}

/// Anthropic Messages request → OpenAI chat-completions request.
pub fn messages_request_to_chat(req: &Value) -> Result<Value, WireError> {
    let obj = req
        .as_object()
        .ok_or_else(|| WireError("request body must be a JSON object".into()))?;
    let mut messages: Vec<Value> = Vec::new();
    match obj.get("system") {
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(parts)) => {
            let text: Vec<String> = parts.iter().filter_map(block_text).collect();
            messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        _ => {}
    }
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| WireError("`messages` must be a list".into()))?;
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        match role {
            "user" => {
                let mut parts: Vec<Value> = Vec::new();
                for b in blocks(&content) {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or_default()}))
                        }
                        Some("image") => {
                            let src = b.get("source").unwrap_or(&Value::Null);
                            let url = match src.get("type").and_then(Value::as_str) {
                                Some("base64") => format!(
                                    "data:{};base64,{}",
                                    src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                                    src.get("data").and_then(Value::as_str).unwrap_or("")
                                ),
                                _ => src.get("url").and_then(Value::as_str).unwrap_or("").to_owned(),
                            };
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                        Some("tool_result") => {
                            let text = match b.get("content") {
                                Some(Value::String(s)) => s.clone(),
                                Some(c) => blocks(c).iter().filter_map(block_text).collect::<Vec<_>>().join("\n"),
                                None => String::new(),
                            };
                            messages.push(json!({
                                "role": "tool",
                                "tool_call_id": b.get("tool_use_id").cloned().unwrap_or_else(|| json!("")),
                                "content": text,
                            }));
                        }
                        Some(other) => {
                            return Err(WireError(format!(
                                "content block type '{other}' cannot be sent to an OpenAI-compatible target"
                            )));
                        }
                        None => return Err(WireError("content block without a type".into())),
                    }
                }
                if !parts.is_empty() {
                    let all_text = parts.iter().all(|p| p["type"] == "text");
                    let content = if all_text {
                        json!(
                            parts
                                .iter()
                                .filter_map(|p| p["text"].as_str())
                                .collect::<Vec<_>>()
                                .join("\n")
                        )
                    } else {
                        Value::Array(parts)
                    };
                    messages.push(json!({"role": "user", "content": content}));
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for b in blocks(&content) {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                        Some("tool_use") => calls.push(json!({
                            "id": b.get("id").cloned().unwrap_or_else(|| json!("")),
                            "type": "function",
                            "function": {
                                "name": b.get("name").cloned().unwrap_or_else(|| json!("")),
                                "arguments": b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                            },
                        })),
                        _ => {}
                    }
                }
                let mut msg =
                    json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            other => return Err(WireError(format!("message role '{other}' is not supported"))),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), obj.get("model").cloned().unwrap_or_else(|| json!("")));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(m) = obj.get("max_tokens") {
        out.insert("max_tokens".into(), m.clone());
    }
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(stop) = obj.get("stop_sequences") {
        out.insert("stop".into(), stop.clone());
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let converted: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.get("name").cloned().unwrap_or_else(|| json!("")),
                    "description": t.get("description").cloned().unwrap_or_else(|| json!("")),
                    "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
                }})
            })
            .collect();
        out.insert("tools".into(), Value::Array(converted));
    }
    if let Some(choice) = obj.get("tool_choice") {
        let c = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or_else(|| json!(""))}})
            }
            _ => return Err(WireError("tool_choice must be auto, any, none or tool".into())),
        };
        out.insert("tool_choice".into(), c);
    }
    if let Some(user) = obj.get("metadata").and_then(|m| m.get("user_id")) {
        out.insert("user".into(), user.clone());
    }
    Ok(Value::Object(out))
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// OpenAI chat completion → Anthropic Messages response (first choice).
pub fn chat_response_to_messages(resp: &Value) -> Result<Value, WireError> {
    let choice = resp
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| WireError("upstream answer has no choices".into()))?;
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let mut content: Vec<Value> = Vec::new();
    if let Some(text) = msg.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        // An upstream's malformed arguments still reach the client, as an empty input.
        let block = super::tool_use_block(call).unwrap_or_else(
            |_| json!({"type": "tool_use", "id": call.get("id"), "name": call.pointer("/function/name"), "input": {}}),
        );
        content.push(block);
    }
    let usage = resp.get("usage").unwrap_or(&Value::Null);
    let cached = usage
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let prompt = usage.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    Ok(json!({
        "id": resp.get("id").cloned().unwrap_or_else(|| json!("")),
        "type": "message",
        "role": "assistant",
        "model": resp.get("model").cloned().unwrap_or_else(|| json!("")),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": {
            "input_tokens": prompt.saturating_sub(cached),
            "output_tokens": usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
            "cache_read_input_tokens": cached,
        },
    }))
}

/// Translates an OpenAI chat-completion chunk stream into Anthropic Messages events
/// (`(event name, data)`), for Anthropic clients of OpenAI-compatible targets.
#[derive(Debug, Clone, Default)]
pub struct OpenAiToAnthropicStream {
    started: bool,
    /// The content block being written: (block index, is a tool_use block).
    open: Option<(u64, bool)>,
    next_block: u64,
    /// OpenAI tool-call index → Anthropic block index.
    tools: Vec<(u64, u64)>,
    stop: Option<&'static str>,
    input_tokens: u64,
    output_tokens: u64,
    finished: bool,
}

impl OpenAiToAnthropicStream {
    pub fn new() -> Self {
        Self::default()
    }

    fn close(&mut self, out: &mut Vec<(&'static str, Value)>) {
        if let Some((index, _)) = self.open.take() {
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open_block(&mut self, block: Value, tool: bool, out: &mut Vec<(&'static str, Value)>) -> u64 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, tool));
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    /// The Anthropic events for one OpenAI chunk.
    pub fn event(&mut self, chunk: &Value) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push((
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": chunk.get("id").cloned().unwrap_or_else(|| json!("")),
                    "type": "message", "role": "assistant",
                    "model": chunk.get("model").cloned().unwrap_or_else(|| json!("")),
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            ));
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.input_tokens = u
                .get("prompt_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(self.input_tokens);
            self.output_tokens = u
                .get("completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(self.output_tokens);
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return out;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some((i, false)) => i,
                _ => self.open_block(json!({"type": "text", "text": ""}), false, &mut out),
            };
            out.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let oi = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let index = match self.tools.iter().find(|(o, _)| *o == oi) {
                Some((_, b)) => *b,
                None => {
                    let block = json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or_else(|| json!("")),
                        "name": call.pointer("/function/name").cloned().unwrap_or_else(|| json!("")),
                        "input": {},
                    });
                    let b = self.open_block(block, true, &mut out);
                    self.tools.push((oi, b));
                    b
                }
            };
            if let Some(args) = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                out.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(stop_reason(Some(f)));
        }
        out
    }

    /// The closing events, at the upstream's `[DONE]`.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.finished = true;
        self.close(&mut out);
        out.push((
            "message_delta",
            json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}}),
        ));
        out.push(("message_stop", json!({"type": "message_stop"})));
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chat_chunks_become_anthropic_events() {
        let mut t = OpenAiToAnthropicStream::new();
        let mut names = Vec::new();
        let mut text = String::new();
        let mut json_args = String::new();
        let chunks = [
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "lo"}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\":"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9}}),
        ];
        let mut events = Vec::new();
        for c in &chunks {
            events.extend(t.event(c));
        }
        events.extend(t.finish());
        assert!(t.finish().is_empty(), "finish is idempotent");
        for (name, v) in &events {
            names.push(*name);
            assert_eq!(v["type"], *name);
            if let Some(s) = v.pointer("/delta/text").and_then(Value::as_str) {
                text.push_str(s);
            }
            if let Some(s) = v.pointer("/delta/partial_json").and_then(Value::as_str) {
                json_args.push_str(s);
            }
        }
        assert_eq!(text, "Hello");
        assert_eq!(json_args, "{\"a\":1}");
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let (_, delta) = &events[events.len() - 2];
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["output_tokens"], 9);
    }
    use super::*;
    use crate::wire::anthropic::{chat_request_to_messages, messages_response_to_chat};

    #[test]
    fn messages_request_becomes_a_chat_request() {
        let req = json!({
            "model": "gpt-4o", "max_tokens": 100, "stream": true,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}, {"type": "text", "text": "thanks"}]}
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f"}
        });
        let out = messages_request_to_chat(&req).expect("translates");
        assert_eq!(out["messages"][0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(
            out["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(
            out["messages"][3],
            json!({"role": "tool", "tool_call_id": "t1", "content": "ok"})
        );
        assert_eq!(out["messages"][4], json!({"role": "user", "content": "thanks"}));
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
        assert_eq!(out["tool_choice"]["function"]["name"], "f");
        assert!(
            messages_request_to_chat(&json!({"messages": [{"role": "user", "content": [{"type": "document"}]}]}))
                .is_err()
        );
    }

    #[test]
    fn chat_response_becomes_a_message() {
        let resp = json!({
            "id": "chatcmpl-1", "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "partial"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}
        });
        let out = chat_response_to_messages(&resp).expect("translates");
        assert_eq!(out["content"], json!([{"type": "text", "text": "partial"}]));
        assert_eq!(out["stop_reason"], "max_tokens");
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 6, "output_tokens": 3, "cache_read_input_tokens": 4})
        );
        assert!(chat_response_to_messages(&json!({"choices": []})).is_err());
    }

    #[test]
    fn round_trips_keep_the_conversation() {
        let chat = json!({
            "model": "m", "max_tokens": 50,
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"x\":2}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "r"}
            ]
        });
        let back = messages_request_to_chat(&chat_request_to_messages(&chat).expect("to anthropic")).expect("back");
        assert_eq!(back["messages"], chat["messages"]);
        let msg = json!({"id": "m1", "model": "c", "stop_reason": "end_turn", "content": [{"type": "text", "text": "hello"}], "usage": {"input_tokens": 1, "output_tokens": 2}});
        let again = chat_response_to_messages(&messages_response_to_chat(&msg, 0)).expect("back");
        assert_eq!(again["content"], msg["content"]);
        assert_eq!(again["stop_reason"], "end_turn");
    }
}
