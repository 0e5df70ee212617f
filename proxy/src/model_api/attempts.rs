//! Upstream attempts: an upstream slot under `--max-concurrency`, then the candidate
//! targets in order, with fallback on the configured triggers and the circuit breaker,
//! until one answers 2xx. Nothing has reached the client yet, so falling over is safe; the
//! last failure becomes the client's error (a provider's own error body in the client's
//! shape, without the gateway's credential).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kt_policy::config::{FallbackTrigger, OnContentPolicy, OnContextWindow};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use super::Progress;
use super::body::Parsed;
use crate::error::RequestError;
use crate::gateway::{ClientApi, Ctx, Gateway};
use crate::reload::Runtime;
use crate::routing::{FallbackPlan, Target};
use crate::upstream::{Exchange, UpstreamError, WireFormat};

/// How long a request waits for an upstream slot under `--max-concurrency`.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// The request as it goes upstream.
pub(crate) struct Plan<'a> {
    /// The client's bytes, sent as they are when nothing rewrote the request.
    bytes: Bytes,
    unchanged: bool,
    /// `size_limits.max_response_bytes`: the most of an error answer that is read.
    max_response: u64,
    /// The fallback rules: the matching route's, else `providers.fallback`.
    pub fallback: &'a FallbackPlan,
}

impl<'a> Plan<'a> {
    /// `allowed`: the input phase passed the request unchanged. A chat stream always asks
    /// the upstream for usage (the gateway counts tokens), which changes the request.
    pub(crate) fn new(
        req: &mut Parsed,
        bytes: Bytes,
        allowed: bool,
        client: ClientApi,
        max_response: u64,
        fallback: &'a FallbackPlan,
    ) -> Plan<'a> {
        let mut unchanged = allowed;
        if req.stream && client == ClientApi::OpenAiChat && !req.include_usage {
            req.request["stream_options"] = json!({"include_usage": true});
            unchanged = false;
        }
        Plan {
            bytes,
            unchanged,
            max_response,
            fallback,
        }
    }
}

/// An upstream slot: a free one is taken at once; only a request that has to queue arms a
/// timer.
pub(crate) async fn slot(gw: &Gateway) -> Result<OwnedSemaphorePermit, RequestError> {
    let permit = match Arc::clone(&gw.concurrency).try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => pingora::time::fast_timeout::fast_timeout(QUEUE_WAIT, Arc::clone(&gw.concurrency).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok),
    };
    permit.ok_or(RequestError::Overloaded {
        max: gw.max_concurrency,
    })
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

/// Tries the candidates in order; the first 2xx answer and its target.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<'g>(
    gw: &'g Gateway,
    ctx: &mut Ctx,
    p: &mut Progress<'_>,
    rt: &Runtime,
    candidates: Vec<Arc<Target>>,
    req: &Parsed,
    plan: &Plan<'_>,
    client_auth: Option<&str>,
) -> Result<(Arc<Target>, Exchange<'g>), RequestError> {
    let router = &rt.router;
    let fallback = plan.fallback;
    let cb = router.circuit_breaker.as_ref();
    let mut last: Option<(Arc<Target>, Failure)> = None;
    let mut skipped_open = 0usize;
    for target in candidates {
        if p.attempts >= fallback.attempt_budget() {
            break;
        }
        if !target.health.admit(cb) {
            skipped_open += 1;
            note_attempt(gw, ctx, || json!({"target": target.id, "outcome": "circuit_open"}));
            continue;
        }
        let (path, body) = match outgoing(p.client, &target, &req.request, req.stream) {
            Ok(x) => x,
            Err(msg) => {
                last = Some((target, Failure::Unsupported(msg)));
                continue;
            }
        };
        if let Some((previous, _)) = &last {
            gw.metrics.fallback(&previous.id);
        }
        p.attempts += 1;
        let bytes = match body {
            Cow::Borrowed(_) if plan.unchanged => plan.bytes.clone(),
            other => Bytes::from(serde_json::to_vec(&*other).unwrap_or_default()),
        };
        let t0 = Instant::now();
        // Boxed: the upstream future is large and `serve`'s own state is moved whole.
        let sent = Box::pin(
            target
                .upstream
                .send(&gw.upstreams, path, bytes, client_auth, target.timeout),
        )
        .await;
        p.upstream_time += t0.elapsed();
        // A provider that answered other than with a refusal (4xx), or went silent, may
        // have done the work and billed it.
        let billed = match &sent {
            Ok(x) => !(400..500).contains(&x.status()),
            Err(e) => matches!(e, UpstreamError::Timeout(..) | UpstreamError::Deadline(..)),
        };
        p.billable |= billed;
        if billed && !p.billed_providers.contains(&target.provider) {
            p.billed_providers.push(target.provider.clone());
        }
        let (failure, fall) = match sent {
            Ok(x) if (200..300).contains(&x.status()) => {
                target.health.success(t0.elapsed(), router.latency_window());
                note_attempt(
                    gw,
                    ctx,
                    || json!({"target": target.id, "outcome": "ok", "status": x.status()}),
                );
                return Ok((target, x));
            }
            Ok(x) => Box::pin(status_failure(gw, ctx, p, rt, &target, x, plan)).await,
            Err(e) => transport_failure(gw, ctx, rt, &target, e, fallback),
        };
        let stop = !(fallback.enabled && fall);
        last = Some((target, failure));
        if stop {
            break;
        }
    }
    Err(last_failure(ctx, p, last, skipped_open))
}

/// A target that answered with an error status: read (bounded) and classified; whether
/// the request falls over to the next target.
async fn status_failure(
    gw: &Gateway,
    ctx: &mut Ctx,
    p: &mut Progress<'_>,
    rt: &Runtime,
    target: &Target,
    x: Exchange<'_>,
    plan: &Plan<'_>,
) -> (Failure, bool) {
    let (fallback, max_response) = (plan.fallback, plan.max_response);
    let status = x.status();
    let retry_after = x.header("retry-after");
    let t1 = Instant::now();
    let body = Box::pin(x.body(max_response))
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    p.upstream_time += t1.elapsed();
    let class = classify(
        status,
        body.as_ref(),
        fallback.on_content_policy,
        fallback.on_context_window,
    );
    let cb = rt.router.circuit_breaker.as_ref();
    target
        .health
        .failure(cb, class.counts, &format!("HTTP {status} ({})", class.outcome));
    note_attempt(
        gw,
        ctx,
        || json!({"target": target.id, "outcome": class.outcome, "status": status}),
    );
    let fall = class.forced || class.trigger.is_some_and(|t| fallback.triggers.contains(&t));
    let failure = Failure::Status {
        status,
        body,
        retry_after,
    };
    (failure, fall)
}

/// A target that could not be reached or timed out; whether the request falls over.
fn transport_failure(
    gw: &Gateway,
    ctx: &mut Ctx,
    rt: &Runtime,
    target: &Target,
    e: UpstreamError,
    fallback: &FallbackPlan,
) -> (Failure, bool) {
    target
        .health
        .failure(rt.router.circuit_breaker.as_ref(), true, &e.to_string());
    let (failure, trigger, outcome) = match e {
        UpstreamError::Timeout(..) => (Failure::Timeout(e.to_string()), FallbackTrigger::Timeout, "timeout"),
        _ => (
            Failure::Connection(e.to_string()),
            FallbackTrigger::ConnectionError,
            "connection_error",
        ),
    };
    note_attempt(gw, ctx, || json!({"target": target.id, "outcome": outcome}));
    (failure, fallback.triggers.contains(&trigger))
}

/// The client's error for the last failure.
fn last_failure(
    ctx: &mut Ctx,
    p: &mut Progress<'_>,
    last: Option<(Arc<Target>, Failure)>,
    skipped_open: usize,
) -> RequestError {
    p.target = last.as_ref().map(|(t, _)| t.id.clone());
    if let Some(ev) = ctx.event.as_mut() {
        ev.target = p.target.clone();
    }
    match last {
        None if skipped_open > 0 => RequestError::CircuitOpen,
        None => RequestError::NoTarget,
        Some((
            t,
            Failure::Status {
                status,
                body,
                retry_after,
            },
        )) => RequestError::ProviderStatus {
            status,
            body: provider_error(p.client, &t, body, status),
            retry_after,
        },
        Some((_, Failure::Timeout(msg))) => RequestError::UpstreamTimeout(msg),
        Some((_, Failure::Connection(msg))) => RequestError::UpstreamUnavailable(msg),
        Some((_, Failure::Unsupported(msg))) => RequestError::UnsupportedForTarget(msg),
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
    let class = |trigger, counts, forced, outcome| Class {
        trigger,
        counts,
        forced,
        outcome,
    };
    match status {
        429 => class(Some(FallbackTrigger::RateLimit), false, false, "rate_limited"),
        408 | 504 => class(Some(FallbackTrigger::Timeout), true, false, "timeout"),
        500..=599 => class(Some(FallbackTrigger::ServerError), true, false, "server_error"),
        _ if text.contains("context_length_exceeded")
            || text.contains("context window")
            || text.contains("maximum context length")
            || text.contains("prompt is too long") =>
        {
            class(None, false, on_cw == OnContextWindow::Fallback, "context_window")
        }
        _ if text.contains("content_policy") || text.contains("content_filter") => {
            class(None, false, on_cp == OnContentPolicy::Fallback, "content_policy")
        }
        _ => class(None, false, false, "client_error"),
    }
}

/// The request body for `target`, in its wire format, and the API path.
fn outgoing<'r>(
    client: ClientApi,
    target: &Target,
    request: &'r Value,
    stream: bool,
) -> Result<(&'static str, Cow<'r, Value>), String> {
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
    let e = body.get("error").cloned().unwrap_or(Value::Null);
    let message = e
        .get("message")
        .cloned()
        .unwrap_or_else(|| json!(format!("upstream answered {status}")));
    match (
        client == ClientApi::AnthropicMessages,
        target.upstream.format == WireFormat::Anthropic,
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

    #[test]
    fn the_key_is_scrubbed_from_strings_and_keys() {
        let mut v = json!({"error": {"message": "bad key sk-123456", "sk-123456": [1, "x sk-123456 y"]}});
        scrub(&mut v, "sk-123456");
        assert!(!v.to_string().contains("sk-123456"), "{v}");
        assert_eq!(v["error"]["message"], "bad key [REDACTED]");
    }
}
