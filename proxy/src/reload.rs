//! Configuration reload: the one path from files to a running policy, parse → validate →
//! compile → swap. A configuration with any error never replaces the running one; requests
//! already in flight finish on the policy they started with (each holds its own snapshot).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use arc_swap::ArcSwap;
use kt_policy::config::{SizeLimits, load_files};
use kt_policy::{CompiledPolicy, Diagnostic};

use crate::cache::ResponseCache;
use crate::routing::{HealthRegistry, Router, StoreValues};
use crate::upstream::Upstream;
use serde_json::{Value, json};

/// What one configuration runs as: the compiled policy and the router over its targets.
#[derive(Debug)]
pub struct Runtime {
    pub policy: CompiledPolicy,
    pub router: Router,
    /// The rate-limit quotas of this configuration (`Limits::key_of`), computed once.
    pub limits_key: String,
    /// `size_limits` with its defaults, resolved once per configuration.
    pub sizes: SizeLimits,
    /// The model names and aliases a client may ask for: the only model label values.
    pub model_labels: Vec<String>,
    /// prompt-injection's external classifier endpoint, when configured.
    pub external: Option<crate::model_api::ExternalBackend>,
    /// The caller keys, when `caller_auth.mode` is `keys` or `control_plane`.
    pub callers: Option<crate::model_api::CallerAuth>,
    /// The consumer groups, when `consumer_groups` declares any.
    pub groups: Option<crate::model_api::Groups>,
    /// The route rules, when `routes` declares any.
    pub routes: Option<crate::model_api::Routes>,
    /// The Redis of `shared_state`, when limits are shared.
    pub shared: Option<Arc<crate::shared::Shared>>,
    /// Token prices, for the cost of each answer.
    pub prices: kt_policy::pricing::PriceTable,
    /// The spending ceilings, when `budgets` sets any (or the gateway is managed).
    pub budgets: Option<crate::model_api::budget::Budgets>,
    /// What the control plane pushes to a managed gateway: gateway keys, the
    /// organisation's budgets and prices.
    pub fleet: Option<Arc<crate::model_api::FleetKeys>>,
}

impl Runtime {
    /// Compiles `config`'s router; errors name the target at fault.
    pub fn new(
        policy: CompiledPolicy,
        override_upstream: Option<&Upstream>,
        registry: &HealthRegistry,
        store: Option<&StoreValues>,
        fleet: Option<&Arc<crate::model_api::FleetKeys>>,
    ) -> Result<Runtime, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let router = Router::build_with(policy.config(), override_upstream, registry, &env, store)?;
        let limits_key = crate::limits::Limits::key_of(policy.config());
        let sizes = policy.config().size_limits.clone().unwrap_or_default();
        let callers = crate::model_api::CallerAuth::of(policy.config(), &env, fleet)?;
        let groups = crate::model_api::Groups::of(policy.config(), &policy)?;
        let routes = crate::model_api::Routes::of(policy.config(), &policy)?;
        let prices = kt_policy::pricing::PriceTable::of(policy.config());
        // A managed gateway applies the organisation's budgets and its gateway keys' own:
        // budgets are kept for them too.
        let budgets = crate::model_api::budget::Budgets::of(policy.config())
            .or_else(|| fleet.is_some().then(crate::model_api::budget::Budgets::for_keys));
        let shared = match &policy.config().shared_state {
            Some(s) => Some(Arc::new(crate::shared::Shared::of(s, &env)?)),
            None => None,
        };
        // A group's chain may be the one that runs prompt-injection: every chain shares the
        // one `detection.external` block, so one backend serves them all.
        let spec = policy.external_classifier().or_else(|| {
            let group_chains = groups.iter().flat_map(|g| g.iter()).filter_map(|g| g.policy.as_ref());
            let route_chains = routes.iter().flat_map(|r| r.iter()).filter_map(|r| r.policy.as_ref());
            group_chains
                .chain(route_chains)
                .find_map(CompiledPolicy::external_classifier)
        });
        let external = match spec {
            Some(spec) => Some(crate::model_api::ExternalBackend::new(spec, &env, store)?),
            None => None,
        };
        let model_labels = crate::routing::model_ids(policy.config())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(Runtime {
            policy,
            router,
            limits_key,
            sizes,
            model_labels,
            external,
            callers,
            groups,
            routes,
            shared,
            prices,
            budgets,
            fleet: fleet.cloned(),
        })
    }

    /// Takes over `old`'s in-memory counts (caller keys, consumer groups, budgets) where
    /// the quotas are the same, so applying a configuration does not reset them.
    pub fn carry_counters(&mut self, old: &Runtime) {
        if let (Some(new), Some(old)) = (self.callers.as_mut(), old.callers.as_ref()) {
            new.carry(old);
        }
        if let (Some(new), Some(old)) = (self.groups.as_mut(), old.groups.as_ref()) {
            new.carry(old);
        }
        if let (Some(new), Some(old)) = (self.budgets.as_mut(), old.budgets.as_ref()) {
            new.carry(old);
        }
    }

    /// The price of `model`: the organisation's (managed gateways), else the
    /// configuration's and the shipped ones.
    pub fn price(&self, model: &str) -> Option<kt_policy::pricing::Price> {
        match &self.fleet {
            Some(f) => f.prices.load().price_over(&self.prices, model),
            None => self.prices.price(model),
        }
    }

    /// The metrics label of a requested model: the configured name it equals, else
    /// `other` (a client's model string never becomes a series of its own).
    pub fn model_label(&self, model: Option<&str>) -> &str {
        model
            .and_then(|m| self.model_labels.iter().find(|l| l.as_str() == m))
            .map_or(crate::metrics::OTHER, String::as_str)
    }
}

/// The running configuration and where it was loaded from.
#[derive(Debug)]
pub struct PolicySource {
    pub files: Vec<PathBuf>,
    pub current: ArcSwap<Runtime>,
    /// Per-target health, kept across reloads.
    pub registry: HealthRegistry,
    /// The debug `--upstream` override, applied to every configuration.
    pub override_upstream: Option<Upstream>,
    /// The response cache, reconfigured with each applied configuration.
    pub cache: Arc<ResponseCache>,
    /// Managed gateways: the resolved `secret_key_ref.store` values (`None`: not managed).
    pub store: Option<ArcSwap<StoreValues>>,
    /// Managed gateways: the gateway keys the control plane pushes (`None`: not managed).
    pub fleet: Option<Arc<crate::model_api::FleetKeys>>,
}

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new policy is live (its digest); `changed` is false when the content was equal.
    Applied { digest: String, changed: bool },
    /// The files are invalid; the previous policy keeps serving.
    Rejected(Vec<Diagnostic>),
}

impl ReloadOutcome {
    pub fn to_json(&self) -> Value {
        match self {
            ReloadOutcome::Applied { digest, changed } => {
                json!({"status": "applied", "digest": digest, "changed": changed})
            }
            ReloadOutcome::Rejected(d) => {
                json!({"status": "rejected", "errors": d.iter().filter(|x| x.is_error()).collect::<Vec<_>>()})
            }
        }
    }
}

impl PolicySource {
    /// Reloads from the configured files.
    pub fn reload(&self) -> ReloadOutcome {
        self.reload_files(&self.files)
    }

    /// The one reload path: parse, validate and compile `files`, then swap. Managed
    /// gateways call it on a candidate file before making it the persisted one.
    pub fn reload_files(&self, files: &[PathBuf]) -> ReloadOutcome {
        let outcome = load_files(files);
        let Some(config) = outcome.config else {
            return ReloadOutcome::Rejected(outcome.diagnostics);
        };
        match CompiledPolicy::compile(config) {
            Ok(p) => {
                let digest = p.digest().to_owned();
                let store = self.store.as_ref().map(ArcSwap::load_full);
                let mut rt = match Runtime::new(
                    p,
                    self.override_upstream.as_ref(),
                    &self.registry,
                    store.as_deref(),
                    self.fleet.as_ref(),
                ) {
                    Ok(rt) => rt,
                    Err(e) => {
                        return ReloadOutcome::Rejected(vec![Diagnostic::error(
                            kt_policy::Code::InvalidValue,
                            "providers",
                            e,
                        )]);
                    }
                };
                // A rotated credential (a stored secret updated, then a reload) is a change
                // even when the policy text is not.
                let current = self.current.load();
                let changed = digest != current.policy.digest() || !rt.router.same_credentials(&current.router);
                if changed {
                    rt.carry_counters(&current);
                    self.cache.configure(rt.policy.config());
                    self.current.store(Arc::new(rt));
                }
                ReloadOutcome::Applied { digest, changed }
            }
            Err(e) => ReloadOutcome::Rejected(vec![Diagnostic::error(
                kt_policy::Code::InvalidValue,
                "",
                e.to_string(),
            )]),
        }
    }
}

/// Reloads on a change of any config file (checked every second) and on SIGHUP.
pub struct ReloadService {
    pub source: Arc<PolicySource>,
}

fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

impl ReloadService {
    fn apply(&self, why: &str) {
        match self.source.reload() {
            ReloadOutcome::Applied { digest, changed: true } => {
                tracing::info!("config reloaded ({why}): digest {}", &digest[..12.min(digest.len())])
            }
            ReloadOutcome::Applied { .. } => {}
            ReloadOutcome::Rejected(d) => {
                let errors: Vec<String> = d.iter().filter(|x| x.is_error()).map(|e| e.to_string()).collect();
                tracing::warn!(
                    "config reload ({why}) rejected, {} error(s); the previous configuration keeps serving\n{}",
                    errors.len(),
                    errors.concat()
                );
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut seen = stamps(&self.source.files);
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {
                    // What this replica leased from shared counters goes back before it stops.
                    if let Some(shared) = self.source.current.load().shared.clone() {
                        shared.close().await;
                    }
                    return;
                }
                _ = hangup => self.apply("SIGHUP"),
                _ = tick.tick() => {
                    let now = stamps(&self.source.files);
                    if now != seen {
                        seen = now;
                        self.apply("file change");
                    }
                }
            }
        }
    }
}
