//! Traffic-shaping sections: `model_groups`, `routes`, `consumer_groups`, `unified_access`,
//! the four rate-limit scopes, `size_limits` and `agents` (spec §2.6–2.9, §2.12).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::providers::{Fallback, HeaderMatch, SecretKeyRef};

/// `caller_auth`: who may call the gateway's model routes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallerAuth {
    /// `none`: anyone who reaches the port may call (local development only); `keys`: a
    /// model call must carry one of `keys` as `Authorization: Bearer <key>` or
    /// `x-api-key: <key>`; `control_plane`: the same with the gateway keys the control
    /// plane pushes to a managed gateway (`kt spend gateway-key`).
    #[serde(default)]
    pub mode: CallerAuthMode,
    /// The caller keys of an unmanaged gateway, each read from a secret.
    #[serde(default)]
    pub keys: Vec<CallerKey>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallerAuthMode {
    #[default]
    None,
    Keys,
    ControlPlane,
}

impl CallerAuthMode {
    /// Whether requests carry a caller key that was checked.
    pub fn authenticates(self) -> bool {
        self != CallerAuthMode::None
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallerKey {
    /// The key's name in metrics, events and `consumer_groups[].match.gateway_key_ids`
    /// (letters, digits, `-`, `_`, `.`; at most 64).
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// Where the key's value is: `env` (read at startup) or `store` (a control-plane
    /// secret, managed gateways). At least 16 characters.
    pub secret_key_ref: SecretKeyRef,
    /// Models this key may ask for (names or aliases); absent: every model.
    pub allowed_models: Option<Vec<String>>,
    /// Requests this key may make per epoch-aligned window, beside the other limits.
    pub rate_limit: Option<RequestRateLimit>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelGroup {
    /// The name clients send as `model`.
    pub name: String,
    /// Target ids the group routes among.
    pub targets: Vec<String>,
    /// Other names that resolve to this group.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Group tried when every target of this one failed.
    pub fallback_group: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub name: Option<String>,
    /// What a request must look like for this rule to apply; first match wins.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Policy kinds run for matching requests instead of `policies.chain`.
    pub chain: Option<Vec<String>>,
    /// Target ids allowed for matching requests.
    pub providers: Option<Vec<String>>,
    pub fallback: Option<Fallback>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub path_prefix: Option<String>,
    /// HTTP methods, upper case.
    pub methods: Option<Vec<String>>,
    /// Header name → exact value.
    pub headers: Option<HeaderMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerGroupRule {
    /// Group name; `default` catches unmatched traffic.
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: ConsumerMatch,
    pub chain: Option<Vec<String>>,
    pub providers: Option<Vec<String>>,
    pub allowed_models: Option<Vec<String>>,
    pub rate_limits: Option<GroupRateLimits>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerMatch {
    /// Gateway key ids (`kt_gk_…` key records) that belong to this group.
    pub gateway_key_ids: Option<Vec<String>>,
    /// Header name → exact value.
    pub headers: Option<HeaderMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRateLimits {
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u64>,
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
    #[schemars(range(min = 1))]
    pub tokens_per_day: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnifiedAccess {
    /// Models (or model-group names) clients may request; empty allows all.
    #[serde(default)]
    pub allowed_models: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestRateLimit {
    #[schemars(range(min = 1))]
    pub max_requests: u64,
    /// Epoch-aligned fixed window length.
    #[schemars(range(min = 1, max = 31536000))]
    pub window_seconds: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRateLimit {
    #[schemars(range(min = 1))]
    pub max_requests: u64,
    #[schemars(range(min = 1, max = 31536000))]
    pub window_seconds: u64,
    /// `X-Forwarded-For` hops to trust; 0 uses the socket peer address.
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub trust_proxy_depth: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRateLimit {
    #[schemars(range(min = 1))]
    pub max_requests: u64,
    #[schemars(range(min = 1, max = 31536000))]
    pub window_seconds: u64,
    /// The first present header identifies the user (default `["x-user-id"]`).
    #[serde(default = "default_user_headers")]
    pub header_names: Vec<String>,
}

fn default_user_headers() -> Vec<String> {
    vec!["x-user-id".to_owned()]
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRateLimit {
    /// Prompt plus completion tokens allowed per window.
    #[schemars(range(min = 1))]
    pub max_tokens: u64,
    #[schemars(range(min = 1, max = 31536000))]
    pub window_seconds: u64,
    #[serde(default)]
    pub scope: TokenScope,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    #[default]
    Global,
    User,
    Ip,
    ConsumerGroup,
    /// One window per caller key (`caller_auth.mode: keys`).
    CallerKey,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SizeLimits {
    /// Largest request body accepted (default 1 MiB).
    #[serde(default = "default_body")]
    #[schemars(range(min = 1, max = 1073741824))]
    pub max_body_bytes: u64,
    /// Largest upstream response accepted (default 10 MiB).
    #[serde(default = "default_response")]
    #[schemars(range(min = 1, max = 4294967296u64))]
    pub max_response_bytes: u64,
    /// Largest total size of request headers (default 64 KiB).
    #[serde(default = "default_headers")]
    #[schemars(range(min = 1024, max = 1048576))]
    pub max_header_bytes: u64,
}

impl Default for SizeLimits {
    fn default() -> Self {
        SizeLimits {
            max_body_bytes: default_body(),
            max_response_bytes: default_response(),
            max_header_bytes: default_headers(),
        }
    }
}

fn default_body() -> u64 {
    1024 * 1024
}
fn default_response() -> u64 {
    10 * 1024 * 1024
}
fn default_headers() -> u64 {
    64 * 1024
}

/// Per-agent usage constraints; the agent is named by the `x-keeptrusts-agent-id` header.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRule {
    pub id: String,
    pub usage_constraints: Option<UsageConstraints>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageConstraints {
    #[schemars(range(min = 0.0))]
    pub max_cost_usd_per_day: Option<f64>,
    #[schemars(range(min = 1))]
    pub max_responses_per_day: Option<u64>,
}

/// `cache`: the gateway's exact response cache (in memory, and with `shared` in
/// `shared_state`'s Redis too).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Master switch (default true when the section is present).
    #[serde(default = "super::yes")]
    pub enabled: bool,
    /// `exact` (hash of the normalized request); `semantic` is not enforced by this version.
    #[serde(default)]
    pub mode: CacheMode,
    /// Seconds an entry is served (default 3600).
    #[serde(default = "default_cache_ttl")]
    #[schemars(range(min = 1, max = 31536000))]
    pub ttl_seconds: u64,
    /// Entries kept, least recently used evicted first (default 10000).
    #[serde(default = "default_cache_entries")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_entries: u64,
    /// Largest answer stored, in bytes (default 1048576).
    #[serde(default = "default_cache_entry_bytes")]
    #[schemars(range(min = 1, max = 104857600))]
    pub max_entry_bytes: u64,
    /// Also keep answers in `shared_state`'s Redis, so every replica answers from one
    /// cache (default false: each process keeps its own).
    #[serde(default)]
    pub shared: bool,
}

fn default_cache_ttl() -> u64 {
    3600
}
fn default_cache_entries() -> u64 {
    10_000
}
fn default_cache_entry_bytes() -> u64 {
    1_048_576
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    #[default]
    Exact,
    Semantic,
}

/// `shared_state`: rate, token, caller-key and consumer-group limits counted in Redis (or
/// Valkey), so every gateway replica pointed at it enforces one count.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedState {
    /// `redis://[user:password@]host[:port][/db]` or `rediss://…`; absent: the
    /// `KEEPTRUSTS_REDIS_URL` environment variable.
    pub redis_url: Option<String>,
    /// Prefix of every key the gateway writes (default `kt`).
    #[serde(default = "default_shared_prefix")]
    #[schemars(length(min = 1, max = 64))]
    pub key_prefix: String,
    /// How long one round trip may take before the limit's fail mode applies (default 100).
    #[serde(default = "default_shared_timeout")]
    #[schemars(range(min = 1, max = 5000))]
    pub timeout_ms: u64,
    /// What a limit does while Redis cannot be reached: `local` (default) counts in this
    /// process alone, `open` lets requests through, `closed` refuses them with 503.
    #[serde(default)]
    pub fail_mode: SharedFailMode,
    /// `fail_mode` per limit scope (`global_rate_limit`, `ip_rate_limit`,
    /// `user_rate_limit`, `token_rate_limit`, `caller_key_rate_limit`,
    /// `consumer_group_rate_limit`, `consumer_group_tokens_per_minute`,
    /// `consumer_group_tokens_per_day`, `budgets`).
    #[serde(default)]
    pub fail_modes: std::collections::BTreeMap<String, SharedFailMode>,
    /// How many requests' worth of a request window or a budget a replica may take from
    /// Redis at once and spend without a round trip (default 32; 1 sends every request to
    /// Redis). A lease is granted only from room the counter has, at most a sixteenth of
    /// it, so limits and hard budgets still hold across replicas.
    #[serde(default = "default_lease_requests")]
    #[schemars(range(min = 1, max = 1000))]
    pub lease_requests: u64,
}

/// The limit scopes `shared_state.fail_modes` may name.
pub const LIMIT_SCOPES: [&str; 9] = [
    "global_rate_limit",
    "ip_rate_limit",
    "user_rate_limit",
    "token_rate_limit",
    "caller_key_rate_limit",
    "consumer_group_rate_limit",
    "consumer_group_tokens_per_minute",
    "consumer_group_tokens_per_day",
    "budgets",
];

fn default_shared_prefix() -> String {
    "kt".to_owned()
}
fn default_shared_timeout() -> u64 {
    100
}
fn default_lease_requests() -> u64 {
    32
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharedFailMode {
    #[default]
    Local,
    Open,
    Closed,
}

/// `pricing`: what tokens cost per model, in US dollars per 1,000 tokens, over (or instead
/// of) the prices kt ships for common models.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Whether the shipped prices apply to models `models` does not list (default true).
    #[serde(default = "super::yes")]
    pub defaults: bool,
    /// Model name (as the provider is asked for it) → its prices.
    #[serde(default)]
    pub models: std::collections::BTreeMap<String, ModelPrice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub input_cost_per_1k_tokens: f64,
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub output_cost_per_1k_tokens: f64,
    /// Input tokens read from the provider's prompt cache (default: the input price).
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub cached_input_cost_per_1k_tokens: Option<f64>,
    /// Output tokens spent reasoning (default: the output price).
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub reasoning_cost_per_1k_tokens: Option<f64>,
}

/// `budgets`: spending ceilings in US dollars, reserved before a request goes upstream and
/// settled from the provider's usage after it, so a hard budget is never overspent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Output tokens reserved for a request that names no maximum; it is also sent to the
    /// provider as the request's maximum (default 4096).
    #[serde(default = "default_reserve_output")]
    #[schemars(range(min = 1, max = 1000000))]
    pub reserve_output_tokens: u64,
    pub limits: Vec<BudgetRule>,
}

fn default_reserve_output() -> u64 {
    4096
}

impl Budgets {
    /// `reserve_output_tokens` when the section does not set it.
    pub fn default_reserve_output() -> u64 {
        default_reserve_output()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetRule {
    /// The budget's name in refusals, events and metrics.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Whose spending counts: all traffic, one caller key's, one consumer group's, or what
    /// one provider is paid.
    #[serde(default)]
    pub scope: BudgetScope,
    /// The caller key id, group name or provider (`openai`, `anthropic`…); absent with
    /// `caller_key`, `consumer_group` or `provider`: each has a budget of this size of its own.
    pub id: Option<String>,
    #[schemars(range(min = 0.0, max = 1000000000.0))]
    pub limit_usd: f64,
    #[serde(default)]
    pub period: BudgetPeriod,
    #[serde(default)]
    pub mode: BudgetMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    #[default]
    Organisation,
    CallerKey,
    ConsumerGroup,
    /// A ceiling on what one provider is paid: a target of a provider without room is
    /// skipped (the request falls back to the others), and only when none is left is the
    /// request refused.
    Provider,
}

/// Budget periods, in UTC: the clock hour, the day, the calendar month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Hour,
    Day,
    #[default]
    Month,
}

/// `hard` refuses what would overspend (429 `budget_exceeded`); `soft` lets it through and
/// marks the decision event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetMode {
    #[default]
    Hard,
    Soft,
}
