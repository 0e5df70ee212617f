//! Gateway keys: the caller keys applications send to managed gateways (`kt_gk_…`).
//! A key is shown once and stored as its SHA-256 hash with its first characters. Every
//! gateway of the organisation holds the set of usable keys, pushed to it: its long-poll
//! on `GET /v1/gateway/keys` answers as soon as a key is created, rotated or revoked.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kt_api::{
    CreateGatewayKey, CreatedGatewayKey, FleetKey, FleetKeySet, GatewayKeyInfo, GatewayKeyList, KeyBudget, KeyRateLimit,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

// Names as a configuration's: they appear in refusals, events, metrics and Redis keys.
use kt_policy::config::well_formed_name as well_formed;

use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, validate_name};
use crate::tokens::prefix_of;
use crate::{AppState, now};

/// The prefix of every gateway key.
pub const KEY_PREFIX: &str = "kt_gk_";
/// Keys an organisation may hold that are neither revoked nor expired.
pub const MAX_ACTIVE_KEYS: i64 = 10_000;
/// Entries of one key's `allowed_models`, and the length of each.
const MAX_MODELS: usize = 256;
const MAX_MODEL_BYTES: usize = 256;
/// The longest a gateway's long-poll is held.
const MAX_WAIT_SECS: u64 = 60;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/gateway-keys", get(list_keys).post(create_key))
        .route("/v1/gateway-keys/{id}", get(get_key).delete(revoke_key))
        .route("/v1/gateway-keys/{id}/rotate", post(rotate_key))
        .route("/v1/gateway/keys", get(fleet_keys))
}

const COLUMNS: &str = "id, name, prefix, consumer_group, allowed_models, rate_max_requests, rate_window_seconds, \
                       budget_nanos, budget_period, created_at, expires_at, revoked_at, rotated_at";
/// The largest budget a key may have, in US dollars.
const MAX_BUDGET_USD: f64 = 1_000_000.0;

fn rate_limit_of(r: &AnyRow) -> ApiResult<Option<KeyRateLimit>> {
    let max: Option<i64> = r.try_get("rate_max_requests")?;
    let window: Option<i64> = r.try_get("rate_window_seconds")?;
    Ok(max.zip(window).map(|(m, w)| KeyRateLimit {
        max_requests: m.max(0) as u64,
        window_seconds: w.max(0) as u64,
    }))
}

fn budget_of(r: &AnyRow) -> ApiResult<Option<KeyBudget>> {
    let nanos: Option<i64> = r.try_get("budget_nanos")?;
    let period: Option<String> = r.try_get("budget_period")?;
    Ok(nanos.zip(period).map(|(n, period)| KeyBudget {
        limit_usd: n.max(0) as f64 / 1e9,
        period,
    }))
}

fn models_of(r: &AnyRow) -> ApiResult<Option<Vec<String>>> {
    let text: Option<String> = r.try_get("allowed_models")?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| ApiError::Internal(format!("allowed_models: {e}"))))
        .transpose()
}

fn key_info(r: &AnyRow) -> ApiResult<GatewayKeyInfo> {
    let revoked_at: Option<i64> = r.try_get("revoked_at")?;
    let expires_at: Option<i64> = r.try_get("expires_at")?;
    let state = crate::tokens::state_of(revoked_at, expires_at);
    Ok(GatewayKeyInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        state: state.into(),
        consumer_group: r.try_get("consumer_group")?,
        allowed_models: models_of(r)?,
        rate_limit: rate_limit_of(r)?,
        budget: budget_of(r)?,
        created_at: r.try_get("created_at")?,
        expires_at,
        revoked_at,
        rotated_at: r.try_get("rotated_at")?,
    })
}

/// Checks what a new key asks for.
fn validate(req: &CreateGatewayKey) -> ApiResult<()> {
    validate_name("name", &req.name)?;
    if let Some(g) = &req.consumer_group
        && (!well_formed(g) || g == "none")
    {
        return Err(ApiError::validation(format!(
            "consumer_group '{g}' is not a group name: 1 to 64 letters, digits, '-', '_' or '.' ('none' is reserved)"
        )));
    }
    if let Some(models) = &req.allowed_models {
        if models.is_empty() || models.len() > MAX_MODELS {
            return Err(ApiError::validation(format!(
                "allowed_models needs 1 to {MAX_MODELS} model names (leave it out to allow every model)"
            )));
        }
        if let Some(m) = models
            .iter()
            .find(|m| m.trim().is_empty() || m.len() > MAX_MODEL_BYTES || m.chars().any(char::is_control))
        {
            return Err(ApiError::validation(format!(
                "allowed_models entry '{}' is not a model name (1 to {MAX_MODEL_BYTES} printable bytes)",
                m.chars().take(40).collect::<String>()
            )));
        }
    }
    if let Some(l) = &req.rate_limit
        && (!(1..=1_000_000_000).contains(&l.max_requests) || !(1..=86_400).contains(&l.window_seconds))
    {
        return Err(ApiError::validation(
            "rate_limit needs max_requests from 1 to 1000000000 and window_seconds from 1 to 86400",
        ));
    }
    if let Some(b) = &req.budget {
        if !(b.limit_usd.is_finite() && b.limit_usd > 0.0 && b.limit_usd <= MAX_BUDGET_USD) {
            return Err(ApiError::validation(format!(
                "budget.limit_usd must be above 0 and at most {MAX_BUDGET_USD}"
            )));
        }
        if !matches!(b.period.as_str(), "hour" | "day" | "month") {
            return Err(ApiError::validation("budget.period must be hour, day or month"));
        }
    }
    if let Some(d) = req.expires_in_days
        && !(1..=3650).contains(&d)
    {
        return Err(ApiError::validation("expires_in_days must be between 1 and 3650"));
    }
    Ok(())
}

async fn find_key(st: &AppState, org_id: &str, id: &str) -> ApiResult<AnyRow> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM gateway_keys WHERE id = $1 AND org_id = $2"
    ))
    .bind(id)
    .bind(org_id)
    .fetch_optional(&st.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no gateway key '{id}' in this organisation")))
}

async fn list_keys(State(st): State<AppState>, p: Principal) -> ApiResult<Json<GatewayKeyList>> {
    p.require("gateway_keys:read")?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM gateway_keys WHERE org_id = $1 ORDER BY created_at, id"
    ))
    .bind(&p.org_id)
    .fetch_all(&st.db)
    .await?;
    let data = rows.iter().map(key_info).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(GatewayKeyList { data }))
}

async fn get_key(State(st): State<AppState>, p: Principal, Path(id): Path<String>) -> ApiResult<Json<GatewayKeyInfo>> {
    p.require("gateway_keys:read")?;
    Ok(Json(key_info(&find_key(&st, &p.org_id, &id).await?)?))
}

/// Inserts a new key for `req` and returns it with its value.
async fn insert_key<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    p: &Principal,
    req: &CreateGatewayKey,
    expires_at: Option<i64>,
) -> ApiResult<CreatedGatewayKey> {
    let key = auth::new_secret(KEY_PREFIX);
    let id = auth::new_id("gk");
    let created_at = now();
    let models = req
        .allowed_models
        .as_ref()
        .map(|m| serde_json::to_string(m).unwrap_or_default());
    sqlx::query(
        "INSERT INTO gateway_keys (id, org_id, name, prefix, secret_hash, consumer_group, allowed_models, \
         rate_max_requests, rate_window_seconds, created_by, created_at, expires_at, budget_nanos, budget_period) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&id)
    .bind(&p.org_id)
    .bind(req.name.trim())
    .bind(prefix_of(&key))
    .bind(auth::hash_secret(&key))
    .bind(&req.consumer_group)
    .bind(&models)
    .bind(req.rate_limit.map(|l| l.max_requests as i64))
    .bind(req.rate_limit.map(|l| l.window_seconds as i64))
    .bind(p.user_id.as_deref().unwrap_or(&p.token_id))
    .bind(created_at)
    .bind(expires_at)
    .bind(req.budget.as_ref().map(|b| (b.limit_usd * 1e9).round() as i64))
    .bind(req.budget.as_ref().map(|b| b.period.clone()))
    .execute(db)
    .await?;
    let info = GatewayKeyInfo {
        id,
        name: req.name.trim().to_owned(),
        prefix: prefix_of(&key),
        state: "active".into(),
        consumer_group: req.consumer_group.clone(),
        allowed_models: req.allowed_models.clone(),
        rate_limit: req.rate_limit,
        budget: req.budget.clone(),
        created_at,
        expires_at,
        revoked_at: None,
        rotated_at: None,
    };
    Ok(CreatedGatewayKey { info, key })
}

async fn create_key(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<CreateGatewayKey>,
) -> ApiResult<(StatusCode, Json<CreatedGatewayKey>)> {
    p.require("gateway_keys:write")?;
    crate::mfa::require_mfa(&st, &p, "creating a gateway key").await?;
    validate(&req)?;
    let active: i64 = sqlx::query(
        "SELECT COUNT(*) FROM gateway_keys WHERE org_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(&p.org_id)
    .bind(now())
    .fetch_one(&st.db)
    .await?
    .try_get(0)?;
    if active >= MAX_ACTIVE_KEYS {
        return Err(ApiError::Conflict(format!(
            "the organisation holds {MAX_ACTIVE_KEYS} usable gateway keys, the most allowed; revoke unused ones first"
        )));
    }
    let expires_at = req.expires_in_days.map(|d| now() + i64::from(d) * 86_400);
    let created = insert_key(&st.db, &p, &req, expires_at).await?;
    crate::changes::announce(&st, crate::changes::Change::Keys).await;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn revoke_key(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<GatewayKeyInfo>> {
    p.require("gateway_keys:write")?;
    find_key(&st, &p.org_id, &id).await?;
    let done =
        sqlx::query("UPDATE gateway_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL")
            .bind(now())
            .bind(&id)
            .bind(&p.org_id)
            .execute(&st.db)
            .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::Conflict(format!("gateway key '{id}' is already revoked")));
    }
    crate::changes::announce(&st, crate::changes::Change::Keys).await;
    Ok(Json(key_info(&find_key(&st, &p.org_id, &id).await?)?))
}

/// Gives a key a new value: the old value is refused from then on, and the key keeps its
/// id (what configurations, budgets and spend name it by), group, models, limits and
/// expiry. Of concurrent rotations of one key exactly one succeeds.
async fn rotate_key(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CreatedGatewayKey>> {
    p.require("gateway_keys:write")?;
    crate::mfa::require_mfa(&st, &p, "rotating a gateway key").await?;
    let old = key_info(&find_key(&st, &p.org_id, &id).await?)?;
    if old.state != "active" {
        return Err(ApiError::Conflict(format!(
            "gateway key '{id}' is {}; only an active key can be rotated",
            old.state
        )));
    }
    let old_hash: String = sqlx::query("SELECT secret_hash FROM gateway_keys WHERE id = $1 AND org_id = $2")
        .bind(&id)
        .bind(&p.org_id)
        .fetch_one(&st.db)
        .await?
        .try_get(0)?;
    let key = auth::new_secret(KEY_PREFIX);
    let done = sqlx::query(
        "UPDATE gateway_keys SET secret_hash = $1, prefix = $2, rotated_at = $3 \
         WHERE id = $4 AND org_id = $5 AND revoked_at IS NULL AND secret_hash = $6",
    )
    .bind(auth::hash_secret(&key))
    .bind(prefix_of(&key))
    .bind(now())
    .bind(&id)
    .bind(&p.org_id)
    .bind(&old_hash)
    .execute(&st.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::Conflict(format!(
            "gateway key '{id}' was rotated or revoked meanwhile"
        )));
    }
    crate::changes::announce(&st, crate::changes::Change::Keys).await;
    let info = key_info(&find_key(&st, &p.org_id, &id).await?)?;
    Ok(Json(CreatedGatewayKey { info, key }))
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

/// Key sets already built: organisation → (the `keys` generation it was built at, the
/// set, the Unix second its first key expires). A wake of a thousand long-polls builds
/// each organisation's set once, not once per gateway.
#[derive(Debug, Default)]
pub struct KeySets(std::sync::Mutex<std::collections::HashMap<String, KeptSet>>);

/// (generation, set, Unix second its first key expires).
type KeptSet = (u64, std::sync::Arc<FleetKeySet>, i64);

/// The organisation's key set: the one built at the current generation, else a new one.
/// The generation is read before the database, so a change committed later (and announced
/// after its commit) always moves it past the set kept.
async fn current_key_set(st: &AppState, org_id: &str) -> ApiResult<std::sync::Arc<FleetKeySet>> {
    let generation = *st.keys.borrow();
    let at = now();
    {
        let kept = st.key_sets.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, set, until)) = kept.get(org_id)
            && *g == generation
            && at < *until
        {
            return Ok(std::sync::Arc::clone(set));
        }
    }
    let set = std::sync::Arc::new(key_set(st, org_id).await?);
    let until = set.keys.iter().filter_map(|k| k.expires_at).min().unwrap_or(i64::MAX);
    let mut kept = st.key_sets.0.lock().unwrap_or_else(|p| p.into_inner());
    kept.insert(org_id.to_owned(), (generation, std::sync::Arc::clone(&set), until));
    Ok(set)
}

/// The usable keys of an organisation and their ETag (a digest of the set, so every
/// replica gives the same set the same tag).
async fn key_set(st: &AppState, org_id: &str) -> ApiResult<FleetKeySet> {
    let rows = sqlx::query(
        "SELECT id, secret_hash, consumer_group, allowed_models, rate_max_requests, rate_window_seconds, budget_nanos, \
         budget_period, expires_at \
         FROM gateway_keys WHERE org_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) ORDER BY id",
    )
    .bind(org_id)
    .bind(now())
    .fetch_all(&st.db)
    .await?;
    let mut keys = Vec::with_capacity(rows.len());
    for r in &rows {
        keys.push(FleetKey {
            id: r.try_get("id")?,
            sha256: r.try_get("secret_hash")?,
            consumer_group: r.try_get("consumer_group")?,
            allowed_models: models_of(r)?,
            rate_limit: rate_limit_of(r)?,
            budget: budget_of(r)?,
            expires_at: r.try_get("expires_at")?,
        });
    }
    let budgets = crate::budgets::all_budgets(st, org_id).await?;
    let mut prices = crate::budgets::all_prices(st, org_id).await?;
    // A change of time alone changes nothing a gateway applies.
    for p in &mut prices {
        p.updated_at = None;
    }
    let mut set = FleetKeySet {
        org_id: Some(org_id.to_owned()),
        keys,
        budgets,
        prices,
        etag: String::new(),
    };
    let digest = Sha256::digest(serde_json::to_vec(&set).unwrap_or_default());
    set.etag = format!(
        "\"keys:{}\"",
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>()
    );
    Ok(set)
}

/// `GET /v1/gateway/keys` (gateway tokens): the keys every gateway of the organisation
/// accepts. With `If-None-Match` equal to the current ETag the request waits (up to
/// `wait` seconds, at most 60) for a key to be created, rotated or revoked, and answers
/// 304 if none was.
async fn fleet_keys(
    State(st): State<AppState>,
    p: Principal,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    crate::fleet::bound_gateway(&p, None)?;
    let seen = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let mut changes = st.keys.subscribe();
    loop {
        changes.borrow_and_update();
        let set = current_key_set(&st, &p.org_id).await?;
        if seen.as_deref() != Some(set.etag.as_str()) {
            let tag = set.etag.clone();
            return Ok(([("etag", tag)], Json(&*set)).into_response());
        }
        // An expiry changes the set without an event: look again when the first key expires.
        let expiry = set
            .keys
            .iter()
            .filter_map(|k| k.expires_at)
            .min()
            .map(|e| tokio::time::Instant::now() + Duration::from_secs((e - now()).max(0) as u64 + 1));
        let until = expiry.map_or(deadline, |e| e.min(deadline));
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(StatusCode::NOT_MODIFIED.into_response());
                }
            }
            () = tokio::time::sleep_until(until) => {
                if until >= deadline {
                    return Ok(StatusCode::NOT_MODIFIED.into_response());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> CreateGatewayKey {
        CreateGatewayKey {
            name: "web-app".into(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_checked() {
        assert!(validate(&req()).is_ok());
        let bad = [
            CreateGatewayKey {
                name: " ".into(),
                ..req()
            },
            CreateGatewayKey {
                consumer_group: Some("team a".into()),
                ..req()
            },
            CreateGatewayKey {
                consumer_group: Some("none".into()),
                ..req()
            },
            CreateGatewayKey {
                allowed_models: Some(vec![]),
                ..req()
            },
            CreateGatewayKey {
                allowed_models: Some(vec!["gpt\u{0}".into()]),
                ..req()
            },
            CreateGatewayKey {
                allowed_models: Some(vec!["m".into(); MAX_MODELS + 1]),
                ..req()
            },
            CreateGatewayKey {
                rate_limit: Some(KeyRateLimit {
                    max_requests: 0,
                    window_seconds: 60,
                }),
                ..req()
            },
            CreateGatewayKey {
                rate_limit: Some(KeyRateLimit {
                    max_requests: 10,
                    window_seconds: 86_401,
                }),
                ..req()
            },
            CreateGatewayKey {
                expires_in_days: Some(0),
                ..req()
            },
            CreateGatewayKey {
                budget: Some(KeyBudget {
                    limit_usd: f64::NAN,
                    period: "day".into(),
                }),
                ..req()
            },
            CreateGatewayKey {
                budget: Some(KeyBudget {
                    limit_usd: 0.0,
                    period: "day".into(),
                }),
                ..req()
            },
            CreateGatewayKey {
                budget: Some(KeyBudget {
                    limit_usd: 5.0,
                    period: "week".into(),
                }),
                ..req()
            },
        ];
        for r in &bad {
            assert!(validate(r).is_err(), "{r:?} passed");
        }
    }
}
