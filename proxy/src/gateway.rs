//! The gateway's shared state (`Gateway`: the running configuration, metrics, limits,
//! the upstream pool, the cache, the concurrency slots) and the per-request context
//! (`Ctx`) that `app` and the model API stages read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use kt_policy::{Decision, EvalOptions, FailMode};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

use crate::cache::ResponseCache;
use crate::conn::{ConnLimits, Connections};
use crate::events::EventSink;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::reload::{PolicySource, Runtime};
use crate::respond;
use crate::upstream::UpstreamPool;

pub struct Gateway {
    pub(crate) source: Arc<PolicySource>,
    pub(crate) metrics: Metrics,
    /// Rate-limit counters, kept across reloads while the quotas stay the same.
    rate_limits: ArcSwap<Limits>,
    pub(crate) events: EventSink,
    pub(crate) upstreams: UpstreamPool,
    fail_mode: FailMode,
    /// Upstream calls in flight (`--max-concurrency`).
    pub(crate) concurrency: Arc<Semaphore>,
    pub(crate) max_concurrency: usize,
    pub(crate) cache: Arc<ResponseCache>,
    /// `--api-token`: required on the `/keeptrusts/*` admin routes when set.
    pub(crate) admin_token: Option<String>,
    /// Set when the service stops: idle keep-alive connections are let go.
    pub(crate) stopping: AtomicBool,
    pub(crate) stopped: Notify,
    /// Client connection limits and the connections open.
    pub(crate) conn: ConnLimits,
    pub(crate) connections: Connections,
    /// Managed gateways: spend not yet reported to the control plane.
    pub(crate) spend: Option<Arc<crate::spend::Ledger>>,
}

/// The API a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    /// `POST /v1/chat/completions`
    OpenAiChat,
    /// `POST /v1/messages`
    AnthropicMessages,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/embeddings`
    Embeddings,
}

impl ClientApi {
    /// The API a model route serves.
    pub fn of_path(path: &str) -> Option<ClientApi> {
        match path {
            "/v1/chat/completions" => Some(ClientApi::OpenAiChat),
            "/v1/messages" => Some(ClientApi::AnthropicMessages),
            "/v1/responses" => Some(ClientApi::Responses),
            "/v1/embeddings" => Some(ClientApi::Embeddings),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientApi::OpenAiChat => "chat_completions",
            ClientApi::AnthropicMessages => "messages",
            ClientApi::Responses => "responses",
            ClientApi::Embeddings => "embeddings",
        }
    }
}

/// Per-request state: the configuration snapshot this request runs under.
pub struct Ctx {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) started: Instant,
    /// Set for model API requests: what the decision event reports.
    /// Boxed: the per-connection future Pingora moves carries `Ctx` inline.
    pub(crate) event: Option<Box<EventData>>,
    /// X-RateLimit-* headers for the response.
    pub(crate) rate_headers: respond::Headers,
    pub(crate) rate_limited: bool,
    /// Gateway time excluding upstream calls, once known.
    pub(crate) overhead: Option<f64>,
}

/// What a model request's decision event says, filled in as the request goes.
#[derive(Default)]
pub(crate) struct EventData {
    pub request_id: String,
    pub api: &'static str,
    pub model: Option<String>,
    pub stream: bool,
    /// Each policy's (kind, verdict), for the metrics.
    pub policies: Vec<(&'static str, &'static str)>,
    /// The whole decision, kept only when events are written.
    pub decision: Option<Decision>,
    pub usage: Option<kt_policy::usage::Usage>,
    /// The target that answered.
    pub target: Option<String>,
    /// The caller key's id (`caller_auth`), once authenticated.
    pub caller: Option<String>,
    /// The consumer group's name, when the request belongs to one.
    pub group: Option<String>,
    /// The route rule's name, when one matched.
    pub route: Option<String>,
    /// What the answer cost in US dollars, when its model has a price.
    pub cost: Option<f64>,
    /// Soft budgets this request went over.
    pub budget_warnings: Vec<String>,
    /// Every upstream attempt: `{target, outcome}`.
    pub attempts: Vec<Value>,
    /// `hit`, `miss` or absent when the cache is off or does not apply.
    pub cache: Option<&'static str>,
}

impl Gateway {
    pub fn new(source: Arc<PolicySource>, fail_mode: FailMode, events: EventSink, max_concurrency: usize) -> Self {
        let limits = Limits::new(source.current.load().policy.config());
        let cache = Arc::clone(&source.cache);
        Gateway {
            metrics: Metrics::default(),
            rate_limits: ArcSwap::from_pointee(limits),
            events,
            source,
            upstreams: UpstreamPool::default(),
            fail_mode,
            concurrency: Arc::new(Semaphore::new(max_concurrency.max(1))),
            max_concurrency: max_concurrency.max(1),
            cache,
            admin_token: None,
            stopping: AtomicBool::new(false),
            stopped: Notify::new(),
            conn: ConnLimits::default(),
            connections: Connections::default(),
            spend: None,
        }
    }

    /// Resolves once the service is stopping.
    pub(crate) async fn stop_requested(&self) {
        let notified = self.stopped.notified();
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// The limiters for `rt`'s quotas: the current ones when the quotas are unchanged.
    pub(crate) fn rate_limits_for(&self, rt: &Runtime) -> Arc<Limits> {
        let current = self.rate_limits.load_full();
        if current.key == rt.limits_key {
            return current;
        }
        let fresh = Arc::new(Limits::new(rt.policy.config()));
        self.rate_limits.store(Arc::clone(&fresh));
        fresh
    }

    pub(crate) fn opts(&self) -> EvalOptions {
        EvalOptions {
            fail_mode: self.fail_mode,
            // Per-policy times are reported only on decision events.
            time_policies: self.events.enabled(),
        }
    }
}
