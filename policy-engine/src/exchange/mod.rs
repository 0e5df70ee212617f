//! Views over the request and response bodies the policies inspect: the text segments
//! (with their location inside the JSON, so redaction rewrites content and nothing else),
//! the tool calls and tool declarations, and the caller's headers. Bodies are parsed once by
//! the caller; the views borrow from them.
//!
//! Shapes understood: OpenAI chat completions (request and response), Anthropic Messages
//! (request and response), OpenAI Responses (`input`/`instructions`, `output`), embeddings
//! (`input`) and legacy completions (`prompt`).

use serde_json::Value;

use crate::json::member;

mod texts;

pub use texts::{request_texts, response_texts};

/// Who wrote a segment. Prompt-injection looks only at untrusted roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    fn parse(s: &str) -> Role {
        match s {
            "system" | "developer" => Role::System,
            "assistant" | "model" => Role::Assistant,
            "tool" | "function" => Role::Tool,
            _ => Role::User,
        }
    }

    /// Text a caller or a tool controls, where injected instructions come from.
    pub fn is_untrusted(self) -> bool {
        matches!(self, Role::User | Role::Tool)
    }
}

/// One step of a path into a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A field of the API's own shape.
    Key(&'static str),
    /// Any other object key (tool arguments, schema properties).
    Name(Box<str>),
    Idx(usize),
}

/// A string inside a body that policies scan and may rewrite.
#[derive(Debug, Clone)]
pub struct TextSegment<'a> {
    pub role: Role,
    pub path: Vec<Seg>,
    pub text: &'a str,
}

/// A tool call the model made (or that the conversation carries), or a tool the caller
/// declared to the model.
#[derive(Debug, Clone)]
pub struct ToolUse<'a> {
    pub name: &'a str,
    /// Parsed arguments; `None` for declarations.
    pub arguments: Option<ToolArgs<'a>>,
    pub declared_only: bool,
}

#[derive(Debug, Clone)]
pub enum ToolArgs<'a> {
    /// OpenAI style: a JSON document inside a string.
    Encoded(&'a str),
    /// Anthropic / Responses style: a JSON value.
    Value(&'a Value),
}

/// Request headers with lower-cased names, kept in one buffer (two allocations for any
/// number of headers: they are built for every request).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    text: String,
    /// (name start, name end, value end) in `text`; a value starts where its name ends.
    spans: Vec<(u32, u32, u32)>,
}

impl Headers {
    pub fn new() -> Self {
        Headers::default()
    }

    /// Room for `count` headers of `bytes` bytes in all.
    pub fn with_capacity(count: usize, bytes: usize) -> Self {
        Headers {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(count),
        }
    }

    pub fn insert(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        self.text[start..].make_ascii_lowercase();
        let (start, name_end) = (start as u32, self.text.len() as u32);
        self.text.push_str(value);
        self.spans.push((start, name_end, self.text.len() as u32));
    }

    /// Every value of `name`, in the order received.
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.spans
            .iter()
            .filter(move |(a, b, _)| self.text[*a as usize..*b as usize].eq_ignore_ascii_case(name))
            .map(|(_, b, c)| &self.text[*b as usize..*c as usize])
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .find(|(a, b, _)| self.text[*a as usize..*b as usize].eq_ignore_ascii_case(name))
            .map(|(_, b, c)| &self.text[*b as usize..*c as usize])
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut h = Headers::new();
        for (k, v) in iter {
            h.insert(k.as_ref(), v.as_ref());
        }
        h
    }
}

/// An OpenAI chat-completions answer read without building it as a tree: the text of
/// each choice (borrowed from the answer's bytes unless it has escapes) and the usage.
/// Only the common shape is taken: `choices[].message` with string (or null) `content`,
/// `name`, `refusal`, `reasoning_content` and `reasoning`, and legacy `choices[].text`; no
/// tool calls and nothing else the output or tool phases read
/// (top-level `content`, `output` or `tool_calls`). Anything else, duplicate keys
/// included, is refused (`chat_answer_view` gives `None`) and the answer is read as a
/// tree instead.
#[derive(Debug, serde::Deserialize)]
pub struct ChatAnswerView<'a> {
    #[serde(borrow, default)]
    choices: Vec<ChoiceView<'a>>,
    #[serde(default)]
    pub usage: crate::usage::AnswerUsage,
    #[serde(default)]
    content: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    output: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, serde::Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    message: Option<MessageView<'a>>,
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, serde::Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
}

/// The view of an answer in the common chat shape; `None` for any other shape (see
/// `ChatAnswerView`).
pub fn chat_answer_view(answer: &[u8]) -> Option<ChatAnswerView<'_>> {
    let view: ChatAnswerView<'_> = serde_json::from_str(crate::json::utf8(answer).ok()?).ok()?;
    let calls = view.choices.iter().any(|c| {
        c.message
            .as_ref()
            .is_some_and(|m| m.tool_calls.is_some() || m.function_call.is_some())
    });
    (!calls && view.content.is_none() && view.output.is_none() && view.tool_calls.is_none()).then_some(view)
}

impl ChatAnswerView<'_> {
    /// The text segments `response_texts` finds in the same answer, in the same order
    /// (without paths: a view is never written to).
    pub fn texts(&self) -> Vec<TextSegment<'_>> {
        let mut out = Vec::with_capacity(self.choices.len());
        for c in &self.choices {
            let m = c.message.as_ref();
            let message = [
                m.and_then(|m| m.content.as_deref()),
                m.and_then(|m| m.name.as_deref()),
                m.and_then(|m| m.refusal.as_deref()),
                m.and_then(|m| m.reasoning_content.as_deref()),
                m.and_then(|m| m.reasoning.as_deref()),
            ];
            for text in message.into_iter().chain([c.text.as_deref()]).flatten() {
                out.push(TextSegment {
                    role: Role::Assistant,
                    path: Vec::new(),
                    text,
                });
            }
        }
        out
    }
}

/// Tool declarations and tool calls carried by a request body.
pub fn request_tools(body: &Value) -> Vec<ToolUse<'_>> {
    let mut out = Vec::new();
    if let Some(Value::Array(tools)) = member(body, "tools") {
        for t in tools {
            let name = t
                .get("function")
                .and_then(|f| member(f, "name"))
                .or_else(|| member(t, "name"))
                .and_then(Value::as_str);
            if let Some(name) = name {
                out.push(ToolUse {
                    name,
                    arguments: None,
                    declared_only: true,
                });
            }
        }
    }
    if let Some(Value::Array(messages)) = member(body, "messages") {
        for m in messages {
            collect_calls(m, &mut out);
        }
    }
    if let Some(Value::Array(items)) = member(body, "input") {
        for item in items {
            collect_calls(item, &mut out);
        }
    }
    out
}

/// Tool calls the model asked for in a response body.
pub fn response_tools(body: &Value) -> Vec<ToolUse<'_>> {
    let mut out = Vec::new();
    if let Some(Value::Array(choices)) = member(body, "choices") {
        for c in choices {
            if let Some(m) = member(c, "message") {
                collect_calls(m, &mut out);
            }
        }
    }
    collect_calls(body, &mut out);
    if let Some(Value::Array(items)) = member(body, "output") {
        for item in items {
            collect_calls(item, &mut out);
        }
    }
    out
}

fn collect_calls<'a>(m: &'a Value, out: &mut Vec<ToolUse<'a>>) {
    if let Some(Value::Array(calls)) = member(m, "tool_calls") {
        for call in calls {
            let f = member(call, "function").unwrap_or(call);
            if let Some(name) = member(f, "name").and_then(Value::as_str) {
                out.push(ToolUse {
                    name,
                    arguments: call_arguments(f),
                    declared_only: false,
                });
            }
        }
    }
    if let Some(Value::Array(blocks)) = member(m, "content") {
        for b in blocks {
            if member(b, "type").and_then(Value::as_str) == Some("tool_use")
                && let Some(name) = member(b, "name").and_then(Value::as_str)
            {
                out.push(ToolUse {
                    name,
                    arguments: member(b, "input").map(ToolArgs::Value),
                    declared_only: false,
                });
            }
        }
    }
    if member(m, "type").and_then(Value::as_str) == Some("function_call")
        && let Some(name) = member(m, "name").and_then(Value::as_str)
    {
        out.push(ToolUse {
            name,
            arguments: call_arguments(m),
            declared_only: false,
        });
    }
}

/// The `arguments` of an OpenAI-style call: encoded in a string, or a JSON value.
fn call_arguments(f: &Value) -> Option<ToolArgs<'_>> {
    match member(f, "arguments")? {
        Value::String(s) => Some(ToolArgs::Encoded(s)),
        v => Some(ToolArgs::Value(v)),
    }
}

/// The `model` a request asks for.
pub fn request_model(body: &Value) -> Option<&str> {
    member(body, "model").and_then(Value::as_str)
}

/// Replaces the string at `path` in `body`. Returns false when the path no longer holds a
/// string (the body changed shape), in which case nothing is written.
pub fn write_text(body: &mut Value, path: &[Seg], text: String) -> bool {
    let mut cur = body;
    for seg in path {
        cur = match (seg, cur) {
            (Seg::Key(k), Value::Object(o)) => match o.get_mut(*k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Name(k), Value::Object(o)) => match o.get_mut(&**k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Idx(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match cur {
        Value::String(s) => {
            *s = text;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_answer_view_finds_what_the_tree_finds_or_refuses() {
        let same = [
            r#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3}}"#,
            r#"{"choices":[{"message":{"content":"a \"quoted\" line\nand \u00e9"}},{"message":{"content":null}},{"text":"legacy"},{"message":{"content":""},"text":"both"}]}"#,
            r#"{"choices":[],"model":"m","system_fingerprint":null,"extra":{"content":[1],"tool_calls":[]}}"#,
            r#"{"object":"chat.completion"}"#,
        ];
        for answer in same {
            let tree: Value = serde_json::from_str(answer).expect("json");
            let view = chat_answer_view(answer.as_bytes()).unwrap_or_else(|| panic!("view refused {answer}"));
            let got: Vec<(Role, &str)> = view.texts().iter().map(|t| (t.role, t.text)).collect();
            let want: Vec<(Role, &str)> = response_texts(&tree).iter().map(|t| (t.role, t.text)).collect();
            assert_eq!(got, want, "{answer}");
            assert!(response_tools(&tree).is_empty());
            assert_eq!(
                view.usage.0,
                tree.get("usage").and_then(crate::usage::Usage::from_value)
            );
        }
        let refused = [
            r#"{"choices":[{"message":{"content":"x","tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"message":{"content":null,"function_call":{"name":"f"}}}]}"#,
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"parts"}]}}]}"#,
            r#"{"content":[{"type":"text","text":"anthropic"}]}"#,
            r#"{"output":[{"content":[{"type":"output_text","text":"responses"}]}]}"#,
            r#"{"tool_calls":[]}"#,
            r#"{"choices":[{"message":{"content":"a"}}],"choices":[{"message":{"content":"b"}}]}"#,
            r#"{"choices":[{"text":42}]}"#,
            r#"{"choices":{"message":"not a list"}}"#,
            r#"[1,2]"#,
            r#"not json"#,
        ];
        for answer in refused {
            assert!(chat_answer_view(answer.as_bytes()).is_none(), "view took {answer}");
        }
    }

    #[test]
    fn headers_are_found_case_insensitively_in_one_buffer() {
        let h: Headers = [("X-User-Id", "alice"), ("Authorization", "Bearer k"), ("x-empty", "")]
            .into_iter()
            .collect();
        assert_eq!(h.get("x-user-id"), Some("alice"));
        assert_eq!(h.get("AUTHORIZATION"), Some("Bearer k"));
        assert_eq!(h.get("x-empty"), Some(""));
        assert_eq!(h.get("missing"), None);
        assert_eq!(h.get("x-user"), None, "whole names only");
    }
    use serde_json::json;

    #[test]
    fn openai_chat_request_segments_and_tools() {
        let body = json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "1", "content": "result text"}
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
        });
        let t = request_texts(&body);
        let got: Vec<(Role, &str)> = t.iter().map(|s| (s.role, s.text)).collect();
        assert_eq!(
            got,
            vec![
                (Role::System, "be nice"),
                (Role::User, "hello"),
                (Role::Assistant, "{\"q\":1}"),
                (Role::Tool, "result text")
            ]
        );
        let tools = request_tools(&body);
        assert_eq!(tools.len(), 2);
        assert!(tools[0].declared_only && tools[0].name == "lookup");
        assert!(matches!(tools[1].arguments, Some(ToolArgs::Encoded("{\"q\":1}"))));
        assert_eq!(request_model(&body), Some("gpt-4o"));
    }

    #[test]
    fn anthropic_request_and_response() {
        let body = json!({
            "system": [{"type": "text", "text": "sys"}],
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "tool said"}]}]
        });
        let t = request_texts(&body);
        assert_eq!(
            t.iter().map(|s| (s.role, s.text)).collect::<Vec<_>>(),
            vec![(Role::System, "sys"), (Role::Tool, "tool said")]
        );
        let resp = json!({"content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "name": "search", "input": {"q": "x"}}]});
        assert_eq!(response_texts(&resp)[0].text, "hi");
        assert_eq!(response_tools(&resp)[0].name, "search");
    }

    #[test]
    fn responses_and_embeddings_inputs() {
        let body = json!({"instructions": "sys", "input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]}]});
        assert_eq!(
            request_texts(&body).iter().map(|s| s.text).collect::<Vec<_>>(),
            vec!["sys", "q"]
        );
        let emb = json!({"input": ["a", "b"]});
        assert_eq!(request_texts(&emb).len(), 2);
        let resp = json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "ans"}]}, {"type": "function_call", "name": "f", "arguments": "{}"}]});
        assert_eq!(response_texts(&resp)[0].text, "ans");
        assert_eq!(response_tools(&resp)[0].name, "f");
    }

    #[test]
    fn write_text_rewrites_only_the_target_string() {
        let mut body = json!({"messages": [{"role": "user", "content": "a@b.co"}], "model": "m"});
        let path = request_texts(&body)[0].path.clone();
        assert!(write_text(&mut body, &path, "[EMAIL]".into()));
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": "[EMAIL]"}], "model": "m"})
        );
        assert!(!write_text(&mut body, &[Seg::Key("nope")], "x".into()));
    }
}
