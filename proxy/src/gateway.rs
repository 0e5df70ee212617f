//! The `ProxyHttp` implementation. Every request is answered from `request_filter`: health
//! and admin routes directly; chat completions by reading the whole body (bounded),
//! running the input chain before any upstream contact, calling the upstream ourselves with
//! the checked body, running the output chain on the whole answer, and only then writing the
//! response (so an output block can still be a 409, not a truncated 200).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use kt_policy::{CompiledPolicy, Decision, EvalOptions, FailMode, Headers};
use pingora::connectors::http::Connector;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use serde_json::{Value, json};

use crate::events::EventSink;
use crate::limits::Limits;
use crate::metrics::{Metrics, RequestRecord};
use crate::reload::{PolicySource, ReloadOutcome};
use crate::respond::{self, error};
use crate::upstream::{Upstream, WireFormat};
use kt_policy::wire::anthropic::AnthropicToOpenAiStream;

pub struct Gateway {
    policy: Arc<ArcSwap<CompiledPolicy>>,
    metrics: Metrics,
    /// Outcome of the last upstream call: 0 unknown, 1 reachable, 2 unreachable.
    upstream_state: std::sync::atomic::AtomicU8,
    /// Rate-limit counters, kept across reloads while the quotas stay the same.
    rate_limits: ArcSwap<Limits>,
    events: EventSink,
    source: Arc<PolicySource>,
    upstream: Upstream,
    connector: Connector,
    fail_mode: FailMode,
}

/// The API a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    /// `POST /v1/chat/completions`
    OpenAiChat,
    /// `POST /v1/messages`
    AnthropicMessages,
}

/// Per-request state: the policy snapshot this request runs under.
pub struct Ctx {
    policy: Arc<CompiledPolicy>,
    started: Instant,
    /// Set for chat requests: what the decision event reports.
    event: Option<EventData>,
    /// X-RateLimit-* headers for the response.
    rate_headers: respond::Headers,
    rate_limited: bool,
    /// Gateway time excluding the upstream call, once known.
    overhead: Option<f64>,
}

/// What a chat request's decision event says, filled in as the request goes.
#[derive(Default)]
struct EventData {
    request_id: String,
    model: Option<String>,
    stream: bool,
    decision: Option<Decision>,
    usage: Option<Value>,
}

impl Gateway {
    pub fn new(source: Arc<PolicySource>, upstream: Upstream, fail_mode: FailMode, events: EventSink) -> Self {
        Gateway {
            metrics: Metrics::default(),
            upstream_state: std::sync::atomic::AtomicU8::new(0),
            rate_limits: ArcSwap::from_pointee(Limits::new(source.current.load().config())),
            policy: Arc::clone(&source.current),
            events,
            source,
            upstream,
            connector: Connector::new(None),
            fail_mode,
        }
    }

    /// The limiters for `policy`'s quotas: the current ones when the quotas are unchanged.
    fn rate_limits_for(&self, policy: &CompiledPolicy) -> Arc<Limits> {
        let current = self.rate_limits.load_full();
        let key = Limits::key_of(policy.config());
        if current.key == key {
            return current;
        }
        let fresh = Arc::new(Limits::new(policy.config()));
        self.rate_limits.store(Arc::clone(&fresh));
        fresh
    }

    fn opts(&self) -> EvalOptions {
        EvalOptions {
            fail_mode: self.fail_mode,
        }
    }
}

fn request_id(session: &Session) -> String {
    session
        .req_header()
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{:016x}", rand_u64()))
}

/// A process-unique id source without a dependency: time and a counter mixed.
fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ N.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn headers_of(session: &Session) -> Headers {
    session
        .req_header()
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .collect()
}

fn decision_headers(
    id: &str,
    d: &Decision,
    target: Option<&str>,
    started: Instant,
    rate: &[(&'static str, String)],
) -> respond::Headers {
    let mut h: respond::Headers = rate.to_vec();
    h.extend([
        ("x-request-id", id.to_owned()),
        ("x-keeptrusts-decision", d.verdict.as_str().to_owned()),
        (
            "x-keeptrusts-overhead-ms",
            format!("{:.3}", started.elapsed().as_secs_f64() * 1e3),
        ),
    ]);
    if let Some(t) = target {
        h.push(("x-keeptrusts-target", t.to_owned()));
    }
    h
}

impl Gateway {
    async fn chat(&self, session: &mut Session, ctx: &mut Ctx, id: &str, client: ClientApi) -> Result<()> {
        let policy = Arc::clone(&ctx.policy);
        let limits = policy.config().size_limits.clone().unwrap_or_default();
        let headers = headers_of(session);
        // Rate limits come before any body read or upstream work.
        let rate = self.rate_limits_for(&policy);
        let mut rate_headers: respond::Headers = Vec::new();
        if !rate.is_empty() {
            let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
            if let Some(v) = rate.check(peer, &headers, now_secs()) {
                rate_headers = vec![
                    ("x-ratelimit-limit", v.limit.to_string()),
                    ("x-ratelimit-remaining", v.remaining.to_string()),
                    ("x-ratelimit-reset", v.reset.to_string()),
                ];
                if !v.allowed {
                    let mut h = rate_headers.clone();
                    h.push(("x-request-id", id.to_owned()));
                    h.push(("retry-after", v.reset.to_string()));
                    let msg = format!(
                        "rate limit exceeded ({}: {} requests per window); retry in {} s",
                        v.scope, v.limit, v.reset
                    );
                    ctx.rate_limited = true;
                    return respond::json(session, 429, &error("rate_limit", "rate_limited", msg), &h).await;
                }
            }
        }
        ctx.rate_headers = rate_headers;
        let base = vec![("x-request-id", id.to_owned())];
        if session
            .req_header()
            .headers
            .get("expect")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        {
            session.write_continue_response().await?;
        }
        let declared = session
            .req_header()
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = error(
            "validation_error",
            "request_too_large",
            format!(
                "request body exceeds size_limits.max_body_bytes ({} bytes)",
                limits.max_body_bytes
            ),
        );
        if declared.is_some_and(|n| n > limits.max_body_bytes) {
            session.set_keepalive(None);
            return respond::json(session, 413, &too_large, &base).await;
        }
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > limits.max_body_bytes {
                session.set_keepalive(None);
                return respond::json(session, 413, &too_large, &base).await;
            }
        }
        let mut request: Value = match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return respond::json(
                    session,
                    422,
                    &error(
                        "validation_error",
                        "invalid_request",
                        "request body must be a JSON object",
                    ),
                    &base,
                )
                .await;
            }
            Err(e) => {
                let msg = format!("request body is not valid JSON: {e}");
                return respond::json(session, 422, &error("validation_error", "invalid_json", msg), &base).await;
            }
        };
        if request.get("messages").and_then(Value::as_array).is_none() {
            return respond::json(
                session,
                422,
                &error("validation_error", "invalid_request", "`messages` must be a list"),
                &base,
            )
            .await;
        }
        let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
        if stream && client == ClientApi::AnthropicMessages {
            let msg = "streaming on /v1/messages is not served by this version yet; send stream: false (or use /v1/chat/completions)";
            return respond::json(
                session,
                422,
                &error("validation_error", "stream_unsupported", msg),
                &base,
            )
            .await;
        }
        // Usage is always captured: ask for it, and strip the extra chunk if the client did not.
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let decision = policy.evaluate_request(&mut request, &headers, self.opts());
        if let Some(ev) = ctx.event.as_mut() {
            ev.model = request.get("model").and_then(Value::as_str).map(str::to_owned);
            ev.stream = stream;
            ev.decision = Some(decision.clone());
        }
        if decision.verdict.is_terminal() {
            let h = decision_headers(id, &decision, None, ctx.started, &ctx.rate_headers);
            return respond::json(session, decision.http_status(), &decision.error_body(), &h).await;
        }
        if stream && client == ClientApi::OpenAiChat {
            request["stream_options"] = json!({"include_usage": true});
        }
        let client_auth = session
            .req_header()
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let anthropic = self.upstream.format == WireFormat::Anthropic;
        let translated = match (client, anthropic) {
            (ClientApi::OpenAiChat, true) => {
                kt_policy::wire::anthropic::chat_request_to_messages(&request).map(|v| ("/messages", Cow::Owned(v)))
            }
            (ClientApi::AnthropicMessages, false) => kt_policy::wire::openai::messages_request_to_chat(&request)
                .map(|v| ("/chat/completions", Cow::Owned(v))),
            (ClientApi::OpenAiChat, false) => Ok(("/chat/completions", Cow::Borrowed(&request))),
            (ClientApi::AnthropicMessages, true) => Ok(("/messages", Cow::Borrowed(&request))),
        };
        let (path, outgoing) = match translated {
            Ok(t) => t,
            Err(e) => {
                return respond::json(
                    session,
                    422,
                    &error("validation_error", "unsupported_for_target", e.0),
                    &base,
                )
                .await;
            }
        };
        let out = Bytes::from(
            serde_json::to_vec(&outgoing).map_err(|e| Error::because(ErrorType::InternalError, "encode", e))?,
        );
        let upstream_started = Instant::now();
        let sent = self
            .upstream
            .send(&self.connector, path, out, client_auth.as_deref())
            .await;
        self.upstream_state
            .store(if sent.is_ok() { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
        let exchange = match sent {
            Ok(x) => x,
            Err(e) => {
                return self
                    .upstream_failure(session, ctx, id, &decision, "upstream_unavailable", e.to_string())
                    .await;
            }
        };
        if stream && exchange.status == 200 {
            let h = decision_headers(id, &decision, Some(&self.upstream.id), ctx.started, &ctx.rate_headers);
            return crate::streaming::relay(
                session,
                exchange,
                &policy,
                &request,
                &headers,
                self.opts(),
                include_usage,
                anthropic.then(|| AnthropicToOpenAiStream::new(now_secs())),
                h,
            )
            .await;
        }
        let status = exchange.status;
        let answer = match exchange.body(limits.max_response_bytes).await {
            Ok(b) => b,
            Err(e) => {
                return self
                    .upstream_failure(session, ctx, id, &decision, "upstream_unavailable", e.to_string())
                    .await;
            }
        };
        let upstream_time = upstream_started.elapsed();
        let mut response: Value = match serde_json::from_slice(&answer) {
            Ok(v) => v,
            Err(_) => {
                let msg = format!("upstream answered {status} with a body that is not JSON");
                return self
                    .upstream_failure(session, ctx, id, &decision, "invalid_upstream_response", msg)
                    .await;
            }
        };
        if !(200..300).contains(&status) {
            // Provider errors keep their status and body for 4xx (the client can act on
            // them); 5xx become a gateway 502.
            let code = if status >= 500 { 502 } else { status };
            let h = decision_headers(id, &decision, Some(&self.upstream.id), ctx.started, &ctx.rate_headers);
            if client == ClientApi::AnthropicMessages && !anthropic {
                // An OpenAI-style error in Anthropic's shape.
                let e = response.get("error").cloned().unwrap_or(Value::Null);
                response = json!({"type": "error", "error": {"type": e.get("type").cloned().unwrap_or_else(|| json!("api_error")), "message": e.get("message").cloned().unwrap_or_else(|| json!("upstream error"))}});
            } else if anthropic && client == ClientApi::OpenAiChat {
                // Anthropic's {"type":"error","error":{type,message}} in OpenAI's shape.
                let e = response.get("error").cloned().unwrap_or(Value::Null);
                response = json!({"error": {"message": e.get("message").cloned().unwrap_or_else(|| json!("upstream error")), "type": e.get("type").cloned().unwrap_or_else(|| json!("upstream_error")), "code": null}});
            }
            return respond::json(session, code, &response, &h).await;
        }
        match (client, anthropic) {
            (ClientApi::OpenAiChat, true) => {
                response = kt_policy::wire::anthropic::messages_response_to_chat(&response, now_secs())
            }
            (ClientApi::AnthropicMessages, false) => {
                match kt_policy::wire::openai::chat_response_to_messages(&response) {
                    Ok(r) => response = r,
                    Err(e) => {
                        return self
                            .upstream_failure(session, ctx, id, &decision, "invalid_upstream_response", e.0)
                            .await;
                    }
                }
            }
            _ => {}
        }
        let mut decision = decision;
        decision.absorb(policy.evaluate_response(&request, &mut response, &headers, self.opts()));
        if let Some(ev) = ctx.event.as_mut() {
            ev.decision = Some(decision.clone());
            ev.usage = response.get("usage").cloned();
        }
        let overhead = ctx.started.elapsed().saturating_sub(upstream_time);
        ctx.overhead = Some(overhead.as_secs_f64());
        let mut h = decision_headers(id, &decision, Some(&self.upstream.id), ctx.started, &ctx.rate_headers);
        h.retain(|(k, _)| *k != "x-keeptrusts-overhead-ms");
        h.push((
            "x-keeptrusts-overhead-ms",
            format!("{:.3}", overhead.as_secs_f64() * 1e3),
        ));
        if decision.verdict.is_terminal() {
            return respond::json(session, decision.http_status(), &decision.error_body(), &h).await;
        }
        respond::json(session, 200, &response, &h).await
    }

    /// A 502 in the error envelope with the decision headers.
    async fn upstream_failure(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        id: &str,
        decision: &Decision,
        code: &str,
        message: impl Into<String>,
    ) -> Result<()> {
        let h = decision_headers(id, decision, Some(&self.upstream.id), ctx.started, &ctx.rate_headers);
        respond::json(session, 502, &error("upstream_error", code, message), &h).await
    }

    fn health(&self, ctx: &Ctx) -> Value {
        let p = &ctx.policy;
        let c = p.config();
        let reach = match self.upstream_state.load(std::sync::atomic::Ordering::Relaxed) {
            1 => "reachable",
            2 => "unreachable",
            _ => "unknown",
        };
        json!({
            "status": if reach == "unreachable" { "degraded" } else { "healthy" },
            "uptime_seconds": self.metrics.uptime_seconds(),
            "version": env!("CARGO_PKG_VERSION"),
            "providers": {self.upstream.id.clone(): reach},
            "policies_loaded": c.policies.chain.len(),
            "requests_processed": self.metrics.processed.load(std::sync::atomic::Ordering::Relaxed),
            "config": {
                "pack": {"name": c.pack.name, "version": c.pack.version, "enabled": c.pack.enabled},
                "chain": c.policies.chain,
                "digest": p.digest(),
            },
            "upstream": {"id": self.upstream.id, "host": self.upstream.host, "port": self.upstream.port},
            "events": {"written": self.events.written(), "dropped": self.events.dropped()},
        })
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            policy: self.policy.load_full(),
            started: Instant::now(),
            event: None,
            rate_headers: Vec::new(),
            rate_limited: false,
            overhead: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let id = request_id(session);
        let method = session.req_header().method.as_str().to_owned();
        let path = session.req_header().uri.path().to_owned();
        let base = vec![("x-request-id", id.clone())];
        match (method.as_str(), path.as_str()) {
            ("POST", "/v1/chat/completions") => {
                ctx.event = Some(EventData {
                    request_id: id.clone(),
                    ..EventData::default()
                });
                self.chat(session, ctx, &id, ClientApi::OpenAiChat).await?
            }
            ("POST", "/v1/messages") => {
                ctx.event = Some(EventData {
                    request_id: id.clone(),
                    ..EventData::default()
                });
                self.chat(session, ctx, &id, ClientApi::AnthropicMessages).await?
            }
            ("GET", "/health") => respond::json(session, 200, &self.health(ctx), &base).await?,
            ("GET", "/metrics") => {
                let body = self.metrics.render(self.events.written(), self.events.dropped());
                respond::text(session, 200, "text/plain; version=0.0.4", body).await?
            }
            ("GET", "/v1/models") => respond::json(session, 200, &models(ctx.policy.config()), &base).await?,
            ("GET", "/healthz") | ("GET", "/readyz") => {
                respond::json(session, 200, &json!({"status": "ok"}), &base).await?
            }
            ("POST", "/keeptrusts/config/reload") => {
                let outcome = self.source.reload();
                let status = if matches!(outcome, ReloadOutcome::Applied { .. }) {
                    200
                } else {
                    422
                };
                respond::json(session, status, &outcome.to_json(), &base).await?;
            }
            ("GET", "/keeptrusts/config") => {
                let mut config = serde_json::to_value(ctx.policy.config()).unwrap_or(Value::Null);
                redact_literal_keys(&mut config);
                respond::json(session, 200, &config, &base).await?;
            }
            (_, "/v1/chat/completions")
            | (_, "/v1/messages")
            | (_, "/v1/models")
            | (_, "/metrics")
            | (_, "/health")
            | (_, "/healthz")
            | (_, "/readyz") => {
                let msg = format!("method {method} is not allowed on {path}");
                respond::json(
                    session,
                    405,
                    &error("validation_error", "method_not_allowed", msg),
                    &base,
                )
                .await?
            }
            _ => {
                let msg = format!("no route for {method} {path}");
                respond::json(session, 404, &error("validation_error", "not_found", msg), &base).await?
            }
        }
        Ok(true)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let Some(ev) = ctx.event.take() else { return };
        let status = session.response_written().map(|h| h.status.as_u16()).unwrap_or(0);
        let elapsed = ctx.started.elapsed().as_secs_f64();
        let usage = ev.usage.as_ref();
        let tokens = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
        self.metrics.record(&RequestRecord {
            provider: &self.upstream.id,
            model: ev.model.as_deref().unwrap_or(""),
            status,
            seconds: elapsed,
            overhead_seconds: ctx.overhead.unwrap_or(elapsed),
            policies: ev
                .decision
                .as_ref()
                .map(|d| {
                    d.policy_results
                        .iter()
                        .filter(|r| {
                            !r.note
                                .as_deref()
                                .is_some_and(|n| matches!(n, "chain short-circuited" | "disabled" | "pack disabled"))
                        })
                        .map(|r| (r.kind, r.verdict.as_str()))
                        .collect()
                })
                .unwrap_or_default(),
            input_tokens: tokens("prompt_tokens"),
            output_tokens: tokens("completion_tokens"),
            rate_limited: ctx.rate_limited,
        });
        let config = ctx.policy.config();
        let d = ev.decision.unwrap_or_default();
        let usage = ev.usage.unwrap_or(Value::Null);
        self.events.emit(json!({
            "id": format!("evt_{:016x}", rand_u64()),
            "event_type": "decision",
            "timestamp": crate::events::rfc3339_now(),
            "request_id": ev.request_id,
            "status": status,
            "verdict": d.verdict.as_str(),
            "reason_code": d.reason_code,
            "policy": d.policy,
            "degraded": d.degraded,
            "model": ev.model,
            "provider": self.upstream.id,
            "stream": ev.stream,
            "rate_limited": ctx.rate_limited,
            "input_tokens": usage.get("prompt_tokens"),
            "output_tokens": usage.get("completion_tokens"),
            "latency_ms": ctx.started.elapsed().as_secs_f64() * 1e3,
            "config": {"name": config.pack.name, "version": config.pack.version, "digest": ctx.policy.digest()},
            "policy_results": d.policy_results,
        }));
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Every request is answered in request_filter; the proxy loop never runs.
        Error::e_explain(
            ErrorType::InternalError,
            "no upstream for requests answered by the gateway",
        )
    }
}

/// `GET /v1/models`: the configured target models and model-group names (with aliases),
/// restricted to `unified_access.allowed_models` when that is set.
fn models(config: &kt_policy::config::PolicyConfig) -> Value {
    let mut ids: Vec<(String, String)> = Vec::new();
    let mut add = |id: &str, owner: &str| {
        if !id.is_empty() && !ids.iter().any(|(i, _)| i == id) {
            ids.push((id.to_owned(), owner.to_owned()));
        }
    };
    for t in config.providers.as_ref().map(|p| p.targets.as_slice()).unwrap_or(&[]) {
        if let Some(m) = &t.model {
            add(m, &t.provider);
        }
    }
    for g in config.model_groups.as_deref().unwrap_or(&[]) {
        add(&g.name, "kt-model-group");
        for a in &g.aliases {
            add(a, "kt-model-group");
        }
    }
    let allowed = config
        .unified_access
        .as_ref()
        .map(|u| u.allowed_models.as_slice())
        .unwrap_or(&[]);
    let data: Vec<Value> = ids
        .into_iter()
        .filter(|(id, _)| allowed.is_empty() || allowed.contains(id))
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    json!({"object": "list", "data": data})
}

/// Literal `api_key` values never leave the gateway.
fn redact_literal_keys(config: &mut Value) {
    if let Some(targets) = config.pointer_mut("/providers/targets").and_then(Value::as_array_mut) {
        for t in targets {
            if let Some(k) = t.get_mut("api_key").filter(|k| k.is_string()) {
                *k = json!("***");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::models;
    use kt_policy::config::{Source, load_sources};

    #[test]
    fn models_lists_targets_and_groups_within_the_allowlist() {
        let yaml = "pack: {name: m, version: 1.0.0, enabled: true}\npolicies: {chain: []}\nproviders:\n  targets:\n    - {id: a, provider: openai, model: gpt-4o-mini}\n    - {id: b, provider: vllm, model: llama-3, base_url: http://x}\nmodel_groups:\n  - {name: fast, targets: [a, b], aliases: [quick]}\n";
        let c = load_sources(&[Source {
            name: "m.yaml".into(),
            text: yaml.into(),
        }])
        .config
        .expect("valid");
        let ids: Vec<String> = models(&c)["data"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(ids, ["gpt-4o-mini", "llama-3", "fast", "quick"]);
        let limited = format!("{yaml}unified_access: {{allowed_models: [fast]}}\n");
        let c = load_sources(&[Source {
            name: "m.yaml".into(),
            text: limited,
        }])
        .config
        .expect("valid");
        assert_eq!(models(&c)["data"].as_array().map(Vec::len), Some(1));
    }
}
