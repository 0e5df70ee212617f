//! Every text a model reads in a request, and every text it wrote in an answer, as segments
//! with their path in the body. A field left out here is a field no policy sees, so the walk
//! covers each API's whole surface:
//!
//! - Requests: `system`, `instructions`; each message's `content` (strings and every text-
//!   bearing part: `text`, `refusal`, `thinking`, text documents, Anthropic `tool_use.input`
//!   and `tool_result`), `name`, `refusal`, `reasoning_content`, tool-call and function-call
//!   arguments; tool and function declarations (`description` and the parameter schema's
//!   texts); `response_format` / `text.format` schemas; `prediction.content`; Responses
//!   `input` items (messages, function calls and their outputs, reasoning summaries);
//!   embeddings `input` and completions `prompt`.
//! - Answers: chat `message.content`, `refusal`, `reasoning_content`/`reasoning`, tool-call
//!   arguments, legacy `text`; Anthropic `content` blocks (text, thinking, `tool_use.input`);
//!   Responses `output` items (message parts, refusals, function-call arguments, reasoning
//!   summaries).
//!
//! Roles: tool declarations and tool results are `Tool` (untrusted: they come from tool
//! servers), schemas of the answer format are `System`, what the model wrote is `Assistant`.

use serde_json::Value;

use super::{Role, Seg, TextSegment};
use crate::json::member;

/// Schema keywords whose string values are structure, not text a model reads as prose.
const SCHEMA_STRUCTURE: &[&str] = &["type", "format", "pattern", "$ref", "$schema", "$id", "required"];

/// Text segments of a request body, in document order.
pub fn request_texts(body: &Value) -> Vec<TextSegment<'_>> {
    let mut w = Walk::default();
    w.field(body, "system", |w, v| w.content(Role::System, v));
    w.field(body, "instructions", |w, v| w.content(Role::System, v));
    w.field(body, "messages", |w, v| w.each(v, |w, m| w.message(m)));
    for key in ["input", "prompt"] {
        w.field(body, key, |w, v| match v {
            Value::Array(items) => w.each_in(items, |w, item| w.input_item(item)),
            other => w.content(Role::User, other),
        });
    }
    w.field(body, "tools", |w, v| w.each(v, |w, t| w.tool_declaration(t)));
    w.field(body, "functions", |w, v| w.each(v, |w, f| w.tool_declaration(f)));
    w.field(body, "response_format", |w, v| w.answer_format(v));
    w.field(body, "text", |w, v| w.field(v, "format", |w, f| w.answer_format(f)));
    w.field(body, "prediction", |w, v| {
        w.field(v, "content", |w, c| w.content(Role::User, c))
    });
    w.out
}

/// Text segments of a (non-streaming) answer body.
pub fn response_texts(body: &Value) -> Vec<TextSegment<'_>> {
    let mut w = Walk::default();
    w.field(body, "choices", |w, v| {
        w.each(v, |w, c| {
            w.field(c, "message", |w, m| w.message_as(Role::Assistant, m));
            w.field(c, "text", |w, t| w.content(Role::Assistant, t));
        })
    });
    w.field(body, "content", |w, v| {
        if v.is_array() {
            w.content(Role::Assistant, v);
        }
    });
    w.field(body, "output", |w, v| w.each(v, |w, item| w.input_item(item)));
    w.out
}

/// A depth-first walk that keeps the path of the value it is at.
#[derive(Default)]
struct Walk<'a> {
    out: Vec<TextSegment<'a>>,
    path: Vec<Seg>,
}

impl<'a> Walk<'a> {
    fn at(&mut self, seg: Seg, f: impl FnOnce(&mut Self)) {
        self.path.push(seg);
        f(self);
        self.path.pop();
    }

    /// Visits `v[key]` when it is there and not null.
    fn field(&mut self, v: &'a Value, key: &'static str, f: impl FnOnce(&mut Self, &'a Value)) {
        if let Some(x) = member(v, key).filter(|x| !x.is_null()) {
            self.at(Seg::Key(key), |w| f(w, x));
        }
    }

    /// Visits each element when `v` is a list.
    fn each(&mut self, v: &'a Value, f: impl FnMut(&mut Self, &'a Value)) {
        if let Value::Array(items) = v {
            self.each_in(items, f);
        }
    }

    fn each_in(&mut self, items: &'a [Value], mut f: impl FnMut(&mut Self, &'a Value)) {
        for (i, item) in items.iter().enumerate() {
            self.at(Seg::Idx(i), |w| f(w, item));
        }
    }

    fn text(&mut self, role: Role, text: &'a str) {
        self.out.push(TextSegment {
            role,
            path: self.path.clone(),
            text,
        });
    }

    /// A string field, or every string in a structured one (arguments sent as objects).
    fn any_text(&mut self, role: Role, v: &'a Value) {
        match v {
            Value::String(s) => self.text(role, s),
            other => self.strings(role, other, &[]),
        }
    }

    /// Every string inside `v`, except under the keys in `skip` (unless their value is an object).
    fn strings(&mut self, role: Role, v: &'a Value, skip: &[&str]) {
        match v {
            Value::String(s) => self.text(role, s),
            Value::Array(items) => self.each_in(items, |w, x| w.strings(role, x, skip)),
            Value::Object(o) => {
                for (k, x) in o {
                    // A schema keyword's value is structure; a property of that name is an object.
                    if x.is_object() || !skip.contains(&k.as_str()) {
                        self.at(Seg::Name(k.as_str().into()), |w| w.strings(role, x, skip));
                    }
                }
            }
            _ => {}
        }
    }

    /// Message content: a string, or a list of parts.
    fn content(&mut self, role: Role, v: &'a Value) {
        match v {
            Value::String(s) => self.text(role, s),
            Value::Array(parts) => self.each_in(parts, |w, part| w.part(role, part)),
            _ => {}
        }
    }

    /// One content part of any API.
    fn part(&mut self, role: Role, part: &'a Value) {
        let Value::Object(_) = part else {
            if let Value::String(s) = part {
                self.text(role, s);
            }
            return;
        };
        match member(part, "type").and_then(Value::as_str) {
            Some("tool_use" | "server_tool_use") => self.field(part, "input", |w, v| w.any_text(Role::Assistant, v)),
            Some("tool_result" | "web_search_tool_result") => {
                self.field(part, "content", |w, v| w.content(Role::Tool, v))
            }
            Some("document") => self.field(part, "source", |w, s| {
                if member(s, "type").and_then(Value::as_str) == Some("text") {
                    w.field(s, "data", |w, d| w.content(role, d));
                }
                w.field(s, "content", |w, c| w.content(role, c));
            }),
            _ => {
                self.field(part, "text", |w, v| w.content(role, v));
                self.field(part, "refusal", |w, v| w.content(Role::Assistant, v));
                self.field(part, "thinking", |w, v| w.content(Role::Assistant, v));
            }
        }
    }

    /// A chat or Messages message, by its own role.
    fn message(&mut self, m: &'a Value) {
        let role = member(m, "role")
            .and_then(Value::as_str)
            .map_or(Role::User, Role::parse);
        self.message_as(role, m);
    }

    fn message_as(&mut self, role: Role, m: &'a Value) {
        self.field(m, "content", |w, v| w.content(role, v));
        self.field(m, "name", |w, v| w.content(role, v));
        for key in ["refusal", "reasoning_content", "reasoning"] {
            self.field(m, key, |w, v| w.any_text(Role::Assistant, v));
        }
        self.field(m, "tool_calls", |w, calls| {
            w.each(calls, |w, call| w.field(call, "function", |w, f| w.call_arguments(f)))
        });
        self.field(m, "function_call", |w, f| w.call_arguments(f));
    }

    fn call_arguments(&mut self, f: &'a Value) {
        self.field(f, "arguments", |w, a| w.any_text(Role::Assistant, a));
    }

    /// An item of Responses `input`/`output`, or of embeddings/completions input lists.
    fn input_item(&mut self, item: &'a Value) {
        let Value::Object(_) = item else {
            if let Value::String(s) = item {
                self.text(Role::User, s);
            }
            return;
        };
        match member(item, "type").and_then(Value::as_str) {
            Some("function_call") => self.call_arguments(item),
            Some("custom_tool_call") => self.field(item, "input", |w, v| w.any_text(Role::Assistant, v)),
            Some("function_call_output" | "custom_tool_call_output") => {
                self.field(item, "output", |w, v| w.content(Role::Tool, v))
            }
            Some("reasoning") => self.field(item, "summary", |w, v| w.content(Role::Assistant, v)),
            _ => self.message(item),
        }
    }

    /// A tool or function the caller declares: its description and its parameter schema.
    fn tool_declaration(&mut self, t: &'a Value) {
        if member(t, "function").is_some() {
            return self.field(t, "function", |w, f| w.tool_declaration(f));
        }
        self.field(t, "description", |w, v| w.content(Role::Tool, v));
        for key in ["parameters", "input_schema"] {
            self.field(t, key, |w, s| w.strings(Role::Tool, s, SCHEMA_STRUCTURE));
        }
    }

    /// `response_format` (`{json_schema: {description, schema}}`) or Responses `text.format`.
    fn answer_format(&mut self, v: &'a Value) {
        if member(v, "json_schema").is_some() {
            return self.field(v, "json_schema", |w, s| w.answer_format(s));
        }
        self.field(v, "description", |w, d| w.content(Role::System, d));
        self.field(v, "schema", |w, s| w.strings(Role::System, s, SCHEMA_STRUCTURE));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::exchange::write_text;

    fn texts(body: &Value) -> Vec<&str> {
        request_texts(body).iter().map(|s| s.text).collect()
    }

    /// Every segment's path leads back to its own text, so a redaction lands where it was found.
    fn paths_lead_back(body: &Value, segments: &[TextSegment<'_>]) {
        for s in segments {
            let mut copy = body.clone();
            assert!(write_text(&mut copy, &s.path, "<X>".into()), "path of {:?}", s.text);
            assert_ne!(&copy, body, "{:?}", s.text);
        }
    }

    #[test]
    fn every_text_a_model_reads_in_a_chat_request_is_a_segment() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "sys", "name": "S-name"},
                {"role": "user", "name": "U-name", "content": [{"type": "text", "text": "part"}, {"type": "image_url", "image_url": {"url": "http://x"}}]},
                {"role": "assistant", "content": null, "refusal": "A-refusal", "reasoning_content": "A-reasoning",
                 "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"q\":\"A-args\"}"}}],
                 "function_call": {"name": "g", "arguments": "legacy-args"}},
                {"role": "tool", "tool_call_id": "1", "content": "T-result"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": "F-desc",
                "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "Q-desc", "enum": ["E1"]}}, "required": ["q"]}}}],
            "functions": [{"name": "g", "description": "G-desc", "parameters": {"type": "object"}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "description": "RF-desc", "schema": {"type": "object", "properties": {"a": {"type": "string", "description": "RF-prop"}}}}},
            "prediction": {"type": "content", "content": "P-content"}
        });
        assert_eq!(
            texts(&body),
            [
                "sys",
                "S-name",
                "part",
                "U-name",
                "A-refusal",
                "A-reasoning",
                "{\"q\":\"A-args\"}",
                "legacy-args",
                "T-result",
                "F-desc",
                "Q-desc",
                "E1",
                "G-desc",
                "RF-desc",
                "RF-prop",
                "P-content"
            ]
        );
        let segments = request_texts(&body);
        paths_lead_back(&body, &segments);
        let role = |t: &str| segments.iter().find(|s| s.text == t).map(|s| s.role);
        assert_eq!(role("F-desc"), Some(Role::Tool), "tool declarations are untrusted");
        assert_eq!(role("T-result"), Some(Role::Tool));
        assert_eq!(role("U-name"), Some(Role::User));
        assert_eq!(role("A-args"), None);
        assert_eq!(role("{\"q\":\"A-args\"}"), Some(Role::Assistant));
    }

    #[test]
    fn anthropic_blocks_and_responses_items_are_segments() {
        let anthropic = json!({
            "system": [{"type": "text", "text": "sys"}],
            "tools": [{"name": "search", "description": "S-desc", "input_schema": {"type": "object", "properties": {"q": {"type": "string", "description": "S-q"}}}}],
            "messages": [
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "mull", "signature": "sig"},
                    {"type": "tool_use", "id": "t", "name": "search", "input": {"q": "U-input", "nested": {"deep": ["D-input"]}}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "R-block"}]},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Doc-text"}}]}
            ]
        });
        assert_eq!(
            texts(&anthropic),
            [
                "sys", "mull", "U-input", "D-input", "R-block", "Doc-text", "S-desc", "S-q"
            ]
        );
        paths_lead_back(&anthropic, &request_texts(&anthropic));
        let responses = json!({
            "instructions": "ins",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "F-args"},
                {"type": "function_call_output", "call_id": "c", "output": "F-out"},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "R-sum"}]}
            ],
            "tools": [{"type": "function", "name": "f", "description": "T-desc", "parameters": {"type": "object"}}],
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"properties": {"a": {"description": "S-a"}}}}}
        });
        assert_eq!(
            texts(&responses),
            ["ins", "q", "F-args", "F-out", "R-sum", "T-desc", "S-a"]
        );
        paths_lead_back(&responses, &request_texts(&responses));
    }

    #[test]
    fn every_text_of_an_answer_is_a_segment() {
        let chat = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "C", "refusal": "R", "reasoning_content": "RC",
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "ARGS"}}]}}, {"index": 1, "text": "legacy"}]});
        let anthropic = json!({"content": [{"type": "thinking", "thinking": "TH"}, {"type": "text", "text": "T"}, {"type": "tool_use", "name": "s", "input": {"q": "IN"}}]});
        let responses = json!({"output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "SUM"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "OT"}, {"type": "refusal", "refusal": "REF"}]},
            {"type": "function_call", "name": "f", "arguments": "FA"}
        ]});
        for (body, want) in [
            (&chat, vec!["C", "R", "RC", "ARGS", "legacy"]),
            (&anthropic, vec!["TH", "T", "IN"]),
            (&responses, vec!["SUM", "OT", "REF", "FA"]),
        ] {
            let segments = response_texts(body);
            assert_eq!(segments.iter().map(|s| s.text).collect::<Vec<_>>(), want);
            assert!(segments.iter().all(|s| s.role == Role::Assistant));
            paths_lead_back(body, &segments);
        }
    }
}
