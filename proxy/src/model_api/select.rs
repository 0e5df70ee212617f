//! Target selection: the candidate targets for the model (groups, exact model, allowlist,
//! data routing), then the exact response cache, which may answer the request itself.

use std::sync::Arc;

use kt_policy::{CompiledPolicy, Decision, Verdict};
use pingora::protocols::http::ServerSession as Session;

use super::body::Parsed;
use super::groups::Group;
use super::routes::Route;
use super::{Progress, Stop, answer_headers};
use crate::cache::{self, Lookup};
use crate::error::RequestError;
use crate::gateway::{ClientApi, Ctx, Gateway};
use crate::reload::Runtime;
use crate::respond;
use crate::routing::{Family, RouteError, Target};

/// The targets that may serve the request, best first: those of its model, narrowed by the
/// route's and the consumer group's `providers` and by data routing.
pub(crate) fn candidates(
    rt: &Runtime,
    req: &Parsed,
    client: ClientApi,
    decision: &Decision,
    group: Option<&Group>,
    route: Option<&Route>,
) -> Result<Vec<Arc<Target>>, RequestError> {
    let family = match client {
        ClientApi::OpenAiChat | ClientApi::AnthropicMessages => Family::Chat,
        ClientApi::Responses => Family::Responses,
        ClientApi::Embeddings => Family::Embeddings,
    };
    let mut candidates = rt
        .router
        .candidates(req.model.as_deref(), family)
        .map_err(|e| match e {
            RouteError::NotAllowed(m) => RequestError::ModelNotAllowed(m),
            RouteError::UnknownModel(model) => {
                let known: Vec<String> = crate::routing::model_ids(rt.policy.config())
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                RequestError::ModelNotFound {
                    model,
                    known: known.join(", "),
                }
            }
            RouteError::NoTargetFor(api) => RequestError::NoTargetFor(api),
        })?;
    if let Some(r) = route {
        narrow(&mut candidates, |id| r.uses_target(id), "route", &r.name, req)?;
    }
    if let Some(g) = group {
        narrow(&mut candidates, |id| g.uses_target(id), "consumer group", &g.name, req)?;
    }
    if let Some(allowed) = &decision.allowed_targets {
        candidates.retain(|t| allowed.contains(&t.id));
        if candidates.is_empty() {
            return Err(RequestError::NoCompliantTarget);
        }
    }
    Ok(candidates)
}

/// Keeps the candidates a route or group (`what` `name`) may use; 403 when none is left.
fn narrow(
    candidates: &mut Vec<Arc<Target>>,
    uses: impl Fn(&str) -> bool,
    what: &str,
    name: &str,
    req: &Parsed,
) -> Result<(), RequestError> {
    candidates.retain(|t| uses(&t.id));
    if candidates.is_empty() {
        return Err(RequestError::ModelNotAllowedFor(format!(
            "no target in the providers of {what} '{name}' serves model '{}'",
            req.model.as_deref().unwrap_or("(none)")
        )));
    }
    Ok(())
}

/// What the cache did with a request.
pub(crate) enum Cache {
    /// A stored answer was sent.
    Answered,
    /// Not answered: this request fills the entry when it is the leader of a miss.
    Miss(Option<cache::Fill>),
}

/// Answers from the cache when an equal request's answer is stored (answers the policies
/// passed unchanged only). Entries are kept apart per chain, consumer group and caller.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn cache(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    p: &mut Progress<'_>,
    policy: &CompiledPolicy,
    req: &Parsed,
    decision: &Decision,
    group: Option<&Group>,
) -> Result<Cache, Stop> {
    let cacheable = decision.verdict == Verdict::Allow && !decision.degraded;
    if !gw.cache.enabled() || !cacheable || (req.stream && p.client != ClientApi::OpenAiChat) {
        return Ok(Cache::Miss(None));
    }
    let org = ctx.rt.fleet.as_ref().and_then(|f| f.org_id());
    let key = cache::key(
        p.client.name(),
        policy.digest(),
        &scope(session, org.as_deref(), group),
        &req.request,
    );
    // A managed gateway that does not know its organisation yet keeps to its own cache.
    let shared = ctx
        .rt
        .shared
        .as_deref()
        .filter(|_| ctx.rt.fleet.is_none() || org.is_some());
    let fill = match gw.cache.lookup(key, shared).await {
        Lookup::Hit(hit) => {
            if let Some(ev) = ctx.event.as_mut() {
                ev.cache = Some("hit");
                ev.target = Some(hit.target.clone());
                ev.usage = hit.usage;
                // An answer from the cache costs nothing.
                ev.cost = Some(0.0);
            }
            ctx.overhead = Some(ctx.started.elapsed().as_secs_f64());
            p.target = Some(hit.target.clone());
            let mut h = answer_headers(ctx, p, decision);
            h.push((crate::respond::names::CACHE, "hit".into()));
            if req.stream {
                super::stream::replay(session, &hit.body, req.include_usage, h).await?;
            } else {
                respond::raw_json(session, 200, hit.body.clone(), h).await?;
            }
            return Ok(Cache::Answered);
        }
        Lookup::Leader(f) => Some(f),
        Lookup::Miss => None,
    };
    if let Some(ev) = ctx.event.as_mut() {
        ev.cache = Some("miss");
    }
    Ok(Cache::Miss(fill))
}

/// The caller scope of cache entries: who is asking, as far as the gateway can tell (the
/// organisation of a managed gateway, the consumer group, the caller's credentials and
/// user), so one tenant never gets another's answer, in a cache shared through Redis too.
fn scope(session: &Session, org: Option<&str>, group: Option<&Group>) -> String {
    let mut scope = String::new();
    scope.push_str(org.unwrap_or(""));
    scope.push('\u{1f}');
    scope.push_str(group.map_or("", |g| g.name.as_str()));
    scope.push('\u{1f}');
    for name in ["authorization", "x-api-key", "x-user-id", "x-keeptrusts-agent-id"] {
        let value = session.req_header().headers.get(name).and_then(|v| v.to_str().ok());
        scope.push_str(value.unwrap_or(""));
        scope.push('\u{1f}');
    }
    scope
}
