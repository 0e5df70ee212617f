//! Gateways, configuration versions and rollouts: what each gateway should run (desired),
//! what it reports running (applied), and the long-poll managed gateways wait on.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kt_api::{
    ConfigVersion, CreateGateway, CreatedGateway, GatewayInfo, GatewayList, ManagedConfig, PushConfig, RolloutRequest,
    RolloutResponse, RolloutTarget, RuntimeReport, RuntimeState, VersionList, VersionRef,
};
use kt_policy::CompiledPolicy;
use kt_policy::config::{Source, load_sources};
use kt_policy::secret_binding::{self, StoreUse};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, validate_name};
use crate::tokens::{NewToken, insert_token};
use crate::{AppState, now};

/// The longest a managed gateway's config request is held open.
const MAX_WAIT_SECS: u64 = 60;
/// Scopes of the token issued with a new gateway.
const GATEWAY_TOKEN_SCOPES: &str = "config_vars:resolve,control_plane";
/// What creating a gateway needs besides `gateways:write`: the scopes its token gets, and
/// `secrets:bind`, since a gateway's token receives the secret values its configuration
/// uses (whoever creates a gateway decides where secrets go).
const GATEWAY_CREATION_SCOPES: &str = "config_vars:resolve,control_plane,secrets:bind";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/gateways", get(list_gateways).post(create_gateway))
        .route("/v1/gateways/{id}", get(inspect_gateway))
        .route("/v1/gateways/{id}/config", get(gateway_config))
        .route("/v1/gateways/{id}/reload", post(reload_gateway))
        .route("/v1/gateways/{id}/revert", post(revert_gateway))
        .route("/v1/gateways/{id}/reconcile", post(reconcile_gateway))
        .route(
            "/v1/admin/configurations",
            get(list_configurations).post(create_configuration),
        )
        .route("/v1/admin/configurations/rollout", post(rollout))
        .route("/v1/admin/configurations/{id}", get(latest_version))
        .route(
            "/v1/admin/configurations/{id}/versions",
            get(list_versions).post(create_version),
        )
        .route("/v1/admin/configurations/{id}/versions/{version}", get(one_version))
        .route("/v1/admin/configurations/{id}/validate", post(validate))
        .route(
            "/v1/admin/configurations/gateways/{id}/runtime-state",
            get(get_runtime_state).put(put_runtime_state),
        )
        .route("/v1/gateway/config", get(managed_config))
}

// ---------------------------------------------------------------------------------------
// Reading gateways

const GATEWAY_COLUMNS: &str = "g.id, g.name, g.description, g.configuration_id, g.desired_version, \
     g.reload_generation, g.applied_configuration_id, g.applied_version, g.applied_generation, g.applied_at, \
     g.last_error, g.last_seen_at, g.poll_interval, g.runtime_version, g.created_at, \
     dv.pack_version AS desired_pack, av.pack_version AS applied_pack";

fn gateway_query(filter: &str) -> String {
    format!(
        "SELECT {GATEWAY_COLUMNS} FROM gateways g \
         LEFT JOIN configuration_versions dv ON dv.configuration_id = g.configuration_id AND dv.version = g.desired_version \
         LEFT JOIN configuration_versions av ON av.configuration_id = g.applied_configuration_id AND av.version = g.applied_version \
         WHERE {filter}"
    )
}

struct GatewayRow {
    info: GatewayInfo,
    reload_generation: i64,
}

fn gateway_row(r: &AnyRow) -> ApiResult<GatewayRow> {
    let configuration_id: Option<String> = r.try_get("configuration_id")?;
    let desired = match (
        configuration_id.clone(),
        r.try_get::<Option<i64>, _>("desired_version")?,
    ) {
        (Some(c), Some(v)) => Some(VersionRef {
            configuration_id: c,
            version: v,
            pack_version: r.try_get("desired_pack")?,
        }),
        _ => None,
    };
    let applied = match (
        r.try_get::<Option<String>, _>("applied_configuration_id")?,
        r.try_get::<Option<i64>, _>("applied_version")?,
    ) {
        (Some(c), Some(v)) => Some(VersionRef {
            configuration_id: c,
            version: v,
            pack_version: r.try_get("applied_pack")?,
        }),
        _ => None,
    };
    let last_seen_at: Option<i64> = r.try_get("last_seen_at")?;
    let last_error: Option<String> = r.try_get("last_error")?;
    let poll_interval: i64 = r.try_get("poll_interval")?;
    let reload_generation: i64 = r.try_get("reload_generation")?;
    let applied_generation: i64 = r.try_get("applied_generation")?;
    let status = health(last_seen_at, poll_interval, last_error.as_deref());
    let sync = sync_state(
        desired.as_ref(),
        applied.as_ref(),
        last_error.as_deref(),
        reload_generation,
        applied_generation,
    );
    Ok(GatewayRow {
        info: GatewayInfo {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            status: status.to_owned(),
            sync: sync.to_owned(),
            configuration_id,
            desired,
            applied,
            applied_at: r.try_get("applied_at")?,
            last_seen_at,
            last_error,
            runtime_version: r.try_get("runtime_version")?,
            poll_interval,
            created_at: r.try_get("created_at")?,
        },
        reload_generation,
    })
}

/// `healthy`, `degraded` (its last apply failed), `offline` (silent for three poll
/// intervals) or `pending` (never seen).
fn health(last_seen_at: Option<i64>, poll_interval: i64, last_error: Option<&str>) -> &'static str {
    match last_seen_at {
        None => "pending",
        Some(t) if now() - t > 3 * poll_interval.max(1) + 5 => "offline",
        Some(_) if last_error.is_some() => "degraded",
        Some(_) => "healthy",
    }
}

fn sync_state(
    desired: Option<&VersionRef>,
    applied: Option<&VersionRef>,
    last_error: Option<&str>,
    reload_generation: i64,
    applied_generation: i64,
) -> &'static str {
    let same = |a: &VersionRef, b: &VersionRef| a.configuration_id == b.configuration_id && a.version == b.version;
    match (desired, applied) {
        (None, _) => "unassigned",
        (Some(d), Some(a)) if same(d, a) && applied_generation >= reload_generation => "in_sync",
        _ if last_error.is_some() => "failed",
        _ => "pending",
    }
}

/// A gateway by its id or, failing that, its name (names are unique in an organisation;
/// an id always wins over a name that happens to equal it).
async fn load_gateway(st: &AppState, org_id: &str, id: &str) -> ApiResult<GatewayRow> {
    let row = sqlx::query(&format!(
        "{} ORDER BY CASE WHEN g.id = $1 THEN 0 ELSE 1 END LIMIT 1",
        gateway_query("(g.id = $1 OR g.name = $1) AND g.org_id = $2")
    ))
    .bind(id)
    .bind(org_id)
    .fetch_optional(&st.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no gateway '{id}' (id or name) in this organisation")))?;
    gateway_row(&row)
}

/// The id of the gateway `id_or_name` names.
async fn gateway_id(st: &AppState, org_id: &str, id_or_name: &str) -> ApiResult<String> {
    Ok(load_gateway(st, org_id, id_or_name).await?.info.id)
}

/// Every gateway of an organisation, oldest first.
async fn org_gateways(st: &AppState, org_id: &str) -> ApiResult<Vec<GatewayInfo>> {
    let rows = sqlx::query(&format!(
        "{} ORDER BY g.created_at, g.id",
        gateway_query("g.org_id = $1")
    ))
    .bind(org_id)
    .fetch_all(&st.db)
    .await?;
    rows.iter().map(|r| gateway_row(r).map(|g| g.info)).collect()
}

async fn list_gateways(State(st): State<AppState>, p: Principal) -> ApiResult<Json<GatewayList>> {
    p.require("gateways:read")?;
    Ok(Json(GatewayList {
        data: org_gateways(&st, &p.org_id).await?,
    }))
}

async fn inspect_gateway(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<GatewayInfo>> {
    p.require("gateways:read")?;
    let id = gateway_id(&st, &p.org_id, &id).await?;
    Ok(Json(load_gateway(&st, &p.org_id, &id).await?.info))
}

/// The gateway's token may resolve secrets: no one hands out what they do not hold.
fn may_issue_gateway_token(p: &Principal) -> ApiResult<()> {
    match auth::split_scopes(GATEWAY_CREATION_SCOPES)
        .into_iter()
        .find(|s| !p.has(s))
    {
        None => Ok(()),
        Some(scope) => Err(ApiError::Forbidden {
            message: format!(
                "creating a gateway issues a token that receives secret values; it needs '{scope}', which the calling token does not hold \
                 (needed: gateways:write and {GATEWAY_CREATION_SCOPES})"
            ),
            scope: Some(scope),
        }),
    }
}

async fn create_gateway(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<CreateGateway>,
) -> ApiResult<(StatusCode, Json<CreatedGateway>)> {
    p.require("gateways:write")?;
    may_issue_gateway_token(&p)?;
    crate::mfa::require_mfa(&st, &p, "creating a gateway (which issues its token)").await?;
    validate_name("name", &req.name)?;
    let description = req.description.unwrap_or_default();
    if description.chars().count() > 1000 {
        return Err(ApiError::validation("`description` is limited to 1000 characters"));
    }
    let id = match req.id.as_deref().map(str::trim) {
        Some(id) => {
            validate_gateway_id(id)?;
            id.to_owned()
        }
        None => auth::new_id("gw"),
    };
    // Ids and names answer alike: neither may equal another gateway's other one.
    let clash = sqlx::query("SELECT 1 FROM gateways WHERE org_id = $1 AND (name = $2 OR id = $3)")
        .bind(&p.org_id)
        .bind(&id)
        .bind(req.name.trim())
        .fetch_optional(&st.db)
        .await?;
    if clash.is_some() {
        return Err(ApiError::Conflict(format!(
            "the id '{id}' or the name '{}' is already another gateway's name or id",
            req.name.trim()
        )));
    }
    let token_id = auth::new_id("tok");
    let secret = auth::new_secret(auth::RUNTIME_TOKEN_PREFIX);
    let created_at = now();
    let mut tx = st.db.begin().await?;
    let inserted =
        sqlx::query("INSERT INTO gateways (id, org_id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(&p.org_id)
            .bind(req.name.trim())
            .bind(&description)
            .bind(created_at)
            .execute(&mut *tx)
            .await;
    if let Err(e) = inserted {
        return Err(match ApiError::from(e) {
            ApiError::Conflict(_) => ApiError::Conflict(format!(
                "a gateway named '{}' or with the id '{id}' already exists",
                req.name.trim()
            )),
            other => other,
        });
    }
    insert_token(
        &mut *tx,
        NewToken {
            id: &token_id,
            org_id: &p.org_id,
            user_id: p.user_id.as_deref(),
            name: &format!("gateway {}", req.name.trim()),
            token_type: "gateway",
            secret: &secret,
            scopes: GATEWAY_TOKEN_SCOPES,
            created_at,
            expires_at: None,
            minted_mfa: false,
        },
    )
    .await?;
    sqlx::query("UPDATE tokens SET gateway_id = $1 WHERE id = $2")
        .bind(&id)
        .bind(&token_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let gateway = load_gateway(&st, &p.org_id, &id).await?.info;
    Ok((
        StatusCode::CREATED,
        Json(CreatedGateway {
            gateway,
            token: secret,
            token_id,
        }),
    ))
}

/// A gateway id chosen at creation: 1 to 64 letters, digits, '-', '_' or '.'.
fn validate_gateway_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "'{id}' is not a valid gateway id: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Configuration versions

/// What validating a configuration text found: the pack's name and version and the
/// compiled digest, or the same diagnostics `kt policy lint` prints.
struct Checked {
    name: String,
    pack_version: String,
    digest: String,
    /// Where the configuration sends `secret_key_ref.store` values.
    uses: Vec<StoreUse>,
}

fn check_yaml(yaml: &str) -> ApiResult<Checked> {
    let outcome = load_sources(&[Source {
        name: "policy-config.yaml".into(),
        text: yaml.to_owned(),
    }]);
    let invalid = |errors: Vec<Value>, text: String| ApiError::Validation {
        message: "the configuration is invalid; see details.errors".into(),
        details: json!({"errors": errors, "text": text}),
    };
    let Some(config) = outcome.config.clone() else {
        let errors: Vec<&kt_policy::Diagnostic> = outcome.errors().collect();
        let text: String = errors.iter().map(|d| d.to_string()).collect();
        let values = errors.iter().filter_map(|d| serde_json::to_value(d).ok()).collect();
        return Err(invalid(values, text));
    };
    let name = config.pack.name.clone();
    let pack_version = config.pack.version.clone();
    let uses = secret_binding::store_uses(&config);
    let compiled =
        CompiledPolicy::compile(config).map_err(|e| invalid(vec![json!({"message": e.to_string()})], e.to_string()))?;
    Ok(Checked {
        name,
        pack_version,
        digest: compiled.digest().to_owned(),
        uses,
    })
}

/// [`check_yaml`], then the secret bindings: a configuration that would send a stored
/// secret to a host its binding does not allow is refused (403) when it is pushed.
async fn check_push(st: &AppState, org_id: &str, yaml: &str) -> ApiResult<Checked> {
    let checked = check_yaml(yaml)?;
    let names: Vec<String> = checked.uses.iter().map(|u| u.name.clone()).collect();
    let bound = crate::secrets::bindings(st, org_id, &names).await?;
    match secret_binding::violation(&checked.uses, |n| bound.get(n).cloned()) {
        Some(message) => Err(ApiError::Forbidden { message, scope: None }),
        None => Ok(checked),
    }
}

/// Where a configuration text sends `secret_key_ref.store` values (none when it does not
/// load).
pub(crate) fn store_uses_of(yaml: &str) -> Vec<StoreUse> {
    load_sources(&[Source {
        name: "policy-config.yaml".into(),
        text: yaml.to_owned(),
    }])
    .config
    .map(|c| secret_binding::store_uses(&c))
    .unwrap_or_default()
}

/// The configuration text rolled out to a gateway, if any.
pub(crate) async fn desired_yaml(st: &AppState, org_id: &str, gid: &str) -> ApiResult<Option<String>> {
    let g = load_gateway(st, org_id, gid).await?;
    match g.info.desired {
        Some(d) => Ok(find_version(st, org_id, &d.configuration_id, Some(d.version))
            .await?
            .yaml),
        None => Ok(None),
    }
}

/// A version as shown to people: literal `api_key` values replaced by `[REDACTED]`. Only a
/// managed gateway's own configuration request sees the text as stored.
fn redacted(mut v: ConfigVersion) -> ConfigVersion {
    v.yaml = v.yaml.map(|y| redact_api_keys(&y));
    v
}

fn redact_api_keys(yaml: &str) -> String {
    static KEY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"(?m)(\bapi_key\s*:[ \t]*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s,}\]#][^\n,}\]#]*)"#)
            .expect("valid pattern")
    });
    let mut text = KEY.replace_all(yaml, "${1}\"[REDACTED]\"").into_owned();
    // Literal keys written in forms the pattern does not see (block scalars, anchors).
    let literal: Vec<String> = load_sources(&[Source {
        name: "policy-config.yaml".into(),
        text: yaml.to_owned(),
    }])
    .config
    .and_then(|c| c.providers)
    .map(|p| p.targets.into_iter().filter_map(|t| t.api_key).collect())
    .unwrap_or_default();
    for k in literal.iter().map(|k| k.trim()).filter(|k| k.len() >= 8) {
        text = text.replace(k, "[REDACTED]");
    }
    text
}

const VERSION_COLUMNS: &str = "v.configuration_id, c.name, v.version, v.pack_version, v.digest, v.change_detail, \
     v.source, v.created_at";

fn version_row(r: &AnyRow, with_yaml: bool) -> ApiResult<ConfigVersion> {
    Ok(ConfigVersion {
        configuration_id: r.try_get("configuration_id")?,
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        pack_version: r.try_get("pack_version")?,
        digest: r.try_get("digest")?,
        change_detail: r.try_get("change_detail")?,
        source: r.try_get("source")?,
        created_at: r.try_get("created_at")?,
        yaml: if with_yaml { Some(r.try_get("yaml")?) } else { None },
    })
}

async fn find_version(
    st: &AppState,
    org_id: &str,
    configuration_id: &str,
    version: Option<i64>,
) -> ApiResult<ConfigVersion> {
    let base = format!(
        "SELECT {VERSION_COLUMNS}, v.yaml FROM configuration_versions v JOIN configurations c ON c.id = v.configuration_id \
         WHERE v.configuration_id = $1 AND c.org_id = $2"
    );
    let row = match version {
        Some(n) => {
            sqlx::query(&format!("{base} AND v.version = $3"))
                .bind(configuration_id)
                .bind(org_id)
                .bind(n)
                .fetch_optional(&st.db)
                .await?
        }
        None => {
            sqlx::query(&format!("{base} ORDER BY v.version DESC LIMIT 1"))
                .bind(configuration_id)
                .bind(org_id)
                .fetch_optional(&st.db)
                .await?
        }
    };
    let row = row.ok_or_else(|| match version {
        Some(n) => ApiError::NotFound(format!("configuration '{configuration_id}' has no version {n}")),
        None => ApiError::NotFound(format!("no configuration '{configuration_id}' in this organisation")),
    })?;
    version_row(&row, true)
}

fn check_source(source: Option<&str>) -> ApiResult<String> {
    match source.unwrap_or("api") {
        s @ ("api" | "manual" | "git_sync") => Ok(s.to_owned()),
        other => Err(ApiError::validation(format!(
            "unknown source '{other}': use api, manual or git_sync"
        ))),
    }
}

/// Appends a validated version to `configuration_id` (which must belong to the org).
async fn append_version(
    st: &AppState,
    p: &Principal,
    configuration_id: &str,
    req: &PushConfig,
) -> ApiResult<ConfigVersion> {
    let checked = check_push(st, &p.org_id, &req.yaml).await?;
    let source = check_source(req.source.as_deref())?;
    let detail = req.change_detail.clone().unwrap_or_default();
    if detail.chars().count() > 2000 {
        return Err(ApiError::validation("`change_detail` is limited to 2000 characters"));
    }
    let mut tx = st.db.begin().await?;
    let owner = sqlx::query("SELECT id FROM configurations WHERE id = $1 AND org_id = $2")
        .bind(configuration_id)
        .bind(&p.org_id)
        .fetch_optional(&mut *tx)
        .await?;
    if owner.is_none() {
        return Err(ApiError::NotFound(format!(
            "no configuration '{configuration_id}' in this organisation"
        )));
    }
    let next: i64 =
        sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 FROM configuration_versions WHERE configuration_id = $1")
            .bind(configuration_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
    let created_at = now();
    sqlx::query(
        "INSERT INTO configuration_versions (configuration_id, version, pack_version, yaml, digest, change_detail, source, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(configuration_id)
    .bind(next)
    .bind(&checked.pack_version)
    .bind(&req.yaml)
    .bind(&checked.digest)
    .bind(&detail)
    .bind(&source)
    .bind(p.user_id.as_deref().unwrap_or(&p.token_id))
    .bind(created_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict("another version was pushed at the same time; push again".into()),
        other => other,
    })?;
    sqlx::query("UPDATE configurations SET updated_at = $1 WHERE id = $2")
        .bind(created_at)
        .bind(configuration_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ConfigVersion {
        configuration_id: configuration_id.to_owned(),
        name: checked.name,
        version: next,
        pack_version: checked.pack_version,
        digest: checked.digest,
        change_detail: detail,
        source,
        created_at,
        yaml: None,
    })
}

/// `POST /v1/admin/configurations`: a version of the gateway's configuration when
/// `gateway_id` names one that has it, else a new configuration (named after the pack) at
/// version 1, attached to that gateway when given.
async fn create_configuration(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<PushConfig>,
) -> ApiResult<(StatusCode, Json<ConfigVersion>)> {
    p.require("configurations:write")?;
    let checked = check_push(&st, &p.org_id, &req.yaml).await?;
    let gateway = match &req.gateway_id {
        Some(g) => Some(load_gateway(&st, &p.org_id, g).await?),
        None => None,
    };
    let existing = gateway.as_ref().and_then(|g| g.info.configuration_id.clone());
    let configuration_id = match existing {
        Some(c) => c,
        None => {
            let id = auth::new_id("cfg");
            sqlx::query(
                "INSERT INTO configurations (id, org_id, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(&id)
            .bind(&p.org_id)
            .bind(&checked.name)
            .bind(now())
            .execute(&st.db)
            .await?;
            if let Some(g) = &gateway {
                sqlx::query("UPDATE gateways SET configuration_id = $1 WHERE id = $2 AND configuration_id IS NULL")
                    .bind(&id)
                    .bind(&g.info.id)
                    .execute(&st.db)
                    .await?;
            }
            id
        }
    };
    let v = append_version(&st, &p, &configuration_id, &req).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn create_version(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Body(req): Body<PushConfig>,
) -> ApiResult<(StatusCode, Json<ConfigVersion>)> {
    p.require("configurations:write")?;
    Ok((StatusCode::CREATED, Json(append_version(&st, &p, &id, &req).await?)))
}

async fn latest_version(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ConfigVersion>> {
    p.require("configurations:read")?;
    Ok(Json(redacted(find_version(&st, &p.org_id, &id, None).await?)))
}

async fn one_version(
    State(st): State<AppState>,
    p: Principal,
    Path((id, version)): Path<(String, i64)>,
) -> ApiResult<Json<ConfigVersion>> {
    p.require("configurations:read")?;
    Ok(Json(redacted(find_version(&st, &p.org_id, &id, Some(version)).await?)))
}

async fn list_versions(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<VersionList>> {
    p.require("configurations:read")?;
    let rows = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM configuration_versions v JOIN configurations c ON c.id = v.configuration_id \
         WHERE v.configuration_id = $1 AND c.org_id = $2 ORDER BY v.version"
    ))
    .bind(&id)
    .bind(&p.org_id)
    .fetch_all(&st.db)
    .await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no configuration '{id}' in this organisation"
        )));
    }
    let data = rows
        .iter()
        .map(|r| version_row(r, false))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(VersionList { data }))
}

#[derive(Debug, Deserialize)]
struct ValidateRequest {
    yaml: String,
}

async fn validate(p: Principal, Path(_id): Path<String>, Body(req): Body<ValidateRequest>) -> ApiResult<Json<Value>> {
    p.require("configurations:read")?;
    let c = check_yaml(&req.yaml)?;
    Ok(Json(
        json!({"valid": true, "pack": {"name": c.name, "version": c.pack_version}, "digest": c.digest}),
    ))
}

/// `GET /v1/admin/configurations`: each gateway with its status and running version
/// (`items`), and each configuration with its latest version (`configurations`).
async fn list_configurations(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    p.require("configurations:read")?;
    let gateways = org_gateways(&st, &p.org_id).await?;
    let mut items = Vec::with_capacity(gateways.len());
    for g in gateways {
        items.push(json!({
            "gateway_id": g.id,
            "name": g.name,
            "status": g.status,
            "sync": g.sync,
            "configuration_id": g.desired.as_ref().map(|d| d.configuration_id.clone()),
            "desired_version": g.desired.as_ref().map(|d| d.version),
            "applied_version": g.applied.as_ref().map(|a| a.version),
            "running_version": g.applied.as_ref().and_then(|a| a.pack_version.clone()),
            "last_seen_at": g.last_seen_at.map(|t| kt_api::rfc3339(t, None)),
        }));
    }
    let configs = sqlx::query(
        "SELECT c.id, c.name, c.environment, c.status, c.updated_at, \
         (SELECT MAX(version) FROM configuration_versions v WHERE v.configuration_id = c.id) AS version, \
         (SELECT COUNT(*) FROM gateways g WHERE g.configuration_id = c.id) AS gateways \
         FROM configurations c WHERE c.org_id = $1 ORDER BY c.created_at, c.id",
    )
    .bind(&p.org_id)
    .fetch_all(&st.db)
    .await?;
    let mut configurations = Vec::with_capacity(configs.len());
    for r in &configs {
        configurations.push(json!({
            "id": r.try_get::<String, _>("id")?,
            "name": r.try_get::<String, _>("name")?,
            "version": r.try_get::<Option<i64>, _>("version")?,
            "environment": r.try_get::<String, _>("environment")?,
            "status": r.try_get::<String, _>("status")?,
            "gateways": r.try_get::<i64, _>("gateways")?,
            "updated_at": r.try_get::<i64, _>("updated_at")?,
        }));
    }
    Ok(Json(json!({"items": items, "configurations": configurations})))
}

// ---------------------------------------------------------------------------------------
// Rollout, revert, reload, reconcile

/// Resolves a rollout `version`: a number (or numeric string) is a version number; any
/// other string is a `pack.version`, the newest version carrying it.
async fn resolve_version(st: &AppState, org_id: &str, configuration_id: &str, version: &Value) -> ApiResult<i64> {
    let number = match version {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => {
            return Err(ApiError::validation(
                "`version` must be a version number or a pack version string",
            ));
        }
    };
    if let Some(n) = number {
        return find_version(st, org_id, configuration_id, Some(n))
            .await
            .map(|v| v.version);
    }
    let pack = version.as_str().unwrap_or_default();
    let row = sqlx::query(
        "SELECT MAX(v.version) FROM configuration_versions v JOIN configurations c ON c.id = v.configuration_id \
         WHERE v.configuration_id = $1 AND c.org_id = $2 AND v.pack_version = $3",
    )
    .bind(configuration_id)
    .bind(org_id)
    .bind(pack)
    .fetch_one(&st.db)
    .await?;
    row.try_get::<Option<i64>, _>(0)?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "configuration '{configuration_id}' has no version with pack.version '{pack}'"
        ))
    })
}

/// Sets what a gateway should run (callers then `notify`).
async fn set_desired<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    gateway_id: &str,
    configuration_id: &str,
    version: i64,
) -> ApiResult<()> {
    sqlx::query("UPDATE gateways SET configuration_id = $1, desired_version = $2, last_error = NULL WHERE id = $3")
        .bind(configuration_id)
        .bind(version)
        .bind(gateway_id)
        .execute(db)
        .await?;
    Ok(())
}

async fn rollout(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<RolloutRequest>,
) -> ApiResult<(StatusCode, Json<RolloutResponse>)> {
    p.require("configurations:write")?;
    if req.gateway_ids.is_empty() {
        return Err(ApiError::validation("`gateway_ids` names no gateway"));
    }
    // Resolve every target before changing any: a rollout applies to all or none.
    let mut targets = Vec::with_capacity(req.gateway_ids.len());
    for gid in &req.gateway_ids {
        let g = load_gateway(&st, &p.org_id, gid).await?;
        let configuration_id = match (&req.configuration_id, &g.info.configuration_id) {
            (Some(c), _) | (None, Some(c)) => c.clone(),
            (None, None) => {
                return Err(ApiError::validation(format!(
                    "gateway '{gid}' has no configuration yet: push one with `kt policy push --gateway-id {gid}` or pass configuration_id"
                )));
            }
        };
        let version = resolve_version(&st, &p.org_id, &configuration_id, &req.version).await?;
        targets.push(RolloutTarget {
            gateway_id: g.info.id.clone(),
            desired_version: version,
            configuration_id,
        });
    }
    let mut tx = st.db.begin().await?;
    for t in &targets {
        set_desired(&mut *tx, &t.gateway_id, &t.configuration_id, t.desired_version).await?;
    }
    let rollout_id = auth::new_id("rollout");
    let first = &targets[0];
    sqlx::query(
        "INSERT INTO rollouts (id, org_id, configuration_id, version, gateway_ids, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&rollout_id)
    .bind(&p.org_id)
    .bind(&first.configuration_id)
    .bind(first.desired_version)
    .bind(targets.iter().map(|t| t.gateway_id.as_str()).collect::<Vec<_>>().join(","))
    .bind(p.user_id.as_deref().unwrap_or(&p.token_id))
    .bind(now())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    crate::changes::announce(&st, crate::changes::Change::Fleet).await;
    Ok((StatusCode::ACCEPTED, Json(RolloutResponse { rollout_id, targets })))
}

#[derive(Debug, Deserialize)]
struct RevertRequest {
    version: Value,
}

async fn revert_gateway(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Body(req): Body<RevertRequest>,
) -> ApiResult<Json<GatewayInfo>> {
    p.require("configurations:write")?;
    let id = gateway_id(&st, &p.org_id, &id).await?;
    let g = load_gateway(&st, &p.org_id, &id).await?;
    let Some(desired) = g.info.desired else {
        return Err(ApiError::validation(format!(
            "gateway '{id}' has no configuration to revert"
        )));
    };
    let version = resolve_version(&st, &p.org_id, &desired.configuration_id, &req.version).await?;
    set_desired(&st.db, &id, &desired.configuration_id, version).await?;
    crate::changes::announce(&st, crate::changes::Change::Fleet).await;
    Ok(Json(load_gateway(&st, &p.org_id, &id).await?.info))
}

async fn reload_gateway(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<GatewayInfo>> {
    p.require("gateways:write")?;
    let id = gateway_id(&st, &p.org_id, &id).await?;
    load_gateway(&st, &p.org_id, &id).await?;
    sqlx::query("UPDATE gateways SET reload_generation = reload_generation + 1 WHERE id = $1")
        .bind(&id)
        .execute(&st.db)
        .await?;
    crate::changes::announce(&st, crate::changes::Change::Fleet).await;
    Ok(Json(load_gateway(&st, &p.org_id, &id).await?.info))
}

/// Re-asserts the desired version: a gateway out of sync is asked to apply it again.
async fn reconcile_gateway(State(st): State<AppState>, p: Principal, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    p.require("gateways:write")?;
    let id = gateway_id(&st, &p.org_id, &id).await?;
    let g = load_gateway(&st, &p.org_id, &id).await?;
    let action = if g.info.sync == "in_sync" || g.info.sync == "unassigned" {
        "none"
    } else {
        sqlx::query("UPDATE gateways SET reload_generation = reload_generation + 1 WHERE id = $1")
            .bind(&id)
            .execute(&st.db)
            .await?;
        crate::changes::announce(&st, crate::changes::Change::Fleet).await;
        "reapply_requested"
    };
    let g = load_gateway(&st, &p.org_id, &id).await?.info;
    Ok(Json(json!({"gateway": g, "action": action})))
}

async fn gateway_config(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ConfigVersion>> {
    p.require("configurations:read")?;
    let id = gateway_id(&st, &p.org_id, &id).await?;
    let g = load_gateway(&st, &p.org_id, &id).await?;
    let Some(d) = g.info.desired else {
        return Err(ApiError::NotFound(format!(
            "gateway '{id}' has no configuration rolled out yet"
        )));
    };
    Ok(Json(redacted(
        find_version(&st, &p.org_id, &d.configuration_id, Some(d.version)).await?,
    )))
}

// ---------------------------------------------------------------------------------------
// Runtime state and the managed gateway's endpoints

fn runtime_state(g: &GatewayRow) -> RuntimeState {
    RuntimeState {
        gateway_id: g.info.id.clone(),
        desired: g.info.desired.clone(),
        applied: g.info.applied.clone(),
        applied_at: g.info.applied_at,
        status: g.info.sync.clone(),
        health: g.info.status.clone(),
        last_error: g.info.last_error.clone(),
        last_seen_at: g.info.last_seen_at,
        runtime_version: g.info.runtime_version.clone(),
    }
}

async fn get_runtime_state(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RuntimeState>> {
    p.require("gateways:read")?;
    let id = gateway_id(&st, &p.org_id, &id).await?;
    Ok(Json(runtime_state(&load_gateway(&st, &p.org_id, &id).await?)))
}

/// The gateway a gateway token is bound to, which must be `id` when given.
pub(crate) fn bound_gateway(p: &Principal, id: Option<&str>) -> ApiResult<String> {
    p.require("control_plane")?;
    match (&p.gateway_id, id) {
        (Some(g), Some(id)) if g != id => Err(ApiError::Forbidden {
            message: format!("this gateway token belongs to gateway '{g}', not '{id}'"),
            scope: None,
        }),
        (Some(g), _) => Ok(g.clone()),
        (None, _) => Err(ApiError::Forbidden {
            message: "only a gateway token (from `kt gateway create`) can act for a gateway".into(),
            scope: None,
        }),
    }
}

async fn put_runtime_state(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Body(report): Body<RuntimeReport>,
) -> ApiResult<Json<RuntimeState>> {
    let id = gateway_id(&st, &p.org_id, &id).await?;
    let gid = bound_gateway(&p, Some(&id))?;
    let error = report.error.map(|e| e.chars().take(4000).collect::<String>());
    let runtime_version = report.runtime_version.map(|v| v.chars().take(100).collect::<String>());
    match &report.applied {
        Some(a) => {
            sqlx::query(
                "UPDATE gateways SET applied_configuration_id = $1, applied_version = $2, \
                 applied_at = CASE WHEN applied_version = $2 AND applied_configuration_id = $1 THEN applied_at ELSE $3 END, \
                 applied_generation = $4, last_error = $5, last_seen_at = $3, runtime_version = COALESCE($6, runtime_version) WHERE id = $7",
            )
            .bind(&a.configuration_id)
            .bind(a.version)
            .bind(now())
            .bind(report.generation)
            .bind(&error)
            .bind(&runtime_version)
            .bind(&gid)
            .execute(&st.db)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE gateways SET last_error = $1, last_seen_at = $2, runtime_version = COALESCE($3, runtime_version) WHERE id = $4",
            )
            .bind(&error)
            .bind(now())
            .bind(&runtime_version)
            .bind(&gid)
            .execute(&st.db)
            .await?;
        }
    }
    // A report changes what a gateway runs, not what it should run: no long-poll waits on
    // it (so a gateway that reports in a loop wakes nobody).
    Ok(Json(runtime_state(&load_gateway(&st, &p.org_id, &gid).await?)))
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
    poll_interval: Option<u64>,
}

fn etag_of(configuration_id: &str, version: i64, generation: i64) -> String {
    format!("\"{configuration_id}:{version}:{generation}\"")
}

/// `GET /v1/gateway/config`: the desired configuration of the calling gateway. With
/// `If-None-Match` equal to the current ETag the request waits (up to `wait` seconds,
/// at most 60) for a rollout, revert or reload, and answers 304 if none came.
async fn managed_config(
    State(st): State<AppState>,
    p: Principal,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let gid = bound_gateway(&p, None)?;
    let runtime_version = headers
        .get("x-kt-runtime-version")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(100).collect::<String>());
    let poll_interval = q.poll_interval.unwrap_or(30).clamp(1, 86_400) as i64;
    sqlx::query(
        "UPDATE gateways SET last_seen_at = $1, poll_interval = $2, runtime_version = COALESCE($3, runtime_version) WHERE id = $4",
    )
    .bind(now())
    .bind(poll_interval)
    .bind(&runtime_version)
    .bind(&gid)
    .execute(&st.db)
    .await?;
    let seen = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = st.fleet.subscribe();
    loop {
        changes.borrow_and_update();
        let g = load_gateway(&st, &p.org_id, &gid).await?;
        let current = g
            .info
            .desired
            .as_ref()
            .map(|d| etag_of(&d.configuration_id, d.version, g.reload_generation));
        let tag = current.clone().unwrap_or_else(|| "\"none\"".into());
        if seen.as_deref() != Some(tag.as_str()) {
            let Some(d) = g.info.desired else {
                return Err(ApiError::NotFound(format!(
                    "no configuration is rolled out to gateway '{gid}' yet; push one and deploy it (kt policy push / kt policy deploy)"
                )));
            };
            let v = find_version(&st, &p.org_id, &d.configuration_id, Some(d.version)).await?;
            let body = ManagedConfig {
                gateway_id: gid,
                configuration_id: d.configuration_id,
                version: d.version,
                pack_version: v.pack_version,
                digest: v.digest,
                yaml: v.yaml.unwrap_or_default(),
                generation: g.reload_generation,
                etag: tag.clone(),
            };
            return Ok(([("etag", tag)], Json(body)).into_response());
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(StatusCode::NOT_MODIFIED.into_response());
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NOT_MODIFIED.into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_and_health_follow_reports() {
        let v = |n| VersionRef {
            configuration_id: "cfg_1".into(),
            version: n,
            pack_version: None,
        };
        assert_eq!(sync_state(None, None, None, 0, 0), "unassigned");
        assert_eq!(sync_state(Some(&v(2)), Some(&v(2)), None, 0, 0), "in_sync");
        assert_eq!(
            sync_state(Some(&v(2)), Some(&v(2)), None, 1, 0),
            "pending",
            "reload asked"
        );
        assert_eq!(sync_state(Some(&v(3)), Some(&v(2)), None, 0, 0), "pending");
        assert_eq!(sync_state(Some(&v(3)), Some(&v(2)), Some("bad"), 0, 0), "failed");
        assert_eq!(health(None, 30, None), "pending");
        assert_eq!(health(Some(now()), 30, None), "healthy");
        assert_eq!(health(Some(now()), 30, Some("x")), "degraded");
        assert_eq!(health(Some(now() - 1000), 30, None), "offline");
    }

    #[test]
    fn configurations_are_checked_like_lint() {
        let ok = "pack: {name: p, version: 1.2.0, enabled: true}\npolicies: {chain: []}\n";
        let c = check_yaml(ok).expect("valid");
        assert_eq!((c.name.as_str(), c.pack_version.as_str()), ("p", "1.2.0"));
        let err = check_yaml("pack: {name: p}\npolicies: {chain: [nope]}\n")
            .err()
            .expect("invalid");
        match err {
            ApiError::Validation { details, .. } => {
                assert!(details["errors"].as_array().is_some_and(|e| !e.is_empty()), "{details}");
                assert!(
                    details["text"].as_str().is_some_and(|t| t.contains("error")),
                    "{details}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn literal_keys_are_redacted_in_every_form() {
        let yaml = "pack: {name: p, version: 1.0.0, enabled: true}\npolicies: {chain: []}\nproviders:\n  targets:\n    - id: a\n      provider: openai\n      api_key: sk-block-0123456789\n    - {id: b, provider: openai, api_key: \"sk-flow-0123456789\"}\n    - {id: c, provider: openai, api_key: 'sk-single-0123456789'}\n    - id: d\n      provider: openai\n      api_key: >-\n        sk-folded-0123456789\n";
        let out = redact_api_keys(yaml);
        for k in ["sk-block", "sk-flow", "sk-single", "sk-folded"] {
            assert!(!out.contains(k), "{k} shown: {out}");
        }
        assert!(out.contains("id: b") && out.contains("provider: openai"), "{out}");
        assert!(out.matches("[REDACTED]").count() >= 4, "{out}");
    }
}
