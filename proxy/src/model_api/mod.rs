//! The model API path: `POST /v1/chat/completions`, `/v1/messages`, `/v1/responses` and
//! `/v1/embeddings`, as named stages:
//!
//! 1. [`admit`]: rate and token limits, before the body is read;
//! 2. [`body`]: bounded read, strict parse (repeated keys refused), shape checks;
//! 3. input: the input and tool phases, before any upstream contact;
//! 4. [`select`]: the candidate targets, then the response cache;
//! 5. [`attempts`]: an upstream slot, then targets in order with fallback and the circuit
//!    breaker, before the first byte reaches the client;
//! 6. [`answer`] (whole answers) or [`stream`] (SSE): the output phase, then the client.
//!
//! A stage that ends the request returns a [`RequestError`]; `serve` alone writes error
//! answers. Metrics and the decision event are recorded by the gateway after `serve`.

mod admit;
mod answer;
mod attempts;
mod body;
pub(crate) mod budget;
mod caller;
mod classify;
mod groups;
mod meter;
mod routes;
mod select;
pub(crate) mod stream;

use std::sync::Arc;
use std::time::Duration;

use kt_policy::usage::Usage;
use kt_policy::{CompiledPolicy, Decision, Headers, Verdict};
use pingora::Result;
use pingora::protocols::http::ServerSession as Session;
use serde_json::Value;

use crate::error::{Loudness, RequestError};
use crate::gateway::{ClientApi, Ctx, Gateway};
use crate::reload::Runtime;

use crate::respond::{self, names};
pub use caller::{CallerAuth, FleetKeys, fleet_keys_path};
pub use classify::ExternalBackend;
pub use groups::Groups;
pub use routes::Routes;

/// What the answer headers report, gathered as the request goes.
pub(crate) struct Progress<'a> {
    pub id: &'a str,
    pub client: ClientApi,
    /// The input decision's verdict, once the chain ran.
    pub verdict: Option<Verdict>,
    /// The target that answered (or failed last).
    pub target: Option<String>,
    pub attempts: usize,
    /// Time spent waiting on upstreams (excluded from the reported overhead).
    pub upstream_time: Duration,
    /// The upstream slot (`--max-concurrency`), held until the upstream part is done: a
    /// whole answer gives it back before it is written to the client, so a client that
    /// does not read never holds one.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The usage the provider reported, once seen (whatever the request's outcome).
    pub usage: Option<Usage>,
    /// Whether `usage` is the whole answer's (a stream cut short reports only part).
    pub usage_final: bool,
    /// Whether a provider may have billed for this request (an attempt was answered other
    /// than with a refusal, or timed out).
    pub billable: bool,
    /// The providers that may have billed it (its budgets keep their reservation).
    pub billed_providers: Vec<String>,
    /// What the answer is charged to once the request ends, set once a provider accepted it.
    pub accounts: Option<Accounts>,
}

/// The token windows, budget reservation and priced model a request's usage is charged to.
pub(crate) struct Accounts {
    rt: Arc<Runtime>,
    charges: Vec<crate::limits::Check>,
    reservation: Option<budget::Reservation>,
    /// The model the provider was asked for.
    model: Option<String>,
    /// The provider that answered.
    provider: String,
}

/// Why `run` stopped early: an error answer to write, or a broken connection.
pub(crate) enum Stop {
    Answer(RequestError),
    Io(Box<pingora::Error>),
}

impl From<RequestError> for Stop {
    fn from(e: RequestError) -> Self {
        Stop::Answer(e)
    }
}

impl From<Box<pingora::Error>> for Stop {
    fn from(e: Box<pingora::Error>) -> Self {
        Stop::Io(e)
    }
}

/// One model API request whose head has been read.
pub async fn serve(gw: &Gateway, session: &mut Session, ctx: &mut Ctx, id: &str, client: ClientApi) -> Result<()> {
    let mut progress = Progress {
        id,
        client,
        verdict: None,
        target: None,
        attempts: 0,
        upstream_time: Duration::ZERO,
        slot: None,
        usage: None,
        usage_final: false,
        billable: false,
        billed_providers: Vec::new(),
        accounts: None,
    };
    let result = run(gw, session, ctx, &mut progress).await;
    settle(ctx, &mut progress);
    match result {
        Ok(()) => Ok(()),
        Err(Stop::Io(e)) => Err(e),
        Err(Stop::Answer(e)) => answer_error(session, ctx, &progress, e).await,
    }
}

async fn run(gw: &Gateway, session: &mut Session, ctx: &mut Ctx, p: &mut Progress<'_>) -> Result<(), Stop> {
    let rt = Arc::clone(&ctx.rt);
    let t = identify(&rt, session, ctx)?;
    let policy = t.policy;
    let who = admit::Who {
        caller: t.caller.as_deref(),
        group: t.group,
    };
    let mut admitted = admit::admit(gw, session, ctx, &rt, policy, &who).await?;
    let limits = &rt.sizes;
    let bytes = body::read(session, limits, gw.conn.body_timeout).await?;
    let mut req = body::parse(&bytes, p.client)?;
    t.allows(req.request.get("model").and_then(Value::as_str))?;
    let decision = input(gw, ctx, p, &rt, policy, &mut req, &admitted.headers).await?;
    let candidates = select::candidates(&rt, &req, p.client, &decision, t.group, t.route)?;
    let fill = match select::cache(gw, session, ctx, p, policy, &req, &decision, t.group).await? {
        select::Cache::Answered => return Ok(()),
        select::Cache::Miss(fill) => fill,
    };
    let mut candidates = candidates;
    let (mut reservation, rewrite) = reserve(
        ctx,
        &rt,
        &mut req,
        bytes.len(),
        p.client,
        &candidates,
        &t,
        &mut admitted.deferred,
    )
    .await?;
    if let Some(r) = reservation.as_ref().filter(|r| !r.skipped_providers.is_empty()) {
        candidates.retain(|c| !r.skipped_providers.contains(&c.provider));
    }
    // A request the input phase passed whose only change is an added output maximum is
    // sent as the client's bytes with that field spliced in.
    let passed = decision.verdict == Verdict::Allow;
    let (bytes, allowed) = match rewrite.splice(&bytes).filter(|_| passed) {
        Some(spliced) => (bytes::Bytes::from(spliced), true),
        None => (bytes, passed && !rewrite.changed()),
    };
    let fallback = t.route.and_then(|r| r.fallback.as_ref()).unwrap_or(&rt.router.fallback);
    let plan = attempts::Plan::new(&mut req, bytes, allowed, p.client, limits.max_response_bytes, fallback);
    p.slot = Some(attempts::slot(gw).await?);
    let client_auth = upstream_auth(session, t.caller.is_none());
    let attempted = attempts::run(gw, ctx, p, &rt, candidates, &req, &plan, client_auth).await;
    // A reservation is given back only when no provider can have billed the request.
    if let Some(r) = reservation.as_mut() {
        r.dispatched = p.billable;
    }
    let (target, exchange) = attempted?;
    let metered_output = reservation.as_ref().and_then(|r| r.metered_output);
    accept(ctx, p, &rt, &target, &req, admitted.charges, reservation);
    let answered = answer::Answered {
        policy,
        req: &req,
        headers: &admitted.headers,
        decision,
        target: &target,
        metered_output,
    };
    if req.stream {
        let h = answer_headers(ctx, p, &answered.decision);
        let client = p.client;
        p.usage_final = stream::relay_for(gw, session, &answered, client, exchange, h, &mut p.usage).await?;
    } else {
        answer::whole(gw, session, ctx, p, answered, exchange, limits, fill).await?;
    }
    Ok(())
}

/// The client's own `Authorization`, passed to the provider unless a caller key took its
/// place: a caller key authenticates to the gateway only and never goes upstream.
fn upstream_auth(session: &Session, forward: bool) -> Option<&str> {
    let value = session.req_header().headers.get("authorization").filter(|_| forward)?;
    value.to_str().ok()
}

/// The provider accepted the request: from here whatever usage it reports is charged to
/// its windows, budget reservation and priced model, however the request ends.
fn accept(
    ctx: &mut Ctx,
    p: &mut Progress<'_>,
    rt: &Arc<Runtime>,
    target: &crate::routing::Target,
    req: &body::Parsed,
    charges: Vec<crate::limits::Check>,
    reservation: Option<budget::Reservation>,
) {
    p.target = Some(target.id.clone());
    if let Some(ev) = ctx.event.as_mut() {
        ev.target = Some(target.id.clone());
    }
    p.accounts = Some(Accounts {
        rt: Arc::clone(rt),
        charges,
        reservation,
        model: target.model.clone().or_else(|| req.model.clone()),
        provider: target.provider.clone(),
    });
}

/// Who is calling and which rules apply to the request.
struct Tenancy<'r> {
    caller: Option<Arc<caller::CallerKey>>,
    group: Option<&'r groups::Group>,
    route: Option<&'r routes::Route>,
    /// The chain the request runs: its group's, else its route's, else the configuration's.
    policy: &'r CompiledPolicy,
}

impl Tenancy<'_> {
    /// Refuses a model the caller key or the consumer group may not use.
    fn allows(&self, model: Option<&str>) -> Result<(), RequestError> {
        if let Some(c) = &self.caller {
            c.allows(model)?;
        }
        self.group.map_or(Ok(()), |g| g.allows(model))
    }
}

/// The caller key (authenticated first: nothing else is looked at without one), the
/// consumer group and the route of a request, noted on its event.
fn identify<'r>(rt: &'r Runtime, session: &Session, ctx: &mut Ctx) -> Result<Tenancy<'r>, RequestError> {
    let caller = match &rt.callers {
        Some(callers) => Some(callers.authenticate(session)?),
        None => None,
    };
    let head = session.req_header();
    let route = rt.routes.as_ref().and_then(|r| r.resolve(head));
    let group = group_of(rt, head, caller.as_deref())?;
    if let Some(ev) = ctx.event.as_mut() {
        ev.caller = caller.as_ref().map(|c| c.id.clone());
        ev.group = group.map(|g| g.name.clone());
        ev.route = route.map(|r| r.name.clone());
    }
    let policy = group
        .and_then(|g| g.policy.as_ref())
        .or_else(|| route.and_then(|r| r.policy.as_ref()))
        .unwrap_or(&rt.policy);
    Ok(Tenancy {
        caller,
        group,
        route,
        policy,
    })
}

/// The consumer group of a request: the one its gateway key names (which the
/// configuration must declare), else the first whose `match` holds.
pub(crate) fn group_of<'r>(
    rt: &'r Runtime,
    head: &pingora::http::RequestHeader,
    caller: Option<&caller::CallerKey>,
) -> Result<Option<&'r groups::Group>, RequestError> {
    if let Some(name) = caller.and_then(|c| c.group.as_deref()) {
        return rt
            .groups
            .as_ref()
            .and_then(|g| g.named(name))
            .map(Some)
            .ok_or_else(|| RequestError::GroupUnavailable(name.to_owned()));
    }
    Ok(rt
        .groups
        .as_ref()
        .and_then(|g| g.resolve(head, caller.map(|c| c.id.as_str()))))
}

/// The budget reservation of a request, when budgets apply to it, and whether the
/// request was changed to hold to it; the limit windows admission deferred are checked
/// with it (a refusal by them comes first), or alone when no budget applies.
#[allow(clippy::too_many_arguments)]
async fn reserve(
    ctx: &mut Ctx,
    rt: &Arc<Runtime>,
    req: &mut body::Parsed,
    body_len: usize,
    client: ClientApi,
    candidates: &[Arc<crate::routing::Target>],
    t: &Tenancy<'_>,
    deferred: &mut admit::Deferred,
) -> Result<(Option<budget::Reservation>, budget::Rewrite), RequestError> {
    let reserved = budget::reserve(
        rt,
        &mut req.request,
        body_len,
        client,
        candidates,
        t.caller.as_deref(),
        t.group,
        deferred,
    )
    .await;
    if let Some(verdict) = deferred.verdict.take() {
        admit::apply_verdict(ctx, verdict)?;
    } else if reserved.is_ok() && !deferred.checks.is_empty() {
        let checks = std::mem::take(&mut deferred.checks);
        admit::check_now(ctx, rt, &checks).await?;
    }
    let reserved = reserved?;
    let Some((reservation, rewrite)) = reserved else {
        return Ok((None, budget::Rewrite::None));
    };
    if let Some(ev) = ctx.event.as_mut() {
        ev.budget_warnings = reservation.over_soft.clone();
    }
    Ok((Some(reservation), rewrite))
}

/// Charges the usage of a request a provider accepted, however it ended: its token
/// windows, its budget reservation (settled to the cost) and the cost on its event.
fn settle(ctx: &mut Ctx, p: &mut Progress<'_>) {
    let Some(a) = p.accounts.take() else { return };
    let usage = p.usage;
    admit::charge(&a.rt, a.charges, usage.map_or(0, |u| u.total()));
    let cost = usage
        .zip(a.model.as_deref())
        .and_then(|(u, m)| a.rt.price(m).map(|p| p.cost(&u)));
    // A budget settles only to a whole answer's usage: a stream cut short keeps its
    // reservation (the provider may go on generating, and billing, after it).
    if let Some(r) = a.reservation {
        r.settle(
            usage.filter(|_| p.usage_final).map(|_| cost.unwrap_or(0.0)),
            &a.provider,
            &p.billed_providers,
        );
    }
    if let Some(ev) = ctx.event.as_mut() {
        ev.usage = usage;
        ev.cost = cost;
    }
}

/// The input and tool phases, then the external classifier when one is configured, before
/// any upstream contact; a block or escalation ends the request.
async fn input(
    gw: &Gateway,
    ctx: &mut Ctx,
    p: &mut Progress<'_>,
    rt: &Runtime,
    policy: &CompiledPolicy,
    req: &mut body::Parsed,
    headers: &Headers,
) -> Result<Decision, RequestError> {
    let mut decision = policy.evaluate_request(&mut req.request, headers, gw.opts());
    let mut unavailable = None;
    if let (Some(spec), Some(backend)) = (policy.external_classifier(), rt.external.as_ref())
        && !decision.verdict.is_terminal()
        && let Err(e) = classify::check(gw, spec, backend, &req.request, &mut decision).await
    {
        unavailable = Some(e);
    }
    req.model = req.request.get("model").and_then(Value::as_str).map(str::to_owned);
    if let Some(ev) = ctx.event.as_mut() {
        ev.model = req.model.clone();
        ev.stream = req.stream;
    }
    note_decision(gw, ctx, &decision);
    p.verdict = Some(decision.verdict);
    if let Some(e) = unavailable {
        return Err(e);
    }
    if decision.verdict.is_terminal() {
        return Err(RequestError::Policy(Box::new(decision)));
    }
    Ok(decision)
}

/// The one writer of error answers: status and body from the error, headers from what the
/// request had reached.
async fn answer_error(session: &mut Session, ctx: &mut Ctx, p: &Progress<'_>, e: RequestError) -> Result<()> {
    match e.loudness() {
        Loudness::Warn => tracing::warn!("request {}: {} ({})", p.id, e.code(), e.status()),
        Loudness::Debug => tracing::debug!("request {}: {} ({})", p.id, e.code(), e.status()),
    }
    if let RequestError::RateLimited { .. } = e {
        ctx.rate_limited = true;
    }
    if e.closes_connection() {
        session.set_keepalive(None);
    }
    let mut h = match p.verdict {
        Some(verdict) => {
            let overhead = ctx.started.elapsed().saturating_sub(p.upstream_time);
            ctx.overhead = Some(overhead.as_secs_f64());
            headers_with(ctx, p, verdict, overhead)
        }
        None => {
            let mut h = ctx.rate_headers.clone();
            h.push((names::REQUEST_ID, p.id.to_owned()));
            h
        }
    };
    if let Some(r) = e.retry_after() {
        h.push((names::RETRY_AFTER, r));
    }
    if let RequestError::Unauthorized(_) = e {
        h.push((names::WWW_AUTHENTICATE, "Bearer".to_owned()));
    }
    respond::json(session, e.status(), &e.body(p.client), &h).await
}

/// The response headers every answer of a model request carries once the input decision
/// is made.
pub(crate) fn answer_headers(ctx: &Ctx, p: &Progress<'_>, d: &Decision) -> respond::Headers {
    let overhead = ctx.started.elapsed().saturating_sub(p.upstream_time);
    headers_with(ctx, p, d.verdict, overhead)
}

fn headers_with(ctx: &Ctx, p: &Progress<'_>, verdict: Verdict, overhead: Duration) -> respond::Headers {
    let mut h: respond::Headers = ctx.rate_headers.clone();
    h.extend([
        (names::REQUEST_ID, p.id.to_owned()),
        (names::DECISION, verdict.as_str().to_owned()),
        (names::OVERHEAD_MS, millis_3(overhead)),
    ]);
    if let Some(t) = &p.target {
        h.push((names::TARGET, t.clone()));
    }
    if p.attempts > 0 {
        h.push((names::ATTEMPTS, p.attempts.to_string()));
    }
    h
}

/// A duration in milliseconds with three decimals ("0.125"), formatted as integers.
fn millis_3(d: Duration) -> String {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let mut s = String::with_capacity(24);
    crate::ids::push_decimal(&mut s, micros / 1000);
    let frac = micros % 1000;
    s.push('.');
    for digit in [frac / 100, frac / 10 % 10, frac % 10] {
        s.push(char::from(b'0' + digit as u8));
    }
    s
}

/// Records the decision for the metrics (each policy's verdict) and, when events are
/// written, whole for the event.
pub(crate) fn note_decision(gw: &Gateway, ctx: &mut Ctx, decision: &Decision) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_written_in_milliseconds_with_three_decimals() {
        assert_eq!(millis_3(Duration::from_micros(125)), "0.125");
        assert_eq!(millis_3(Duration::from_micros(7)), "0.007");
        assert_eq!(millis_3(Duration::from_nanos(1_234_567_890)), "1234.567");
        assert_eq!(millis_3(Duration::ZERO), "0.000");
    }
}
