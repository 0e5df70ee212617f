//! The `policy-config.yaml` contract: serde types that reject unknown keys and are the
//! documented schema (spec §2), the JSON Schema generated from them, and the loading
//! pipeline (read → parse with spans → layer → structural check → typed → semantic check)
//! that produces every diagnostic of `kt policy lint` in one run.

mod blocks;
mod groups;
mod layer;
mod load;
mod providers;
mod schema;
mod testing;
mod traffic;
mod validate;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use blocks::*;
pub use layer::merge;
pub use load::{LoadOutcome, Source, load_files, load_sources, read_source};
pub use providers::*;
pub use schema::json_schema;
pub use testing::*;
pub use traffic::*;

/// serde default for flags that are on unless turned off.
fn yes() -> bool {
    true
}

/// A whole `policy-config.yaml` document (the canonical dialect).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kt policy-config.yaml")]
pub struct PolicyConfig {
    /// Identity of the configuration and the master kill switch.
    pub pack: Pack,
    /// The ordered policy chain.
    pub policies: Policies,
    /// Settings per policy kind.
    #[serde(default)]
    pub policy: PolicyBlocks,
    /// Upstream targets, routing, fallback and circuit breaking.
    pub providers: Option<Providers>,
    /// Alias groups of targets, with fallback groups.
    pub model_groups: Option<Vec<ModelGroup>>,
    /// Per-path/header/method chain and upstream selection; first match wins.
    pub routes: Option<Vec<RouteRule>>,
    /// Traffic partitions by team, app or environment.
    pub consumer_groups: Option<Vec<ConsumerGroupRule>>,
    /// Catalog-level model allowlist.
    pub unified_access: Option<UnifiedAccess>,
    /// Who may call the model routes (default: anyone, for local development).
    pub caller_auth: Option<CallerAuth>,
    pub global_rate_limit: Option<RequestRateLimit>,
    pub ip_rate_limit: Option<IpRateLimit>,
    pub user_rate_limit: Option<UserRateLimit>,
    pub token_rate_limit: Option<TokenRateLimit>,
    pub size_limits: Option<SizeLimits>,
    /// Exact response cache of the gateway.
    pub cache: Option<CacheConfig>,
    /// Where limit counters several gateway replicas share are kept (Redis).
    pub shared_state: Option<SharedState>,
    /// Token prices per model, for the cost on decision events.
    pub pricing: Option<Pricing>,
    /// Spending ceilings, reserved before dispatch and settled from usage.
    pub budgets: Option<Budgets>,
    /// Per-agent usage constraints.
    pub agents: Option<Vec<AgentRule>>,
    /// Inline test suites run by `kt policy test`.
    pub testing: Option<Testing>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    /// Human-readable name.
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// SemVer `MAJOR.MINOR.PATCH`.
    pub version: String,
    /// Master kill switch: false disables every policy (routing keeps working).
    pub enabled: bool,
    /// Stable machine id; derived from `name` when absent.
    #[schemars(length(min = 1, max = 200))]
    pub id: Option<String>,
    #[schemars(length(max = 200))]
    pub author: Option<String>,
    #[schemars(length(max = 2000))]
    pub description: Option<String>,
}

impl Pack {
    /// `id`, or `name` lower-cased with runs of other characters turned into `-`.
    pub fn effective_id(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        let mut out = String::with_capacity(self.name.len());
        for c in self.name.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        out.trim_matches('-').to_owned()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Policy kinds, run in this order.
    pub chain: Vec<String>,
}

/// Whether `name` can name a budget, consumer group or limit wherever it is shown or keyed:
/// 1 to 64 letters, digits, `-`, `_` or `.`. Configurations and the control plane both
/// check names with it.
pub fn well_formed_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}
