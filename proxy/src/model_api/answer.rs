//! Whole (non-streamed) answers: read bounded, the tool and output phases, translated back
//! to the client's API, stored in the cache when the policies passed them unchanged, sent.
//! The provider's bytes go out unchanged whenever nothing rewrote them.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kt_policy::config::SizeLimits;
use kt_policy::usage::{AnswerUsage, Usage};
use kt_policy::{CompiledPolicy, Decision, Headers, Verdict};
use pingora::protocols::http::ServerSession as Session;
use serde_json::Value;

use super::body::Parsed;
use super::{Progress, Stop, answer_headers, note_decision};
use crate::cache::{Cached, Fill};
use crate::error::RequestError;
use crate::gateway::{ClientApi, Ctx, Gateway};
use crate::ids::now_secs;
use crate::respond;
use crate::routing::Target;
use crate::upstream::{Exchange, UpstreamError, WireFormat};

/// A request that a target accepted: what the answer stages read.
pub(crate) struct Answered<'a> {
    /// The chain this request runs (its consumer group's, or the configuration's).
    pub policy: &'a CompiledPolicy,
    pub req: &'a Parsed,
    pub headers: &'a Headers,
    /// The input decision (taken by the answer stage, which folds the output phase in).
    pub decision: Decision,
    pub target: &'a Arc<Target>,
    /// The output tokens its budget reservation covers, when it has one (streams are
    /// metered against them).
    pub metered_output: Option<u64>,
}

impl Answered<'_> {
    /// Whether the answer is translated between wire formats on its way to the client.
    pub(crate) fn translated(&self, client: ClientApi) -> bool {
        let anthropic = self.target.upstream.format == WireFormat::Anthropic;
        matches!(
            (client, anthropic),
            (ClientApi::OpenAiChat, true) | (ClientApi::AnthropicMessages, false)
        )
    }
}

/// The one field of an answer the gateway needs when no policy inspects the answer; the
/// rest is checked as JSON and skipped.
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: AnswerUsage,
}

/// Reads, checks and sends a whole answer; its usage goes to `p.usage` as soon as it is
/// read, so it is counted even when the answer is blocked or cannot be delivered.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn whole(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    p: &mut Progress<'_>,
    mut a: Answered<'_>,
    exchange: Exchange<'_>,
    limits: &SizeLimits,
    fill: Option<Fill>,
) -> Result<(), Stop> {
    let t1 = Instant::now();
    let answer = Box::pin(exchange.body(limits.max_response_bytes)).await;
    p.upstream_time += t1.elapsed();
    // The upstream part is done: the slot goes back before the client is written to.
    drop(p.slot.take());
    let answer = answer.map_err(|e| match e {
        UpstreamError::TooLarge(_) => RequestError::UpstreamTooLarge(e.to_string()),
        UpstreamError::Deadline(..) | UpstreamError::Timeout(..) => RequestError::UpstreamTimeout(e.to_string()),
        e => RequestError::UpstreamUnavailable(e.to_string()),
    })?;
    let input = std::mem::take(&mut a.decision);
    let (decision, usage, bytes) = check(gw, ctx, p.client, &a, input, answer)?;
    p.usage = usage;
    p.usage_final = true;
    let overhead = ctx.started.elapsed().saturating_sub(p.upstream_time);
    ctx.overhead = Some(overhead.as_secs_f64());
    if decision.verdict.is_terminal() {
        p.verdict = Some(decision.verdict);
        return Err(RequestError::Policy(Box::new(decision)).into());
    }
    let mut h = answer_headers(ctx, p, &decision);
    if let Some(f) = fill.as_ref() {
        h.push((respond::names::CACHE, "miss".into()));
        if decision.verdict == Verdict::Allow && !decision.degraded {
            let cached = Cached {
                body: bytes.clone(),
                target: a.target.id.clone(),
                usage,
            };
            let org_known = ctx.rt.fleet.as_ref().is_none_or(|f| f.org_id().is_some());
            gw.cache.fill(f, cached, ctx.rt.shared.as_ref().filter(|_| org_known));
        }
    }
    drop(fill);
    respond::raw_json(session, 200, bytes, h).await?;
    Ok(())
}

/// The decision over the answer, its usage and the bytes the client gets.
fn check(
    gw: &Gateway,
    ctx: &mut Ctx,
    client: ClientApi,
    a: &Answered<'_>,
    mut decision: Decision,
    answer: Bytes,
) -> Result<(Decision, Option<Usage>, Bytes), RequestError> {
    let policy = a.policy;
    let invalid = || RequestError::InvalidUpstreamResponse("the upstream answered with a body that is not JSON".into());
    let translated = a.translated(client);
    let inspects = client != ClientApi::Embeddings
        && (policy.runs_phase(kt_policy::Phase::Output) || policy.runs_phase(kt_policy::Phase::Tool));
    if !inspects && !translated {
        // No output or tool policy and nothing to translate: the answer is checked as JSON
        // and its usage read, without building it as a tree; the bytes go out unchanged.
        let text = kt_policy::json::utf8(&answer).map_err(|_| invalid())?;
        let u = serde_json::from_str::<UsageOnly>(text).map_err(|_| invalid())?;
        return Ok((decision, u.usage.0, answer));
    }
    if !translated
        && client == ClientApi::OpenAiChat
        && let Some(view) = kt_policy::exchange::chat_answer_view(&answer)
        && let Some(out) = policy.evaluate_answer_view(&a.req.request, &view.texts(), a.headers, gw.opts())
    {
        // The common chat answer, read as a view: when no policy rewrites it, the decision
        // is the tree's and the provider's bytes go out unchanged, without the answer ever
        // being built as a tree. An answer a policy rewrites goes the tree's way below.
        let usage = view.usage.0;
        decision.absorb(out);
        note_decision(gw, ctx, &decision);
        return Ok((decision, usage, answer));
    }
    let mut response: Value = serde_json::from_slice(&answer).map_err(|_| invalid())?;
    let anthropic = a.target.upstream.format == WireFormat::Anthropic;
    match (client, anthropic) {
        (ClientApi::OpenAiChat, true) => {
            response = kt_policy::wire::anthropic::messages_response_to_chat(&response, now_secs())
        }
        (ClientApi::AnthropicMessages, false) => {
            response = kt_policy::wire::openai::chat_response_to_messages(&response)
                .map_err(|e| RequestError::InvalidUpstreamResponse(e.0))?;
        }
        _ => {}
    }
    let input_verdict = decision.verdict;
    if client != ClientApi::Embeddings {
        decision.absorb(policy.evaluate_response(&a.req.request, &mut response, a.headers, gw.opts()));
    }
    note_decision(gw, ctx, &decision);
    let usage = response.get("usage").and_then(Usage::from_value);
    // The provider's bytes go to the client unchanged when the output phase rewrote nothing.
    let unchanged = !translated && decision.verdict == input_verdict && decision.verdict <= Verdict::Allow;
    let bytes = if unchanged || decision.verdict.is_terminal() {
        answer
    } else {
        Bytes::from(serde_json::to_vec(&response).unwrap_or_default())
    };
    Ok((decision, usage, bytes))
}
