//! kt-api: the control plane's wire types (what `kt server` answers and accepts under
//! `/v1/`) and a typed blocking HTTP client used by the CLI and managed gateways.
//!
//! Every error the server answers has the envelope
//! `{"error": {"code": "<domain.reason>", "message": "...", "details": {...}}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The default address of `kt server` (loopback; clear of the gateway's 41002 and 8080).
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:41001";

/// Every scope a token can carry. `*` (owner sessions) holds them all.
pub const SCOPES: &[&str] = &[
    "configurations:read",
    "configurations:write",
    "gateways:read",
    "gateways:write",
    "tokens:read",
    "tokens:write",
    "secrets:read",
    "secrets:write",
    "secrets:bind",
    "config_vars:read",
    "config_vars:write",
    "config_vars:resolve",
    "events:read",
    "events:write",
    "gateway_keys:read",
    "gateway_keys:write",
    "spend:read",
    "budgets:read",
    "budgets:write",
    "model_pricing:read",
    "model_pricing:write",
    "control_plane",
];

/// The error envelope's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgInfo {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The session token (sent as `Authorization: Bearer`).
    pub token: String,
    pub token_id: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub user: UserInfo,
    pub org: OrgInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Whoami {
    pub user: Option<UserInfo>,
    pub org: OrgInfo,
    pub role: String,
    pub scopes: Vec<String>,
    pub token_id: String,
    /// `session`, `access` or `gateway`.
    pub token_type: String,
    pub mfa_authenticated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateToken {
    pub name: String,
    pub scopes: Vec<String>,
    /// `access` (default) or `gateway`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Days until the token expires; none: it does not expire.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub token_type: String,
    pub scopes: Vec<String>,
    /// `active`, `revoked` or `expired`.
    pub state: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The secret, shown once.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    pub data: Vec<TokenInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotatedToken {
    pub revoked: TokenInfo,
    pub created: CreatedToken,
}

// ---------------------------------------------------------------------------------------
// Gateways and configurations

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateGateway {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// An id of the caller's choosing (default: a generated `gw_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A configuration version reference.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionRef {
    pub configuration_id: String,
    pub version: i64,
    /// `pack.version` of that configuration version.
    #[serde(default)]
    pub pack_version: Option<String>,
}

/// A gateway as the control plane sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `healthy`, `degraded`, `offline` (no heartbeat for 3 poll intervals) or `pending`
    /// (never seen).
    pub status: String,
    /// `in_sync`, `pending`, `failed` or `unassigned`.
    pub sync: String,
    /// The configuration the gateway is attached to (pushes go there).
    pub configuration_id: Option<String>,
    pub desired: Option<VersionRef>,
    pub applied: Option<VersionRef>,
    pub applied_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub last_error: Option<String>,
    pub runtime_version: Option<String>,
    pub poll_interval: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedGateway {
    pub gateway: GatewayInfo,
    /// A gateway token bound to this gateway (`kt run --managed --gateway-token`), shown once.
    pub token: String,
    pub token_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayList {
    pub data: Vec<GatewayInfo>,
}

/// A new configuration version (`POST /v1/admin/configurations` or `…/{id}/versions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushConfig {
    pub yaml: String,
    #[serde(default)]
    pub change_detail: Option<String>,
    /// `manual`, `git_sync` or `api` (default).
    #[serde(default)]
    pub source: Option<String>,
    /// Attach the configuration to this gateway when it has none yet.
    #[serde(default)]
    pub gateway_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigVersion {
    pub configuration_id: String,
    pub name: String,
    pub version: i64,
    pub pack_version: String,
    pub digest: String,
    pub change_detail: String,
    pub source: String,
    pub created_at: i64,
    /// Present on reads of one version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yaml: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionList {
    pub data: Vec<ConfigVersion>,
}

/// `POST /v1/admin/configurations/rollout`. `version` is a version number or a
/// `pack.version` string; without `configuration_id` each gateway's own configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutRequest {
    #[serde(default)]
    pub configuration_id: Option<String>,
    pub version: Value,
    pub gateway_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutTarget {
    pub gateway_id: String,
    pub desired_version: i64,
    pub configuration_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutResponse {
    pub rollout_id: String,
    pub targets: Vec<RolloutTarget>,
}

/// `GET /v1/admin/configurations/gateways/{id}/runtime-state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeState {
    pub gateway_id: String,
    pub desired: Option<VersionRef>,
    pub applied: Option<VersionRef>,
    pub applied_at: Option<i64>,
    /// `in_sync`, `pending`, `failed` or `unassigned`.
    pub status: String,
    pub health: String,
    pub last_error: Option<String>,
    pub last_seen_at: Option<i64>,
    pub runtime_version: Option<String>,
}

/// What a managed gateway reports (`PUT …/runtime-state`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeReport {
    /// The configuration version now serving (none: nothing applied yet).
    #[serde(default)]
    pub applied: Option<VersionRef>,
    /// The reload generation the gateway has acted on.
    #[serde(default)]
    pub generation: i64,
    /// Why the last apply failed (none: it succeeded).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub runtime_version: Option<String>,
}

/// `GET /v1/gateway/config`: the configuration a managed gateway should run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManagedConfig {
    pub gateway_id: String,
    pub configuration_id: String,
    pub version: i64,
    pub pack_version: String,
    pub digest: String,
    pub yaml: String,
    /// Bumped by `kt gateway reload`: re-apply even when the version is unchanged.
    pub generation: i64,
    /// Opaque; send back as `If-None-Match` to wait for a change.
    pub etag: String,
}

// ---------------------------------------------------------------------------------------
// Secrets and config variables

/// `POST /v1/secrets`. The value is write-only: no response ever contains it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSecret {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Hosts the secret may be sent to (`host`, `host:port`, `*.domain`); none: only the
    /// providers' public endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
}

/// `PUT /v1/secrets/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateSecret {
    /// A new value; none: the value stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A new binding (needs `secrets:bind`); an empty list goes back to the providers'
    /// public endpoints. None: the binding stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
}

/// A secret's metadata (never its value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `aes-gcm-siv`, or `plaintext` for a legacy row not yet re-encrypted.
    pub encryption: String,
    /// Hosts the secret may be sent to; none: only the providers' public endpoints.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretList {
    pub data: Vec<SecretInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigVar {
    pub name: String,
    /// `None` for sensitive variables (shown as redacted).
    pub value: Option<String>,
    pub description: String,
    pub sensitive: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigVarList {
    pub data: Vec<ConfigVar>,
}

/// `POST /v1/config-variables` (all fields) and `PUT /v1/config-variables/{name}` (any).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteConfigVar {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub sensitive: Option<bool>,
}

/// `POST /v1/config-variables/resolve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveRequest {
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    pub name: String,
    /// `secret` or `config_variable`.
    pub source: String,
    /// A secret or a sensitive variable: never displayed.
    #[serde(default)]
    pub sensitive: bool,
    /// The value for gateway tokens; for anyone else `None` when it is a secret or
    /// sensitive.
    pub value: Option<String>,
    /// For a secret: the hosts it may be sent to (none: the providers' public endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveResponse {
    pub data: Vec<Resolved>,
}

// ---------------------------------------------------------------------------------------
// Gateway keys (caller keys of managed gateways)

/// A caller key's own request limit: `max_requests` per epoch-aligned window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRateLimit {
    pub max_requests: u64,
    pub window_seconds: u64,
}

/// A gateway key's own hard budget: at most `limit_usd` per `period` (`hour`, `day` or
/// `month`, UTC).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyBudget {
    pub limit_usd: f64,
    pub period: String,
}

/// `POST /v1/gateway-keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateGatewayKey {
    pub name: String,
    /// The consumer group every request with this key belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// Models (names or aliases) the key may ask for; none: every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<KeyRateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<KeyBudget>,
    /// Days until the key expires; none: it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
}

/// A gateway key as listed (never its value).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GatewayKeyInfo {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// `active`, `revoked` or `expired`.
    pub state: String,
    pub consumer_group: Option<String>,
    pub allowed_models: Option<Vec<String>>,
    pub rate_limit: Option<KeyRateLimit>,
    #[serde(default)]
    pub budget: Option<KeyBudget>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// When the key last got a new value (`rotate`); the id stays.
    #[serde(default)]
    pub rotated_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedGatewayKey {
    #[serde(flatten)]
    pub info: GatewayKeyInfo,
    /// The key, shown once.
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayKeyList {
    pub data: Vec<GatewayKeyInfo>,
}

/// One usable key as a gateway receives it: its SHA-256 hash, never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetKey {
    pub id: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    #[serde(default)]
    pub consumer_group: Option<String>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub rate_limit: Option<KeyRateLimit>,
    #[serde(default)]
    pub budget: Option<KeyBudget>,
    /// Unix seconds; the gateway refuses the key from then on.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// `GET /v1/gateway/keys`: every key a gateway of the organisation must accept, with the
/// organisation's budgets and prices, which every gateway applies over its configuration's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetKeySet {
    /// The organisation the gateway serves (it partitions shared caches between tenants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    pub keys: Vec<FleetKey>,
    #[serde(default)]
    pub budgets: Vec<BudgetInfo>,
    #[serde(default)]
    pub prices: Vec<ModelPricing>,
    /// Opaque; send back as `If-None-Match` to wait for a change.
    pub etag: String,
}

// ---------------------------------------------------------------------------------------
// Budgets and prices

/// A budget as listed (`/v1/budgets`, `/v1/provider-budgets`). `scope` is `organisation`,
/// `caller_key`, `consumer_group` or `provider`, as in a configuration's `budgets`;
/// `target` is what the configuration calls `id` (a gateway key id, group name or
/// provider; none: each has a budget of this size of its own).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BudgetInfo {
    pub id: String,
    pub name: String,
    pub scope: String,
    #[serde(default)]
    pub target: Option<String>,
    pub limit_usd: f64,
    /// `hour`, `day` or `month` (UTC).
    pub period: String,
    /// `hard` (refuses what would overspend) or `soft` (marks the decision event).
    pub mode: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST /v1/budgets` and `POST /v1/provider-budgets` (whose scope is always `provider`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateBudget {
    pub name: String,
    #[serde(default = "default_scope")]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub limit_usd: f64,
    #[serde(default = "default_period")]
    pub period: String,
    #[serde(default = "default_mode")]
    pub mode: String,
}

fn default_scope() -> String {
    "organisation".into()
}
fn default_period() -> String {
    "month".into()
}
fn default_mode() -> String {
    "hard".into()
}

/// `PATCH /v1/budgets/{id}`: what changes (scope and target stay). A budget's counts stay
/// with it: a new limit applies to what the current period has already spent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UpdateBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetList {
    pub data: Vec<BudgetInfo>,
}

/// An organisation's price for one model (`/v1/model-pricing`), US dollars per 1,000
/// tokens. Managed gateways price it so over the shipped prices and their configuration's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelPricing {
    pub model: String,
    /// Informational: the provider the price is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub input_cost_per_1k_tokens: f64,
    pub output_cost_per_1k_tokens: f64,
    /// Default: the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_cost_per_1k_tokens: Option<f64>,
    /// Default: the output price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_cost_per_1k_tokens: Option<f64>,
    /// Unix seconds of the last change (absent in requests and in a gateway's set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelPricingList {
    pub data: Vec<ModelPricing>,
}

// ---------------------------------------------------------------------------------------
// Spend

/// One hour of one gateway's spend for one caller key, group, model and provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageRow {
    /// Unix seconds of the hour's start.
    pub hour: i64,
    /// The caller key's id; `none` without caller authentication.
    pub caller_key: String,
    /// The consumer group; `none` for requests of no group.
    pub consumer_group: String,
    /// The model as the gateway's metrics name it (`other` for unlisted names).
    pub model: String,
    /// The target that answered.
    pub provider: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cost in nano-dollars (pricing table of the gateway's configuration).
    pub cost_nanos: u64,
}

/// `POST /v1/gateway/usage`: a managed gateway's spend since its last report. A batch
/// id that was applied before is acknowledged without counting again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageReport {
    pub batch_id: String,
    pub rows: Vec<UsageRow>,
}

/// One line of `GET /v1/spend/summary`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpendLine {
    /// The key id, group, model, provider or gateway id the line sums.
    pub id: String,
    /// The gateway key's or gateway's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpendSummary {
    /// `key`, `group`, `model`, `provider` or `gateway`.
    pub by: String,
    /// Unix seconds; hours starting in [since, until) are summed.
    pub since: i64,
    pub until: i64,
    /// Dearest first.
    pub data: Vec<SpendLine>,
    pub total: SpendLine,
}

/// What a failed call tells the caller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error envelope.
    #[error("{}: {}", .body.code, .body.message)]
    Api { status: u16, body: Box<ErrorBody> },
    /// The server could not be reached or answered something that is not kt's API.
    #[error("cannot reach the control plane at {url}: {message}")]
    Transport { url: String, message: String },
}

impl ClientError {
    /// The API error code, if the server answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            ClientError::Transport { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Transport { .. } => None,
        }
    }
}

/// A blocking client for `kt server`'s `/v1` API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .build();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut r = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.set("authorization", &format!("Bearer {t}"));
        }
        r
    }

    fn finish<T: serde::de::DeserializeOwned>(&self, r: Result<ureq::Response, ureq::Error>) -> Result<T, ClientError> {
        let transport = |message: String| ClientError::Transport {
            url: self.base.clone(),
            message,
        };
        match r {
            Ok(resp) => resp
                .into_json::<T>()
                .map_err(|e| transport(format!("unexpected answer: {e}"))),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                match serde_json::from_str::<ErrorEnvelope>(&text) {
                    Ok(env) => Err(ClientError::Api {
                        status,
                        body: Box::new(env.error),
                    }),
                    Err(_) => Err(transport(format!(
                        "HTTP {status}: {}",
                        text.chars().take(200).collect::<String>()
                    ))),
                }
            }
            Err(ureq::Error::Transport(t)) => Err(transport(t.to_string())),
        }
    }

    /// GETs `path` and decodes the JSON answer.
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.finish(self.request("GET", path).call())
    }

    /// Sends `body` as JSON with `method` and decodes the JSON answer.
    pub fn send<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.finish(self.request(method, path).send_json(body))
    }

    /// Sends `method` without a body and decodes the JSON answer.
    pub fn call<T: serde::de::DeserializeOwned>(&self, method: &str, path: &str) -> Result<T, ClientError> {
        self.finish(self.request(method, path).call())
    }

    pub fn login(&self, email: &str, password: &str) -> Result<LoginResponse, ClientError> {
        let body = LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        self.send("POST", "/v1/auth/login", &body)
    }

    pub fn logout(&self) -> Result<Value, ClientError> {
        self.call("POST", "/v1/auth/logout")
    }

    pub fn whoami(&self) -> Result<Whoami, ClientError> {
        self.get("/v1/whoami")
    }

    pub fn create_token(&self, req: &CreateToken) -> Result<CreatedToken, ClientError> {
        self.send("POST", "/v1/tokens", req)
    }

    pub fn list_tokens(&self, token_type: Option<&str>) -> Result<TokenList, ClientError> {
        match token_type {
            Some(t) => self.get(&format!("/v1/tokens?type={t}")),
            None => self.get("/v1/tokens"),
        }
    }

    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo, ClientError> {
        self.call("DELETE", &format!("/v1/tokens/{}", encode_segment(id)))
    }

    pub fn rotate_token(&self, id: &str) -> Result<RotatedToken, ClientError> {
        self.call("POST", &format!("/v1/tokens/{}/rotate", encode_segment(id)))
    }
}

impl Client {
    /// The managed gateway's configuration. With `etag` (from the last answer) the server
    /// holds the request up to `wait_secs` for a change and answers `None` when there was
    /// none. Each call is also the gateway's heartbeat.
    pub fn managed_config(
        &self,
        etag: Option<&str>,
        wait_secs: u64,
        poll_interval: u64,
        runtime_version: &str,
    ) -> Result<Option<ManagedConfig>, ClientError> {
        let path = format!("/v1/gateway/config?wait={wait_secs}&poll_interval={poll_interval}");
        let mut r = self
            .request("GET", &path)
            .timeout(std::time::Duration::from_secs(wait_secs + 15))
            .set("x-kt-runtime-version", runtime_version);
        if let Some(e) = etag {
            r = r.set("if-none-match", e);
        }
        match r.call() {
            Ok(resp) if resp.status() == 304 => Ok(None),
            other => self.finish::<ManagedConfig>(other).map(Some),
        }
    }

    pub fn report_runtime_state(&self, gateway_id: &str, report: &RuntimeReport) -> Result<RuntimeState, ClientError> {
        self.send(
            "PUT",
            &format!(
                "/v1/admin/configurations/gateways/{}/runtime-state",
                encode_segment(gateway_id)
            ),
            report,
        )
    }

    pub fn runtime_state(&self, gateway_id: &str) -> Result<RuntimeState, ClientError> {
        self.get(&format!(
            "/v1/admin/configurations/gateways/{}/runtime-state",
            encode_segment(gateway_id)
        ))
    }
}

impl Client {
    /// The caller keys a managed gateway accepts. With `etag` (from the last answer) the
    /// server holds the request up to `wait_secs` for a change and answers `None` when
    /// there was none.
    pub fn fleet_keys(&self, etag: Option<&str>, wait_secs: u64) -> Result<Option<FleetKeySet>, ClientError> {
        let mut r = self
            .request("GET", &format!("/v1/gateway/keys?wait={wait_secs}"))
            .timeout(std::time::Duration::from_secs(wait_secs + 15));
        if let Some(e) = etag {
            r = r.set("if-none-match", e);
        }
        match r.call() {
            Ok(resp) if resp.status() == 304 => Ok(None),
            other => self.finish::<FleetKeySet>(other).map(Some),
        }
    }
}

impl Client {
    /// Reports a managed gateway's spend (`POST /v1/gateway/usage`).
    pub fn report_usage(&self, report: &UsageReport) -> Result<(), ClientError> {
        self.send::<_, Value>("POST", "/v1/gateway/usage", report).map(|_| ())
    }

    /// Resolves `secret_key_ref.store` names (secrets first, then config variables).
    pub fn resolve(&self, names: &[String]) -> Result<ResolveResponse, ClientError> {
        self.send(
            "POST",
            "/v1/config-variables/resolve",
            &ResolveRequest { names: names.to_vec() },
        )
    }
}

/// Unix seconds as RFC 3339 UTC: `2026-03-20T12:05:00Z`, or with microseconds
/// (`…:00.123456Z`) when `micros` is given.
pub fn rfc3339(secs: i64, micros: Option<u32>) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = micros.map(|m| format!(".{m:06}")).unwrap_or_default();
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Percent-encodes one path segment (ids are `[a-z0-9_]`, but user input is not trusted).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_as_rfc3339() {
        assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_774_008_300, None), "2026-03-20T12:05:00Z");
        assert_eq!(rfc3339(951_782_400, Some(5)), "2000-02-29T00:00:00.000005Z");
        assert_eq!(rfc3339(1_795_624_200, Some(123_456)), "2026-11-25T16:30:00.123456Z");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("tok_abc"), "tok_abc");
        assert_eq!(encode_segment("a/../b c"), "a%2F..%2Fb%20c");
    }

    #[test]
    fn error_envelope_round_trips() {
        let text = r#"{"error":{"code":"auth.forbidden","message":"no","details":{"scope":"tokens:write"}}}"#;
        let env: ErrorEnvelope = serde_json::from_str(text).expect("envelope");
        assert_eq!(env.error.code, "auth.forbidden");
        assert_eq!(env.error.details["scope"], "tokens:write");
    }
}
