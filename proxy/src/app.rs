//! The gateway as Pingora's HTTP application (`HttpServerApp`): Pingora accepts the
//! connections, reads each request head and keeps connections alive; `Gateway::route`
//! answers every request, the health and admin routes directly and the model API routes by
//! `model_api::serve` (which reads the whole body, runs the input chain before any upstream
//! contact, calls the upstream itself and runs the output chain before or while answering).
//! The gateway never hands a request to Pingora's proxy loop, so it does not use
//! `ProxyHttp`, whose per-request machinery it would only pay for.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession as Session;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorSource, ErrorType, Result};
use serde_json::{Value, json};

use crate::gateway::{ClientApi, Ctx, EventData, Gateway};
use crate::ids::{hex_id, rand_u64};
use crate::metrics::RequestRecord;
use crate::reload::ReloadOutcome;
use crate::respond::{self, error};
use crate::routing::models;

impl Gateway {
    fn health(&self, ctx: &Ctx) -> Value {
        let p = &ctx.rt.policy;
        let c = p.config();
        let mut providers = serde_json::Map::new();
        let mut any_down = false;
        let mut all_down = true;
        for t in &ctx.rt.router.targets {
            let reach = t.health.reachability();
            any_down |= reach == "unreachable" || t.health.circuit() == "open";
            all_down &= reach == "unreachable";
            providers.insert(t.id.clone(), json!(reach));
        }
        let status = if all_down {
            "unhealthy"
        } else if any_down {
            "degraded"
        } else {
            "healthy"
        };
        json!({
            "status": status,
            "uptime_seconds": self.metrics.uptime_seconds(),
            "version": env!("CARGO_PKG_VERSION"),
            "providers": providers,
            "policies_loaded": c.policies.chain.len(),
            "requests_processed": self.metrics.processed.load(Ordering::Relaxed),
            "cache": self.cache.stats_json(),
            "config": {
                "pack": {"name": c.pack.name, "version": c.pack.version, "enabled": c.pack.enabled},
                "chain": c.policies.chain,
                "digest": p.digest(),
            },
            "events": {"written": self.events.written(), "dropped": self.events.dropped()},
            "concurrency": {
                "max": self.max_concurrency,
                "in_flight": self.max_concurrency - self.concurrency.available_permits(),
            },
        })
    }
}

/// The gateway's own routes; the model API routes are `ClientApi::of_path`.
#[derive(Debug, Clone, Copy)]
enum Route {
    Health,
    Metrics,
    Models,
    Healthz,
    Readyz,
    Reload,
    Config,
    ProviderMetrics,
}

/// (path, method, route): anything else on these paths is 405, any other path 404.
const ROUTES: &[(&str, &str, Route)] = &[
    ("/health", "GET", Route::Health),
    ("/metrics", "GET", Route::Metrics),
    ("/v1/models", "GET", Route::Models),
    ("/healthz", "GET", Route::Healthz),
    ("/readyz", "GET", Route::Readyz),
    ("/keeptrusts/config/reload", "POST", Route::Reload),
    ("/keeptrusts/config", "GET", Route::Config),
    ("/keeptrusts/providers/metrics", "GET", Route::ProviderMetrics),
];

/// An answer of the gateway's own.
enum Answer {
    Json(u16, Value),
    /// The Prometheus exposition.
    Text(String),
}

impl Answer {
    fn error(status: u16, code: &str, message: impl Into<String>) -> Answer {
        Answer::Json(status, error("validation_error", code, message))
    }
}

/// Compares two secrets in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn request_id(session: &Session) -> String {
    session
        .req_header()
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| hex_id("req_", rand_u64()))
}

#[async_trait]
impl HttpServerApp for Gateway {
    /// One request: its head, then `route`, then the decision event; the connection is
    /// kept for the next request when the request and its answer allow it.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: Session,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // A kept-alive connection carries the marker its previous request left.
        let reused = session
            .take_connection_user_context()
            .is_some_and(|c| c.is::<KeptAlive>());
        let _open = self.connections.admit(self.conn.max_connections, reused).await?;
        let read = match self.read_head(&mut session, reused).await {
            Some(read) => read,
            None => return None,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if e.etype() == &ErrorType::InvalidHTTPHeader {
                    session.set_keepalive(None);
                    let body = error(
                        "validation_error",
                        "bad_request",
                        match e.context.as_ref() {
                            Some(why) => format!("the request is not valid HTTP: {why}"),
                            None => "the request is not valid HTTP".to_owned(),
                        },
                    );
                    let _ = respond::json(&mut session, 400, &body, &Vec::new()).await;
                }
                session.shutdown().await;
                return None;
            }
        }
        // The next request on this connection may idle this long; a stalled write ends it.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.conn.idle_timeout.as_secs().max(1)));
        }
        session.set_write_timeout(Some(self.conn.write_timeout));
        session.set_read_timeout(Some(self.conn.body_timeout));
        if *shutdown.borrow() || self.stopping.load(Ordering::Acquire) {
            session.set_keepalive(None);
        }
        let mut ctx = self.new_ctx();
        let outcome = self.route(&mut session, &mut ctx).await;
        if let Err(e) = &outcome {
            failed(&mut session, e).await;
        }
        self.logging(&session, &mut ctx);
        let mut settings = HttpPersistentSettings::for_session(&session);
        settings.set_user_context(Box::new(KeptAlive));
        session
            .finish()
            .await
            .ok()
            .flatten()
            .map(|s| ReusedHttpStream::from_reusable_stream(s, settings))
    }

    async fn http_cleanup(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stopped.notify_waiters();
    }
}

/// Left on a connection kept alive for its next request: it is already counted.
struct KeptAlive;

/// A request that ended in an error: the connection is not reused, and a client that has
/// no answer yet gets one in the error envelope (none when the connection itself broke).
async fn failed(session: &mut Session, e: &Error) {
    session.set_keepalive(None);
    if session.response_written().is_some() {
        return;
    }
    let (status, kind, code) = match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(s), _) => (*s, "upstream_error", "gateway_error"),
        (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, ErrorSource::Downstream) => return,
        (ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Downstream) => return,
        (_, ErrorSource::Downstream) => (400, "validation_error", "bad_request"),
        (_, ErrorSource::Upstream) => (502, "upstream_error", "bad_gateway"),
        _ => (500, "internal_error", "internal_error"),
    };
    let body = error(kind, code, format!("the gateway could not complete the request: {e}"));
    let _ = respond::json(session, status, &body, &Vec::new()).await;
}

impl Gateway {
    /// Waits for a request head: within `--header-timeout` on a new connection, within the
    /// idle and head timeouts together on a kept-alive one. `None`: close the connection
    /// (a timeout, the service stopping, or room needed for a new connection).
    async fn read_head(&self, session: &mut Session, reused: bool) -> Option<Result<bool>> {
        let deadline = if reused {
            self.conn.idle_timeout + self.conn.header_timeout
        } else {
            self.conn.header_timeout
        };
        let waiting = self.connections.waiting();
        tokio::select! {
            // A request already buffered is served before a stop is noticed.
            biased;
            read = pingora::time::timeout(deadline, session.read_request()) => read.ok(),
            () = self.stop_requested() => None,
            () = self.connections.shed(&waiting) => None,
        }
    }

    fn new_ctx(&self) -> Ctx {
        Ctx {
            rt: self.source.current.load_full(),
            started: Instant::now(),
            event: None,
            rate_headers: Vec::new(),
            rate_limited: false,
            overhead: None,
        }
    }

    /// Answers one request whose head has been read.
    async fn route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let id = request_id(session);
        // Cheap clones (no allocation): the session is borrowed mutably below.
        let method = session.req_header().method.clone();
        let uri = session.req_header().uri.clone();
        let (method, path) = (method.as_str(), uri.path());
        let answer = match self.refusal(session, ctx, method, path) {
            Some(refused) => refused,
            None => match (ClientApi::of_path(path), ROUTES.iter().find(|r| r.0 == path)) {
                (Some(api), _) if method == "POST" => {
                    ctx.event = Some(Box::new(EventData {
                        request_id: id.clone(),
                        api: api.name(),
                        ..EventData::default()
                    }));
                    return Box::pin(crate::model_api::serve(self, session, ctx, &id, api)).await;
                }
                (_, Some((_, m, Route::Models))) if method == *m => models_for(session, ctx),
                (_, Some((_, m, route))) if method == *m => self.own_route(ctx, *route).await,
                (Some(_), _) | (_, Some(_)) => Answer::error(
                    405,
                    "method_not_allowed",
                    format!("method {method} is not allowed on {path}"),
                ),
                (None, None) => Answer::error(404, "not_found", format!("no route for {method} {path}")),
            },
        };
        let base = vec![(respond::names::REQUEST_ID, id)];
        match answer {
            Answer::Json(status, body) => respond::json(session, status, &body, &base).await,
            Answer::Text(body) => respond::text(session, 200, "text/plain; version=0.0.4", body).await,
        }
    }

    /// Requests refused on their head alone: headers over `size_limits.max_header_bytes`
    /// (431), admin routes without the `--api-token` (401) or, with no token set, from
    /// anywhere but loopback (403), `CONNECT` (405). A refusal that
    /// leaves unread bytes behind closes the connection.
    fn refusal(&self, session: &mut Session, ctx: &Ctx, method: &str, path: &str) -> Option<Answer> {
        let max_header = ctx.rt.sizes.max_header_bytes;
        let head = session.req_header();
        let header_bytes: usize = head
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + head.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if header_bytes as u64 > max_header {
            session.set_keepalive(None);
            let msg = format!(
                "request headers total {header_bytes} bytes, more than size_limits.max_header_bytes ({max_header})"
            );
            return Some(Answer::error(431, "request_headers_too_large", msg));
        }
        if path.starts_with("/keeptrusts/") && self.admin_token.is_none() {
            // Without a token, the admin routes answer only on the gateway's own machine.
            let local = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .is_some_and(|a| a.ip().is_loopback());
            if !local {
                let body = error(
                    "permission_error",
                    "admin_loopback_only",
                    "admin routes answer only from this machine (loopback) unless the gateway runs with --api-token; then send `Authorization: Bearer <token>`",
                );
                return Some(Answer::Json(403, body));
            }
        }
        if path.starts_with("/keeptrusts/")
            && let Some(token) = &self.admin_token
        {
            let presented = head
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !same(presented.as_bytes(), token.as_bytes()) {
                let body = error(
                    "authentication_error",
                    "unauthorized",
                    "admin routes need `Authorization: Bearer <token>` with the gateway's --api-token",
                );
                return Some(Answer::Json(401, body));
            }
        }
        if method == "CONNECT" {
            // A tunnel is not a route here, and what follows the head would be tunnel bytes.
            session.set_keepalive(None);
            let msg = "CONNECT is not supported: kt is not a forward proxy";
            return Some(Answer::error(405, "method_not_allowed", msg));
        }
        None
    }

    /// The gateway's own routes (health, metrics, models, admin).
    async fn own_route(&self, ctx: &Ctx, route: Route) -> Answer {
        match route {
            Route::Health => Answer::Json(200, self.health(ctx)),
            Route::Metrics => Answer::Text(self.metrics.render(
                self.events.written(),
                self.events.dropped(),
                &ctx.rt.router,
                &self.cache,
            )),
            Route::Models => Answer::Json(200, models(ctx.rt.policy.config())),
            Route::Healthz => Answer::Json(200, json!({"status": "ok"})),
            Route::Readyz => {
                // A gateway serves only once a configuration is compiled and its router
                // built; `new_ctx` always has one, so a running gateway is ready unless every
                // target's circuit is open.
                if ctx.rt.router.targets.iter().all(|t| t.health.circuit() == "open") {
                    let body = json!({"status": "unavailable", "reason": "every provider target's circuit is open"});
                    Answer::Json(503, body)
                } else {
                    Answer::Json(200, json!({"status": "ready", "digest": ctx.rt.policy.digest()}))
                }
            }
            Route::Reload => {
                // Compiling a large configuration takes tens of milliseconds: off the worker
                // thread, so the connections it serves do not wait for it.
                let source = Arc::clone(&self.source);
                let outcome = match tokio::task::spawn_blocking(move || source.reload()).await {
                    Ok(outcome) => outcome,
                    Err(e) => ReloadOutcome::Rejected(vec![kt_policy::Diagnostic::error(
                        kt_policy::Code::InvalidValue,
                        "",
                        format!("the reload did not complete: {e}"),
                    )]),
                };
                let status = if matches!(outcome, ReloadOutcome::Applied { .. }) {
                    200
                } else {
                    422
                };
                Answer::Json(status, outcome.to_json())
            }
            Route::Config => {
                let mut config = serde_json::to_value(ctx.rt.policy.config()).unwrap_or(Value::Null);
                redact_literal_keys(&mut config);
                Answer::Json(200, config)
            }
            Route::ProviderMetrics => Answer::Json(200, ctx.rt.router.metrics_json()),
        }
    }

    /// Metrics and the decision event of a model request.
    fn logging(&self, session: &Session, ctx: &mut Ctx) {
        let Some(mut ev) = ctx.event.take().map(|e| *e) else {
            return;
        };
        let status = session.response_written().map(|h| h.status.as_u16()).unwrap_or(0);
        let elapsed = ctx.started.elapsed().as_secs_f64();
        let usage = ev.usage;
        let provider = ev.target.as_deref().unwrap_or("none");
        let record = RequestRecord {
            provider,
            model: ctx.rt.model_label(ev.model.as_deref()),
            status,
            seconds: elapsed,
            overhead_seconds: ctx.overhead.unwrap_or(elapsed),
            policies: std::mem::take(&mut ev.policies),
            input_tokens: usage.map_or(0, |u| u.prompt),
            output_tokens: usage.map_or(0, |u| u.completion),
            rate_limited: ctx.rate_limited,
            caller: ctx.rt.callers.as_ref().map(|_| ev.caller.as_deref().unwrap_or("none")),
            group: ctx.rt.groups.as_ref().map(|_| ev.group.as_deref().unwrap_or("none")),
            cost_usd: ev.cost.unwrap_or(0.0),
        };
        self.metrics.record(&record);
        if let Some(ledger) = &self.spend {
            ledger.record(&record, crate::ids::now_secs());
        }
        if !self.events.enabled() {
            return;
        }
        let config = ctx.rt.policy.config();
        let d = ev.decision.unwrap_or_default();
        self.events.emit(json!({
            "id": hex_id("evt_", rand_u64()),
            "event_type": "decision",
            "timestamp": crate::events::rfc3339_now(),
            "request_id": ev.request_id,
            "api": ev.api,
            "status": status,
            "verdict": d.verdict.as_str(),
            "reason_code": d.reason_code,
            "policy": d.policy,
            "degraded": d.degraded,
            "model": ev.model,
            "provider": ev.target,
            "caller_key_id": ev.caller,
            "consumer_group": ev.group,
            "route": ev.route,
            "attempts": ev.attempts,
            "cache": ev.cache,
            "stream": ev.stream,
            "rate_limited": ctx.rate_limited,
            "input_tokens": usage.map(|u| u.prompt),
            "output_tokens": usage.map(|u| u.completion),
            "cached_input_tokens": usage.map(|u| u.cached),
            "reasoning_tokens": usage.map(|u| u.reasoning),
            "cost_usd": ev.cost,
            "budget_warnings": ev.budget_warnings,
            "latency_ms": ctx.started.elapsed().as_secs_f64() * 1e3,
            "config": {"name": config.pack.name, "version": config.pack.version, "digest": ctx.rt.policy.digest()},
            "policy_results": d.policy_results,
        }));
    }
}

/// `GET /v1/models`, behind the caller keys like the model routes: a caller sees only the
/// models its key and consumer group allow.
fn models_for(session: &Session, ctx: &Ctx) -> Answer {
    let rt = &ctx.rt;
    let caller = match rt.callers.as_ref().map(|c| c.authenticate(session)) {
        Some(Err(e)) => return Answer::Json(e.status(), e.body(ClientApi::OpenAiChat)),
        Some(Ok(key)) => Some(key),
        None => None,
    };
    let group = match crate::model_api::group_of(rt, session.req_header(), caller.as_deref()) {
        Ok(g) => g,
        Err(e) => return Answer::Json(e.status(), e.body(ClientApi::OpenAiChat)),
    };
    let mut list = crate::routing::models(rt.policy.config());
    if let Some(Value::Array(data)) = list.get_mut("data") {
        data.retain(|m| {
            let id = m["id"].as_str();
            caller.as_ref().is_none_or(|k| k.allows(id).is_ok()) && group.is_none_or(|g| g.allows(id).is_ok())
        });
    }
    Answer::Json(200, list)
}

/// Literal `api_key` values and the Redis URL's credentials never leave the gateway.
fn redact_literal_keys(config: &mut Value) {
    if let Some(url) = config.pointer_mut("/shared_state/redis_url")
        && let Some((scheme_and_user, host)) = url.as_str().and_then(|u| u.rsplit_once('@'))
    {
        let scheme = scheme_and_user.split_once("://").map_or("redis", |(s, _)| s);
        *url = json!(format!("{scheme}://***@{host}"));
    }
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
    use super::*;

    #[test]
    fn shown_configurations_hide_keys_and_redis_credentials() {
        let mut c = json!({
            "providers": {"targets": [{"id": "a", "api_key": "sk-live"}, {"id": "b", "secret_key_ref": {"env": "K"}}]},
            "shared_state": {"redis_url": "rediss://user:p@ss@redis.internal:6380/0"}
        });
        redact_literal_keys(&mut c);
        assert_eq!(c["providers"]["targets"][0]["api_key"], "***");
        assert_eq!(c["providers"]["targets"][1]["secret_key_ref"]["env"], "K");
        assert_eq!(c["shared_state"]["redis_url"], "rediss://***@redis.internal:6380/0");
        let mut plain = json!({"shared_state": {"redis_url": "redis://127.0.0.1:6379"}});
        redact_literal_keys(&mut plain);
        assert_eq!(plain["shared_state"]["redis_url"], "redis://127.0.0.1:6379");
    }
}
