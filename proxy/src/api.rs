//! The model API path: `POST /v1/chat/completions`, `/v1/messages`, `/v1/responses` and
//! `/v1/embeddings`. In order: rate limits, bounded body read, JSON checks, the input chain
//! (before any upstream contact), the cache, target selection, then upstream attempts with
//! fallback and the circuit breaker, and finally the output chain on the answer (whole, or
//! as it streams). Nothing reaches the client before the answer is committed, so fallback
//! happens only before the first byte.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kt_policy::config::{FallbackTrigger, OnContentPolicy, OnContextWindow};
use kt_policy::stream::StreamFormat;
use kt_policy::usage::{AnswerUsage, Usage};
use kt_policy::wire::anthropic::AnthropicToOpenAiStream;
use kt_policy::wire::openai::OpenAiToAnthropicStream;
use kt_policy::{Decision, Headers, Verdict};
use pingora::protocols::http::ServerSession as Session;
use pingora::{Error, ErrorType, Result};
use serde_json::{Value, json};

use crate::cache::{self, Cached, Lookup};
use crate::gateway::{ClientApi, Ctx, Gateway};
use crate::ids::now_secs;
use crate::respond::{self, error};
use crate::routing::{Family, RouteError, Target};
use crate::upstream::{Exchange, UpstreamError, WireFormat};

/// How long a request waits for an upstream slot under `--max-concurrency`.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

fn headers_of(session: &Session) -> Headers {
    let map = &session.req_header().headers;
    let bytes = map.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    let mut h = Headers::with_capacity(map.len(), bytes);
    for (k, v) in map {
        if let Ok(v) = v.to_str() {
            h.insert(k.as_str(), v);
        }
    }
    h
}

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}

/// The response headers every answer of a model request carries.
fn answer_headers(ctx: &Ctx, id: &str, d: &Decision, target: Option<&str>, overhead: Duration) -> respond::Headers {
    let mut h: respond::Headers = ctx.rate_headers.clone();
    h.extend([
        ("x-request-id", id.to_owned()),
        ("x-keeptrusts-decision", d.verdict.as_str().to_owned()),
        (
            "x-keeptrusts-overhead-ms",
            format!("{:.3}", overhead.as_secs_f64() * 1e3),
        ),
    ]);
    if let Some(t) = target {
        h.push(("x-keeptrusts-target", t.to_owned()));
    }
    h
}

/// The one field of an answer the gateway needs when no policy inspects the answer; the
/// rest is checked as JSON and skipped.
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: AnswerUsage,
}

/// What one failed attempt left for the client, should it be the last.
enum Failure {
    Status {
        status: u16,
        body: Option<Value>,
        retry_after: Option<String>,
    },
    Timeout(String),
    Connection(String),
    Unsupported(String),
}

/// How an upstream error status is treated.
struct Class {
    trigger: Option<FallbackTrigger>,
    /// Counts toward the circuit breaker.
    counts: bool,
    /// Falls over regardless of triggers (`on_content_policy`/`on_context_window: fallback`).
    forced: bool,
    outcome: &'static str,
}

fn classify(status: u16, body: Option<&Value>, on_cp: OnContentPolicy, on_cw: OnContextWindow) -> Class {
    let text = body.map(Value::to_string).unwrap_or_default().to_ascii_lowercase();
    match status {
        429 => Class {
            trigger: Some(FallbackTrigger::RateLimit),
            counts: false,
            forced: false,
            outcome: "rate_limited",
        },
        408 | 504 => Class {
            trigger: Some(FallbackTrigger::Timeout),
            counts: true,
            forced: false,
            outcome: "timeout",
        },
        500..=599 => Class {
            trigger: Some(FallbackTrigger::ServerError),
            counts: true,
            forced: false,
            outcome: "server_error",
        },
        _ if text.contains("context_length_exceeded")
            || text.contains("context window")
            || text.contains("maximum context length")
            || text.contains("prompt is too long") =>
        {
            Class {
                trigger: None,
                counts: false,
                forced: on_cw == OnContextWindow::Fallback,
                outcome: "context_window",
            }
        }
        _ if text.contains("content_policy") || text.contains("content_filter") => Class {
            trigger: None,
            counts: false,
            forced: on_cp == OnContentPolicy::Fallback,
            outcome: "content_policy",
        },
        _ => Class {
            trigger: None,
            counts: false,
            forced: false,
            outcome: "client_error",
        },
    }
}

/// The request body for `target`, in its wire format, and the API path.
fn outgoing<'r>(
    client: ClientApi,
    target: &Target,
    request: &'r Value,
    stream: bool,
) -> std::result::Result<(&'static str, Cow<'r, Value>), String> {
    let anthropic = target.upstream.format == WireFormat::Anthropic;
    let mut out = match (client, anthropic) {
        (ClientApi::OpenAiChat, true) => (
            "/messages",
            Cow::Owned(kt_policy::wire::anthropic::chat_request_to_messages(request).map_err(|e| e.0)?),
        ),
        (ClientApi::OpenAiChat, false) => ("/chat/completions", Cow::Borrowed(request)),
        (ClientApi::AnthropicMessages, true) => ("/messages", Cow::Borrowed(request)),
        (ClientApi::AnthropicMessages, false) => {
            let mut chat = kt_policy::wire::openai::messages_request_to_chat(request).map_err(|e| e.0)?;
            if stream {
                chat["stream_options"] = json!({"include_usage": true});
            }
            ("/chat/completions", Cow::Owned(chat))
        }
        (ClientApi::Responses, false) => ("/responses", Cow::Borrowed(request)),
        (ClientApi::Embeddings, false) => ("/embeddings", Cow::Borrowed(request)),
        (ClientApi::Responses | ClientApi::Embeddings, true) => {
            return Err(format!("target '{}' (anthropic) does not serve this API", target.id));
        }
    };
    if let Some(m) = &target.model
        && out.1.get("model").and_then(Value::as_str) != Some(m.as_str())
    {
        out.1.to_mut()["model"] = json!(m);
    }
    Ok(out)
}

/// The caller scope of cache entries: who is asking, as far as the gateway can tell.
fn cache_scope(session: &Session) -> String {
    let mut scope = String::new();
    for name in ["authorization", "x-api-key", "x-user-id", "x-keeptrusts-agent-id"] {
        scope.push_str(header(session, name).unwrap_or(""));
        scope.push('\u{1f}');
    }
    scope
}

/// An error in the client's API shape (Anthropic clients get Anthropic's).
fn client_error(client: ClientApi, kind: &str, code: &str, message: impl Into<String>) -> Value {
    let message = message.into();
    if client == ClientApi::AnthropicMessages {
        json!({"type": "error", "error": {"type": kind, "message": message, "code": code}})
    } else {
        error(kind, code, message)
    }
}

/// Replaces every occurrence of `secret` in the strings of `v` (keys included).
fn scrub(v: &mut Value, secret: &str) {
    const MARK: &str = "[REDACTED]";
    match v {
        Value::String(s) if s.contains(secret) => *s = s.replace(secret, MARK),
        Value::Array(items) => items.iter_mut().for_each(|x| scrub(x, secret)),
        Value::Object(o) => {
            if o.keys().any(|k| k.contains(secret)) {
                *o = std::mem::take(o)
                    .into_iter()
                    .map(|(k, x)| (k.replace(secret, MARK), x))
                    .collect();
            }
            o.values_mut().for_each(|x| scrub(x, secret));
        }
        _ => {}
    }
}

/// A provider's error body in the client's shape, without the credential the gateway sent
/// that provider.
fn provider_error(client: ClientApi, target: &Target, body: Option<Value>, status: u16) -> Value {
    let mut body = body.unwrap_or_else(|| json!({"error": {"message": format!("upstream answered {status}")}}));
    if let Some(secret) = target.secret.as_deref().filter(|s| !s.is_empty()) {
        scrub(&mut body, secret);
    }
    let target_format = target.upstream.format;
    let e = body.get("error").cloned().unwrap_or(Value::Null);
    let message = e
        .get("message")
        .cloned()
        .unwrap_or_else(|| json!(format!("upstream answered {status}")));
    match (
        client == ClientApi::AnthropicMessages,
        target_format == WireFormat::Anthropic,
    ) {
        (true, false) => {
            json!({"type": "error", "error": {"type": e.get("type").cloned().unwrap_or_else(|| json!("api_error")), "message": message}})
        }
        (false, true) => {
            json!({"error": {"message": message, "type": e.get("type").cloned().unwrap_or_else(|| json!("upstream_error")), "code": null}})
        }
        _ => body,
    }
}

pub async fn serve(gw: &Gateway, session: &mut Session, ctx: &mut Ctx, id: &str, client: ClientApi) -> Result<()> {
    let rt = Arc::clone(&ctx.rt);
    let policy = &rt.policy;
    let limits = policy.config().size_limits.clone().unwrap_or_default();
    // Rate limits come before any body read or upstream work.
    let rate = gw.rate_limits_for(&rt);
    // The headers are collected only for the limits and policies that read them.
    let headers = if policy.reads_headers() || !rate.is_empty() {
        headers_of(session)
    } else {
        Headers::new()
    };
    // Only error answers before the upstream call build this.
    let base = || vec![("x-request-id", id.to_owned())];
    let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());

    let mut token_key = None;
    if !rate.is_empty() {
        let now = now_secs();
        let mut verdict = rate.check(peer, &headers, now);
        if let Some((key, v)) = rate.check_tokens(peer, &headers, now) {
            token_key = Some(key);
            if !v.allowed || verdict.as_ref().is_none_or(|r| r.allowed && v.remaining < r.remaining) {
                verdict = Some(v);
            }
        }
        if let Some(v) = verdict {
            ctx.rate_headers = vec![
                ("x-ratelimit-limit", v.limit.to_string()),
                ("x-ratelimit-remaining", v.remaining.to_string()),
                ("x-ratelimit-reset", v.reset.to_string()),
            ];
            if !v.allowed {
                let mut h = ctx.rate_headers.clone();
                h.push(("x-request-id", id.to_owned()));
                h.push(("retry-after", v.reset.max(1).to_string()));
                let unit = if v.scope == "token_rate_limit" {
                    "tokens"
                } else {
                    "requests"
                };
                let msg = format!(
                    "rate limit exceeded ({}: {} {unit} per window); retry in {} s",
                    v.scope, v.limit, v.reset
                );
                ctx.rate_limited = true;
                let body = client_error(client, "rate_limit", "rate_limited", msg);
                return respond::json(session, 429, &body, &h).await;
            }
        }
    }

    // The body, bounded.
    if header(session, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        session.write_continue_response().await?;
    }
    let too_large = || {
        client_error(
            client,
            "validation_error",
            "request_too_large",
            format!(
                "request body exceeds size_limits.max_body_bytes ({} bytes)",
                limits.max_body_bytes
            ),
        )
    };
    let declared = header(session, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        session.set_keepalive(None);
        return respond::json(session, 413, &too_large(), &base()).await;
    }
    if let Some(ct) = header(session, "content-type")
        && !ct.to_ascii_lowercase().contains("json")
    {
        let msg = format!("content-type must be application/json, got '{ct}'");
        let body = client_error(client, "validation_error", "unsupported_media_type", msg);
        return respond::json(session, 415, &body, &base()).await;
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limits.max_body_bytes) as usize);
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limits.max_body_bytes {
            session.set_keepalive(None);
            return respond::json(session, 413, &too_large(), &base()).await;
        }
    }
    let body = Bytes::from(body);
    let invalid = |code: &str, msg: String| client_error(client, "validation_error", code, msg);
    // Parsed once, strictly: a repeated key would let the policies read one copy while
    // the provider reads another.
    let mut request: Value = match kt_policy::json::parse_strict(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            let b = invalid("invalid_request", "request body must be a JSON object".into());
            return respond::json(session, 422, &b, &base()).await;
        }
        Err(e) => {
            let b = invalid(e.code(), e.to_string());
            return respond::json(session, 422, &b, &base()).await;
        }
    };
    let shape_error = match client {
        ClientApi::OpenAiChat | ClientApi::AnthropicMessages => request
            .get("messages")
            .and_then(Value::as_array)
            .is_none()
            .then_some("`messages` must be a list"),
        ClientApi::Responses | ClientApi::Embeddings => {
            (!matches!(request.get("input"), Some(Value::String(_) | Value::Array(_))))
                .then_some("`input` must be a string or a list")
        }
    };
    if let Some(msg) = shape_error {
        return respond::json(session, 422, &invalid("invalid_request", msg.into()), &base()).await;
    }
    if let Some(m) = request.get("model")
        && !m.is_string()
    {
        let b = invalid("invalid_request", "`model` must be a string".into());
        return respond::json(session, 422, &b, &base()).await;
    }
    let stream = client != ClientApi::Embeddings && request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);

    // Input phase, before any upstream contact.
    let decision = policy.evaluate_request(&mut request, &headers, gw.opts());
    let model = request.get("model").and_then(Value::as_str).map(str::to_owned);
    if let Some(ev) = ctx.event.as_mut() {
        ev.model = model.clone();
        ev.stream = stream;
    }
    note_decision(gw, ctx, &decision);
    if decision.verdict.is_terminal() {
        let h = answer_headers(ctx, id, &decision, None, ctx.started.elapsed());
        return respond::json(session, decision.http_status(), &decision.error_body(), &h).await;
    }

    // Targets.
    let family = match client {
        ClientApi::OpenAiChat | ClientApi::AnthropicMessages => Family::Chat,
        ClientApi::Responses => Family::Responses,
        ClientApi::Embeddings => Family::Embeddings,
    };
    let mut candidates = match rt.router.candidates(model.as_deref(), family) {
        Ok(c) => c,
        Err(e) => {
            let (status, body) = match e {
                RouteError::NotAllowed(m) => (
                    403,
                    client_error(
                        client,
                        "policy_violation",
                        "model_not_allowed",
                        format!("model '{m}' is not in unified_access.allowed_models"),
                    ),
                ),
                RouteError::UnknownModel(m) => {
                    let known: Vec<String> = crate::gateway::model_ids(policy.config())
                        .into_iter()
                        .map(|(id, _)| id)
                        .collect();
                    (
                        404,
                        client_error(
                            client,
                            "validation_error",
                            "model_not_found",
                            format!("no provider target serves model '{m}'; available: {}", known.join(", ")),
                        ),
                    )
                }
                RouteError::NoTargetFor(api) => (
                    422,
                    client_error(
                        client,
                        "validation_error",
                        "unsupported_for_target",
                        format!("no configured provider target serves the {api} API"),
                    ),
                ),
            };
            let h = answer_headers(ctx, id, &decision, None, ctx.started.elapsed());
            return respond::json(session, status, &body, &h).await;
        }
    };
    if let Some(allowed) = &decision.allowed_targets {
        candidates.retain(|t| allowed.contains(&t.id));
        if candidates.is_empty() {
            let body = client_error(
                client,
                "policy_violation",
                "no_compliant_target",
                "data-routing-policy allows none of the targets that serve this model",
            );
            let h = answer_headers(ctx, id, &decision, None, ctx.started.elapsed());
            return respond::json(session, 409, &body, &h).await;
        }
    }

    // The cache, for answers the policies passed unchanged.
    let cacheable_request = decision.verdict == Verdict::Allow && !decision.degraded;
    let mut fill = None;
    if gw.cache.enabled() && cacheable_request && (!stream || client == ClientApi::OpenAiChat) {
        let key = cache::key(client.name(), policy.digest(), &cache_scope(session), &request);
        match gw.cache.lookup(key).await {
            Lookup::Hit(hit) => {
                if let Some(ev) = ctx.event.as_mut() {
                    ev.cache = Some("hit");
                    ev.target = Some(hit.target.clone());
                    ev.usage = hit.usage;
                }
                ctx.overhead = Some(ctx.started.elapsed().as_secs_f64());
                let mut h = answer_headers(ctx, id, &decision, Some(&hit.target), ctx.started.elapsed());
                h.push(("x-keeptrusts-cache", "hit".into()));
                if stream {
                    return crate::streaming::replay(session, &hit.body, include_usage, h).await;
                }
                return respond::raw_json(session, 200, hit.body.clone(), h).await;
            }
            Lookup::Leader(f) => fill = Some(f),
            Lookup::Miss => {}
        }
        if let Some(ev) = ctx.event.as_mut() {
            ev.cache = Some("miss");
        }
    }

    // The client's bytes go upstream unchanged when nothing rewrote the request.
    let mut unchanged = decision.verdict == Verdict::Allow;
    if stream && client == ClientApi::OpenAiChat && !include_usage {
        request["stream_options"] = json!({"include_usage": true});
        unchanged = false;
    }

    let body_bytes = body;
    // An upstream slot: a free one is taken at once; only a request that has to queue arms
    // a timer.
    let permit = match Arc::clone(&gw.concurrency).try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => pingora::time::fast_timeout::fast_timeout(QUEUE_WAIT, Arc::clone(&gw.concurrency).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok),
    };
    let _permit = match permit {
        Some(p) => p,
        None => {
            let mut h = answer_headers(ctx, id, &decision, None, ctx.started.elapsed());
            h.push(("retry-after", "1".into()));
            let body = client_error(
                client,
                "upstream_error",
                "overloaded",
                format!(
                    "the gateway is at --max-concurrency ({}) upstream requests; retry shortly",
                    gw.max_concurrency
                ),
            );
            return respond::json(session, 503, &body, &h).await;
        }
    };

    // Attempts, with fallback before the first byte.
    let client_auth = header(session, "authorization").map(str::to_owned);
    let router = &rt.router;
    let plan = &router.fallback;
    let cb = router.circuit_breaker.as_ref();
    let budget = router.attempt_budget();
    let mut attempts = 0usize;
    let mut upstream_time = Duration::ZERO;
    let mut last: Option<(Arc<Target>, Failure)> = None;
    let mut chosen: Option<(Arc<Target>, Exchange<'_>)> = None;
    let mut skipped_open = 0usize;
    for target in candidates {
        if attempts >= budget {
            break;
        }
        if !target.health.admit(cb) {
            skipped_open += 1;
            note_attempt(gw, ctx, || json!({"target": target.id, "outcome": "circuit_open"}));
            continue;
        }
        let (path, body) = match outgoing(client, &target, &request, stream) {
            Ok(x) => x,
            Err(msg) => {
                last = Some((Arc::clone(&target), Failure::Unsupported(msg)));
                continue;
            }
        };
        if let Some((previous, _)) = &last {
            gw.metrics.fallback(&previous.id);
        }
        attempts += 1;
        let bytes = match body {
            Cow::Borrowed(_) if unchanged => body_bytes.clone(),
            other => Bytes::from(
                serde_json::to_vec(&*other).map_err(|e| Error::because(ErrorType::InternalError, "encode", e))?,
            ),
        };
        let t0 = Instant::now();
        // The large upstream futures are boxed so that `serve`'s own state stays small: it
        // is moved whole when the request starts.
        let sent = Box::pin(
            target
                .upstream
                .send(&gw.upstreams, path, bytes, client_auth.as_deref(), target.timeout),
        )
        .await;
        upstream_time += t0.elapsed();
        let failure = match sent {
            Ok(x) if (200..300).contains(&x.status()) => {
                target.health.success(t0.elapsed(), router.latency_window());
                note_attempt(
                    gw,
                    ctx,
                    || json!({"target": target.id, "outcome": "ok", "status": x.status()}),
                );
                chosen = Some((target, x));
                break;
            }
            Ok(x) => {
                let status = x.status();
                let retry_after = x.header("retry-after");
                let t1 = Instant::now();
                let body = Box::pin(x.body(limits.max_response_bytes))
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                upstream_time += t1.elapsed();
                let class = classify(status, body.as_ref(), plan.on_content_policy, plan.on_context_window);
                target
                    .health
                    .failure(cb, class.counts, &format!("HTTP {status} ({})", class.outcome));
                let fall = class.forced || class.trigger.is_some_and(|t| plan.triggers.contains(&t));
                let failure = Failure::Status {
                    status,
                    body,
                    retry_after,
                };
                note_attempt(
                    gw,
                    ctx,
                    || json!({"target": target.id, "outcome": class.outcome, "status": status}),
                );
                if !(plan.enabled && fall) {
                    last = Some((target, failure));
                    break;
                }
                failure
            }
            Err(e) => {
                target.health.failure(cb, true, &e.to_string());
                let (failure, trigger, outcome) = match e {
                    UpstreamError::Timeout(..) => {
                        (Failure::Timeout(e.to_string()), FallbackTrigger::Timeout, "timeout")
                    }
                    _ => (
                        Failure::Connection(e.to_string()),
                        FallbackTrigger::ConnectionError,
                        "connection_error",
                    ),
                };
                note_attempt(gw, ctx, || json!({"target": target.id, "outcome": outcome}));
                if !(plan.enabled && plan.triggers.contains(&trigger)) {
                    last = Some((target, failure));
                    break;
                }
                failure
            }
        };
        last = Some((target, failure));
    }

    let Some((target, exchange)) = chosen else {
        let overhead = ctx.started.elapsed().saturating_sub(upstream_time);
        ctx.overhead = Some(overhead.as_secs_f64());
        let tid = last.as_ref().map(|(t, _)| t.id.clone());
        if let Some(ev) = ctx.event.as_mut() {
            ev.target = tid.clone();
        }
        let mut h = answer_headers(ctx, id, &decision, tid.as_deref(), overhead);
        h.push(("x-keeptrusts-attempts", attempts.to_string()));
        let (status, body) = match last {
            None if skipped_open > 0 => {
                h.push(("retry-after", "1".into()));
                (
                    503,
                    client_error(
                        client,
                        "upstream_error",
                        "circuit_open",
                        "every provider target for this request has an open circuit; retry later",
                    ),
                )
            }
            None => (
                503,
                client_error(
                    client,
                    "upstream_error",
                    "no_target",
                    "no provider target could be tried",
                ),
            ),
            Some((
                t,
                Failure::Status {
                    status,
                    body,
                    retry_after,
                },
            )) => {
                if let Some(r) = retry_after {
                    h.push(("retry-after", r));
                }
                let code = if status >= 500 { 502 } else { status };
                (code, provider_error(client, &t, body, status))
            }
            Some((_, Failure::Timeout(msg))) => (504, client_error(client, "upstream_error", "upstream_timeout", msg)),
            Some((_, Failure::Connection(msg))) => {
                (502, client_error(client, "upstream_error", "upstream_unavailable", msg))
            }
            Some((_, Failure::Unsupported(msg))) => (
                422,
                client_error(client, "validation_error", "unsupported_for_target", msg),
            ),
        };
        return respond::json(session, status, &body, &h).await;
    };

    if let Some(ev) = ctx.event.as_mut() {
        ev.target = Some(target.id.clone());
    }
    let anthropic = target.upstream.format == WireFormat::Anthropic;
    if stream {
        let overhead = ctx.started.elapsed().saturating_sub(upstream_time);
        let mut h = answer_headers(ctx, id, &decision, Some(&target.id), overhead);
        h.push(("x-keeptrusts-attempts", attempts.to_string()));
        let usage = match client {
            ClientApi::OpenAiChat => {
                Box::pin(crate::streaming::relay(
                    session,
                    exchange,
                    policy,
                    &request,
                    &headers,
                    gw.opts(),
                    include_usage,
                    anthropic.then(|| AnthropicToOpenAiStream::new(now_secs())),
                    h,
                ))
                .await?
            }
            ClientApi::AnthropicMessages => {
                Box::pin(crate::streaming::relay_native(
                    session,
                    exchange,
                    StreamFormat::Anthropic,
                    policy,
                    &request,
                    &headers,
                    gw.opts(),
                    (!anthropic).then(OpenAiToAnthropicStream::new),
                    h,
                ))
                .await?
            }
            ClientApi::Responses => {
                Box::pin(crate::streaming::relay_native(
                    session,
                    exchange,
                    StreamFormat::Responses,
                    policy,
                    &request,
                    &headers,
                    gw.opts(),
                    None,
                    h,
                ))
                .await?
            }
            ClientApi::Embeddings => None,
        };
        let usage = usage.as_ref().and_then(Usage::from_value);
        count_tokens(gw, &rt, token_key.as_deref(), usage);
        if let Some(ev) = ctx.event.as_mut() {
            ev.usage = usage;
        }
        return Ok(());
    }

    let t1 = Instant::now();
    let answer = Box::pin(exchange.body(limits.max_response_bytes)).await;
    upstream_time += t1.elapsed();
    let answer = match answer {
        Ok(b) => b,
        Err(e) => {
            let overhead = ctx.started.elapsed().saturating_sub(upstream_time);
            let h = answer_headers(ctx, id, &decision, Some(&target.id), overhead);
            let code = if matches!(e, UpstreamError::TooLarge(_)) {
                "upstream_response_too_large"
            } else {
                "upstream_unavailable"
            };
            return respond::json(
                session,
                502,
                &client_error(client, "upstream_error", code, e.to_string()),
                &h,
            )
            .await;
        }
    };
    let translated = matches!(
        (client, anthropic),
        (ClientApi::OpenAiChat, true) | (ClientApi::AnthropicMessages, false)
    );
    let invalid_answer = |ctx: &Ctx| {
        let overhead = ctx.started.elapsed().saturating_sub(upstream_time);
        let h = answer_headers(ctx, id, &decision, Some(&target.id), overhead);
        let body = client_error(
            client,
            "upstream_error",
            "invalid_upstream_response",
            "the upstream answered with a body that is not JSON",
        );
        (h, body)
    };
    let inspects_answer = client != ClientApi::Embeddings
        && (policy.runs_phase(kt_policy::Phase::Output) || policy.runs_phase(kt_policy::Phase::Tool));
    // The bytes the client gets, their usage, and the decision over both phases.
    let (decision, usage, bytes) = if !inspects_answer && !translated {
        // No output or tool policy and nothing to translate: the answer is checked as JSON
        // and its usage read, without building it as a tree; the bytes go out unchanged.
        match serde_json::from_slice::<UsageOnly>(&answer) {
            Ok(u) => (decision, u.usage.0, answer),
            Err(_) => {
                let (h, body) = invalid_answer(ctx);
                return respond::json(session, 502, &body, &h).await;
            }
        }
    } else if let Some(out) = (!translated && client == ClientApi::OpenAiChat)
        .then(|| kt_policy::exchange::chat_answer_view(&answer))
        .flatten()
        .and_then(|view| {
            let out = policy.evaluate_answer_view(&request, &view.texts(), &headers, gw.opts())?;
            Some((out, view.usage.0))
        })
    {
        // The common chat answer, read as a view: when no policy rewrites it, the decision
        // is the tree's and the provider's bytes go out unchanged, without the answer ever
        // being built as a tree. An answer a policy rewrites goes the tree's way below.
        let (out, usage) = out;
        let mut decision = decision;
        decision.absorb(out);
        note_decision(gw, ctx, &decision);
        (decision, usage, answer)
    } else {
        let mut response: Value = match serde_json::from_slice(&answer) {
            Ok(v) => v,
            Err(_) => {
                let (h, body) = invalid_answer(ctx);
                return respond::json(session, 502, &body, &h).await;
            }
        };
        match (client, anthropic) {
            (ClientApi::OpenAiChat, true) => {
                response = kt_policy::wire::anthropic::messages_response_to_chat(&response, now_secs())
            }
            (ClientApi::AnthropicMessages, false) => {
                match kt_policy::wire::openai::chat_response_to_messages(&response) {
                    Ok(r) => response = r,
                    Err(e) => {
                        let overhead = ctx.started.elapsed().saturating_sub(upstream_time);
                        let h = answer_headers(ctx, id, &decision, Some(&target.id), overhead);
                        let body = client_error(client, "upstream_error", "invalid_upstream_response", e.0);
                        return respond::json(session, 502, &body, &h).await;
                    }
                }
            }
            _ => {}
        }
        let mut decision = decision;
        let input_verdict = decision.verdict;
        if client != ClientApi::Embeddings {
            decision.absorb(policy.evaluate_response(&request, &mut response, &headers, gw.opts()));
        }
        note_decision(gw, ctx, &decision);
        let usage = response.get("usage").and_then(Usage::from_value);
        // The provider's bytes go to the client unchanged when the output phase rewrote
        // nothing.
        let unchanged = !translated && decision.verdict == input_verdict && decision.verdict <= Verdict::Allow;
        let bytes = if unchanged || decision.verdict.is_terminal() {
            answer
        } else {
            Bytes::from(
                serde_json::to_vec(&response).map_err(|e| Error::because(ErrorType::InternalError, "encode", e))?,
            )
        };
        (decision, usage, bytes)
    };
    count_tokens(gw, &rt, token_key.as_deref(), usage);
    let overhead = ctx.started.elapsed().saturating_sub(upstream_time);
    ctx.overhead = Some(overhead.as_secs_f64());
    let mut h = answer_headers(ctx, id, &decision, Some(&target.id), overhead);
    h.push(("x-keeptrusts-attempts", attempts.to_string()));
    if decision.verdict.is_terminal() {
        if let Some(ev) = ctx.event.as_mut() {
            ev.usage = usage;
        }
        return respond::json(session, decision.http_status(), &decision.error_body(), &h).await;
    }
    if let Some(f) = fill.as_ref() {
        h.push(("x-keeptrusts-cache", "miss".into()));
        if decision.verdict == Verdict::Allow && !decision.degraded {
            let cached = Cached {
                body: bytes.clone(),
                target: target.id.clone(),
                usage,
            };
            gw.cache.fill(f, cached);
        }
    }
    drop(fill);
    if let Some(ev) = ctx.event.as_mut() {
        ev.usage = usage;
    }
    respond::raw_json(session, 200, bytes, h).await
}

/// Records the decision for the metrics (each policy's verdict) and, when events are
/// written, whole for the event.
fn note_decision(gw: &Gateway, ctx: &mut Ctx, decision: &Decision) {
    let Some(ev) = ctx.event.as_mut() else { return };
    ev.policies.clear();
    ev.policies.extend(
        decision
            .policy_results
            .iter()
            .filter(|r| {
                !r.note
                    .as_deref()
                    .is_some_and(|n| matches!(n, "chain short-circuited" | "disabled" | "pack disabled"))
            })
            .map(|r| (r.kind, r.verdict.as_str())),
    );
    if gw.events.enabled() {
        ev.decision = Some(decision.clone());
    }
}

/// Records one upstream attempt for the decision event (nothing is built when events are
/// not written).
fn note_attempt(gw: &Gateway, ctx: &mut Ctx, attempt: impl FnOnce() -> Value) {
    if gw.events.enabled()
        && let Some(ev) = ctx.event.as_mut()
    {
        ev.attempts.push(attempt());
    }
}

fn count_tokens(gw: &Gateway, rt: &crate::reload::Runtime, key: Option<&str>, usage: Option<Usage>) {
    if let (Some(key), Some(u)) = (key, usage) {
        let n = u.total();
        if n > 0 {
            gw.rate_limits_for(rt).add_tokens(key, n, now_secs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_are_classified_for_fallback() {
        let c = classify(429, None, OnContentPolicy::Stop, OnContextWindow::Abort);
        assert_eq!(c.trigger, Some(FallbackTrigger::RateLimit));
        assert!(!c.counts, "a 429 does not open the circuit");
        let c = classify(503, None, OnContentPolicy::Stop, OnContextWindow::Abort);
        assert_eq!(c.trigger, Some(FallbackTrigger::ServerError));
        assert!(c.counts);
        let cw = json!({"error": {"code": "context_length_exceeded", "message": "too long"}});
        let c = classify(400, Some(&cw), OnContentPolicy::Stop, OnContextWindow::Abort);
        assert!(c.trigger.is_none() && !c.forced && c.outcome == "context_window");
        let c = classify(400, Some(&cw), OnContentPolicy::Stop, OnContextWindow::Fallback);
        assert!(c.forced);
        let cp = json!({"error": {"code": "content_filter"}});
        let c = classify(400, Some(&cp), OnContentPolicy::Stop, OnContextWindow::Abort);
        assert!(!c.forced && c.outcome == "content_policy");
        let c = classify(401, None, OnContentPolicy::Fallback, OnContextWindow::Fallback);
        assert!(c.trigger.is_none() && !c.forced, "auth errors go back to the client");
    }
}
