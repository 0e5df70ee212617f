//! Multi-factor authentication with TOTP (RFC 6238: HMAC-SHA1, 30-second steps, six
//! digits, one step of clock drift either way; each step's code is accepted once).
//!
//! A user enrols (`POST /v1/auth/mfa/enroll`, then `/verify` with a first code); once
//! enrolled, sensitive operations (token rotation, MFA removal) answer `auth.mfa_required`
//! to that user's sessions until `POST /v1/auth/mfa/challenge` trades a code for an
//! MFA-authenticated session. Seeds are sealed with the secrets key; wrong codes are
//! counted and lock the factor after five (15 minutes, 429).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::tokens::{NewToken, insert_token};
use crate::{AppState, now};

/// How long an MFA-authenticated session lasts.
const MFA_SESSION_TTL_SECS: i64 = 3600;
/// Codes tried per lock period; the next attempt locks the factor for `MFA_LOCK_SECS`.
const MFA_MAX_TRIES: i64 = 5;
const MFA_LOCK_SECS: i64 = 15 * 60;
const STEP: i64 = 30;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn unbase32(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = BASE32.iter().position(|x| *x == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// The code of `secret` (base32) at time step `step`.
pub fn code_at_step(secret: &str, step: i64) -> Option<String> {
    let key = unbase32(secret)?;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).ok()?;
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[19] & 0x0f) as usize;
    let n = (u32::from(h[off] & 0x7f) << 24)
        | (u32::from(h[off + 1]) << 16)
        | (u32::from(h[off + 2]) << 8)
        | u32::from(h[off + 3]);
    Some(format!("{:06}", n % 1_000_000))
}

/// The code of `secret` at unix time `t` (what an authenticator app shows).
pub fn totp(secret: &str, t: i64) -> Option<String> {
    code_at_step(secret, t.div_euclid(STEP))
}

/// The step `code` matches within one step of `now`, newer than `last_step`.
fn matching_step(secret: &str, code: &str, now: i64, last_step: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now.div_euclid(STEP);
    (current - 1..=current + 1)
        .filter(|s| *s > last_step)
        .find(|s| code_at_step(secret, *s).is_some_and(|c| c == code))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/mfa/enroll", post(enroll))
        .route("/v1/auth/mfa/verify", post(verify))
        .route("/v1/auth/mfa/challenge", post(challenge))
        .route("/v1/auth/mfa/disable", post(disable))
}

/// TOTP seeds are stored sealed with the secrets key, bound to the organisation and user.
fn seal_seed(st: &AppState, org_id: &str, user: &str, seed: &str) -> ApiResult<String> {
    Ok(format!("sealed:{}", st.key.seal(org_id, "mfa", user, seed)?))
}

/// A stored seed in the clear (rows from before sealing are plaintext).
fn open_seed(st: &AppState, org_id: &str, user: &str, stored: &str) -> ApiResult<String> {
    match stored.strip_prefix("sealed:") {
        Some(sealed) => st.key.open(org_id, "mfa", user, sealed),
        None => Ok(stored.to_owned()),
    }
}

/// Counts one code attempt before it is checked, so parallel guesses cannot pass the
/// limit: past `MFA_MAX_TRIES` the factor locks for `MFA_LOCK_SECS` (429 with
/// Retry-After), the right code included. A right code clears the count.
async fn count_attempt(st: &AppState, user: &str) -> ApiResult<()> {
    let t = now();
    let row = sqlx::query(
        "UPDATE users SET mfa_failures = CASE WHEN mfa_locked_until > 0 AND mfa_locked_until <= $1 THEN 1 ELSE mfa_failures + 1 END, \
         mfa_locked_until = CASE WHEN mfa_locked_until > 0 AND mfa_locked_until <= $1 THEN 0 ELSE mfa_locked_until END \
         WHERE id = $2 RETURNING mfa_failures, mfa_locked_until",
    )
    .bind(t)
    .bind(user)
    .fetch_one(&st.db)
    .await?;
    let failures: i64 = row.try_get(0)?;
    let mut locked: i64 = row.try_get(1)?;
    if locked <= t && failures > MFA_MAX_TRIES {
        locked = t + MFA_LOCK_SECS;
        sqlx::query("UPDATE users SET mfa_locked_until = $1 WHERE id = $2 AND mfa_locked_until <= $3")
            .bind(locked)
            .bind(user)
            .bind(t)
            .execute(&st.db)
            .await?;
    }
    if locked > t {
        let retry_after = u64::try_from(locked - t).unwrap_or(1).max(1);
        return Err(ApiError::Throttled {
            message: format!("too many wrong MFA codes; the factor is locked for {retry_after} s"),
            retry_after,
        });
    }
    Ok(())
}

async fn clear_attempts(st: &AppState, user: &str) -> ApiResult<()> {
    sqlx::query("UPDATE users SET mfa_failures = 0, mfa_locked_until = 0 WHERE id = $1")
        .bind(user)
        .execute(&st.db)
        .await?;
    Ok(())
}

fn user_of(p: &Principal) -> ApiResult<&str> {
    match (&p.user_id, p.token_type.as_str()) {
        (Some(u), "session") => Ok(u),
        _ => Err(ApiError::validation(
            "MFA belongs to users: log in with `kt auth login` (API tokens cannot enrol)",
        )),
    }
}

/// Refuses with `auth.mfa_required` when the caller acts for a user with MFA without
/// having passed it: a session that has not passed a challenge, or an API token minted by
/// such a session.
pub async fn require_mfa(st: &AppState, p: &Principal, operation: &str) -> ApiResult<()> {
    let Some(user) = &p.user_id else {
        return Ok(());
    };
    // A gateway's own token acts for the gateway, not for a person.
    if p.mfa_authenticated || p.minted_mfa || p.gateway_id.is_some() {
        return Ok(());
    }
    let enrolled = sqlx::query("SELECT mfa_secret FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(&st.db)
        .await?
        .map(|r| r.try_get::<Option<String>, _>(0))
        .transpose()?
        .flatten()
        .is_some();
    if !enrolled {
        return Ok(());
    }
    Err(ApiError::MfaRequired(if p.token_type == "session" {
        format!("{operation} needs an MFA-authenticated session: run `kt auth mfa challenge --code <code>`")
    } else {
        format!(
            "{operation} needs MFA: this token was minted by a password-only session; mint one from an MFA-authenticated session"
        )
    }))
}

async fn enroll(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    let user = user_of(&p)?;
    let row = sqlx::query("SELECT email, mfa_secret FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&st.db)
        .await?;
    if row.try_get::<Option<String>, _>("mfa_secret")?.is_some() {
        return Err(ApiError::Conflict(
            "MFA is already enabled for this user; disable it first (needs an MFA session)".into(),
        ));
    }
    let email: String = row.try_get("email")?;
    let mut raw = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut raw);
    let secret = base32(&raw);
    sqlx::query("UPDATE users SET mfa_pending_secret = $1 WHERE id = $2")
        .bind(seal_seed(&st, &p.org_id, user, &secret)?)
        .bind(user)
        .execute(&st.db)
        .await?;
    let uri = format!("otpauth://totp/kt:{email}?secret={secret}&issuer=kt&algorithm=SHA1&digits=6&period=30");
    Ok(Json(json!({
        "secret": secret,
        "otpauth_url": uri,
        "next": "add it to an authenticator app, then confirm with `kt auth mfa verify --code <code>`",
    })))
}

#[derive(Debug, Deserialize)]
struct CodeRequest {
    #[serde(alias = "token")]
    code: String,
}

async fn verify(State(st): State<AppState>, p: Principal, Body(req): Body<CodeRequest>) -> ApiResult<Json<Value>> {
    let user = user_of(&p)?;
    let row = sqlx::query("SELECT mfa_pending_secret, mfa_last_step FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&st.db)
        .await?;
    let Some(stored) = row.try_get::<Option<String>, _>("mfa_pending_secret")? else {
        return Err(ApiError::validation(
            "no MFA enrolment in progress: run `kt auth mfa enroll` first",
        ));
    };
    let secret = open_seed(&st, &p.org_id, user, &stored)?;
    let last: i64 = row.try_get("mfa_last_step")?;
    count_attempt(&st, user).await?;
    let Some(step) = matching_step(&secret, &req.code, now(), last) else {
        return Err(ApiError::Unauthenticated("wrong or expired MFA code".into()));
    };
    clear_attempts(&st, user).await?;
    sqlx::query("UPDATE users SET mfa_secret = $1, mfa_pending_secret = NULL, mfa_last_step = $2 WHERE id = $3")
        .bind(seal_seed(&st, &p.org_id, user, &secret)?)
        .bind(step)
        .bind(user)
        .execute(&st.db)
        .await?;
    Ok(Json(json!({"mfa_enabled": true})))
}

/// Trades a TOTP code for a new session with `mfa_authenticated: true`.
async fn challenge(State(st): State<AppState>, p: Principal, Body(req): Body<CodeRequest>) -> ApiResult<Json<Value>> {
    let user = user_of(&p)?.to_owned();
    let row = sqlx::query("SELECT mfa_secret, mfa_last_step, role FROM users WHERE id = $1")
        .bind(&user)
        .fetch_one(&st.db)
        .await?;
    let Some(stored) = row.try_get::<Option<String>, _>("mfa_secret")? else {
        return Err(ApiError::validation(
            "MFA is not enabled for this user: run `kt auth mfa enroll`",
        ));
    };
    let secret = open_seed(&st, &p.org_id, &user, &stored)?;
    let last: i64 = row.try_get("mfa_last_step")?;
    count_attempt(&st, &user).await?;
    let Some(step) = matching_step(&secret, &req.code, now(), last) else {
        return Err(ApiError::Unauthenticated("wrong or expired MFA code".into()));
    };
    clear_attempts(&st, &user).await?;
    if !stored.starts_with("sealed:") {
        sqlx::query("UPDATE users SET mfa_secret = $1 WHERE id = $2")
            .bind(seal_seed(&st, &p.org_id, &user, &secret)?)
            .bind(&user)
            .execute(&st.db)
            .await?;
    }
    // The step is consumed atomically: a code is good once, even under concurrency.
    let done = sqlx::query("UPDATE users SET mfa_last_step = $1 WHERE id = $2 AND mfa_last_step < $1")
        .bind(step)
        .bind(&user)
        .execute(&st.db)
        .await?;
    if done.rows_affected() != 1 {
        return Err(ApiError::Unauthenticated("this MFA code was already used".into()));
    }
    let secret_token = auth::new_secret("kt_sess_");
    let id = auth::new_id("tok");
    let expires_at = now() + MFA_SESSION_TTL_SECS;
    let scopes = p.scopes.join(",");
    let mut tx = st.db.begin().await?;
    insert_token(
        &mut *tx,
        NewToken {
            id: &id,
            org_id: &p.org_id,
            user_id: Some(&user),
            name: "cli session (mfa)",
            token_type: "session",
            secret: &secret_token,
            scopes: &scopes,
            created_at: now(),
            expires_at: Some(expires_at),
            minted_mfa: true,
        },
    )
    .await?;
    sqlx::query("UPDATE tokens SET mfa_authenticated = 1 WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(json!({
        "token": secret_token,
        "token_id": id,
        "expires_at": expires_at,
        "mfa_authenticated": true,
    })))
}

async fn disable(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
    let user = user_of(&p)?.to_owned();
    require_mfa(&st, &p, "disabling MFA").await?;
    sqlx::query("UPDATE users SET mfa_secret = NULL, mfa_pending_secret = NULL WHERE id = $1")
        .bind(&user)
        .execute(&st.db)
        .await?;
    Ok(Json(json!({"mfa_enabled": false})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_the_rfc_6238_vectors() {
        // RFC 6238 appendix B, SHA-1 key "12345678901234567890" (8-digit codes end in these 6).
        let secret = base32(b"12345678901234567890");
        assert_eq!(secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(totp(&secret, 59).as_deref(), Some("287082"));
        assert_eq!(totp(&secret, 1_111_111_109).as_deref(), Some("081804"));
        assert_eq!(totp(&secret, 1_234_567_890).as_deref(), Some("005924"));
        assert_eq!(totp(&secret, 2_000_000_000).as_deref(), Some("279037"));
    }

    #[test]
    fn codes_match_within_one_step_and_only_once() {
        let secret = base32(&[9u8; 20]);
        let t = 1_700_000_000;
        let code = totp(&secret, t).expect("code");
        let step = t / STEP;
        assert_eq!(matching_step(&secret, &code, t, 0), Some(step));
        assert_eq!(matching_step(&secret, &code, t + STEP, 0), Some(step), "one step late");
        assert_eq!(matching_step(&secret, &code, t + 3 * STEP, 0), None, "too late");
        assert_eq!(matching_step(&secret, &code, t, step), None, "already used");
        assert_eq!(matching_step(&secret, "12345", t, 0), None);
        assert_eq!(matching_step(&secret, "abcdef", t, 0), None);
    }
}
