//! `providers`: upstream targets, routing strategy, fallback, circuit breaker, A/B tests and
//! mirroring (spec §2.5). Field names are the documented YAML contract.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::yes;

/// A credential reference: exactly one of `env` or `store`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of an environment variable read at startup.
    pub env: Option<String>,
    /// Name of a control-plane secret or config variable, resolved by managed gateways.
    pub store: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    /// `single` routes everything to the first target.
    pub strategy: Option<TopStrategy>,
    /// Ordered upstream targets; order is priority for ordered routing and fallback.
    #[serde(default)]
    pub targets: Vec<ProviderTarget>,
    pub routing: Option<Routing>,
    pub fallback: Option<Fallback>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub ab_test: Option<AbTest>,
    pub mirror: Option<Mirror>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopStrategy {
    Single,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderTarget {
    /// Unique target id, referenced by routing, fallback and model groups.
    pub id: String,
    /// Provider identifier, e.g. `openai`, `anthropic`, `azure`, `vllm`, `ollama`.
    pub provider: String,
    /// Upstream model id.
    pub model: Option<String>,
    /// Upstream base URL; defaults to the provider's public endpoint.
    pub base_url: Option<String>,
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Literal key. Discouraged: prefer `secret_key_ref`.
    pub api_key: Option<String>,
    /// Wire family of the upstream.
    pub provider_type: Option<WireFormat>,
    /// Request format sent upstream.
    pub format: Option<WireFormat>,
    /// Upstream auth header (default `Authorization`; anthropic `x-api-key`).
    pub api_key_header: Option<String>,
    /// Prefix for the key in the auth header (default `Bearer `; anthropic empty).
    pub api_key_prefix: Option<String>,
    pub data_policy: Option<DataPolicy>,
    /// Shorthand for `data_policy.zero_data_retention`.
    pub zdr: Option<bool>,
    pub data_collection: Option<DataCollection>,
    pub escalation_routing: Option<EscalationRouting>,
    #[serde(default)]
    pub transport: Transport,
    /// WebSocket ping interval (websocket transport only).
    pub ping_interval_secs: Option<u64>,
    pub max_message_size_bytes: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    /// Azure `api-version` (default `2024-02-01`).
    pub azure_api_version: Option<String>,
    /// Azure deployment name (default: `model`).
    pub azure_deployment: Option<String>,
    /// Upstream path override; `{model}` is replaced by the deployment or model.
    pub path_template: Option<String>,
    pub cloudflare_account_id_env: Option<String>,
    #[serde(rename = "accountIdEnvar")]
    pub account_id_envar: Option<String>,
    pub snowflake_account_identifier_env: Option<String>,
    #[serde(rename = "accountIdentifierEnvar")]
    pub account_identifier_envar: Option<String>,
    /// Relative weight for `routing.strategy: weighted` (default 1).
    #[schemars(range(min = 1, max = 1000000))]
    pub weight: Option<u32>,
    /// Upstream request timeout in milliseconds (default 60000).
    #[schemars(range(min = 1, max = 3600000))]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    Openai,
    Anthropic,
    Azure,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    #[default]
    Http,
    Websocket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataCollection {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataPolicy {
    #[serde(default)]
    pub zero_data_retention: bool,
    #[serde(default)]
    pub training_opt_out: bool,
    /// Days the provider retains prompts; 0 means none.
    pub retention_days: Option<u32>,
}

/// Where escalations for this target go: exactly one of `team_id` or `user_id`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationRouting {
    pub team_id: Option<String>,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub strategy: RoutingStrategy,
    /// Samples a target needs before `lowest_latency` trusts its average (default 10).
    pub min_sample_count: Option<u32>,
    /// Latency averaging window for `lowest_latency` (default 300).
    pub window_seconds: Option<u64>,
    /// Explicit target order for `ordered`; defaults to the order of `targets`.
    pub order: Option<Vec<String>>,
    pub budget_policy: Option<BudgetPolicy>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    #[default]
    Ordered,
    RoundRobin,
    Weighted,
    LowestLatency,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetPolicy {
    pub soft_limit_action: Option<SoftLimitAction>,
    pub hard_limit_action: Option<HardLimitAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SoftLimitAction {
    Downgrade,
    Notify,
    Queue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HardLimitAction {
    Reject,
    Queue,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// Defaults to true when there is more than one target.
    pub enabled: Option<bool>,
    /// Failures that move a request to the next target.
    #[serde(default = "default_triggers")]
    pub triggers: Vec<FallbackTrigger>,
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 0, max = 20))]
    pub max_fallback_attempts: u32,
    /// What a content-policy refusal from the upstream does (default `stop`).
    #[serde(default)]
    pub on_content_policy: OnContentPolicy,
    /// What a context-window error does (default `abort`).
    #[serde(default)]
    pub on_context_window: OnContextWindow,
    /// Explicit fallback order of target ids; defaults to the order of `targets`.
    pub order: Option<Vec<String>>,
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback {
            enabled: None,
            triggers: default_triggers(),
            max_fallback_attempts: default_attempts(),
            on_content_policy: OnContentPolicy::default(),
            on_context_window: OnContextWindow::default(),
            order: None,
        }
    }
}

fn default_triggers() -> Vec<FallbackTrigger> {
    vec![
        FallbackTrigger::RateLimit,
        FallbackTrigger::ServerError,
        FallbackTrigger::Timeout,
        FallbackTrigger::ConnectionError,
    ]
}

fn default_attempts() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackTrigger {
    RateLimit,
    ServerError,
    Timeout,
    ConnectionError,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnContentPolicy {
    #[default]
    Stop,
    Fallback,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnContextWindow {
    #[default]
    Abort,
    Fallback,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Consecutive failures that open the circuit (default 5).
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 10000))]
    pub failure_threshold: u32,
    /// Seconds an open circuit waits before probing (default 30).
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 1, max = 86400))]
    pub cooldown_seconds: u64,
    /// Probe requests allowed while half-open (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub half_open_max_requests: u32,
}

fn one() -> u32 {
    1
}
fn default_failure_threshold() -> u32 {
    5
}
fn default_cooldown() -> u64 {
    30
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AbTest {
    #[serde(default)]
    pub enabled: bool,
    /// Header-derived key that keeps one caller on one variant, e.g. `user_id`.
    pub sticky_by: Option<String>,
    #[serde(default)]
    pub variants: Vec<AbVariant>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AbVariant {
    pub provider_id: String,
    #[schemars(range(min = 0, max = 1000000))]
    pub weight: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub enabled: bool,
    pub mirror_target: String,
    /// Fraction of requests mirrored (default 1.0).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_rate: Option<f64>,
    #[serde(default)]
    pub log_mirror_response: bool,
    pub timeout_ms: Option<u64>,
}

/// Header map used by route and consumer-group matchers.
pub type HeaderMatch = BTreeMap<String, String>;
