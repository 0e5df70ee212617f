//! The HTTP routes and their handlers. Every `/v1` handler but login takes a `Principal`
//! (a checked bearer token) and asks it for the scope the operation needs.

use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use kt_api::{
    CreateToken, CreatedToken, LoginRequest, LoginResponse, OrgInfo, RotatedToken, TokenInfo, TokenList, UserInfo,
    Whoami,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, MAX_BODY_BYTES, validate_name};
use crate::tokens::{NewToken, insert_token, prefix_of};
use crate::{AppState, db, now};

/// How long a login session lasts.
const SESSION_TTL_SECS: i64 = 12 * 3600;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/whoami", get(whoami))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/tokens/{id}/rotate", post(rotate_token))
        .merge(crate::fleet::routes())
        .merge(crate::gateway_keys::routes())
        .merge(crate::spend::routes())
        .merge(crate::budgets::routes())
        .merge(crate::secrets::routes())
        .merge(crate::mfa::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and every migration of this build is applied.
async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Value>) {
    match db::migration_status(&st.db).await {
        Ok((applied, known)) if applied >= known => (
            StatusCode::OK,
            Json(json!({"status": "ready", "migrations": {"applied": applied, "known": known}})),
        ),
        Ok((applied, known)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "migrating", "migrations": {"applied": applied, "known": known}})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": format!("database: {e}")})),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Identity

pub fn validate_email(email: &str) -> ApiResult<()> {
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !host.starts_with('.') && !host.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!("'{email}' is not an email address")))
    }
}

pub fn validate_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(ApiError::validation("a password needs 8 to 1024 characters"));
    }
    Ok(())
}

/// Scopes a user's session carries, from the user's role.
fn role_scopes(role: &str) -> String {
    match role {
        "owner" | "admin" => "*".to_owned(),
        _ => kt_api::SCOPES
            .iter()
            .filter(|s| s.ends_with(":read"))
            .copied()
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// How long a login waits for a free password-hashing slot before answering 429.
const HASH_WAIT: Duration = Duration::from_secs(10);

/// Checks a password against `hash` on the blocking pool, at most `st.hashing` at once.
async fn verify(st: &AppState, password: String, hash: String) -> ApiResult<bool> {
    let slot = tokio::time::timeout(HASH_WAIT, Arc::clone(&st.hashing).acquire_owned())
        .await
        .map_err(|_| ApiError::Throttled {
            message: "the server is busy checking other logins; try again shortly".into(),
            retry_after: 2,
        })?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let ok = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        auth::verify_password(&password, &hash)
    })
    .await
    .unwrap_or(false);
    Ok(ok)
}

async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let email = req.email.trim().to_ascii_lowercase();
    if email.len() > 254 || req.password.len() > 1024 {
        return Err(ApiError::Unauthenticated("wrong email or password".into()));
    }
    // Counted before the password is checked, for known and unknown accounts alike.
    st.logins
        .attempt(&email, &peer.ip().to_string())
        .map_err(|retry_after| ApiError::Throttled {
            message: format!("too many failed logins; try again in {retry_after} s"),
            retry_after,
        })?;
    let row = sqlx::query(
        "SELECT u.id, u.email, u.password_hash, u.role, o.id AS org_id, o.name AS org_name \
         FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.email = $1",
    )
    .bind(&email)
    .fetch_optional(&st.db)
    .await?;
    let hash = match &row {
        Some(r) => r.try_get::<String, _>("password_hash")?,
        None => auth::dummy_hash().to_owned(),
    };
    let ok = verify(&st, req.password.clone(), hash).await?;
    let Some(row) = row.filter(|_| ok) else {
        // Unknown email or wrong password: the same answer, in the same time.
        sqlx::query("UPDATE users SET failed_logins = failed_logins + 1, last_failed_at = $1 WHERE email = $2")
            .bind(now())
            .bind(&email)
            .execute(&st.db)
            .await?;
        return Err(ApiError::Unauthenticated("wrong email or password".into()));
    };
    st.logins.succeeded(&email, &peer.ip().to_string());
    let user_id: String = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    sqlx::query("UPDATE users SET failed_logins = 0 WHERE id = $1")
        .bind(&user_id)
        .execute(&st.db)
        .await?;
    let org = OrgInfo {
        id: row.try_get("org_id")?,
        name: row.try_get("org_name")?,
    };
    let secret = auth::new_secret("kt_sess_");
    let token_id = auth::new_id("tok");
    let expires_at = now() + SESSION_TTL_SECS;
    let scopes = role_scopes(&role);
    insert_token(
        &st.db,
        NewToken {
            id: &token_id,
            org_id: &org.id,
            user_id: Some(&user_id),
            name: "cli session",
            token_type: "session",
            secret: &secret,
            scopes: &scopes,
            created_at: now(),
            expires_at: Some(expires_at),
            minted_mfa: false,
        },
    )
    .await?;
    Ok(Json(LoginResponse {
        token: secret,
        token_id,
        expires_at,
        user: UserInfo {
            id: user_id,
            email: row.try_get("email")?,
            role,
        },
        org,
    }))
}

async fn logout(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    if p.token_type != "session" {
        return Err(ApiError::validation(
            "logout ends login sessions; revoke API tokens with `kt auth token revoke`",
        ));
    }
    sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now())
        .bind(&p.token_id)
        .execute(&st.db)
        .await?;
    Ok(Json(json!({"logged_out": true, "token_id": p.token_id})))
}

async fn whoami(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Whoami>> {
    let org = sqlx::query("SELECT id, name FROM orgs WHERE id = $1")
        .bind(&p.org_id)
        .fetch_one(&st.db)
        .await?;
    let user = match &p.user_id {
        Some(id) => sqlx::query("SELECT id, email, role FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&st.db)
            .await?
            .map(|r| -> ApiResult<UserInfo> {
                Ok(UserInfo {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    role: r.try_get("role")?,
                })
            })
            .transpose()?,
        None => None,
    };
    Ok(Json(Whoami {
        user,
        org: OrgInfo {
            id: org.try_get("id")?,
            name: org.try_get("name")?,
        },
        role: p.role,
        scopes: p.scopes,
        token_id: p.token_id,
        token_type: p.token_type,
        mfa_authenticated: p.mfa_authenticated,
    }))
}

// ---------------------------------------------------------------------------------------
// Tokens

const TOKEN_COLUMNS: &str = "id, name, token_type, scopes, prefix, created_at, expires_at, revoked_at";

fn token_info(r: &AnyRow) -> ApiResult<TokenInfo> {
    let revoked_at: Option<i64> = r.try_get("revoked_at")?;
    let expires_at: Option<i64> = r.try_get("expires_at")?;
    let state = crate::tokens::state_of(revoked_at, expires_at);
    Ok(TokenInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        token_type: r.try_get("token_type")?,
        scopes: auth::split_scopes(&r.try_get::<String, _>("scopes")?),
        state: state.to_owned(),
        prefix: r.try_get("prefix")?,
        created_at: r.try_get("created_at")?,
        expires_at,
        revoked_at,
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(rename = "type")]
    token_type: Option<String>,
}

fn check_token_type(t: &str) -> ApiResult<()> {
    match t {
        "access" | "gateway" => Ok(()),
        other => Err(ApiError::validation(format!(
            "unknown token type '{other}': use access or gateway"
        ))),
    }
}

async fn list_tokens(
    State(st): State<AppState>,
    p: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<TokenList>> {
    p.require("tokens:read")?;
    let rows = match &q.token_type {
        Some(t) => {
            check_token_type(t)?;
            sqlx::query(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE org_id = $1 AND token_type = $2 ORDER BY created_at, id"
            ))
            .bind(&p.org_id)
            .bind(t)
            .fetch_all(&st.db)
            .await?
        }
        None => sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE org_id = $1 AND token_type <> 'session' ORDER BY created_at, id"
        ))
        .bind(&p.org_id)
        .fetch_all(&st.db)
        .await?,
    };
    let data = rows.iter().map(token_info).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(TokenList { data }))
}

/// Checks requested scopes: known, and held by the caller (no one grants what they lack).
fn validate_scopes(p: &Principal, scopes: &[String]) -> ApiResult<String> {
    if scopes.is_empty() {
        return Err(ApiError::validation(
            "a token needs at least one scope, e.g. --scope \"gateways:read\"",
        ));
    }
    for s in scopes {
        if !kt_api::SCOPES.contains(&s.as_str()) {
            return Err(ApiError::Validation {
                message: format!("unknown scope '{s}'"),
                details: json!({"known_scopes": kt_api::SCOPES}),
            });
        }
        if !p.has(s) {
            return Err(ApiError::Forbidden {
                message: format!("cannot grant '{s}': the calling token does not hold it"),
                scope: Some(s.clone()),
            });
        }
    }
    let mut v: Vec<&str> = scopes.iter().map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    Ok(v.join(","))
}

fn secret_prefix(token_type: &str) -> &'static str {
    if token_type == "gateway" {
        auth::RUNTIME_TOKEN_PREFIX
    } else {
        auth::ACCESS_TOKEN_PREFIX
    }
}

async fn create_token(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    p.require("tokens:write")?;
    crate::mfa::require_mfa(&st, &p, "creating a token").await?;
    validate_name("name", &req.name)?;
    let token_type = req.token_type.clone().unwrap_or_else(|| "access".into());
    check_token_type(&token_type)?;
    let scopes = validate_scopes(&p, &req.scopes)?;
    let expires_at = match req.expires_in_days {
        Some(d) if d == 0 || d > 3650 => {
            return Err(ApiError::validation("expires_in_days must be between 1 and 3650"));
        }
        Some(d) => Some(now() + i64::from(d) * 86_400),
        None => None,
    };
    let secret = auth::new_secret(secret_prefix(&token_type));
    let id = auth::new_id("tok");
    let created_at = now();
    insert_token(
        &st.db,
        NewToken {
            id: &id,
            org_id: &p.org_id,
            user_id: p.user_id.as_deref(),
            name: req.name.trim(),
            token_type: &token_type,
            secret: &secret,
            scopes: &scopes,
            created_at,
            expires_at,
            minted_mfa: p.mfa_authenticated,
        },
    )
    .await?;
    let info = TokenInfo {
        id,
        name: req.name.trim().to_owned(),
        token_type,
        scopes: auth::split_scopes(&scopes),
        state: "active".into(),
        prefix: prefix_of(&secret),
        created_at,
        expires_at,
        revoked_at: None,
    };
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token: secret })))
}

async fn find_token(st: &AppState, p: &Principal, id: &str) -> ApiResult<AnyRow> {
    sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1 AND org_id = $2 AND token_type <> 'session'"
    ))
    .bind(id)
    .bind(&p.org_id)
    .fetch_optional(&st.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no token '{id}' in this organisation")))
}

async fn revoke_token(State(st): State<AppState>, p: Principal, Path(id): Path<String>) -> ApiResult<Json<TokenInfo>> {
    p.require("tokens:write")?;
    find_token(&st, &p, &id).await?;
    let done = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL")
        .bind(now())
        .bind(&id)
        .bind(&p.org_id)
        .execute(&st.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::Conflict(format!("token '{id}' is already revoked")));
    }
    Ok(Json(token_info(&find_token(&st, &p, &id).await?)?))
}

/// Revokes a token and issues its successor (same name, type, scopes and lifetime) in one
/// transaction: of two concurrent rotations of the same token, exactly one succeeds.
async fn rotate_token(
    State(st): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RotatedToken>> {
    p.require("tokens:write")?;
    crate::mfa::require_mfa(&st, &p, "token rotation").await?;
    let old = token_info(&find_token(&st, &p, &id).await?)?;
    // The successor carries the old token's scopes: only someone who could grant them may
    // rotate it (a narrow token must not obtain a broad one's new secret).
    if let Some(missing) = old.scopes.iter().find(|s| !p.has(s)) {
        return Err(ApiError::Forbidden {
            message: format!("cannot rotate token '{id}': it holds '{missing}', which the calling token does not hold"),
            scope: Some(missing.clone()),
        });
    }
    if old.state != "active" {
        return Err(ApiError::Conflict(format!(
            "token '{id}' is {}; only active tokens rotate",
            old.state
        )));
    }
    let scopes = old.scopes.join(",");
    let now = now();
    let expires_at = old.expires_at.map(|e| now + (e - old.created_at).max(0));
    let secret = auth::new_secret(secret_prefix(&old.token_type));
    let new_id = auth::new_id("tok");
    let mut tx = st.db.begin().await?;
    let done = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL")
        .bind(now)
        .bind(&id)
        .bind(&p.org_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() != 1 {
        tx.rollback().await?;
        return Err(ApiError::Conflict(format!(
            "token '{id}' was revoked or rotated concurrently"
        )));
    }
    insert_token(
        &mut *tx,
        NewToken {
            id: &new_id,
            org_id: &p.org_id,
            user_id: p.user_id.as_deref(),
            name: &old.name,
            token_type: &old.token_type,
            secret: &secret,
            scopes: &scopes,
            created_at: now,
            expires_at,
            minted_mfa: p.mfa_authenticated || p.minted_mfa,
        },
    )
    .await?;
    // A gateway's token stays bound to its gateway.
    sqlx::query("UPDATE tokens SET gateway_id = (SELECT gateway_id FROM tokens WHERE id = $1) WHERE id = $2")
        .bind(&id)
        .bind(&new_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let revoked = TokenInfo {
        state: "revoked".into(),
        revoked_at: Some(now),
        ..old.clone()
    };
    let created = CreatedToken {
        info: TokenInfo {
            id: new_id,
            state: "active".into(),
            prefix: prefix_of(&secret),
            created_at: now,
            expires_at,
            revoked_at: None,
            ..old
        },
        token: secret,
    };
    Ok(Json(RotatedToken { revoked, created }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_passwords_are_checked() {
        assert!(validate_email("owner@example.com").is_ok());
        for bad in ["", "owner", "owner@", "@example.com", "a b@example.com", "x@example."] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough").is_ok());
    }

    #[test]
    fn prefixes_keep_only_the_start_of_a_secret() {
        assert_eq!(prefix_of("kt_live_abcdef0123"), "kt_live_abcd");
        assert_eq!(prefix_of("kt_gk_0123456789"), "kt_gk_0123");
    }
}
