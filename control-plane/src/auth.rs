//! Credentials: argon2id password hashes, random bearer secrets stored as SHA-256 hashes,
//! and the `Principal` every handler receives after its token was checked.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::error::{ApiError, ApiResult};
use crate::{AppState, now};

/// argon2id with the OWASP-recommended minimum (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash_password(password: &str) -> ApiResult<String> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash to verify against when the account does not exist, so that unknown and known
/// emails take the same time.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("kt-dummy-password").unwrap_or_default())
}

/// Prefix of access tokens (people, scripts, CI).
pub const ACCESS_TOKEN_PREFIX: &str = "kt_live_";
/// Prefix of a gateway's own runtime token (`KEEPTRUSTS_GATEWAY_TOKEN`). Tokens issued
/// before this prefix carry `kt_gk_` and keep working: a token is found by its digest,
/// not its prefix.
pub const RUNTIME_TOKEN_PREFIX: &str = "kt_rt_";

/// `<prefix><48 hex chars>`: 192 random bits.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex(&bytes))
}

/// `<kind>_<16 hex chars>`.
pub fn new_id(kind: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{kind}_{}", hex(&bytes))
}

pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The caller of a request, from its bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub token_type: String,
    pub org_id: String,
    pub user_id: Option<String>,
    pub role: String,
    pub scopes: Vec<String>,
    pub mfa_authenticated: bool,
    /// Minted by an MFA-authenticated session (an API token that may do what needs MFA).
    pub minted_mfa: bool,
    /// The gateway a gateway token is bound to.
    pub gateway_id: Option<String>,
}

impl Principal {
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == "*" || s == scope)
    }

    /// Refuses with `auth.forbidden` unless the token carries `scope`.
    pub fn require(&self, scope: &str) -> ApiResult<()> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden_scope(scope))
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(secret) = bearer(parts) else {
            return Err(ApiError::Unauthenticated(
                "missing `Authorization: Bearer <token>`; log in with `kt auth login` or set KEEPTRUSTS_API_TOKEN"
                    .into(),
            ));
        };
        let row = sqlx::query(
            "SELECT t.id, t.token_type, t.org_id, t.user_id, t.scopes, t.mfa_authenticated, t.minted_mfa, t.expires_at, \
             t.revoked_at, t.gateway_id, u.role FROM tokens t LEFT JOIN users u ON u.id = t.user_id WHERE t.secret_hash = $1",
        )
        .bind(hash_secret(secret))
        .fetch_optional(&state.db)
        .await?;
        let Some(row) = row else {
            return Err(ApiError::Unauthenticated("unknown token".into()));
        };
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        if revoked.is_some() {
            return Err(ApiError::Unauthenticated("this token was revoked".into()));
        }
        let expires: Option<i64> = row.try_get("expires_at")?;
        if expires.is_some_and(|e| e <= now()) {
            return Err(ApiError::Unauthenticated(
                "this token has expired; log in again or create a new token".into(),
            ));
        }
        let scopes: String = row.try_get("scopes")?;
        let role: Option<String> = row.try_get("role")?;
        let token_type: String = row.try_get("token_type")?;
        Ok(Principal {
            token_id: row.try_get("id")?,
            role: role.unwrap_or_else(|| token_type.clone()),
            token_type,
            org_id: row.try_get("org_id")?,
            user_id: row.try_get("user_id")?,
            scopes: split_scopes(&scopes),
            mfa_authenticated: row.try_get::<i64, _>("mfa_authenticated")? != 0,
            minted_mfa: row.try_get::<i64, _>("minted_mfa")? != 0,
            gateway_id: row.try_get("gateway_id")?,
        })
    }
}

pub fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "argon2id: {h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret("kt_live_");
        let b = new_secret("kt_live_");
        assert_ne!(a, b);
        assert_eq!(a.len(), "kt_live_".len() + 48);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    #[test]
    fn scopes_are_split_and_checked() {
        let p = Principal {
            token_id: "tok_1".into(),
            token_type: "access".into(),
            org_id: "org_1".into(),
            user_id: None,
            role: "access".into(),
            scopes: split_scopes("gateways:read, tokens:read"),
            mfa_authenticated: false,
            minted_mfa: false,
            gateway_id: None,
        };
        assert!(p.has("tokens:read"));
        assert!(p.require("tokens:write").is_err());
    }
}
