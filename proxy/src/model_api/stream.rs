//! SSE relays for streamed answers. For chat completions: frames the upstream's events, runs the output
//! chain over the generated text through one `OutputGuard` per choice (hold-back window,
//! redaction across chunk boundaries), rewrites each event's delta with the cleared text,
//! and on a block ends the stream with an explicit error event and `data: [DONE]`, never a
//! clean-looking truncation. Usage is captured from the upstream's final chunk, which is
//! forwarded only when the client asked for it.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderValue;
use kt_policy::stream::{
    ANTHROPIC_FIELDS, CHAT_FIELDS, OutputGuard, RESPONSES_STREAMS, SseEvent, SseParser, Step, StreamFormat,
    anthropic_delta_type, chat_key, chat_key_parts, responses_key, responses_stream_key, set_text_delta, text_deltas,
};
use kt_policy::wire::anthropic::AnthropicToOpenAiStream;
use kt_policy::wire::openai::OpenAiToAnthropicStream;
use kt_policy::{CompiledPolicy, EvalOptions, Headers};
use pingora::Result;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession as Session;
use serde_json::{Value, json};

use super::meter::{self, Meter};
use crate::respond;
use crate::upstream::{Exchange, UpstreamError};

/// Why a guarded stream ends at an event it cannot read: text the policies cannot see is
/// never passed on.
const NOT_JSON: &str =
    "the upstream sent a stream event whose data is not JSON; the stream ends here rather than pass it on unchecked";

/// Relays a streamed answer in the client's API; whether the stream ran to its end.
/// `seen` gets the usage the stream reported, also when the relay ends early (the client
/// left, the upstream failed, a policy blocked): tokens the provider produced are counted
/// whatever the outcome.
pub(crate) async fn relay_for(
    gw: &crate::gateway::Gateway,
    session: &mut Session,
    a: &super::answer::Answered<'_>,
    client: crate::gateway::ClientApi,
    exchange: Exchange<'_>,
    h: respond::Headers,
    seen: &mut Option<kt_policy::usage::Usage>,
) -> Result<bool> {
    use crate::gateway::ClientApi;
    let anthropic = a.target.upstream.format == crate::upstream::WireFormat::Anthropic;
    let upstream = match client {
        ClientApi::Responses => StreamFormat::Responses,
        _ if anthropic => StreamFormat::Anthropic,
        _ => StreamFormat::OpenAiChat,
    };
    let mut meter = Meter::new(a.metered_output, upstream);
    let (policy, request, headers, opts) = (a.policy, &a.req.request, a.headers, gw.opts());
    match client {
        ClientApi::OpenAiChat => {
            let translator = anthropic.then(|| AnthropicToOpenAiStream::new(crate::ids::now_secs()));
            let include_usage = a.req.include_usage;
            let mut usage = None;
            let done = Box::pin(relay(
                session,
                exchange,
                policy,
                request,
                headers,
                opts,
                include_usage,
                translator,
                h,
                &mut usage,
                &mut meter,
            ))
            .await;
            *seen = usage.as_ref().and_then(kt_policy::usage::Usage::from_value);
            note_cut(seen, &meter);
            done
        }
        ClientApi::AnthropicMessages | ClientApi::Responses => {
            let (format, translator) = match client {
                ClientApi::AnthropicMessages => {
                    (StreamFormat::Anthropic, (!anthropic).then(OpenAiToAnthropicStream::new))
                }
                _ => (StreamFormat::Responses, None),
            };
            let mut usage = json!({});
            let done = Box::pin(relay_native(
                session, exchange, format, policy, request, headers, opts, translator, h, &mut usage, &mut meter,
            ))
            .await;
            *seen = kt_policy::usage::Usage::from_value(&usage);
            note_cut(seen, &meter);
            done
        }
        ClientApi::Embeddings => Ok(true),
    }
}

/// A stream its meter ended never reached the provider's usage: the output tokens counted
/// stand for it (charged to token windows; the budget keeps its whole reservation).
fn note_cut(seen: &mut Option<kt_policy::usage::Usage>, meter: &Meter) {
    if seen.is_none() && meter.tripped() {
        *seen = Some(kt_policy::usage::Usage {
            prompt: 0,
            completion: meter.counted(),
            cached: 0,
            reasoning: 0,
        });
    }
}

/// Where a relayed stream goes: the client's session (or a buffer, in tests).
pub trait StreamSink: Send {
    fn head(&mut self, head: Box<ResponseHeader>) -> impl Future<Output = Result<()>> + Send;
    fn body(&mut self, bytes: Bytes, end: bool) -> impl Future<Output = Result<()>> + Send;
}

impl StreamSink for Session {
    fn head(&mut self, head: Box<ResponseHeader>) -> impl Future<Output = Result<()>> + Send {
        self.write_response_header(head)
    }
    fn body(&mut self, bytes: Bytes, end: bool) -> impl Future<Output = Result<()>> + Send {
        self.write_response_body(bytes, end)
    }
}

/// Where a relayed stream comes from: the upstream's answer (or chunks, in tests).
pub trait StreamSource: Send {
    /// The next chunk if it can be had without waiting.
    fn ready_chunk(&mut self) -> Option<std::result::Result<Option<Bytes>, UpstreamError>>;
    /// The next chunk; `None` at the end.
    fn chunk(&mut self) -> impl Future<Output = std::result::Result<Option<Bytes>, UpstreamError>> + Send;
    /// The stream was read to its end: the connection may be reused.
    fn release(self);
}

impl StreamSource for Exchange<'_> {
    fn ready_chunk(&mut self) -> Option<std::result::Result<Option<Bytes>, UpstreamError>> {
        Exchange::ready_chunk(self)
    }
    fn chunk(&mut self) -> impl Future<Output = std::result::Result<Option<Bytes>, UpstreamError>> + Send {
        Exchange::chunk(self)
    }
    fn release(self) {
        Exchange::release(self)
    }
}

/// Largest single event accepted from the upstream.
const MAX_EVENT: usize = 1024 * 1024;

async fn send(session: &mut impl StreamSink, event: &SseEvent) -> Result<()> {
    session.body(Bytes::from(event.to_bytes()), false).await
}

async fn send_json(session: &mut impl StreamSink, v: &Value) -> Result<()> {
    send(session, &SseEvent::data(v.to_string())).await
}

/// The next upstream chunk. What is already readable is taken without waiting, so the
/// events of several upstream chunks leave in one write; before waiting for the upstream,
/// everything gathered is written to the client (nothing is held back for batching).
/// A body read that is not ready has consumed nothing, so dropping it loses no data.
async fn next_chunk(
    session: &mut impl StreamSink,
    exchange: &mut impl StreamSource,
    out: &mut Vec<u8>,
) -> Result<std::result::Result<Option<Bytes>, UpstreamError>> {
    if out.len() < 64 * 1024
        && let Some(ready) = exchange.ready_chunk()
    {
        return Ok(ready);
    }
    flush(session, out).await?;
    Ok(exchange.chunk().await)
}

/// Meters one upstream read's events against the budget reservation; the events past the
/// output it covers are dropped, and where they started is returned. Events after the
/// stream's end (`done`) are dropped by the relay, and not metered.
fn meter_events(events: &mut Vec<SseEvent>, done: bool, meter: &mut Meter) -> Option<usize> {
    if done {
        return None;
    }
    let beyond = meter.first_beyond(events.iter().map(|e| e.data.as_str()))?;
    events.truncate(beyond);
    Some(beyond)
}

/// Appends one `data:` event carrying `v`.
fn push_json(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(&SseEvent::data(v.to_string()).to_bytes());
}

/// Writes the events gathered from one upstream read in one go.
async fn flush(session: &mut impl StreamSink, out: &mut Vec<u8>) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let bytes = Bytes::from(std::mem::take(out));
    session.body(bytes, false).await
}

/// Ends the stream: what was cleared so far, an error event and `[DONE]`.
async fn fail(session: &mut impl StreamSink, out: &mut Vec<u8>, body: Value) -> Result<()> {
    push_json(out, &body);
    out.extend_from_slice(&SseEvent::data("[DONE]").to_bytes());
    flush(session, out).await?;
    session.body(Bytes::new(), true).await
}

async fn stream_header(session: &mut impl StreamSink, extra: &respond::Headers) -> Result<()> {
    use http::header::{CACHE_CONTROL, CONTENT_TYPE, TRANSFER_ENCODING};
    let fixed = [
        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (TRANSFER_ENCODING, HeaderValue::from_static("chunked")),
    ];
    let extra = extra.iter().map(|(k, v)| (k.clone(), v.as_str()));
    session.head(respond::head(200, fixed, extra)?).await
}

/// A chunk with `delta` for choice `key`, shaped like the upstream's own chunks.
fn chunk_like(template: Option<&Value>, key: u64, delta: Value) -> Value {
    let mut v = template
        .cloned()
        .unwrap_or_else(|| json!({"object": "chat.completion.chunk"}));
    if let Some(o) = v.as_object_mut() {
        o.remove("usage");
    }
    v["choices"] = json!([{"index": key, "delta": delta, "finish_reason": null}]);
    v
}

/// A chunk carrying `text` for the stream `key` (a choice and one of its text fields).
fn text_chunk(template: Option<&Value>, key: u64, text: String) -> Value {
    let (choice, field) = chat_key_parts(key);
    let mut delta = serde_json::Map::new();
    delta.insert(field.to_owned(), Value::String(text));
    chunk_like(template, choice, Value::Object(delta))
}

/// One relayed chat stream: a guard per (choice, text field), the tool calls being held,
/// the usage seen.
struct ChatRelay<'p> {
    policy: &'p CompiledPolicy,
    request: &'p Value,
    headers: &'p Headers,
    opts: EvalOptions,
    include_usage: bool,
    /// Streamed tool calls are held until complete, checked by the tool and output phases
    /// (their arguments are text the output policies read), then sent.
    hold_calls: bool,
    guards: BTreeMap<u64, OutputGuard<'p>>,
    /// The first chunk, the shape of the chunks the relay makes itself.
    template: Option<Value>,
    calls: Vec<HeldCall>,
    /// The usage seen, kept by the caller (read even when the relay ends in an error).
    usage: &'p mut Option<Value>,
    done: bool,
}

#[allow(clippy::too_many_arguments)]
pub async fn relay(
    session: &mut impl StreamSink,
    mut exchange: impl StreamSource,
    policy: &CompiledPolicy,
    request: &Value,
    headers: &Headers,
    opts: EvalOptions,
    include_usage: bool,
    mut translator: Option<AnthropicToOpenAiStream>,
    extra: respond::Headers,
    usage: &mut Option<Value>,
    meter: &mut Meter,
) -> Result<bool> {
    stream_header(session, &extra).await?;
    // Without output policies or translation, events pass through as they are; only a
    // usage chunk is looked at (captured, and dropped unless the client asked for it).
    let raw = translator.is_none()
        && !policy.runs_phase(kt_policy::Phase::Output)
        && !policy.runs_phase(kt_policy::Phase::Tool);
    let mut st = ChatRelay {
        policy,
        request,
        headers,
        opts,
        include_usage,
        hold_calls: policy.runs_phase(kt_policy::Phase::Tool) || policy.runs_phase(kt_policy::Phase::Output),
        guards: BTreeMap::new(),
        template: None,
        calls: Vec::new(),
        usage,
        done: false,
    };
    let mut parser = SseParser::new(MAX_EVENT);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let chunk = match next_chunk(session, &mut exchange, &mut out).await? {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let body = respond::error("upstream_error", "upstream_stream_failed", e.to_string());
                return fail(session, &mut out, body).await.map(|()| false);
            }
        };
        if let Err(body) = st.chunk(&chunk, &mut parser, translator.as_mut(), meter, raw, &mut out) {
            return fail(session, &mut out, body).await.map(|()| false);
        }
    }
    if !st.done {
        let body = respond::error(
            "upstream_error",
            "upstream_stream_ended",
            "the upstream ended the stream early",
        );
        return fail(session, &mut out, body).await.map(|()| false);
    }
    flush(session, &mut out).await?;
    exchange.release();
    session.body(Bytes::new(), true).await.map(|()| true)
}

impl ChatRelay<'_> {
    /// One upstream read: its events parsed, metered, translated and relayed into `out`.
    /// `Err` is the error event that ends the stream: a broken stream, a policy's block,
    /// or the budget spent (after the text the reservation covered).
    fn chunk(
        &mut self,
        chunk: &[u8],
        parser: &mut SseParser,
        translator: Option<&mut AnthropicToOpenAiStream>,
        meter: &mut Meter,
        raw: bool,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), Value> {
        let mut events = parser
            .push(chunk)
            .map_err(|e| respond::error("upstream_error", "invalid_upstream_stream", e.to_string()))?;
        let beyond = meter_events(&mut events, self.done, meter);
        let events = match translator {
            None => events,
            Some(t) => to_openai_events(t, events)
                .map_err(|msg| respond::error("upstream_error", "upstream_stream_failed", msg))?,
        };
        for event in events {
            if raw {
                self.raw_event(event, out);
            } else {
                self.event(event, out)?;
            }
        }
        if beyond.is_some() {
            // What the reservation covered and the output phase still held goes out first.
            self.drain_text(out)?;
            return Err(respond::error("rate_limit", "budget_exceeded", meter::SPENT));
        }
        Ok(())
    }

    /// An event of a stream no policy reads: passed on; a usage chunk is captured (and
    /// sent only when the client asked for usage).
    fn raw_event(&mut self, event: SseEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if event.is_done() {
            self.done = true;
        } else if event.data.contains("\"usage\"")
            && let Ok(v) = serde_json::from_str::<Value>(&event.data)
            && v.get("usage").is_some_and(Value::is_object)
        {
            *self.usage = v.get("usage").cloned();
            let only_usage = v.get("choices").and_then(Value::as_array).is_none_or(Vec::is_empty);
            if only_usage && !self.include_usage {
                return;
            }
        }
        out.extend_from_slice(&event.to_bytes());
    }

    /// One event through the guards. `Err` holds the error event that ends the stream.
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> std::result::Result<(), Value> {
        if self.done {
            return Ok(());
        }
        if event.is_done() {
            return self.finish(event, out);
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&event.data) else {
            if event.data.trim().is_empty() {
                out.extend_from_slice(&event.to_bytes());
                return Ok(());
            }
            return Err(respond::error("upstream_error", "invalid_upstream_stream", NOT_JSON));
        };
        let no_choices = v.get("choices").and_then(Value::as_array).is_none_or(Vec::is_empty);
        if no_choices && v.get("usage").is_some_and(Value::is_object) {
            *self.usage = v.get("usage").cloned();
            if self.include_usage {
                push_json(out, &v);
            }
            return Ok(());
        }
        let finishing = finishing_choices(&v);
        let in_chunk: Vec<(u64, String)> = text_deltas(StreamFormat::OpenAiChat, &v)
            .into_iter()
            .map(|(k, t)| (k, t.to_owned()))
            .collect();
        let flushed = self.flush_finishing(&finishing, &in_chunk, &mut v, out)?;
        for (key, text) in in_chunk.into_iter().filter(|(key, _)| !flushed.contains(key)) {
            let guard = self
                .guards
                .entry(key)
                .or_insert_with(|| OutputGuard::new(self.policy, self.request, self.headers, self.opts));
            match guard.push(&text) {
                Step::Emit(t) => {
                    set_text_delta(StreamFormat::OpenAiChat, &mut v, key, t);
                }
                Step::Blocked(d) => return Err(output_blocked(&d)),
            }
        }
        if self.hold_calls {
            hold_tool_calls(&mut v, &mut self.calls);
            if !finishing.is_empty() {
                self.release_calls(out)?;
            }
        }
        if let Some(o) = v.as_object_mut()
            && !self.include_usage
        {
            o.remove("usage");
        }
        if self.template.is_none() {
            self.template = Some(v.clone());
        }
        if !only_empty_text(&v) && !empty_delta(&v) {
            push_json(out, &v);
        }
        Ok(())
    }

    /// `[DONE]`: held tool calls and held text go out first.
    fn finish(&mut self, event: SseEvent, out: &mut Vec<u8>) -> std::result::Result<(), Value> {
        self.release_calls(out)?;
        for (key, guard) in self.guards.iter_mut() {
            match guard.finish() {
                Step::Emit(t) if !t.is_empty() => push_json(out, &text_chunk(self.template.as_ref(), *key, t)),
                Step::Emit(_) => {}
                Step::Blocked(d) => return Err(output_blocked(&d)),
            }
        }
        out.extend_from_slice(&event.to_bytes());
        self.done = true;
        Ok(())
    }

    /// The text every guard still holds, checked, for a stream that ends here.
    fn drain_text(&mut self, out: &mut Vec<u8>) -> std::result::Result<(), Value> {
        for (key, mut guard) in std::mem::take(&mut self.guards) {
            match guard.finish() {
                Step::Emit(t) if !t.is_empty() => push_json(out, &text_chunk(self.template.as_ref(), key, t)),
                Step::Emit(_) => {}
                Step::Blocked(d) => return Err(output_blocked(&d)),
            }
        }
        Ok(())
    }

    /// Text still held for a choice goes out before that choice's finish reason (with the
    /// text of this chunk); the stream keys flushed.
    fn flush_finishing(
        &mut self,
        finishing: &[u64],
        in_chunk: &[(u64, String)],
        v: &mut Value,
        out: &mut Vec<u8>,
    ) -> std::result::Result<Vec<u64>, Value> {
        let mut flushed = Vec::new();
        for choice in finishing {
            let keys = chat_key(*choice, 0)..chat_key(*choice, CHAT_FIELDS.len());
            let held: Vec<u64> = self.guards.range(keys).map(|(k, _)| *k).collect();
            for key in held {
                let Some(guard) = self.guards.get_mut(&key) else {
                    continue;
                };
                flushed.push(key);
                let pending = in_chunk.iter().find(|(k, _)| *k == key).map_or("", |(_, t)| t.as_str());
                let head = match guard.push(pending) {
                    Step::Emit(head) => head,
                    Step::Blocked(d) => return Err(output_blocked(&d)),
                };
                let rest = match guard.finish() {
                    Step::Emit(t) => t,
                    Step::Blocked(d) => return Err(output_blocked(&d)),
                };
                let text = format!("{head}{rest}");
                // A finish chunk usually has no such field: the text goes in a chunk of its
                // own, just before it.
                if !set_text_delta(StreamFormat::OpenAiChat, v, key, text.clone()) && !text.is_empty() {
                    push_json(out, &text_chunk(self.template.as_ref(), key, text));
                }
            }
        }
        Ok(flushed)
    }

    /// Checks the held tool calls (tool and output phases) and sends them.
    fn release_calls(&mut self, out: &mut Vec<u8>) -> std::result::Result<(), Value> {
        if self.calls.is_empty() {
            return Ok(());
        }
        let (policy, request, headers, opts) = (self.policy, self.request, self.headers, self.opts);
        match release_calls(policy, request, headers, opts, &mut self.calls, self.template.as_ref()) {
            Ok(chunks) => {
                chunks.iter().for_each(|c| push_json(out, c));
                Ok(())
            }
            Err(d) => Err(d.error_body()),
        }
    }
}

/// The choices of a chunk that carry a finish reason.
fn finishing_choices(v: &Value) -> Vec<u64> {
    v.get("choices")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .enumerate()
                .filter(|(_, c)| c.get("finish_reason").is_some_and(|f| !f.is_null()))
                .map(|(i, c)| c.get("index").and_then(Value::as_u64).unwrap_or(i as u64))
                .collect()
        })
        .unwrap_or_default()
}

/// A streamed tool call being assembled: (choice, call index, id, name, arguments).
#[derive(Debug)]
struct HeldCall {
    choice: u64,
    index: u64,
    id: Value,
    name: String,
    args: String,
}

/// Moves the tool-call deltas of `v` into `calls`.
fn hold_tool_calls(v: &mut Value, calls: &mut Vec<HeldCall>) {
    let Some(cs) = v.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for (i, c) in cs.iter_mut().enumerate() {
        let choice = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
        let Some(Value::Array(tcs)) = c
            .get_mut("delta")
            .and_then(Value::as_object_mut)
            .and_then(|d| d.remove("tool_calls"))
        else {
            continue;
        };
        for tc in tcs {
            let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
            let at = match calls.iter().position(|h| h.choice == choice && h.index == index) {
                Some(at) => at,
                None => {
                    calls.push(HeldCall {
                        choice,
                        index,
                        id: Value::Null,
                        name: String::new(),
                        args: String::new(),
                    });
                    calls.len() - 1
                }
            };
            let held = &mut calls[at];
            if let Some(id) = tc.get("id").filter(|id| !id.is_null()) {
                held.id = id.clone();
            }
            if let Some(n) = tc.pointer("/function/name").and_then(Value::as_str) {
                held.name.push_str(n);
            }
            if let Some(a) = tc.pointer("/function/arguments").and_then(Value::as_str) {
                held.args.push_str(a);
            }
        }
    }
}

/// Runs the tool phase (and output phase) over the complete held tool calls; on a pass,
/// the chunks that carry them (arguments as the policies left them), one per choice.
fn release_calls(
    policy: &CompiledPolicy,
    request: &Value,
    headers: &Headers,
    opts: EvalOptions,
    calls: &mut Vec<HeldCall>,
    template: Option<&Value>,
) -> std::result::Result<Vec<Value>, Box<kt_policy::Decision>> {
    let mut choices: Vec<u64> = calls.iter().map(|c| c.choice).collect();
    choices.dedup();
    let mut chunks = Vec::new();
    for choice in choices {
        let tool_calls: Vec<Value> = calls
            .iter()
            .filter(|c| c.choice == choice)
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args}}))
            .collect();
        let mut resp = json!({"choices": [{"index": choice, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": tool_calls}}]});
        let d = policy.evaluate_response(request, &mut resp, headers, opts);
        if d.verdict.is_terminal() {
            calls.clear();
            return Err(Box::new(d));
        }
        let checked: Vec<Value> = resp
            .pointer("/choices/0/message/tool_calls")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let mut c = c.clone();
                        c["index"] = json!(i);
                        c
                    })
                    .collect()
            })
            .unwrap_or_default();
        chunks.push(chunk_like(template, choice, json!({"tool_calls": checked})));
    }
    calls.clear();
    Ok(chunks)
}

/// A chunk whose every choice has an empty delta and no finish reason (its tool-call
/// deltas were taken out to be held).
fn empty_delta(v: &Value) -> bool {
    v.get("usage").is_none_or(Value::is_null)
        && v.get("choices").and_then(Value::as_array).is_some_and(|cs| {
            !cs.is_empty()
                && cs.iter().all(|c| {
                    c.get("finish_reason").is_none_or(Value::is_null)
                        && c.get("delta")
                            .and_then(Value::as_object)
                            .is_some_and(|d| d.values().all(Value::is_null))
                })
        })
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

/// A chunk whose every delta is only empty text fields (text held back): nothing to send.
fn only_empty_text(v: &Value) -> bool {
    v.get("usage").is_none()
        && v.get("choices").and_then(Value::as_array).is_some_and(|choices| {
            !choices.is_empty()
                && choices.iter().all(|c| {
                    c.get("finish_reason").is_none_or(Value::is_null)
                        && c.get("delta").and_then(Value::as_object).is_some_and(|d| {
                            !d.is_empty()
                                && d.iter()
                                    .all(|(k, v)| CHAT_FIELDS.contains(&k.as_str()) && v.as_str() == Some(""))
                        })
                })
        })
}

fn output_blocked(d: &kt_policy::Decision) -> Value {
    let mut body = d.error_body();
    body["error"]["code"] = json!("output_blocked");
    body
}

/// Replays a cached chat completion to a streaming client: one role chunk, one chunk per
/// choice with its whole text (and tool calls), the finish chunks, usage when asked, `[DONE]`.
pub async fn replay(
    session: &mut impl StreamSink,
    body: &[u8],
    include_usage: bool,
    extra: respond::Headers,
) -> Result<()> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    stream_header(session, &extra).await?;
    let base = json!({
        "id": v.get("id").cloned().unwrap_or_else(|| json!("")),
        "object": "chat.completion.chunk",
        "created": v.get("created").cloned().unwrap_or_else(|| json!(0)),
        "model": v.get("model").cloned().unwrap_or_else(|| json!("")),
    });
    let chunk = |choices: Value| {
        let mut c = base.clone();
        c["choices"] = choices;
        c
    };
    for (i, choice) in v
        .get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let index = choice.get("index").cloned().unwrap_or_else(|| json!(i));
        let msg = choice.get("message").unwrap_or(&Value::Null);
        send_json(
            session,
            &chunk(json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])),
        )
        .await?;
        let mut delta = serde_json::Map::new();
        if let Some(c) = msg.get("content").filter(|c| !c.is_null()) {
            delta.insert("content".into(), c.clone());
        }
        if let Some(Value::Array(calls)) = msg.get("tool_calls") {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let mut c = c.clone();
                    c["index"] = json!(k);
                    c
                })
                .collect();
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        if !delta.is_empty() {
            send_json(
                session,
                &chunk(json!([{"index": index, "delta": delta, "finish_reason": null}])),
            )
            .await?;
        }
        send_json(
            session,
            &chunk(json!([{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason").cloned().unwrap_or_else(|| json!("stop"))}])),
        )
        .await?;
    }
    if include_usage && let Some(u) = v.get("usage") {
        let mut c = chunk(json!([]));
        c["usage"] = u.clone();
        send_json(session, &c).await?;
    }
    send(session, &SseEvent::data("[DONE]")).await?;
    session.body(Bytes::new(), true).await
}

/// An error event in the client's stream format, then `[DONE]`.
async fn fail_native(
    session: &mut impl StreamSink,
    out: &mut Vec<u8>,
    format: StreamFormat,
    code: &str,
    message: String,
    policy: Option<&str>,
) -> Result<()> {
    let event = match format {
        StreamFormat::Responses => SseEvent {
            event: Some("error".into()),
            data: json!({"type": "error", "code": code, "message": message, "param": null, "policy": policy}).to_string(),
        },
        _ => SseEvent {
            event: Some("error".into()),
            data: json!({"type": "error", "error": {"type": error_type(code, policy), "code": code, "message": message, "policy": policy}}).to_string(),
        },
    };
    out.extend_from_slice(&event.to_bytes());
    out.extend_from_slice(&SseEvent::data("[DONE]").to_bytes());
    flush(session, out).await?;
    session.body(Bytes::new(), true).await
}

/// The error type of an error event ending a native stream.
fn error_type(code: &str, policy: Option<&str>) -> &'static str {
    match (policy, code) {
        (Some(_), _) => "policy_violation",
        (None, "budget_exceeded") => "rate_limit",
        _ => "upstream_error",
    }
}

async fn blocked_native(
    session: &mut impl StreamSink,
    out: &mut Vec<u8>,
    format: StreamFormat,
    d: &kt_policy::Decision,
) -> Result<()> {
    let body = output_blocked(d);
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("response blocked by policy")
        .to_owned();
    fail_native(session, out, format, "output_blocked", message, d.policy).await
}

/// The synthetic delta event carrying held-back text for stream `key` (sent before the
/// event that closes that stream).
fn delta_event(format: StreamFormat, key: u64, text: String, closing: &Value, field: &str) -> SseEvent {
    match format {
        StreamFormat::Responses => {
            let kind = RESPONSES_STREAMS[((key >> 8) & 0xff) as usize % RESPONSES_STREAMS.len()].0;
            let mut event = serde_json::Map::new();
            event.insert("type".into(), json!(kind));
            for name in ["item_id", "output_index", "content_index", "summary_index"] {
                if let Some(x) = closing.get(name) {
                    event.insert(name.into(), x.clone());
                }
            }
            event.insert("delta".into(), Value::String(text));
            SseEvent {
                event: Some(kind.into()),
                data: Value::Object(event).to_string(),
            }
        }
        _ => SseEvent {
            event: Some("content_block_delta".into()),
            data: json!({"type": "content_block_delta", "index": key, "delta": {"type": anthropic_delta_type(field), field: text}}).to_string(),
        },
    }
}

/// Responses events that repeat the whole text: put the text the client actually received.
fn rewrite_full_text(v: &mut Value, kind: &str, sent: &BTreeMap<u64, String>) {
    let index = |v: &Value, name: &str| v.get(name).and_then(Value::as_u64).unwrap_or(0);
    if let Some((key, true)) = responses_key(v) {
        let field = RESPONSES_STREAMS[((key >> 8) & 0xff) as usize % RESPONSES_STREAMS.len()].2;
        if let Some(t) = sent.get(&key) {
            v[field] = json!(t);
        }
        return;
    }
    match kind {
        "response.content_part.done" => {
            let (oi, ci) = (index(v, "output_index"), index(v, "content_index"));
            if let Some(part) = v.get_mut("part") {
                rewrite_part(part, oi, ci, sent);
            }
        }
        "response.output_item.done" => {
            let oi = index(v, "output_index");
            if let Some(item) = v.get_mut("item") {
                rewrite_item(item, oi, sent);
            }
        }
        "response.completed" | "response.incomplete" | "response.failed" => {
            if let Some(Value::Array(items)) = v.pointer_mut("/response/output") {
                for (i, item) in items.iter_mut().enumerate() {
                    rewrite_item(item, i as u64, sent);
                }
            }
        }
        _ => {}
    }
}

/// One output item of a Responses answer, with each streamed text as the client got it.
fn rewrite_item(item: &mut Value, oi: u64, sent: &BTreeMap<u64, String>) {
    match item.get("type").and_then(Value::as_str) {
        Some("function_call") => {
            if let Some(t) = sent.get(&responses_stream_key(oi, 2, 0)) {
                item["arguments"] = json!(t);
            }
        }
        Some("reasoning") => {
            if let Some(Value::Array(parts)) = item.get_mut("summary") {
                for (j, part) in parts.iter_mut().enumerate() {
                    if let Some(t) = sent.get(&responses_stream_key(oi, 3, j as u64)) {
                        part["text"] = json!(t);
                    }
                }
            }
        }
        _ => {
            if let Some(Value::Array(parts)) = item.get_mut("content") {
                for (j, part) in parts.iter_mut().enumerate() {
                    rewrite_part(part, oi, j as u64, sent);
                }
            }
        }
    }
}

/// A message content part: its `text` (output text) or `refusal` as streamed.
fn rewrite_part(part: &mut Value, oi: u64, ci: u64, sent: &BTreeMap<u64, String>) {
    let (kind, field) = match part.get("type").and_then(Value::as_str) {
        Some("output_text") => (0, "text"),
        Some("refusal") => (1, "refusal"),
        _ => return,
    };
    if let Some(t) = sent.get(&responses_stream_key(oi, kind, ci)) {
        part[field] = json!(t);
    }
}

/// Responses events that carry whole output items (an item done, the completed answer):
/// the output phase runs over them as over a whole answer, so text the stream never sent
/// as deltas cannot reach the client unchecked. `Err` holds the decision of a block.
fn check_whole_items(
    v: &mut Value,
    kind: &str,
    policy: &CompiledPolicy,
    request: &Value,
    headers: &Headers,
    opts: EvalOptions,
) -> std::result::Result<(), Box<kt_policy::Decision>> {
    let (slot, wrap) = match kind {
        "response.output_item.done" => ("item", true),
        "response.completed" | "response.incomplete" | "response.failed" => ("response", false),
        _ => return Ok(()),
    };
    let Some(inner) = v.get_mut(slot) else { return Ok(()) };
    let mut body = if wrap {
        json!({"output": [std::mem::take(inner)]})
    } else {
        std::mem::take(inner)
    };
    let d = policy.evaluate_response(request, &mut body, headers, opts);
    *inner = if wrap {
        body.pointer_mut("/output/0").map(std::mem::take).unwrap_or(Value::Null)
    } else {
        body
    };
    if d.verdict.is_terminal() {
        Err(Box::new(d))
    } else {
        Ok(())
    }
}

/// Why a native stream ends early.
enum NativeStop {
    /// The upstream's stream is unusable: (reason code, message).
    Upstream(&'static str, String),
    /// The output phase blocked the answer.
    Blocked(Box<kt_policy::Decision>),
    /// The answer went beyond its budget reservation.
    Spent,
}

/// One relayed Anthropic Messages or Responses stream: a guard per block (or Responses text
/// stream), what each stream sent, the usage seen.
struct NativeRelay<'p> {
    format: StreamFormat,
    policy: &'p CompiledPolicy,
    request: &'p Value,
    headers: &'p Headers,
    opts: EvalOptions,
    guards: BTreeMap<u64, OutputGuard<'p>>,
    /// The text each stream has sent, for the events that repeat it whole.
    sent: BTreeMap<u64, String>,
    /// Anthropic: the delta field of each block (text, thinking, a tool call's JSON).
    fields: BTreeMap<u64, &'static str>,
    /// Responses: the first delta event of each text stream (its item and indexes), the
    /// shape of a delta the relay makes itself when the stream ends early.
    templates: BTreeMap<u64, Value>,
    /// The usage seen, kept by the caller (read even when the relay ends in an error).
    usage: &'p mut Value,
    done: bool,
}

/// SSE relay for Anthropic Messages (`/v1/messages`, native or translated from chat chunks)
/// and OpenAI Responses streams: the same guarded output phase as `relay`, with held text
/// flushed before each block's closing event and whole-text repeats rewritten. Returns the
/// usage the stream reported.
#[allow(clippy::too_many_arguments)]
pub async fn relay_native(
    session: &mut impl StreamSink,
    mut exchange: impl StreamSource,
    format: StreamFormat,
    policy: &CompiledPolicy,
    request: &Value,
    headers: &Headers,
    opts: EvalOptions,
    mut translator: Option<OpenAiToAnthropicStream>,
    extra: respond::Headers,
    usage: &mut Value,
    meter: &mut Meter,
) -> Result<bool> {
    stream_header(session, &extra).await?;
    let mut st = NativeRelay {
        format,
        policy,
        request,
        headers,
        opts,
        guards: BTreeMap::new(),
        sent: BTreeMap::new(),
        fields: BTreeMap::new(),
        templates: BTreeMap::new(),
        usage,
        done: false,
    };
    let mut parser = SseParser::new(MAX_EVENT);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let step = match next_chunk(session, &mut exchange, &mut out).await? {
            Ok(Some(chunk)) => st.chunk(&chunk, &mut parser, translator.as_mut(), meter, &mut out),
            Ok(None) => break,
            Err(e) => Err(NativeStop::Upstream("upstream_stream_failed", e.to_string())),
        };
        if let Err(stop) = step {
            return end_native(session, &mut out, format, stop).await.map(|()| false);
        }
    }
    if !st.done {
        let msg = "the upstream ended the stream early".to_owned();
        return fail_native(session, &mut out, format, "upstream_stream_ended", msg, None)
            .await
            .map(|()| false);
    }
    flush(session, &mut out).await?;
    exchange.release();
    session.body(Bytes::new(), true).await.map(|()| true)
}

/// Ends a native stream early with the event `stop` calls for.
async fn end_native(
    session: &mut impl StreamSink,
    out: &mut Vec<u8>,
    format: StreamFormat,
    stop: NativeStop,
) -> Result<()> {
    match stop {
        NativeStop::Upstream(code, msg) => fail_native(session, out, format, code, msg, None).await,
        NativeStop::Blocked(d) => blocked_native(session, out, format, &d).await,
        NativeStop::Spent => fail_native(session, out, format, "budget_exceeded", meter::SPENT.into(), None).await,
    }
}

/// Chat chunks → Anthropic Messages events (a `[DONE]` finishes the message).
fn to_anthropic_events(t: &mut OpenAiToAnthropicStream, events: Vec<SseEvent>) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for e in events {
        let produced = if e.is_done() {
            t.finish()
        } else {
            match serde_json::from_str::<Value>(&e.data) {
                Ok(v) => t.event(&v),
                Err(_) => continue,
            }
        };
        out.extend(produced.into_iter().map(|(name, v)| SseEvent {
            event: Some(name.to_owned()),
            data: v.to_string(),
        }));
    }
    out
}

impl NativeRelay<'_> {
    /// One upstream read: its events parsed, metered, translated and relayed into `out`.
    fn chunk(
        &mut self,
        chunk: &[u8],
        parser: &mut SseParser,
        translator: Option<&mut OpenAiToAnthropicStream>,
        meter: &mut Meter,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), NativeStop> {
        let mut events = parser
            .push(chunk)
            .map_err(|e| NativeStop::Upstream("invalid_upstream_stream", e.to_string()))?;
        let beyond = meter_events(&mut events, self.done, meter);
        let events = match translator {
            Some(t) => to_anthropic_events(t, events),
            None => events,
        };
        for e in events {
            self.event(e, out)?;
        }
        if beyond.is_some() {
            // What the reservation covered and the guards held goes first.
            self.drain_text(out)?;
            return Err(NativeStop::Spent);
        }
        Ok(())
    }

    /// One event through the guards.
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> std::result::Result<(), NativeStop> {
        if self.done {
            return Ok(());
        }
        if event.is_done() {
            out.extend_from_slice(&event.to_bytes());
            self.done = true;
            return Ok(());
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&event.data) else {
            if event.data.trim().is_empty() {
                out.extend_from_slice(&event.to_bytes());
                return Ok(());
            }
            return Err(NativeStop::Upstream("invalid_upstream_stream", NOT_JSON.into()));
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
        self.note_usage(&kind, &v);
        self.close_stream(&kind, &v, out)?;
        let held_everything = self.guard_deltas(&mut v)?;
        if self.format == StreamFormat::Responses {
            rewrite_full_text(&mut v, &kind, &self.sent);
            check_whole_items(&mut v, &kind, self.policy, self.request, self.headers, self.opts)
                .map_err(NativeStop::Blocked)?;
        }
        if held_everything {
            return Ok(());
        }
        out.extend_from_slice(
            &SseEvent {
                event: event.event,
                data: v.to_string(),
            }
            .to_bytes(),
        );
        if matches!(
            kind.as_str(),
            "message_stop" | "response.completed" | "response.incomplete" | "response.failed"
        ) {
            self.done = true;
        }
        Ok(())
    }

    /// Usage as the stream reports it.
    fn note_usage(&mut self, kind: &str, v: &Value) {
        match kind {
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage").and_then(Value::as_object) {
                    for (k, x) in u {
                        self.usage[k] = x.clone();
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage").and_then(Value::as_object) {
                    for (k, x) in u {
                        if !(x.as_u64() == Some(0) && self.usage.get(k).is_some()) {
                            self.usage[k] = x.clone();
                        }
                    }
                }
            }
            "response.completed" | "response.incomplete" => {
                if let Some(u) = v.pointer("/response/usage") {
                    *self.usage = u.clone();
                }
            }
            _ => {}
        }
    }

    /// Held text goes out before the event that closes its block or text stream.
    fn close_stream(&mut self, kind: &str, v: &Value, out: &mut Vec<u8>) -> std::result::Result<(), NativeStop> {
        let closing = match (self.format, kind) {
            (StreamFormat::Anthropic, "content_block_stop") => v.get("index").and_then(Value::as_u64),
            (StreamFormat::Responses, _) => responses_key(v).filter(|(_, closes)| *closes).map(|(k, _)| k),
            _ => None,
        };
        let Some(key) = closing else { return Ok(()) };
        let Some(mut guard) = self.guards.remove(&key) else {
            return Ok(());
        };
        match guard.finish() {
            Step::Emit(t) if !t.is_empty() => {
                self.sent.entry(key).or_default().push_str(&t);
                let field = self.fields.get(&key).copied().unwrap_or("text");
                out.extend_from_slice(&delta_event(self.format, key, t, v, field).to_bytes());
                Ok(())
            }
            Step::Emit(_) => Ok(()),
            Step::Blocked(d) => Err(NativeStop::Blocked(d)),
        }
    }

    /// The text every guard still holds, checked, for a stream that ends here.
    fn drain_text(&mut self, out: &mut Vec<u8>) -> std::result::Result<(), NativeStop> {
        for (key, mut guard) in std::mem::take(&mut self.guards) {
            match guard.finish() {
                Step::Emit(t) if !t.is_empty() => {
                    let field = self.fields.get(&key).copied().unwrap_or("text");
                    let shape = self.templates.get(&key).unwrap_or(&Value::Null);
                    out.extend_from_slice(&delta_event(self.format, key, t, shape, field).to_bytes());
                }
                Step::Emit(_) => {}
                Step::Blocked(d) => return Err(NativeStop::Blocked(d)),
            }
        }
        Ok(())
    }

    /// Hands the event's text deltas to their guards and writes back what may be sent;
    /// whether everything was held (the event then goes nowhere).
    fn guard_deltas(&mut self, v: &mut Value) -> std::result::Result<bool, NativeStop> {
        let deltas: Vec<(u64, String)> = text_deltas(self.format, v)
            .into_iter()
            .map(|(k, t)| (k, t.to_owned()))
            .collect();
        if let (Some((key, _)), Some(d)) = (deltas.first(), v.get("delta")) {
            // Held text of this block goes out later in a delta of the block's own kind.
            if let Some(f) = ANTHROPIC_FIELDS.iter().find(|f| d.get(**f).is_some()) {
                self.fields.insert(*key, f);
            }
        }
        let mut held_everything = !deltas.is_empty();
        if self.format == StreamFormat::Responses {
            for (key, _) in &deltas {
                if !self.templates.contains_key(key) {
                    // Only what names the text stream (its item and indexes).
                    let shape: serde_json::Map<String, Value> =
                        ["item_id", "output_index", "content_index", "summary_index"]
                            .iter()
                            .filter_map(|n| v.get(*n).map(|x| ((*n).to_owned(), x.clone())))
                            .collect();
                    self.templates.insert(*key, Value::Object(shape));
                }
            }
        }
        for (key, text) in deltas {
            let guard = self
                .guards
                .entry(key)
                .or_insert_with(|| OutputGuard::new(self.policy, self.request, self.headers, self.opts));
            match guard.push(&text) {
                Step::Emit(t) => {
                    held_everything &= t.is_empty();
                    self.sent.entry(key).or_default().push_str(&t);
                    set_text_delta(self.format, v, key, t);
                }
                Step::Blocked(d) => return Err(NativeStop::Blocked(d)),
            }
        }
        Ok(held_everything)
    }
}

#[cfg(test)]
mod tests {
    //! The streamed answer a client gets equals the whole answer after policies, however the
    //! upstream's bytes are cut: every split point, and random cuttings into small pieces.

    use std::collections::VecDeque;

    use kt_policy::config::{Source, load_sources};

    use super::*;

    /// Chunks handed out one at a time, as an upstream would.
    struct Chunks(VecDeque<Bytes>);

    impl StreamSource for Chunks {
        fn ready_chunk(&mut self) -> Option<std::result::Result<Option<Bytes>, UpstreamError>> {
            Some(Ok(self.0.pop_front()))
        }
        async fn chunk(&mut self) -> std::result::Result<Option<Bytes>, UpstreamError> {
            Ok(self.0.pop_front())
        }
        fn release(self) {}
    }

    /// What the client was sent.
    #[derive(Default)]
    struct Client(Vec<u8>);

    impl StreamSink for Client {
        async fn head(&mut self, _: Box<ResponseHeader>) -> Result<()> {
            Ok(())
        }
        async fn body(&mut self, bytes: Bytes, _: bool) -> Result<()> {
            self.0.extend_from_slice(&bytes);
            Ok(())
        }
    }

    fn policy() -> CompiledPolicy {
        let yaml = "pack: {name: t, version: 1.0.0, enabled: true}\npolicies: {chain: [pii-detector, dlp-filter]}\npolicy:\n  dlp-filter: {action: redact, sensitivity_level: restricted, blocked_terms: [Project Falcon]}\n";
        let out = load_sources(&[Source {
            name: "t.yaml".into(),
            text: yaml.into(),
        }]);
        CompiledPolicy::compile(out.config.expect("valid")).expect("compiles")
    }

    /// An answer holding secrets, longer than the hold-back window.
    fn text() -> String {
        format!(
            "{}Write to jane.doe@example.com or call 415-555-0132 about project\nfalcon; the key is AKIAIOSFODNN7EXAMPLE. {}",
            "Some harmless words to start the answer with. ".repeat(6),
            "And more harmless text after it all. ".repeat(6)
        )
    }

    /// The text as deltas: cut at `split` (a byte offset), the rest in pieces of 7 characters.
    fn pieces(text: &str, split: usize) -> Vec<String> {
        let (head, tail) = text.split_at(split);
        let chars: Vec<char> = tail.chars().collect();
        let mut out = vec![head.to_owned()];
        out.extend(chars.chunks(7).map(|c| c.iter().collect::<String>()));
        out.retain(|p| !p.is_empty());
        out
    }

    fn sse(events: &[(Option<&str>, Value)]) -> Vec<u8> {
        let owned: Vec<(Option<String>, String)> = events
            .iter()
            .map(|(n, d)| (n.map(str::to_owned), d.to_string()))
            .collect();
        kt_testkit::mock::encode_events(&owned)
    }

    fn chat_stream(text: &str, split: usize) -> Vec<u8> {
        let chunk = |delta: Value, finish: Value| {
            (
                None,
                json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
            )
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        events.extend(
            pieces(text, split)
                .into_iter()
                .map(|p| chunk(json!({"content": p}), Value::Null)),
        );
        events.push(chunk(json!({}), json!("stop")));
        let mut bytes = sse(&events);
        bytes.extend_from_slice(b"data: [DONE]\n\n");
        bytes
    }

    fn anthropic_stream(text: &str, split: usize) -> Vec<u8> {
        let mut events = vec![
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "m", "content": [], "usage": {"input_tokens": 1}}}),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
        ];
        events.extend(pieces(text, split).into_iter().map(|p| {
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
            )
        }));
        events.push((
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push((Some("message_stop"), json!({"type": "message_stop"})));
        sse(&events)
    }

    fn responses_stream(text: &str, split: usize) -> Vec<u8> {
        let part = json!({"type": "output_text", "text": text});
        let item = json!({"id": "i", "type": "message", "role": "assistant", "content": [part]});
        let mut events = vec![(
            Some("response.created"),
            json!({"type": "response.created", "response": {"id": "r", "output": []}}),
        )];
        events.extend(pieces(text, split).into_iter().map(|p| {
            (
                Some("response.output_text.delta"),
                json!({"type": "response.output_text.delta", "item_id": "i", "output_index": 0, "content_index": 0, "delta": p}),
            )
        }));
        events.push((Some("response.output_text.done"), json!({"type": "response.output_text.done", "item_id": "i", "output_index": 0, "content_index": 0, "text": text})));
        events.push((Some("response.content_part.done"), json!({"type": "response.content_part.done", "item_id": "i", "output_index": 0, "content_index": 0, "part": part})));
        events.push((
            Some("response.output_item.done"),
            json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        ));
        events.push((
            Some("response.completed"),
            json!({"type": "response.completed", "response": {"id": "r", "output": [item]}}),
        ));
        sse(&events)
    }

    /// Builds the upstream bytes of a streamed answer whose first delta ends at a split.
    type StreamOf = fn(&str, usize) -> Vec<u8>;

    /// Where each event of an SSE byte stream ends.
    fn event_ends(bytes: &[u8]) -> Vec<usize> {
        bytes
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"\n\n")
            .map(|(i, _)| i + 2)
            .collect()
    }

    /// Runs the relay of `format` over `bytes` cut at `cuts`; the client's bytes.
    fn relay_cut(
        rt: &tokio::runtime::Runtime,
        policy: &CompiledPolicy,
        format: StreamFormat,
        bytes: &[u8],
        cuts: &[usize],
        mut meter: Meter,
    ) -> Vec<u8> {
        let mut chunks = VecDeque::new();
        let mut at = 0;
        for &c in cuts.iter().chain([bytes.len()].iter()) {
            if c > at {
                chunks.push_back(Bytes::copy_from_slice(&bytes[at..c]));
                at = c;
            }
        }
        let request = json!({"messages": []});
        let headers = Headers::new();
        let opts = EvalOptions::default();
        let mut client = Client::default();
        rt.block_on(async {
            let source = Chunks(chunks);
            let done = match format {
                StreamFormat::OpenAiChat => {
                    relay(
                        &mut client,
                        source,
                        policy,
                        &request,
                        &headers,
                        opts,
                        false,
                        None,
                        Vec::new(),
                        &mut None,
                        &mut meter,
                    )
                    .await
                }
                _ => {
                    relay_native(
                        &mut client,
                        source,
                        format,
                        policy,
                        &request,
                        &headers,
                        opts,
                        None,
                        Vec::new(),
                        &mut json!({}),
                        &mut meter,
                    )
                    .await
                }
            };
            done.expect("relayed");
        });
        client.0
    }

    /// The text the client received, and every whole-text repeat it was sent.
    fn received(format: StreamFormat, bytes: &[u8]) -> (String, Vec<String>) {
        let mut parser = SseParser::new(MAX_EVENT);
        let events = parser.push(bytes).expect("client gets valid SSE");
        let (mut text, mut repeats) = (String::new(), Vec::new());
        for e in events.iter().filter(|e| !e.is_done()) {
            let v: Value = serde_json::from_str(&e.data).expect("client events are JSON");
            assert!(
                v.get("error").is_none() && v.get("type") != Some(&json!("error")),
                "{v}"
            );
            match format {
                StreamFormat::OpenAiChat => text.push_str(
                    v.pointer("/choices/0/delta/content")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                ),
                StreamFormat::Anthropic => {
                    text.push_str(v.pointer("/delta/text").and_then(Value::as_str).unwrap_or(""))
                }
                StreamFormat::Responses => {
                    for pointer in [
                        "/text",
                        "/part/text",
                        "/item/content/0/text",
                        "/response/output/0/content/0/text",
                    ] {
                        if v["type"] != json!("response.output_text.delta")
                            && let Some(t) = v.pointer(pointer).and_then(Value::as_str)
                        {
                            repeats.push(t.to_owned());
                        }
                    }
                    if v["type"] == json!("response.output_text.delta") {
                        text.push_str(v["delta"].as_str().unwrap_or(""));
                    }
                }
            }
        }
        (text, repeats)
    }

    /// The whole answer's text after the output policies.
    fn whole(policy: &CompiledPolicy, text: &str) -> String {
        let mut answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]});
        let d = policy.evaluate_response(
            &json!({"messages": []}),
            &mut answer,
            &Headers::new(),
            EvalOptions::default(),
        );
        assert_eq!(d.verdict, kt_policy::Verdict::Redact);
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    #[test]
    fn any_cutting_of_the_upstream_bytes_gives_the_whole_answer_after_policies() {
        let policy = policy();
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let text = text();
        let want = whole(&policy, &text);
        for secret in [
            "jane.doe@example.com",
            "415-555-0132",
            "AKIAIOSFODNN7EXAMPLE",
            "project\nfalcon",
        ] {
            assert!(text.contains(secret) && !want.contains(secret), "{secret} in {want}");
        }
        // The secrets split at every position between two deltas (one upstream chunk per
        // event), then the bytes of a stream cut at random into pieces of 1 to 32 bytes.
        let mut splits: Vec<usize> = Vec::new();
        for secret in [
            "jane.doe@example.com",
            "415-555-0132",
            "AKIAIOSFODNN7EXAMPLE",
            "project\nfalcon",
        ] {
            let at = text.find(secret).unwrap_or(0);
            splits.extend((at.saturating_sub(2)..=at + secret.len() + 2).filter(|c| text.is_char_boundary(*c)));
        }
        let streams: [(StreamFormat, StreamOf); 3] = [
            (StreamFormat::OpenAiChat, chat_stream),
            (StreamFormat::Anthropic, anthropic_stream),
            (StreamFormat::Responses, responses_stream),
        ];
        for (format, stream) in streams {
            let mut runs: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
            for &split in &splits {
                let bytes = stream(&text, split);
                let cuts = event_ends(&bytes);
                runs.push((bytes, cuts));
            }
            let bytes = stream(&text, 0);
            let mut seed = 11u64;
            for _ in 0..40 {
                let mut cuts = Vec::new();
                let mut at = 0;
                while at < bytes.len() {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    at += 1 + (seed >> 59) as usize;
                    cuts.push(at.min(bytes.len()));
                }
                runs.push((bytes.clone(), cuts));
            }
            for (bytes, cuts) in &runs {
                let out = relay_cut(&rt, &policy, format, bytes, cuts, Meter::off());
                let (got, repeats) = received(format, &out);
                assert_eq!(got, want, "{format:?} cut at {cuts:?}");
                for r in repeats {
                    assert_eq!(r, want, "{format:?}: a whole-text repeat differs, cut at {cuts:?}");
                }
            }
        }
    }

    /// The text a client received and the code of the error event that ended its stream.
    fn text_and_error(format: StreamFormat, bytes: &[u8]) -> (String, Option<String>) {
        let events = SseParser::new(MAX_EVENT).push(bytes).expect("client gets valid SSE");
        let (mut text, mut error) = (String::new(), None);
        for e in events.iter().filter(|e| !e.is_done()) {
            let v: Value = serde_json::from_str(&e.data).expect("client events are JSON");
            if let Some(code) = v.pointer("/error/code").or_else(|| v.get("code")) {
                error = code.as_str().map(str::to_owned);
                continue;
            }
            let pointer = match format {
                StreamFormat::OpenAiChat => "/choices/0/delta/content",
                StreamFormat::Anthropic => "/delta/text",
                StreamFormat::Responses => "/delta",
            };
            text.push_str(v.pointer(pointer).and_then(Value::as_str).unwrap_or(""));
        }
        (text, error)
    }

    #[test]
    fn a_stream_beyond_its_reserved_output_ends_with_a_budget_error() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let open = {
            let yaml = "pack: {name: t, version: 1.0.0, enabled: true}\npolicies: {chain: [prompt-injection]}\n";
            let out = load_sources(&[Source {
                name: "t.yaml".into(),
                text: yaml.into(),
            }]);
            CompiledPolicy::compile(out.config.expect("valid")).expect("compiles")
        };
        let guarded = policy();
        let text = text();
        let deltas = pieces(&text, 0);
        let streams: [(StreamFormat, StreamOf); 3] = [
            (StreamFormat::OpenAiChat, chat_stream),
            (StreamFormat::Anthropic, anthropic_stream),
            (StreamFormat::Responses, responses_stream),
        ];
        for (format, stream) in streams {
            let bytes = stream(&text, 0);
            for cuts in [event_ends(&bytes), Vec::new()] {
                // The client gets exactly the deltas reserved, held-back text included.
                let out = relay_cut(&rt, &open, format, &bytes, &cuts, Meter::new(Some(5), format));
                let (got, error) = text_and_error(format, &out);
                assert_eq!(error.as_deref(), Some("budget_exceeded"), "{format:?}");
                assert_eq!(got, deltas[..5].concat(), "{format:?}");
                assert!(out.ends_with(b"data: [DONE]\n\n"), "{format:?}");
                // With output policies, the reserved text as the policies clear it.
                let out = relay_cut(&rt, &guarded, format, &bytes, &cuts, Meter::new(Some(5), format));
                let (got, error) = text_and_error(format, &out);
                assert_eq!(error.as_deref(), Some("budget_exceeded"), "{format:?}");
                assert_eq!(got, deltas[..5].concat(), "{format:?}: no secret in the first deltas");
                // Held text that holds a secret is redacted on its way out, as ever.
                let upto = (1..=deltas.len())
                    .find(|k| deltas[..*k].concat().contains("example.com or"))
                    .unwrap_or(deltas.len());
                let out = relay_cut(
                    &rt,
                    &guarded,
                    format,
                    &bytes,
                    &cuts,
                    Meter::new(Some(upto as u64), format),
                );
                let (got, error) = text_and_error(format, &out);
                assert_eq!(error.as_deref(), Some("budget_exceeded"), "{format:?}");
                assert!(
                    got.contains("Write to") && !got.contains("jane.doe@example.com"),
                    "{format:?}: {got}"
                );
                // A reservation the answer fits in changes nothing.
                let out = relay_cut(
                    &rt,
                    &open,
                    format,
                    &bytes,
                    &cuts,
                    Meter::new(Some(deltas.len() as u64), format),
                );
                assert_eq!(text_and_error(format, &out), (text.clone(), None), "{format:?}");
            }
        }
    }
}
