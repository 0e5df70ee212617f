//! SSE relay for streamed chat completions: frames the upstream's events, runs the output
//! chain over the generated text through one `OutputGuard` per choice (hold-back window,
//! redaction across chunk boundaries), rewrites each event's delta with the cleared text,
//! and on a block ends the stream with an explicit error event and `data: [DONE]`, never a
//! clean-looking truncation. Usage is captured from the upstream's final chunk, which is
//! forwarded only when the client asked for it.

use std::collections::BTreeMap;

use bytes::Bytes;
use kt_policy::stream::{OutputGuard, SseEvent, SseParser, Step, StreamFormat, set_text_delta, text_deltas};
use kt_policy::wire::anthropic::AnthropicToOpenAiStream;
use kt_policy::{CompiledPolicy, EvalOptions, Headers};
use pingora::Result;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::{Value, json};

use crate::respond;
use crate::upstream::Exchange;

/// Largest single event accepted from the upstream.
const MAX_EVENT: usize = 1024 * 1024;

async fn send(session: &mut Session, event: &SseEvent) -> Result<()> {
    session
        .write_response_body(Some(Bytes::from(event.to_bytes())), false)
        .await
}

async fn send_json(session: &mut Session, v: &Value) -> Result<()> {
    send(session, &SseEvent::data(v.to_string())).await
}

/// Ends the stream with an error event and `[DONE]`.
async fn fail(session: &mut Session, body: Value) -> Result<()> {
    send_json(session, &body).await?;
    send(session, &SseEvent::data("[DONE]")).await?;
    session.write_response_body(None, true).await
}

/// A chunk carrying `text` for choice `key`, shaped like the upstream's own chunks.
fn text_chunk(template: Option<&Value>, key: u64, text: String) -> Value {
    let mut v = template
        .cloned()
        .unwrap_or_else(|| json!({"object": "chat.completion.chunk"}));
    if let Some(o) = v.as_object_mut() {
        o.remove("usage");
    }
    v["choices"] = json!([{"index": key, "delta": {"content": text}, "finish_reason": null}]);
    v
}

#[allow(clippy::too_many_arguments)]
pub async fn relay(
    session: &mut Session,
    mut exchange: Exchange<'_>,
    policy: &CompiledPolicy,
    request: &Value,
    headers: &Headers,
    opts: EvalOptions,
    include_usage: bool,
    mut translator: Option<AnthropicToOpenAiStream>,
    extra: respond::Headers,
) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(4 + extra.len()))?;
    resp.insert_header("content-type", "text/event-stream")?;
    resp.insert_header("cache-control", "no-cache")?;
    resp.insert_header("transfer-encoding", "chunked")?;
    for (k, v) in &extra {
        resp.insert_header(*k, v.as_str())?;
    }
    session.write_response_header(Box::new(resp), false).await?;

    let mut parser = SseParser::new(MAX_EVENT);
    let mut guards: BTreeMap<u64, OutputGuard<'_>> = BTreeMap::new();
    let mut template: Option<Value> = None;
    let mut done = false;
    loop {
        let chunk = match exchange.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                return fail(
                    session,
                    respond::error("upstream_error", "upstream_stream_failed", e.to_string()),
                )
                .await;
            }
        };
        let events = match parser.push(&chunk) {
            Ok(ev) => ev,
            Err(e) => {
                return fail(
                    session,
                    respond::error("upstream_error", "invalid_upstream_stream", e.to_string()),
                )
                .await;
            }
        };
        let events = match translator.as_mut() {
            None => events,
            Some(t) => match to_openai_events(t, events) {
                Ok(ev) => ev,
                Err(msg) => {
                    return fail(session, respond::error("upstream_error", "upstream_stream_failed", msg)).await;
                }
            },
        };
        for event in events {
            if done {
                continue;
            }
            if event.is_done() {
                for (key, guard) in guards.iter_mut() {
                    match guard.finish() {
                        Step::Emit(t) if !t.is_empty() => {
                            send_json(session, &text_chunk(template.as_ref(), *key, t)).await?
                        }
                        Step::Emit(_) => {}
                        Step::Blocked(d) => return fail(session, output_blocked(&d)).await,
                    }
                }
                send(session, &event).await?;
                done = true;
                continue;
            }
            let Ok(mut v) = serde_json::from_str::<Value>(&event.data) else {
                send(session, &event).await?;
                continue;
            };
            let choices = v.get("choices").and_then(Value::as_array).cloned().unwrap_or_default();
            if choices.is_empty() && v.get("usage").is_some() {
                if include_usage {
                    send_json(session, &v).await?;
                }
                continue;
            }
            // Text still held for a choice goes out before that choice's finish reason.
            for c in &choices {
                let key = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                if c.get("finish_reason").is_some_and(|f| !f.is_null())
                    && let Some(guard) = guards.get_mut(&key)
                {
                    let pending_delta = c
                        .pointer("/delta/content")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    match guard.push(&pending_delta) {
                        Step::Blocked(d) => return fail(session, output_blocked(&d)).await,
                        Step::Emit(head) => {
                            let rest = match guard.finish() {
                                Step::Emit(t) => t,
                                Step::Blocked(d) => return fail(session, output_blocked(&d)).await,
                            };
                            let text = format!("{head}{rest}");
                            // A finish chunk usually has no content field: send the text
                            // in a chunk of its own, just before it.
                            if !set_text_delta(StreamFormat::OpenAiChat, &mut v, key, text.clone()) && !text.is_empty()
                            {
                                send_json(session, &text_chunk(template.as_ref(), key, text)).await?;
                            }
                        }
                    }
                }
            }
            let deltas: Vec<(u64, String)> = text_deltas(StreamFormat::OpenAiChat, &v)
                .into_iter()
                .filter(|(key, _)| {
                    !choices.iter().any(|c| {
                        c.get("index").and_then(Value::as_u64).unwrap_or(0) == *key
                            && c.get("finish_reason").is_some_and(|f| !f.is_null())
                            && guards.contains_key(key)
                    })
                })
                .map(|(k, t)| (k, t.to_owned()))
                .collect();
            for (key, text) in deltas {
                let guard = guards
                    .entry(key)
                    .or_insert_with(|| OutputGuard::new(policy, request, headers, opts));
                match guard.push(&text) {
                    Step::Emit(t) => {
                        set_text_delta(StreamFormat::OpenAiChat, &mut v, key, t);
                    }
                    Step::Blocked(d) => return fail(session, output_blocked(&d)).await,
                }
            }
            if let Some(o) = v.as_object_mut()
                && !include_usage
            {
                o.remove("usage");
            }
            template = Some(v.clone());
            if !only_empty_text(&v) {
                send_json(session, &v).await?;
            }
        }
    }
    if !done {
        return fail(
            session,
            respond::error(
                "upstream_error",
                "upstream_stream_ended",
                "the upstream ended the stream early",
            ),
        )
        .await;
    }
    exchange.release().await;
    session.write_response_body(None, true).await
}

/// Anthropic Messages events → OpenAI chunk events (and `[DONE]` after `message_stop`).
fn to_openai_events(
    t: &mut AnthropicToOpenAiStream,
    events: Vec<SseEvent>,
) -> std::result::Result<Vec<SseEvent>, String> {
    let mut out = Vec::new();
    for e in events {
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        let stop = v.get("type").and_then(Value::as_str) == Some("message_stop");
        out.extend(
            t.event(&v)
                .map_err(|w| w.0)?
                .into_iter()
                .map(|c| SseEvent::data(c.to_string())),
        );
        if stop {
            out.push(SseEvent::data("[DONE]"));
        }
    }
    Ok(out)
}

/// A chunk whose every delta is just `{"content": ""}` (text held back): nothing to send.
fn only_empty_text(v: &Value) -> bool {
    v.get("usage").is_none()
        && v.get("choices").and_then(Value::as_array).is_some_and(|choices| {
            !choices.is_empty()
                && choices.iter().all(|c| {
                    c.get("finish_reason").is_none_or(Value::is_null)
                        && c.get("delta")
                            .and_then(Value::as_object)
                            .is_some_and(|d| d.len() == 1 && d.get("content").and_then(Value::as_str) == Some(""))
                })
        })
}

fn output_blocked(d: &kt_policy::Decision) -> Value {
    let mut body = d.error_body();
    body["error"]["code"] = json!("output_blocked");
    body
}
