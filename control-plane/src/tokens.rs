//! Stored API tokens: only a token's hash and a short prefix are kept, never the secret.

use crate::auth;
use crate::error::ApiResult;

/// The first characters of a secret, kept to recognise it in lists.
pub(crate) fn prefix_of(secret: &str) -> String {
    let cut = secret.rfind('_').map_or(0, |i| i + 1) + 4;
    secret.chars().take(cut).collect()
}

/// `revoked`, `expired` or `active`: the state of a credential with these times.
pub(crate) fn state_of(revoked_at: Option<i64>, expires_at: Option<i64>) -> &'static str {
    if revoked_at.is_some() {
        "revoked"
    } else if expires_at.is_some_and(|e| e <= crate::now()) {
        "expired"
    } else {
        "active"
    }
}

/// A token row to insert (the secret itself is never stored: only its hash and prefix).
pub(crate) struct NewToken<'a> {
    pub(crate) id: &'a str,
    pub(crate) org_id: &'a str,
    pub(crate) user_id: Option<&'a str>,
    pub(crate) name: &'a str,
    pub(crate) token_type: &'a str,
    pub(crate) secret: &'a str,
    pub(crate) scopes: &'a str,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    /// Minted by an MFA-authenticated session.
    pub(crate) minted_mfa: bool,
}

pub(crate) async fn insert_token<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    t: NewToken<'_>,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO tokens (id, org_id, user_id, name, token_type, prefix, secret_hash, scopes, created_at, expires_at, minted_mfa) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(t.id)
    .bind(t.org_id)
    .bind(t.user_id)
    .bind(t.name)
    .bind(t.token_type)
    .bind(prefix_of(t.secret))
    .bind(auth::hash_secret(t.secret))
    .bind(t.scopes)
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(i64::from(t.minted_mfa))
    .execute(db)
    .await?;
    Ok(())
}
