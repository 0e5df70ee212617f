//! OpenAI chat completions ⇄ Anthropic Messages, both directions, tools included, so a
//! client of either API can use a target of the other. Requests and responses are
//! translated as JSON values (parsed once by the caller); streaming is translated event by
//! event by `AnthropicToOpenAiStream`.

use serde_json::{Map, Value, json};

use super::WireError;

/// Anthropic requires `max_tokens`; used when the OpenAI request sets none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `data:image/png;base64,AAAA` → Anthropic base64 source; other URLs → URL source.
fn image_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media) = meta.strip_suffix(";base64")
    {
        return json!({"type": "base64", "media_type": media, "data": data});
    }
    json!({"type": "url", "url": url})
}

fn user_blocks(content: &Value) -> Result<Value, WireError> {
    match content {
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        out.push(json!({"type": "text", "text": p.get("text").cloned().unwrap_or_default()}))
                    }
                    Some("image_url") => {
                        let url = p
                            .get("image_url")
                            .and_then(|i| i.get("url").or(Some(i)))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        out.push(json!({"type": "image", "source": image_source(url)}));
                    }
                    Some(other) => {
                        return Err(WireError(format!(
                            "content part type '{other}' cannot be sent to an Anthropic target"
                        )));
                    }
                    None => return Err(WireError("content part without a type".into())),
                }
            }
            Ok(Value::Array(out))
        }
        Value::Null => Ok(Value::String(String::new())),
        _ => Err(WireError("message content must be a string or a list of parts".into())),
    }
}

/// Appends a message, merging it into the previous one when the role repeats (Anthropic
/// wants user and assistant turns to alternate).
fn push_message(messages: &mut Vec<Value>, role: &str, content: Value) {
    let as_blocks = |c: Value| match c {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    if let Some(last) = messages.last_mut()
        && last.get("role").and_then(Value::as_str) == Some(role)
    {
        let prev = last.get_mut("content").map(Value::take).unwrap_or(Value::Null);
        let mut blocks = as_blocks(prev);
        blocks.extend(as_blocks(content));
        last["content"] = Value::Array(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": content}));
}

/// OpenAI chat-completions request → Anthropic Messages request.
pub fn chat_request_to_messages(req: &Value) -> Result<Value, WireError> {
    let obj = req
        .as_object()
        .ok_or_else(|| WireError("request body must be a JSON object".into()))?;
    if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(WireError("n > 1 is not supported by Anthropic targets".into()));
    }
    if let Some(rf) = obj.get("response_format")
        && rf.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(WireError(
            "response_format is not supported by Anthropic targets".into(),
        ));
    }
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| WireError("`messages` must be a list".into()))?;
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        match role {
            "system" | "developer" => system.push(text_of(&content)),
            "user" => push_message(&mut messages, "user", user_blocks(&content)?),
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(&content);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    blocks.push(super::tool_use_block(call)?);
                }
                push_message(&mut messages, "assistant", Value::Array(blocks));
            }
            "tool" | "function" => {
                let block = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or_else(|| json!("")),
                    "content": text_of(&content),
                });
                push_message(&mut messages, "user", Value::Array(vec![block]));
            }
            other => return Err(WireError(format!("message role '{other}' is not supported"))),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), obj.get("model").cloned().unwrap_or_else(|| json!("")));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max));
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    match obj.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let converted: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = t.get("function").unwrap_or(t);
                let mut tool = json!({
                    "name": f.get("name").cloned().unwrap_or_else(|| json!("")),
                    "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                });
                if let Some(d) = f.get("description") {
                    tool["description"] = d.clone();
                }
                tool
            })
            .collect();
        out.insert("tools".into(), Value::Array(converted));
    }
    if let Some(choice) = obj.get("tool_choice") {
        let c = match choice {
            Value::String(s) if s == "auto" => json!({"type": "auto"}),
            Value::String(s) if s == "required" => json!({"type": "any"}),
            Value::String(s) if s == "none" => json!({"type": "none"}),
            Value::Object(o) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .cloned()
                    .unwrap_or_else(|| json!(""));
                json!({"type": "tool", "name": name})
            }
            _ => {
                return Err(WireError(
                    "tool_choice must be auto, required, none or a function".into(),
                ));
            }
        };
        out.insert("tool_choice".into(), c);
    }
    if let Some(user) = obj.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    Ok(Value::Object(out))
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

fn usage_to_openai(u: &Value) -> Value {
    let input = u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0);
    let cached = u.get("cache_read_input_tokens").and_then(Value::as_u64).unwrap_or(0);
    let created = u
        .get("cache_creation_input_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let output = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
    let prompt = input + cached + created;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// Anthropic Messages response → OpenAI chat completion. `created` is the Unix time.
pub fn messages_response_to_chat(resp: &Value, created: u64) -> Value {
    let blocks = resp
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let text: Vec<&str> = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
        .map(|b| {
            json!({
                "id": b.get("id").cloned().unwrap_or_else(|| json!("")),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or_else(|| json!("")),
                    "arguments": b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })
        })
        .collect();
    let mut message =
        json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text.join("")) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let id = resp.get("id").and_then(Value::as_str).unwrap_or("");
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": resp.get("model").cloned().unwrap_or_else(|| json!("")),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(resp.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage_to_openai(resp.get("usage").unwrap_or(&Value::Null)),
    })
}

/// Translates an Anthropic Messages event stream into OpenAI chat-completion chunks, one
/// Anthropic event at a time.
#[derive(Debug, Clone, Default)]
pub struct AnthropicToOpenAiStream {
    id: String,
    model: String,
    created: u64,
    /// Anthropic content-block index → OpenAI tool-call index, for tool_use blocks.
    tool_index: Vec<(u64, u64)>,
    usage: Value,
}

impl AnthropicToOpenAiStream {
    pub fn new(created: u64) -> Self {
        AnthropicToOpenAiStream {
            created,
            usage: json!({}),
            ..Default::default()
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": format!("chatcmpl-{}", self.id),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// The OpenAI chunks for one Anthropic event (`data` JSON). `message_stop` yields the
    /// final usage chunk; the caller then sends `data: [DONE]`.
    pub fn event(&mut self, event: &Value) -> Result<Vec<Value>, WireError> {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        Ok(match kind {
            "message_start" => {
                let m = event.get("message").unwrap_or(&Value::Null);
                self.id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                self.model = m.get("model").and_then(Value::as_str).unwrap_or("").to_owned();
                if let Some(u) = m.get("usage") {
                    self.usage = u.clone();
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Ok(Vec::new());
                }
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let tool = self.tool_index.len() as u64;
                self.tool_index.push((index, tool));
                vec![self.chunk(
                    json!({"tool_calls": [{
                        "index": tool,
                        "id": block.get("id").cloned().unwrap_or_else(|| json!("")),
                        "type": "function",
                        "function": {"name": block.get("name").cloned().unwrap_or_else(|| json!("")), "arguments": ""},
                    }]}),
                    None,
                )]
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        vec![self.chunk(json!({"content": delta.get("text").cloned().unwrap_or_default()}), None)]
                    }
                    Some("input_json_delta") => {
                        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let tool = self
                            .tool_index
                            .iter()
                            .find(|(b, _)| *b == index)
                            .map(|(_, t)| *t)
                            .unwrap_or(0);
                        let part = delta.get("partial_json").cloned().unwrap_or_else(|| json!(""));
                        vec![self.chunk(
                            json!({"tool_calls": [{"index": tool, "function": {"arguments": part}}]}),
                            None,
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                if let Some(u) = event.get("usage").and_then(Value::as_object) {
                    for (k, v) in u {
                        self.usage[k] = v.clone();
                    }
                }
                let reason = event
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                vec![self.chunk(json!({}), Some(finish_reason(reason)))]
            }
            "message_stop" => {
                let mut last = self.chunk(json!({}), None);
                last["choices"] = json!([]);
                last["usage"] = usage_to_openai(&self.usage);
                vec![last]
            }
            "error" => {
                let msg = event
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                return Err(WireError(msg.to_owned()));
            }
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_system_tools_and_tool_results() {
        let req = json!({
            "model": "claude-sonnet-4",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "12C"},
                {"role": "tool", "tool_call_id": "c2", "content": "rain"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stop": "END",
            "temperature": 0.2,
            "user": "u-1"
        });
        let out = chat_request_to_messages(&req).expect("translates");
        assert_eq!(out["system"], "be brief");
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            out["messages"][0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "QUJD"})
        );
        assert_eq!(
            out["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Oslo"}})
        );
        let results = out["messages"][2]["content"].as_array().expect("merged tool results");
        assert_eq!(results.len(), 2, "consecutive tool results merge into one user turn");
        assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(out["tool_choice"], json!({"type": "any"}));
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
    }

    #[test]
    fn unsupported_requests_are_refused_with_a_reason() {
        assert!(chat_request_to_messages(&json!({"messages": [], "n": 2})).is_err());
        assert!(
            chat_request_to_messages(&json!({"messages": [], "response_format": {"type": "json_object"}})).is_err()
        );
        let bad_args = json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]});
        assert!(
            chat_request_to_messages(&bad_args)
                .expect_err("refused")
                .0
                .contains("not JSON")
        );
        assert!(chat_request_to_messages(&json!([])).is_err());
    }

    #[test]
    fn response_with_text_and_tool_use() {
        let resp = json!({
            "id": "msg_1", "model": "claude-sonnet-4", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}],
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2}
        });
        let out = messages_response_to_chat(&resp, 1700000000);
        assert_eq!(out["choices"][0]["message"]["content"], "Checking.");
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "prompt_tokens_details": {"cached_tokens": 2}})
        );
    }

    #[test]
    fn stream_translation_covers_text_tools_and_usage() {
        let mut t = AnthropicToOpenAiStream::new(1);
        let events = [
            json!({"type": "message_start", "message": {"id": "m1", "model": "claude", "usage": {"input_tokens": 7, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ];
        let chunks: Vec<Value> = events.iter().flat_map(|e| t.event(e).expect("translates")).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        let args: String = chunks[3..5]
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(args, "{\"a\":1}");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["usage"]["completion_tokens"], 9);
        assert_eq!(chunks[6]["usage"]["prompt_tokens"], 7);
        assert!(
            t.event(&json!({"type": "error", "error": {"message": "overloaded"}}))
                .is_err()
        );
    }
}
