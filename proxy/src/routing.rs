//! Provider selection: the targets of `providers.targets` with their credentials resolved,
//! the candidate list for one request (model groups, exact model match, allowlist), its
//! order under `providers.routing.strategy`, and the fallback plan and circuit breaker the
//! gateway follows while it tries them.
//!
//! A `Router` is built from a configuration on every (re)load; per-target health (circuit
//! state, latency samples, counters) lives in a `HealthRegistry` keyed by target id, so it
//! survives reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kt_policy::config::PolicyConfig;
use kt_policy::config::{
    CircuitBreaker, FallbackTrigger, OnContentPolicy, OnContextWindow, ProviderTarget, RoutingStrategy,
};
use serde_json::{Value, json};

use kt_policy::provider_catalog::Wire;

use crate::upstream::{Upstream, WireFormat};

/// Default upstream timeout (time to the response header, and longest gap in a body).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One upstream target, ready to call.
#[derive(Debug)]
pub struct Target {
    pub id: String,
    pub provider: String,
    /// The model sent upstream; `None` passes the client's model through.
    pub model: Option<String>,
    pub upstream: Upstream,
    pub weight: u32,
    pub timeout: Duration,
    pub health: Arc<TargetHealth>,
    /// The credential the gateway sends this target, scrubbed from the error bodies it
    /// relays (an upstream may echo the key it was sent).
    pub secret: Option<Box<str>>,
}

impl Target {
    /// Whether the target serves an API family.
    pub fn serves(&self, family: Family) -> bool {
        match family {
            Family::Chat => true,
            Family::Responses => self.upstream.format == WireFormat::OpenAi && self.upstream.azure.is_none(),
            Family::Embeddings => self.upstream.format == WireFormat::OpenAi,
        }
    }
}

/// API families, for targets that serve only some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Chat completions and Anthropic Messages (translated as needed).
    Chat,
    /// OpenAI Responses (OpenAI-compatible targets, passed through).
    Responses,
    /// Embeddings (OpenAI-compatible and Azure targets).
    Embeddings,
}

/// Circuit states.
const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Health and counters of one target, kept across reloads.
#[derive(Debug, Default)]
pub struct TargetHealth {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    consecutive: AtomicU32,
    state: AtomicU8,
    /// Milliseconds since the registry's epoch when the circuit opened.
    opened_at: AtomicU64,
    probes: AtomicU32,
    /// Exponentially weighted time to the response header, microseconds.
    latency_us: AtomicU64,
    samples: AtomicU64,
    last_sample: AtomicU64,
    /// 0 unknown, 1 reachable, 2 unreachable (last outcome).
    reach: AtomicU8,
    last_error: Mutex<Option<String>>,
    epoch: OnceInstant,
}

/// An `Instant` fixed at first use, so health can store times as integers.
#[derive(Debug)]
struct OnceInstant(Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        OnceInstant(Instant::now())
    }
}

impl TargetHealth {
    fn now_ms(&self) -> u64 {
        self.epoch.0.elapsed().as_millis() as u64
    }

    /// Whether a request may go to this target now (the circuit may move to half-open).
    pub fn admit(&self, cb: Option<&CircuitBreaker>) -> bool {
        let Some(cb) = cb.filter(|c| c.enabled) else {
            return true;
        };
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => {
                let waited = self.now_ms().saturating_sub(self.opened_at.load(Ordering::Acquire));
                if waited < cb.cooldown_seconds.saturating_mul(1000) {
                    return false;
                }
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.probes.store(0, Ordering::Release);
                }
                self.take_probe(cb)
            }
            _ => self.take_probe(cb),
        }
    }

    fn take_probe(&self, cb: &CircuitBreaker) -> bool {
        self.probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < cb.half_open_max_requests).then_some(p + 1)
            })
            .is_ok()
    }

    pub fn success(&self, header_time: Duration, window: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Release);
        self.state.store(CLOSED, Ordering::Release);
        self.reach.store(1, Ordering::Relaxed);
        let now = self.now_ms();
        let us = header_time.as_micros().min(u64::MAX as u128) as u64;
        let stale = now.saturating_sub(self.last_sample.load(Ordering::Relaxed)) > window.as_millis() as u64;
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 || stale { us } else { (old * 4 + us) / 5 };
        if stale {
            self.samples.store(0, Ordering::Relaxed);
        }
        self.latency_us.store(new.max(1), Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.last_sample.store(now, Ordering::Relaxed);
    }

    /// A failed attempt; `counts` is false for failures that say nothing about the target's
    /// health (a 429 or a client error).
    pub fn failure(&self, cb: Option<&CircuitBreaker>, counts: bool, why: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why.to_owned());
        }
        if !counts {
            // The target answered: it is reachable, and a half-open probe slot frees up.
            self.reach.store(1, Ordering::Relaxed);
            if self.state.load(Ordering::Acquire) == HALF_OPEN {
                self.probes.fetch_sub(1, Ordering::AcqRel);
            }
            return;
        }
        self.reach.store(2, Ordering::Relaxed);
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        let Some(cb) = cb.filter(|c| c.enabled) else { return };
        let state = self.state.load(Ordering::Acquire);
        if state == HALF_OPEN || (state == CLOSED && n >= cb.failure_threshold) {
            self.opened_at.store(self.now_ms(), Ordering::Release);
            self.state.store(OPEN, Ordering::Release);
        }
    }

    pub fn reachability(&self) -> &'static str {
        match self.reach.load(Ordering::Relaxed) {
            1 => "reachable",
            2 => "unreachable",
            _ => "unknown",
        }
    }

    pub fn circuit(&self) -> &'static str {
        match self.state.load(Ordering::Acquire) {
            OPEN => "open",
            HALF_OPEN => "half_open",
            _ => "closed",
        }
    }

    /// 0 closed, 1 open, 2 half-open (the metrics gauge).
    pub fn circuit_code(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn latency(&self, min_samples: u64, window: Duration) -> Option<u64> {
        let fresh = self.now_ms().saturating_sub(self.last_sample.load(Ordering::Relaxed)) <= window.as_millis() as u64;
        (fresh && self.samples.load(Ordering::Relaxed) >= min_samples).then(|| self.latency_us.load(Ordering::Relaxed))
    }
}

/// Per-target health by id, shared by every router the gateway builds.
#[derive(Debug, Default)]
pub struct HealthRegistry(Mutex<HashMap<String, Arc<TargetHealth>>>);

impl HealthRegistry {
    fn get(&self, id: &str) -> Arc<TargetHealth> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(id.to_owned()).or_default())
    }
}

/// A model group resolved to target indexes.
#[derive(Debug)]
struct Group {
    names: Vec<String>,
    targets: Vec<usize>,
    fallback: Option<String>,
}

/// What the fallback section asks for.
#[derive(Debug, Clone)]
pub struct FallbackPlan {
    pub enabled: bool,
    pub triggers: Vec<FallbackTrigger>,
    pub max_attempts: u32,
    pub on_content_policy: OnContentPolicy,
    pub on_context_window: OnContextWindow,
    order: Vec<String>,
}

impl FallbackPlan {
    /// The plan of a `fallback` section over `targets` targets (fallback is on by default
    /// when there is more than one).
    pub fn of(fb: &kt_policy::config::Fallback, targets: usize) -> Self {
        FallbackPlan {
            enabled: fb.enabled.unwrap_or(targets > 1),
            triggers: fb.triggers.clone(),
            max_attempts: fb.max_fallback_attempts,
            on_content_policy: fb.on_content_policy,
            on_context_window: fb.on_context_window,
            order: fb.order.clone().unwrap_or_default(),
        }
    }

    /// The most targets one request tries.
    pub fn attempt_budget(&self) -> usize {
        if self.enabled {
            1 + self.max_attempts as usize
        } else {
            1
        }
    }
}

/// Why no candidate list could be made for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// `unified_access.allowed_models` does not list the model.
    NotAllowed(String),
    /// No group, target model or pass-through target serves the model.
    UnknownModel(String),
    /// No target serves this API family.
    NoTargetFor(&'static str),
}

/// The targets of one configuration and how to choose among them.
#[derive(Debug)]
pub struct Router {
    pub targets: Vec<Arc<Target>>,
    groups: Vec<Group>,
    strategy: RoutingStrategy,
    min_samples: u64,
    window: Duration,
    routing_order: Vec<String>,
    pub fallback: FallbackPlan,
    pub circuit_breaker: Option<CircuitBreaker>,
    allowed_models: Vec<String>,
    rr: AtomicUsize,
}

/// A credential lookup: environment variable name → value.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Values of `secret_key_ref.store` names, from the control plane.
pub type StoreValues = std::collections::HashMap<String, String>;

impl Router {
    /// Whether `other` sends every target the same credential (a reload whose policy is
    /// unchanged still takes a rotated key).
    pub fn same_credentials(&self, other: &Router) -> bool {
        self.targets.len() == other.targets.len()
            && self
                .targets
                .iter()
                .zip(&other.targets)
                .all(|(a, b)| a.id == b.id && a.secret == b.secret)
    }

    /// The router for `config`. With `override_upstream`, every request goes to that one
    /// upstream (the debug `--upstream` flag) and the client's model passes through.
    #[cfg(test)]
    pub fn build(
        config: &PolicyConfig,
        override_upstream: Option<&Upstream>,
        registry: &HealthRegistry,
        env: EnvLookup<'_>,
    ) -> Result<Router, String> {
        Self::build_with(config, override_upstream, registry, env, None)
    }

    /// Like [`Router::build`], with the values of `secret_key_ref.store` names resolved by
    /// the control plane (managed gateways; `None` elsewhere).
    pub fn build_with(
        config: &PolicyConfig,
        override_upstream: Option<&Upstream>,
        registry: &HealthRegistry,
        env: EnvLookup<'_>,
        store: Option<&StoreValues>,
    ) -> Result<Router, String> {
        let providers = config.providers.clone().unwrap_or_default();
        let mut targets = Vec::new();
        if let Some(u) = override_upstream {
            targets.push(Arc::new(Target {
                id: u.id.clone(),
                provider: "openai-compatible".into(),
                model: None,
                upstream: u.clone(),
                weight: 1,
                timeout: DEFAULT_TIMEOUT,
                health: registry.get(&u.id),
                secret: None,
            }));
        } else {
            for t in &providers.targets {
                targets.push(Arc::new(target(t, registry, env, store)?));
            }
            if targets.is_empty() {
                return Err("no provider target in the configuration: add providers.targets (provider: openai, anthropic, azure or an OpenAI-compatible base_url), or pass --upstream URL".into());
            }
        }
        let index = |id: &str| targets.iter().position(|t| t.id == id);
        let mut groups = Vec::new();
        if override_upstream.is_none() {
            for g in config.model_groups.as_deref().unwrap_or(&[]) {
                let mut ids = Vec::new();
                for id in &g.targets {
                    ids.push(index(id).ok_or_else(|| format!("model group '{}' names unknown target '{id}'", g.name))?);
                }
                let mut names = vec![g.name.clone()];
                names.extend(g.aliases.iter().cloned());
                groups.push(Group {
                    names,
                    targets: ids,
                    fallback: g.fallback_group.clone(),
                });
            }
        }
        let routing = providers.routing.clone().unwrap_or_default();
        let fallback = FallbackPlan::of(&providers.fallback.clone().unwrap_or_default(), targets.len());
        Ok(Router {
            targets,
            groups,
            strategy: routing.strategy,
            min_samples: u64::from(routing.min_sample_count.unwrap_or(10)),
            window: Duration::from_secs(routing.window_seconds.unwrap_or(300)),
            routing_order: routing.order.clone().unwrap_or_default(),
            fallback,
            circuit_breaker: providers.circuit_breaker.clone(),
            allowed_models: config
                .unified_access
                .as_ref()
                .map(|u| u.allowed_models.clone())
                .unwrap_or_default(),
            rr: AtomicUsize::new(0),
        })
    }

    /// The latency window of `lowest_latency` (also how long a sample stays fresh).
    pub fn latency_window(&self) -> Duration {
        self.window
    }

    /// The targets to try for `model`, best first. The caller tries at most
    /// `FallbackPlan::attempt_budget()` of them and skips circuit-open ones without using up an attempt.
    pub fn candidates(&self, model: Option<&str>, family: Family) -> Result<Vec<Arc<Target>>, RouteError> {
        if let Some(m) = model
            && !self.allowed_models.is_empty()
            && !self.allowed_models.iter().any(|a| a == m)
        {
            return Err(RouteError::NotAllowed(m.to_owned()));
        }
        let serves = |i: &usize| self.targets[*i].serves(family);
        let (mut primary, tail): (Vec<usize>, Vec<usize>) = match model {
            Some(m) => {
                if let Some(g) = self.group(m) {
                    let mut tail = Vec::new();
                    let mut seen = vec![m.to_owned()];
                    let mut next = g.fallback.clone();
                    while let Some(name) = next.take() {
                        if seen.contains(&name) {
                            break;
                        }
                        let Some(fg) = self.group(&name) else { break };
                        tail.extend(fg.targets.iter().copied().filter(|i| !g.targets.contains(i)));
                        seen.push(name);
                        next = fg.fallback.clone();
                    }
                    (g.targets.clone(), tail)
                } else {
                    let exact: Vec<usize> = (0..self.targets.len())
                        .filter(|i| self.targets[*i].model.as_deref() == Some(m))
                        .collect();
                    if exact.is_empty() {
                        let open: Vec<usize> = (0..self.targets.len())
                            .filter(|i| self.targets[*i].model.is_none())
                            .collect();
                        if open.is_empty() {
                            return Err(RouteError::UnknownModel(m.to_owned()));
                        }
                        (open, Vec::new())
                    } else {
                        (exact, Vec::new())
                    }
                }
            }
            None => ((0..self.targets.len()).collect(), Vec::new()),
        };
        primary.retain(serves);
        let mut tail: Vec<usize> = tail.into_iter().filter(serves).collect();
        if primary.is_empty() && tail.is_empty() {
            return Err(RouteError::NoTargetFor(match family {
                Family::Chat => "chat",
                Family::Responses => "responses",
                Family::Embeddings => "embeddings",
            }));
        }
        self.order(&mut primary);
        if !self.fallback.order.is_empty() && primary.len() > 1 {
            let pos = |i: &usize| {
                self.fallback
                    .order
                    .iter()
                    .position(|id| *id == self.targets[*i].id)
                    .unwrap_or(usize::MAX)
            };
            primary[1..].sort_by_key(pos);
        }
        primary.append(&mut tail);
        Ok(primary.into_iter().map(|i| Arc::clone(&self.targets[i])).collect())
    }

    fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.names.iter().any(|n| n == name))
    }

    fn order(&self, c: &mut [usize]) {
        if c.len() < 2 {
            return;
        }
        match self.strategy {
            RoutingStrategy::Ordered => {
                if !self.routing_order.is_empty() {
                    let pos = |i: &usize| {
                        self.routing_order
                            .iter()
                            .position(|id| *id == self.targets[*i].id)
                            .unwrap_or(usize::MAX)
                    };
                    c.sort_by_key(pos);
                }
            }
            RoutingStrategy::RoundRobin => {
                let n = self.rr.fetch_add(1, Ordering::Relaxed) % c.len();
                c.rotate_left(n);
            }
            RoutingStrategy::Weighted => {
                let total: u64 = c.iter().map(|i| u64::from(self.targets[*i].weight)).sum();
                if total > 0 {
                    let mut r = crate::ids::rand_u64() % total;
                    let mut pick = 0;
                    for (k, i) in c.iter().enumerate() {
                        let w = u64::from(self.targets[*i].weight);
                        if r < w {
                            pick = k;
                            break;
                        }
                        r -= w;
                    }
                    c[..=pick].rotate_right(1);
                }
            }
            RoutingStrategy::LowestLatency => {
                // Targets without enough fresh samples go first so they get measured;
                // the rest by their average time to the response header.
                c.sort_by_key(|i| {
                    self.targets[*i]
                        .health
                        .latency(self.min_samples, self.window)
                        .unwrap_or(0)
                });
            }
        }
    }

    /// `GET /keeptrusts/providers/metrics`.
    pub fn metrics_json(&self) -> Value {
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|t| {
                let h = &t.health;
                let requests = h.requests.load(Ordering::Relaxed);
                let failures = h.failures.load(Ordering::Relaxed);
                json!({
                    "id": t.id,
                    "provider": t.provider,
                    "model": t.model,
                    "requests": requests,
                    "failures": failures,
                    "error_rate": if requests == 0 { 0.0 } else { failures as f64 / requests as f64 },
                    "latency_ms": (h.samples.load(Ordering::Relaxed) > 0)
                        .then(|| h.latency_us.load(Ordering::Relaxed) as f64 / 1e3),
                    "latency_samples": h.samples.load(Ordering::Relaxed),
                    "consecutive_failures": h.consecutive.load(Ordering::Relaxed),
                    "circuit": h.circuit(),
                    "reachability": h.reachability(),
                    "last_error": h.last_error.lock().ok().and_then(|e| e.clone()),
                })
            })
            .collect();
        json!({
            "strategy": strategy_name(self.strategy),
            "fallback": {"enabled": self.fallback.enabled, "max_fallback_attempts": self.fallback.max_attempts},
            "circuit_breaker": self.circuit_breaker.as_ref().map(|c| json!({
                "enabled": c.enabled,
                "failure_threshold": c.failure_threshold,
                "cooldown_seconds": c.cooldown_seconds,
                "half_open_max_requests": c.half_open_max_requests,
            })),
            "targets": targets,
        })
    }
}

fn strategy_name(s: RoutingStrategy) -> &'static str {
    match s {
        RoutingStrategy::Ordered => "ordered",
        RoutingStrategy::RoundRobin => "round_robin",
        RoutingStrategy::Weighted => "weighted",
        RoutingStrategy::LowestLatency => "lowest_latency",
    }
}

/// A managed gateway's configuration comes from the control plane, where whoever may push
/// configurations could name any host: there a key from the gateway's environment goes
/// only to the providers' public https endpoints (keys for other hosts are stored secrets
/// with a binding). A local configuration is the operator's own file and is trusted.
fn env_key_bound(owner: &str, url: &str, var: &str, managed: bool) -> Result<(), String> {
    if !managed || kt_policy::secret_binding::allows(None, url) {
        return Ok(());
    }
    Err(format!(
        "{owner} would send the key in ${var} to {url}; a managed gateway sends keys from its environment only to the providers' public endpoints — store the key as a secret bound to that host (kt secret create --allowed-host …) and use secret_key_ref.store"
    ))
}

/// The value `r` names, for `owner` (named in errors) to send to `url`: an environment
/// variable, or a stored secret on a managed gateway (`store` given).
pub(crate) fn secret_value(
    owner: &str,
    r: &kt_policy::config::SecretKeyRef,
    url: &str,
    env: EnvLookup<'_>,
    store: Option<&StoreValues>,
) -> Result<String, String> {
    if let Some(name) = r.env.as_deref() {
        if kt_policy::secret_binding::is_own_setting(name) {
            return Err(format!(
                "{owner} names ${name}, one of kt's own settings, as its key; kt never sends those upstream"
            ));
        }
        env_key_bound(owner, url, name, store.is_some())?;
        return env(name).ok_or_else(|| {
            format!(
                "{owner} reads its key from ${name}, which is not set (export {name}=… before starting the gateway)"
            )
        });
    }
    let name = r.store.as_deref().unwrap_or_default();
    match store {
        Some(values) => values.get(name).cloned().ok_or_else(|| {
            format!(
                "{owner} reads its key from stored secret '{name}', which the control plane does not have (kt secret create --name {name} …)"
            )
        }),
        None => Err(format!(
            "{owner} uses secret_key_ref.store, which needs a managed gateway (kt run --managed)"
        )),
    }
}

fn target(
    t: &ProviderTarget,
    registry: &HealthRegistry,
    env: EnvLookup<'_>,
    store: Option<&StoreValues>,
) -> Result<Target, String> {
    let serving = kt_policy::provider_catalog::serving(t).map_err(|e| format!("target '{}': {e}", t.id))?;
    let anthropic = serving.wire == Wire::Anthropic;
    let azure = serving.wire == Wire::Azure;
    let url = serving.base_url;
    let owner = format!("target '{}'", t.id);
    let key = match (&t.secret_key_ref, &t.api_key) {
        (Some(r), _) if r.env.is_some() || r.store.is_some() => Some(secret_value(&owner, r, &url, env, store)?),
        (_, Some(k)) => Some(k.clone()),
        _ => match serving.key_env.iter().find(|name| env(name).is_some()) {
            Some(name) => {
                env_key_bound(&owner, &url, name, store.is_some())?;
                env(name)
            }
            None => None,
        },
    };
    let (header, prefix) = (serving.auth_header, serving.auth_prefix);
    let secret = key.as_deref().map(Box::from);
    let auth = key.map(|k| (header, format!("{prefix}{k}")));
    let mut upstream = if azure {
        let deployment = t
            .azure_deployment
            .clone()
            .or_else(|| t.model.clone())
            .ok_or_else(|| format!("azure target '{}' needs azure_deployment or model", t.id))?;
        let version = t.azure_api_version.clone().unwrap_or_else(|| "2024-02-01".to_owned());
        Upstream::azure(&t.id, &url, &deployment, &version, auth).map_err(|e| e.to_string())?
    } else {
        Upstream::from_url(&t.id, &url, auth).map_err(|e| e.to_string())?
    };
    if anthropic {
        upstream.format = WireFormat::Anthropic;
    }
    if let Some(tpl) = &t.path_template {
        let model = t.azure_deployment.as_deref().or(t.model.as_deref()).unwrap_or("");
        upstream.chat_path = Some(tpl.replace("{model}", model));
    }
    Ok(Target {
        id: t.id.clone(),
        provider: t.provider.clone(),
        model: t.model.clone(),
        upstream,
        weight: t.weight.unwrap_or(1),
        timeout: t.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT),
        health: registry.get(&t.id),
        secret,
    })
}

/// `GET /v1/models`: the configured target models and model-group names (with aliases),
/// restricted to `unified_access.allowed_models` when that is set.
pub(crate) fn models(config: &kt_policy::config::PolicyConfig) -> Value {
    let data: Vec<Value> = model_ids(config)
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    json!({"object": "list", "data": data})
}

/// (model id, owner) of every model a client may ask for.
pub(crate) fn model_ids(config: &kt_policy::config::PolicyConfig) -> Vec<(String, String)> {
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
    ids.retain(|(id, _)| allowed.is_empty() || allowed.contains(id));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use kt_policy::config::{Source, load_sources};

    fn config(yaml: &str) -> PolicyConfig {
        let text = format!("pack: {{name: r, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\n{yaml}");
        let out = load_sources(&[Source {
            name: "r.yaml".into(),
            text,
        }]);
        match out.config {
            Some(c) => c,
            None => panic!("invalid test config: {:?}", out.diagnostics),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn router(yaml: &str) -> Router {
        match Router::build(&config(yaml), None, &HealthRegistry::default(), &no_env) {
            Ok(r) => r,
            Err(e) => panic!("router: {e}"),
        }
    }

    fn ids(r: &Router, model: Option<&str>) -> Vec<String> {
        match r.candidates(model, Family::Chat) {
            Ok(c) => c.iter().map(|t| t.id.clone()).collect(),
            Err(e) => panic!("candidates: {e:?}"),
        }
    }

    const THREE: &str = "providers:\n  targets:\n    - {id: a, provider: openai, model: m1, base_url: http://127.0.0.1:1}\n    - {id: b, provider: vllm, model: m1, base_url: http://127.0.0.1:2}\n    - {id: c, provider: vllm, model: m2, base_url: http://127.0.0.1:3, weight: 5}\n";

    #[test]
    fn exact_model_match_then_groups_and_unknown_models() {
        let r = router(&format!(
            "{THREE}model_groups:\n  - {{name: fast, targets: [c], aliases: [quick], fallback_group: slow}}\n  - {{name: slow, targets: [a, b]}}\n"
        ));
        assert_eq!(ids(&r, Some("m1")), ["a", "b"]);
        assert_eq!(ids(&r, Some("m2")), ["c"]);
        assert_eq!(ids(&r, Some("quick")), ["c", "a", "b"]);
        assert_eq!(ids(&r, None), ["a", "b", "c"]);
        assert_eq!(
            r.candidates(Some("gpt-5"), Family::Chat).err(),
            Some(RouteError::UnknownModel("gpt-5".into()))
        );
    }

    #[test]
    fn a_target_without_a_model_takes_any_model() {
        let r = router(
            "providers:\n  targets:\n    - {id: a, provider: openai, model: m1, base_url: http://127.0.0.1:1}\n    - {id: open, provider: vllm, base_url: http://127.0.0.1:2}\n",
        );
        assert_eq!(ids(&r, Some("anything")), ["open"]);
        assert_eq!(ids(&r, Some("m1")), ["a"]);
    }

    #[test]
    fn allowlist_refuses_other_models() {
        let r = router(&format!("{THREE}unified_access: {{allowed_models: [m2]}}\n"));
        assert_eq!(
            r.candidates(Some("m1"), Family::Chat).err(),
            Some(RouteError::NotAllowed("m1".into()))
        );
        assert_eq!(ids(&r, Some("m2")), ["c"]);
    }

    #[test]
    fn round_robin_rotates_and_weighted_favours_weight() {
        let r = router(&format!("{THREE}  routing: {{strategy: round_robin}}\n"));
        let firsts: Vec<String> = (0..4).map(|_| ids(&r, None)[0].clone()).collect();
        assert_eq!(firsts, ["a", "b", "c", "a"]);
        let r = router(&format!("{THREE}  routing: {{strategy: weighted}}\n"));
        let mut c_first = 0;
        for _ in 0..700 {
            let order = ids(&r, None);
            assert_eq!(order.len(), 3, "every target stays a fallback candidate");
            if order[0] == "c" {
                c_first += 1;
            }
        }
        // weight 5 of 7: expect ~500 of 700.
        assert!((400..600).contains(&c_first), "c first {c_first} times");
    }

    #[test]
    fn lowest_latency_measures_then_prefers_the_fastest() {
        let r = router(&format!(
            "{THREE}  routing: {{strategy: lowest_latency, min_sample_count: 2}}\n"
        ));
        let w = r.latency_window();
        for _ in 0..2 {
            r.targets[0].health.success(Duration::from_millis(30), w);
            r.targets[1].health.success(Duration::from_millis(5), w);
        }
        // c has no samples yet: measured first; then b beats a.
        assert_eq!(ids(&r, None), ["c", "b", "a"]);
        for _ in 0..2 {
            r.targets[2].health.success(Duration::from_millis(50), w);
        }
        assert_eq!(ids(&r, None), ["b", "a", "c"]);
    }

    #[test]
    fn circuit_opens_after_threshold_and_probes_after_cooldown() {
        let cb = CircuitBreaker {
            enabled: true,
            failure_threshold: 2,
            cooldown_seconds: 1,
            half_open_max_requests: 1,
        };
        let h = TargetHealth::default();
        assert!(h.admit(Some(&cb)));
        h.failure(Some(&cb), true, "boom");
        assert_eq!(h.circuit(), "closed");
        h.failure(Some(&cb), true, "boom");
        assert_eq!(h.circuit(), "open");
        assert!(!h.admit(Some(&cb)));
        // Pretend the cooldown passed.
        h.opened_at.store(0, Ordering::Release);
        std::thread::sleep(Duration::from_millis(1005));
        assert!(h.admit(Some(&cb)), "one probe after the cooldown");
        assert_eq!(h.circuit(), "half_open");
        assert!(!h.admit(Some(&cb)), "only one probe at a time");
        h.failure(Some(&cb), true, "still down");
        assert_eq!(h.circuit(), "open");
        h.opened_at.store(0, Ordering::Release);
        assert!(h.admit(Some(&cb)));
        h.success(Duration::from_millis(1), Duration::from_secs(60));
        assert_eq!(h.circuit(), "closed");
        assert!(h.admit(Some(&cb)));
        // A 429 does not count toward opening.
        for _ in 0..5 {
            h.failure(Some(&cb), false, "429");
        }
        assert_eq!(h.circuit(), "closed");
    }

    #[test]
    fn credentials_come_from_the_named_variable() {
        let c = config(
            "providers:\n  targets:\n    - {id: a, provider: openai, model: m, secret_key_ref: {env: TEST_PROVIDER_KEY_A}}\n",
        );
        let err = Router::build(&c, None, &HealthRegistry::default(), &no_env).err();
        assert!(err.is_some_and(|e| e.contains("TEST_PROVIDER_KEY_A")));
        let env = |n: &str| (n == "TEST_PROVIDER_KEY_A").then(|| "sk-1".to_owned());
        let r = Router::build(&c, None, &HealthRegistry::default(), &env).expect("key set");
        assert_eq!(
            r.targets[0].upstream.auth,
            Some(("Authorization".into(), "Bearer sk-1".into()))
        );
    }

    #[test]
    fn the_gateway_serves_exactly_the_targets_the_catalog_resolves() {
        for info in kt_policy::provider_catalog::CATALOG {
            for base_url in [None, Some("http://127.0.0.1:9/v1")] {
                let url = base_url.map(|u| format!(", base_url: \"{u}\"")).unwrap_or_default();
                let yaml = format!(
                    "providers:\n  targets:\n    - {{id: t, provider: {}, model: m, api_key: k{url}}}\n",
                    info.id
                );
                let text = format!("pack: {{name: r, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\n{yaml}");
                let lint = load_sources(&[Source {
                    name: "r.yaml".into(),
                    text,
                }]);
                let c = PolicyConfig {
                    providers: Some(kt_policy::config::Providers {
                        targets: vec![ProviderTarget {
                            id: "t".into(),
                            provider: info.id.into(),
                            model: Some("m".into()),
                            api_key: Some("k".into()),
                            base_url: base_url.map(str::to_owned),
                            ..ProviderTarget::default()
                        }],
                        ..Default::default()
                    }),
                    ..PolicyConfig::default()
                };
                let built = Router::build(&c, None, &HealthRegistry::default(), &no_env);
                assert_eq!(
                    lint.config.is_some(),
                    built.is_ok(),
                    "{} {base_url:?}: lint {:?}, gateway {:?}",
                    info.id,
                    lint.diagnostics,
                    built.err()
                );
            }
        }
    }

    #[test]
    fn azure_targets_use_the_deployment_path_and_api_key_header() {
        let c = config(
            "providers:\n  targets:\n    - {id: az, provider: azure, model: gpt-4o, base_url: https://res.openai.azure.com, azure_api_version: 2024-06-01, api_key: k}\n",
        );
        let r = Router::build(&c, None, &HealthRegistry::default(), &no_env).expect("valid");
        let u = &r.targets[0].upstream;
        assert_eq!(
            u.path_for("/chat/completions"),
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(
            u.path_for("/embeddings"),
            "/openai/deployments/gpt-4o/embeddings?api-version=2024-06-01"
        );
        assert_eq!(u.auth, Some(("api-key".into(), "k".into())));
    }

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

    #[test]
    fn environment_keys_of_a_managed_gateway_go_only_to_public_endpoints() {
        let env = |n: &str| (n == "OPENAI_API_KEY" || n == "KEEPTRUSTS_GATEWAY_TOKEN").then(|| "sk-x".to_owned());
        let reg = HealthRegistry::default();
        let store = StoreValues::new();
        let evil = config(
            "providers:\n  targets:\n    - {id: a, provider: openai, model: m, base_url: \"http://127.0.0.1:9/v1\"}\n",
        );
        let err = Router::build_with(&evil, None, &reg, &env, Some(&store)).expect_err("refused when managed");
        assert!(
            err.contains("$OPENAI_API_KEY") && err.contains("secret_key_ref.store"),
            "{err}"
        );
        assert!(
            Router::build_with(&evil, None, &reg, &env, None).is_ok(),
            "a local file is the operator's own"
        );
        let public = config("providers:\n  targets:\n    - {id: a, provider: openai, model: m}\n");
        assert!(Router::build_with(&public, None, &reg, &env, Some(&store)).is_ok());
        // Lint refuses this name; the gateway refuses it too, should a config get past.
        let mut own = public.clone();
        if let Some(p) = own.providers.as_mut() {
            p.targets[0].secret_key_ref = Some(kt_policy::config::SecretKeyRef {
                env: Some("KEEPTRUSTS_GATEWAY_TOKEN".into()),
                store: None,
            });
        }
        for managed in [None, Some(&store)] {
            let err = Router::build_with(&own, None, &reg, &env, managed).expect_err("never");
            assert!(err.contains("own settings"), "{err}");
        }
    }
}
