//! Admission: the request headers the limits and policies read, then the rate and token
//! limits, before any body is read or anything goes upstream.

use std::sync::Arc;

use kt_policy::{CompiledPolicy, Headers};
use pingora::protocols::http::ServerSession as Session;

use crate::error::RequestError;
use crate::gateway::{Ctx, Gateway};
use crate::ids::now_secs;
use kt_policy::config::SharedFailMode;

use crate::limits::{Check, Ids, Verdict, decisive, local_verdict};
use crate::model_api::caller::CallerKey;
use crate::model_api::groups::Group;
use crate::reload::Runtime;
use crate::shared::{Outcome, Shared};

/// What admission found out about the caller.
pub(crate) struct Admitted {
    /// Lower-cased request headers (empty when no limit or policy reads them).
    pub headers: Headers,
    /// The token windows this request's usage is charged to after its answer.
    pub charges: Vec<Check>,
    /// The windows whose check waits for the budget reservation.
    pub deferred: Deferred,
}

/// Limit windows checked later than admission: with budgets in Redis they are checked and
/// counted by the budget reservation's round trip (see `budget::reserve`), so a governed
/// request makes one round trip before dispatch instead of two. Windows a request leaves
/// unchecked (it was refused or failed before its reservation) are counted in the
/// background when it ends, so every request still counts against its limits.
pub(crate) struct Deferred {
    rt: Option<Arc<Runtime>>,
    pub checks: Vec<Check>,
    /// Once the reservation checked the windows: their most restrictive verdict.
    pub verdict: Option<Option<Verdict>>,
}

impl Deferred {
    fn none() -> Deferred {
        Deferred {
            rt: None,
            checks: Vec::new(),
            verdict: None,
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let (Some(rt), false) = (self.rt.as_ref(), self.checks.is_empty()) else {
            return;
        };
        if let Some(shared) = rt.shared.clone() {
            let checks = std::mem::take(&mut self.checks);
            tokio::spawn(async move {
                let now = now_secs();
                if let Outcome::Unavailable = shared.check(&checks, now).await {
                    // As admission would have: counted here for the limits whose fail
                    // mode is `local`.
                    for c in checks
                        .iter()
                        .filter(|c| shared.fail_mode(c.scope) == SharedFailMode::Local)
                    {
                        c.local(now);
                    }
                }
            });
        }
    }
}

/// Who is calling: the caller key and the consumer group, when the gateway knows them.
pub(crate) struct Who<'a> {
    pub caller: Option<&'a CallerKey>,
    pub group: Option<&'a Group>,
}

/// Checks the limits, the caller key's and consumer group's own among them, in memory or
/// in `shared_state`'s Redis; sets the `X-RateLimit-*` headers of every answer to this
/// request from the most restrictive. `policy` is the chain the request runs. With budgets
/// and `shared_state` (and no response cache, whose hits reserve nothing) the Redis check
/// is deferred to the budget reservation's round trip.
pub(crate) async fn admit(
    gw: &Gateway,
    session: &Session,
    ctx: &mut Ctx,
    rt: &Arc<Runtime>,
    policy: &CompiledPolicy,
    who: &Who<'_>,
) -> Result<Admitted, RequestError> {
    let rate = gw.rate_limits_for(rt);
    // The headers are collected only for the limits and policies that read them.
    let headers = if policy.reads_headers() || !rate.is_empty() {
        headers_of(session)
    } else {
        Headers::new()
    };
    let mut checks = Vec::new();
    if !rate.is_empty() {
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let ids = Ids {
            caller: who.caller.map(|c| c.id.as_str()),
            group: who.group.map(|g| g.name.as_str()),
        };
        rate.checks(peer, &headers, &ids, &mut checks);
    }
    checks.extend(who.caller.and_then(CallerKey::check));
    if let Some(g) = who.group {
        g.checks(&mut checks);
    }
    if checks.is_empty() {
        return Ok(Admitted {
            headers,
            charges: checks,
            deferred: Deferred::none(),
        });
    }
    // A window Redis already refused in this window is refused here, without a round trip
    // (so a caller over its limit costs no body read, policy or Redis call).
    if rt.shared.is_some()
        && let Some(refused) = crate::limits::refused_here(&checks, now_secs())
    {
        // No room: always a refusal.
        apply_verdict(ctx, Some(refused))?;
    }
    if rt.shared.is_some() && rt.budgets.is_some() && !gw.cache.enabled() {
        let charges = checks.iter().filter(|c| c.tokens).cloned().collect();
        return Ok(Admitted {
            headers,
            charges,
            deferred: Deferred {
                rt: Some(Arc::clone(rt)),
                checks,
                verdict: None,
            },
        });
    }
    check_now(ctx, rt, &checks).await?;
    checks.retain(|c| c.tokens);
    Ok(Admitted {
        headers,
        charges: checks,
        deferred: Deferred::none(),
    })
}

/// Checks and counts `checks` now, in memory or in Redis.
pub(crate) async fn check_now(ctx: &mut Ctx, rt: &Runtime, checks: &[Check]) -> Result<(), RequestError> {
    let now = now_secs();
    let verdict = match rt.shared.as_deref() {
        Some(shared) => shared_verdict(shared, checks, now).await?,
        None => local_verdict(checks, now),
    };
    apply_verdict(ctx, verdict)
}

/// Sets the rate-limit headers from the most restrictive verdict; refuses the request when
/// it says so.
pub(crate) fn apply_verdict(ctx: &mut Ctx, verdict: Option<Verdict>) -> Result<(), RequestError> {
    let Some(v) = verdict else { return Ok(()) };
    ctx.rate_headers = rate_headers(&v);
    if v.allowed {
        return Ok(());
    }
    Err(RequestError::RateLimited {
        scope: v.scope,
        limit: v.limit,
        reset: v.reset,
        unit: if v.scope.contains("token") {
            "tokens"
        } else {
            "requests"
        },
    })
}

/// The headers of the most restrictive limit: `X-RateLimit-*`, and `RateLimit` with
/// `RateLimit-Policy` as the IETF HTTP API rate-limit fields define them (the policy named
/// by the limit's scope: `q` its quota, `w` its window, `r` what remains, `t` the seconds
/// until the window resets).
fn rate_headers(v: &Verdict) -> crate::respond::Headers {
    use crate::respond::names::*;
    vec![
        (RATELIMIT_LIMIT, v.limit.to_string()),
        (RATELIMIT_REMAINING, v.remaining.to_string()),
        (RATELIMIT_RESET, v.reset.to_string()),
        (
            RATELIMIT_POLICY,
            format!("\"{}\";q={};w={}", v.scope, v.limit, v.window),
        ),
        (RATELIMIT, format!("\"{}\";r={};t={}", v.scope, v.remaining, v.reset)),
    ]
}

/// The shared counters' verdict; while Redis is away, each limit's fail mode.
async fn shared_verdict(shared: &Shared, checks: &[Check], now: u64) -> Result<Option<Verdict>, RequestError> {
    match shared.check(checks, now).await {
        Outcome::Counted(verdicts) => Ok(decisive(verdicts)),
        Outcome::Unavailable => {
            let mut local = Vec::with_capacity(checks.len());
            for c in checks {
                match shared.fail_mode(c.scope) {
                    SharedFailMode::Local => local.push(c.clone()),
                    SharedFailMode::Open => {}
                    SharedFailMode::Closed => return Err(RequestError::LimitsUnavailable),
                }
            }
            Ok(local_verdict(&local, now))
        }
    }
}

/// Charges a finished request's tokens to the windows it was admitted under: in memory,
/// or in Redis off the request's path (in memory too when Redis cannot take them and the
/// limit's fail mode is `local`).
pub(crate) fn charge(rt: &Runtime, charges: Vec<Check>, tokens: u64) {
    if tokens == 0 || charges.is_empty() {
        return;
    }
    let now = now_secs();
    let Some(shared) = rt.shared.clone() else {
        for c in &charges {
            c.window.add(&c.key, tokens, now);
        }
        return;
    };
    tokio::spawn(async move {
        if !shared.charge(&charges, tokens, now).await {
            for c in charges
                .iter()
                .filter(|c| shared.fail_mode(c.scope) == SharedFailMode::Local)
            {
                c.window.add(&c.key, tokens, now);
            }
        }
    });
}

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
