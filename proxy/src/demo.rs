//! A demo upstream for trying kt without a provider account: an OpenAI-compatible
//! `POST /v1/chat/completions` that echoes the last user message (as JSON, or as SSE
//! chunks when `stream: true`) and `GET /v1/models`. It runs no model and is meant for the
//! quick start and local experiments only.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};

use crate::GatewayError;

pub struct DemoProvider;

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// The answer text for a chat request.
fn answer_for(req: &Value) -> String {
    let last = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| match m.get("content") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(parts)) => Some(
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .unwrap_or_default();
    format!("(demo provider) You said: {last}")
}

fn chat(req: &Value) -> Response<Vec<u8>> {
    let model = req.get("model").cloned().unwrap_or_else(|| json!("demo"));
    let text = answer_for(req);
    let usage = json!({"prompt_tokens": 8, "completion_tokens": text.split_whitespace().count(), "total_tokens": 8 + text.split_whitespace().count()});
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        let body = json!({
            "id": "chatcmpl-demo", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        });
        return reply(200, "application/json", body.to_string().into_bytes());
    }
    let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut out = String::new();
    let mut push = |v: Value| out.push_str(&format!("data: {v}\n\n"));
    push(chunk(json!({"role": "assistant", "content": ""}), Value::Null));
    for word in text.split_inclusive(' ') {
        push(chunk(json!({"content": word}), Value::Null));
    }
    push(chunk(json!({}), json!("stop")));
    if req.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true) {
        push(
            json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage}),
        );
    }
    out.push_str("data: [DONE]\n\n");
    reply(200, "text/event-stream", out.into_bytes())
}

#[async_trait]
impl ServeHttp for DemoProvider {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.as_str().to_owned();
        let path = session.req_header().uri.path().to_owned();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body.extend_from_slice(&chunk);
            if body.len() > 16 * 1024 * 1024 {
                return reply(
                    413,
                    "application/json",
                    br#"{"error":{"message":"too large"}}"#.to_vec(),
                );
            }
        }
        match (method.as_str(), path.as_str()) {
            ("POST", p) if p.ends_with("/chat/completions") => match serde_json::from_slice::<Value>(&body) {
                Ok(req) => chat(&req),
                Err(e) => reply(
                    400,
                    "application/json",
                    json!({"error": {"message": e.to_string(), "type": "invalid_request_error"}})
                        .to_string()
                        .into_bytes(),
                ),
            },
            ("GET", p) if p.ends_with("/models") => reply(
                200,
                "application/json",
                json!({"object": "list", "data": [{"id": "demo", "object": "model", "owned_by": "kt-demo"}]})
                    .to_string()
                    .into_bytes(),
            ),
            _ => reply(
                404,
                "application/json",
                json!({"error": {"message": format!("no route for {method} {path}")}})
                    .to_string()
                    .into_bytes(),
            ),
        }
    }
}

/// Serves the demo provider until the process is stopped.
pub fn run_demo_provider(listen: &str) -> Result<(), GatewayError> {
    let mut server = crate::server(1, 0)?;
    let mut service = pingora::services::listening::Service::new("kt demo provider".to_owned(), DemoProvider);
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}
