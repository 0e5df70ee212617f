//! Admission: the request headers the limits and policies read, then the rate and token
//! limits, before any body is read or anything goes upstream.

use kt_policy::{CompiledPolicy, Headers};
use pingora::protocols::http::ServerSession as Session;

use crate::error::RequestError;
use crate::gateway::{Ctx, Gateway};
use crate::ids::now_secs;
use crate::model_api::caller::CallerKey;
use crate::model_api::groups::Group;
use crate::reload::Runtime;

/// What admission found out about the caller.
pub(crate) struct Admitted {
    /// Lower-cased request headers (empty when no limit or policy reads them).
    pub headers: Headers,
    /// The token-limit key this request's usage counts against.
    pub token_key: Option<String>,
}

/// Who is calling: the caller key and the consumer group, when the gateway knows them.
pub(crate) struct Who<'a> {
    pub caller: Option<&'a CallerKey>,
    pub group: Option<&'a Group>,
}

/// Checks the limits, the caller key's and consumer group's own among them; sets the
/// `X-RateLimit-*` headers of every answer to this request from the most restrictive.
/// `policy` is the chain the request runs.
pub(crate) fn admit(
    gw: &Gateway,
    session: &Session,
    ctx: &mut Ctx,
    rt: &Runtime,
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
    let (caller, group) = (who.caller, who.group);
    if rate.is_empty() && caller.is_none_or(|c| !c.limited()) && group.is_none_or(|g| !g.limited()) {
        return Ok(Admitted {
            headers,
            token_key: None,
        });
    }
    let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let now = now_secs();
    // An empty set of limits answers nothing.
    let mut verdict = rate.check(peer, &headers, now);
    let ids = crate::limits::Ids {
        caller: caller.map(|c| c.id.as_str()),
        group: group.map(|g| g.name.as_str()),
    };
    let tokens = rate.check_tokens(peer, &headers, now, &ids);
    let key_verdict = caller.and_then(|c| c.hit(now));
    let group_verdicts = group.into_iter().flat_map(|g| g.hit(now));
    let token_key = tokens.as_ref().map(|(key, _)| key.clone());
    for v in tokens
        .map(|(_, v)| v)
        .into_iter()
        .chain(key_verdict)
        .chain(group_verdicts)
    {
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
            return Err(RequestError::RateLimited {
                scope: v.scope,
                limit: v.limit,
                reset: v.reset,
                unit: if v.scope.contains("token") {
                    "tokens"
                } else {
                    "requests"
                },
            });
        }
    }
    Ok(Admitted { headers, token_key })
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
