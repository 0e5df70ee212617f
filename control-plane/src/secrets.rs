//! Secrets (write-only) and config variables, encrypted at rest with AES-256-GCM-SIV
//! under the master key (`KT_SECRETS_KEY`, or a generated 0600 key file in the data
//! directory). Each ciphertext is bound to its organisation, kind and name, so a value
//! copied to another row does not decrypt. Gateways read values through
//! `POST /v1/config-variables/resolve` with their gateway token; nothing else ever gets a
//! secret's value back.

use std::path::Path;

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kt_api::{
    ConfigVar, ConfigVarList, CreateSecret, ResolveRequest, ResolveResponse, Resolved, SecretInfo, SecretList,
    UpdateSecret, WriteConfigVar,
};
use kt_policy::secret_binding;
use rand::RngCore;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::auth::{self, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::{AppState, now};

/// Largest secret or variable value accepted.
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The master key.
#[derive(Clone)]
pub struct MasterKey(Aes256GcmSiv);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(****)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("KT_SECRETS_KEY must be 32 bytes as base64 (44 characters) or hex (64 characters)")]
    BadKey,
    #[error("cannot read or create the secrets key file {0}: {1}")]
    File(String, String),
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        B64.decode(t).ok()?
    };
    bytes.try_into().ok()
}

impl MasterKey {
    /// `KT_SECRETS_KEY` when given, else `<data_dir>/secrets.key` (created on first run,
    /// mode 0600). Replicas sharing a database must share the key.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<(MasterKey, String), KeyError> {
        if let Some(k) = configured.filter(|k| !k.is_empty()) {
            let key = parse_key(k).ok_or(KeyError::BadKey)?;
            return Ok((MasterKey::from_bytes(&key), "KT_SECRETS_KEY".into()));
        }
        let path = data_dir.join("secrets.key");
        let fail = |e: std::io::Error| KeyError::File(path.display().to_string(), e.to_string());
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = parse_key(&text).ok_or(KeyError::BadKey)?;
                Ok((MasterKey::from_bytes(&key), path.display().to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(fail)?;
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                write_private(&path, B64.encode(key).as_bytes()).map_err(fail)?;
                Ok((MasterKey::from_bytes(&key), format!("{} (generated)", path.display())))
            }
            Err(e) => Err(fail(e)),
        }
    }

    pub fn from_bytes(key: &[u8; 32]) -> MasterKey {
        MasterKey(Aes256GcmSiv::new(key.into()))
    }

    fn aad(org_id: &str, kind: &str, name: &str) -> Vec<u8> {
        format!("kt:{kind}:{org_id}:{name}").into_bytes()
    }

    pub fn seal(&self, org_id: &str, kind: &str, name: &str, value: &str) -> ApiResult<String> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = Self::aad(org_id, kind, name);
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| ApiError::Internal("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(B64.encode(out))
    }

    pub fn open(&self, org_id: &str, kind: &str, name: &str, sealed: &str) -> ApiResult<String> {
        let broken = || {
            ApiError::Internal(format!(
                "stored {kind} '{name}' cannot be decrypted with this master key"
            ))
        };
        let raw = B64.decode(sealed).map_err(|_| broken())?;
        if raw.len() < 12 {
            return Err(broken());
        }
        let aad = Self::aad(org_id, kind, name);
        let pt = self
            .0
            .decrypt(
                Nonce::from_slice(&raw[..12]),
                Payload {
                    msg: &raw[12..],
                    aad: &aad,
                },
            )
            .map_err(|_| broken())?;
        String::from_utf8(pt).map_err(|_| broken())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/secrets", get(list_secrets).post(create_secret))
        .route(
            "/v1/secrets/{id}",
            get(get_secret).put(update_secret).delete(delete_secret),
        )
        .route("/v1/config-variables", get(list_vars).post(create_var))
        .route("/v1/config-variables/resolve", post(resolve))
        .route(
            "/v1/config-variables/{name}",
            get(get_var).put(update_var).delete(delete_var),
        )
}

/// Names of secrets and variables: what `secret_key_ref.store` accepts.
fn validate_store_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "'{name}' is not a valid name: use 1 to 128 letters, digits, '_', '-' or '.'"
        )))
    }
}

fn validate_value(value: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::validation("the value is empty"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::validation(format!(
            "the value is larger than {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(())
}

fn validate_description(d: &str) -> ApiResult<()> {
    if d.chars().count() > 1000 {
        return Err(ApiError::validation("`description` is limited to 1000 characters"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Secrets

/// A secret's binding as stored: `None` for the providers' public endpoints.
fn binding_of(r: &AnyRow) -> ApiResult<Option<Vec<String>>> {
    let hosts: Option<String> = r.try_get("allowed_hosts")?;
    Ok(hosts
        .filter(|h| !h.is_empty())
        .map(|h| h.split(',').map(str::to_owned).collect()))
}

/// Checks and normalises a requested binding; an empty list is no binding.
fn binding_column(hosts: &[String]) -> ApiResult<Option<String>> {
    if hosts.len() > secret_binding::MAX_HOSTS {
        return Err(ApiError::validation(format!(
            "at most {} allowed hosts per secret",
            secret_binding::MAX_HOSTS
        )));
    }
    let mut v = hosts
        .iter()
        .map(|h| secret_binding::normalize_entry(h).map_err(ApiError::validation))
        .collect::<ApiResult<Vec<_>>>()?;
    v.sort();
    v.dedup();
    Ok((!v.is_empty()).then(|| v.join(",")))
}

/// The bindings of the org's secrets among `names`: name → allowed hosts (`None`: the
/// providers' public endpoints). A sensitive config variable has no binding of its own
/// and goes only to the public endpoints; other config variables are not bound (anyone
/// with `config_vars:read` can read them).
pub(crate) async fn bindings(
    st: &AppState,
    org_id: &str,
    names: &[String],
) -> ApiResult<std::collections::HashMap<String, Option<Vec<String>>>> {
    let mut out = std::collections::HashMap::new();
    for name in names {
        let row = sqlx::query("SELECT allowed_hosts FROM secrets WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_optional(&st.db)
            .await?;
        if let Some(r) = row {
            out.insert(name.clone(), binding_of(&r)?);
            continue;
        }
        let sensitive =
            sqlx::query("SELECT 1 FROM config_variables WHERE org_id = $1 AND name = $2 AND sensitive <> 0")
                .bind(org_id)
                .bind(name)
                .fetch_optional(&st.db)
                .await?;
        if sensitive.is_some() {
            out.insert(name.clone(), None);
        }
    }
    Ok(out)
}

fn secret_info(r: &AnyRow) -> ApiResult<SecretInfo> {
    Ok(SecretInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        encryption: r.try_get("encryption")?,
        allowed_hosts: binding_of(r)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const SECRET_COLUMNS: &str = "id, name, description, encryption, allowed_hosts, created_at, updated_at";

async fn list_secrets(State(st): State<AppState>, p: Principal) -> ApiResult<Json<SecretList>> {
    p.require("secrets:read")?;
    let rows = sqlx::query(&format!(
        "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 ORDER BY name"
    ))
    .bind(&p.org_id)
    .fetch_all(&st.db)
    .await?;
    let data = rows.iter().map(secret_info).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(SecretList { data }))
}

async fn find_secret(st: &AppState, org_id: &str, id: &str) -> ApiResult<AnyRow> {
    sqlx::query(&format!(
        "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(&st.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no secret '{id}' in this organisation")))
}

async fn get_secret(
    State(st): State<AppState>,
    p: Principal,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<SecretInfo>> {
    p.require("secrets:read")?;
    Ok(Json(secret_info(&find_secret(&st, &p.org_id, &id).await?)?))
}

async fn create_secret(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<CreateSecret>,
) -> ApiResult<(StatusCode, Json<SecretInfo>)> {
    p.require("secrets:write")?;
    validate_store_name(&req.name)?;
    validate_value(&req.value)?;
    let description = req.description.unwrap_or_default();
    validate_description(&description)?;
    let hosts = binding_column(req.allowed_hosts.as_deref().unwrap_or_default())?;
    let id = auth::new_id("secret");
    let sealed = st.key.seal(&p.org_id, "secret", &req.name, &req.value)?;
    let t = now();
    sqlx::query(
        "INSERT INTO secrets (id, org_id, name, description, value, encryption, allowed_hosts, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'aes-gcm-siv', $6, $7, $7)",
    )
    .bind(&id)
    .bind(&p.org_id)
    .bind(&req.name)
    .bind(&description)
    .bind(&sealed)
    .bind(&hosts)
    .bind(t)
    .execute(&st.db)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict(format!("a secret named '{}' already exists", req.name)),
        other => other,
    })?;
    Ok((
        StatusCode::CREATED,
        Json(secret_info(&find_secret(&st, &p.org_id, &id).await?)?),
    ))
}

/// Replaces the value (a legacy plaintext row becomes encrypted), the binding, or both.
/// Changing where a secret may be sent needs `secrets:bind` besides `secrets:write`.
async fn update_secret(
    State(st): State<AppState>,
    p: Principal,
    UrlPath(id): UrlPath<String>,
    Body(req): Body<UpdateSecret>,
) -> ApiResult<Json<SecretInfo>> {
    p.require("secrets:write")?;
    if req.value.is_none() && req.allowed_hosts.is_none() {
        return Err(ApiError::validation(
            "nothing to update: give a new value, allowed hosts, or both",
        ));
    }
    if let Some(v) = &req.value {
        validate_value(v)?;
    }
    let hosts = match &req.allowed_hosts {
        Some(h) => {
            p.require("secrets:bind")?;
            crate::mfa::require_mfa(&st, &p, "changing where a secret may be sent").await?;
            Some(binding_column(h)?)
        }
        None => None,
    };
    let row = find_secret(&st, &p.org_id, &id).await?;
    let name: String = row.try_get("name")?;
    let mut tx = st.db.begin().await?;
    if let Some(v) = &req.value {
        let sealed = st.key.seal(&p.org_id, "secret", &name, v)?;
        sqlx::query(
            "UPDATE secrets SET value = $1, encryption = 'aes-gcm-siv', updated_at = $2 WHERE id = $3 AND org_id = $4",
        )
        .bind(&sealed)
        .bind(now())
        .bind(&id)
        .bind(&p.org_id)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(h) = &hosts {
        sqlx::query("UPDATE secrets SET allowed_hosts = $1, updated_at = $2 WHERE id = $3 AND org_id = $4")
            .bind(h)
            .bind(now())
            .bind(&id)
            .bind(&p.org_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Json(secret_info(&find_secret(&st, &p.org_id, &id).await?)?))
}

async fn delete_secret(
    State(st): State<AppState>,
    p: Principal,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    p.require("secrets:write")?;
    find_secret(&st, &p.org_id, &id).await?;
    sqlx::query("DELETE FROM secrets WHERE id = $1 AND org_id = $2")
        .bind(&id)
        .bind(&p.org_id)
        .execute(&st.db)
        .await?;
    Ok(Json(json!({"deleted": true, "id": id})))
}

// ---------------------------------------------------------------------------------------
// Config variables

fn stored_value(st: &AppState, org_id: &str, kind: &str, r: &AnyRow) -> ApiResult<String> {
    let name: String = r.try_get("name")?;
    let value: String = r.try_get("value")?;
    match r.try_get::<String, _>("encryption")?.as_str() {
        "plaintext" => Ok(value),
        _ => st.key.open(org_id, kind, &name, &value),
    }
}

fn config_var(st: &AppState, org_id: &str, r: &AnyRow) -> ApiResult<ConfigVar> {
    let sensitive = r.try_get::<i64, _>("sensitive")? != 0;
    Ok(ConfigVar {
        name: r.try_get("name")?,
        value: if sensitive {
            None
        } else {
            Some(stored_value(st, org_id, "config_variable", r)?)
        },
        description: r.try_get("description")?,
        sensitive,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const VAR_COLUMNS: &str = "name, value, description, sensitive, encryption, created_at, updated_at";

async fn find_var(st: &AppState, org_id: &str, name: &str) -> ApiResult<AnyRow> {
    sqlx::query(&format!(
        "SELECT {VAR_COLUMNS} FROM config_variables WHERE org_id = $1 AND name = $2"
    ))
    .bind(org_id)
    .bind(name)
    .fetch_optional(&st.db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no config variable '{name}' in this organisation")))
}

async fn list_vars(State(st): State<AppState>, p: Principal) -> ApiResult<Json<ConfigVarList>> {
    p.require("config_vars:read")?;
    let rows = sqlx::query(&format!(
        "SELECT {VAR_COLUMNS} FROM config_variables WHERE org_id = $1 ORDER BY name"
    ))
    .bind(&p.org_id)
    .fetch_all(&st.db)
    .await?;
    let data = rows
        .iter()
        .map(|r| config_var(&st, &p.org_id, r))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(ConfigVarList { data }))
}

async fn get_var(
    State(st): State<AppState>,
    p: Principal,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<ConfigVar>> {
    p.require("config_vars:read")?;
    let row = find_var(&st, &p.org_id, &name).await?;
    Ok(Json(config_var(&st, &p.org_id, &row)?))
}

async fn create_var(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<WriteConfigVar>,
) -> ApiResult<(StatusCode, Json<ConfigVar>)> {
    p.require("config_vars:write")?;
    let name = req.name.clone().unwrap_or_default();
    validate_store_name(&name)?;
    let value = req.value.clone().unwrap_or_default();
    validate_value(&value)?;
    let description = req.description.clone().unwrap_or_default();
    validate_description(&description)?;
    let sealed = st.key.seal(&p.org_id, "config_variable", &name, &value)?;
    let t = now();
    sqlx::query(
        "INSERT INTO config_variables (id, org_id, name, description, value, sensitive, encryption, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'aes-gcm-siv', $7, $7)",
    )
    .bind(auth::new_id("var"))
    .bind(&p.org_id)
    .bind(&name)
    .bind(&description)
    .bind(&sealed)
    .bind(i64::from(req.sensitive.unwrap_or(false)))
    .bind(t)
    .execute(&st.db)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::Conflict(format!("a config variable named '{name}' already exists")),
        other => other,
    })?;
    let row = find_var(&st, &p.org_id, &name).await?;
    Ok((StatusCode::CREATED, Json(config_var(&st, &p.org_id, &row)?)))
}

async fn update_var(
    State(st): State<AppState>,
    p: Principal,
    UrlPath(name): UrlPath<String>,
    Body(req): Body<WriteConfigVar>,
) -> ApiResult<Json<ConfigVar>> {
    p.require("config_vars:write")?;
    let row = find_var(&st, &p.org_id, &name).await?;
    if req.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::validation(
            "a config variable cannot be renamed; create a new one",
        ));
    }
    let value = match &req.value {
        Some(v) => {
            validate_value(v)?;
            v.clone()
        }
        None => stored_value(&st, &p.org_id, "config_variable", &row)?,
    };
    let description = match &req.description {
        Some(d) => {
            validate_description(d)?;
            d.clone()
        }
        None => row.try_get("description")?,
    };
    let was_sensitive = row.try_get::<i64, _>("sensitive")? != 0;
    if was_sensitive && req.sensitive == Some(false) {
        // Turning it off would hand the stored value to anyone with config_vars:read.
        return Err(ApiError::validation(
            "a sensitive config variable stays sensitive; delete it and create it again to store a plain value",
        ));
    }
    let sensitive = req.sensitive.unwrap_or(was_sensitive);
    let sealed = st.key.seal(&p.org_id, "config_variable", &name, &value)?;
    sqlx::query(
        "UPDATE config_variables SET value = $1, description = $2, sensitive = $3, encryption = 'aes-gcm-siv', updated_at = $4 \
         WHERE org_id = $5 AND name = $6",
    )
    .bind(&sealed)
    .bind(&description)
    .bind(i64::from(sensitive))
    .bind(now())
    .bind(&p.org_id)
    .bind(&name)
    .execute(&st.db)
    .await?;
    let row = find_var(&st, &p.org_id, &name).await?;
    Ok(Json(config_var(&st, &p.org_id, &row)?))
}

async fn delete_var(
    State(st): State<AppState>,
    p: Principal,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    p.require("config_vars:write")?;
    find_var(&st, &p.org_id, &name).await?;
    sqlx::query("DELETE FROM config_variables WHERE org_id = $1 AND name = $2")
        .bind(&p.org_id)
        .bind(&name)
        .execute(&st.db)
        .await?;
    Ok(Json(json!({"deleted": true, "name": name})))
}

/// The machine endpoint behind `secret_key_ref.store`: each name from the secrets, else
/// the config variables. Values of secrets and sensitive variables go only to a gateway
/// token bound to a gateway, only for names its rolled-out configuration uses, and only
/// when every target that configuration sends a secret to is one the secret's binding
/// allows. Other callers with `config_vars:resolve` see where a name resolves, with those
/// values withheld. A name that resolves nowhere is `not_found`, naming every missing one.
async fn resolve(
    State(st): State<AppState>,
    p: Principal,
    Body(req): Body<ResolveRequest>,
) -> ApiResult<Json<ResolveResponse>> {
    p.require("config_vars:resolve")?;
    if req.names.len() > 100 {
        return Err(ApiError::validation("at most 100 names per request"));
    }
    for name in &req.names {
        validate_store_name(name)?;
    }
    let machine = match &p.gateway_id {
        Some(gid) if p.token_type == "gateway" => {
            gateway_may_resolve(&st, &p.org_id, gid, &req.names).await?;
            true
        }
        _ => false,
    };
    let mut data = Vec::with_capacity(req.names.len());
    let mut missing = Vec::new();
    for name in &req.names {
        match resolve_one(&st, &p.org_id, name, machine).await? {
            Some(r) => data.push(r),
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no secret or config variable named {}",
            missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(Json(ResolveResponse { data }))
}

/// Refuses unless the gateway's rolled-out configuration uses every name in `names`
/// and sends no secret where its binding does not allow.
async fn gateway_may_resolve(st: &AppState, org_id: &str, gid: &str, names: &[String]) -> ApiResult<()> {
    let yaml = crate::fleet::desired_yaml(st, org_id, gid).await?.unwrap_or_default();
    let uses = crate::fleet::store_uses_of(&yaml);
    let forbidden = |message: String| ApiError::Forbidden { message, scope: None };
    if let Some(n) = names.iter().find(|n| !uses.iter().any(|u| &u.name == *n)) {
        return Err(forbidden(format!(
            "the configuration rolled out to gateway '{gid}' does not use '{n}'; a gateway resolves only the names its own configuration references"
        )));
    }
    let bound = bindings(st, org_id, names).await?;
    match secret_binding::violation(&uses, |n| bound.get(n).cloned()) {
        Some(v) => Err(forbidden(v)),
        None => Ok(()),
    }
}

async fn resolve_one(st: &AppState, org_id: &str, name: &str, machine: bool) -> ApiResult<Option<Resolved>> {
    let secret =
        sqlx::query("SELECT name, value, encryption, allowed_hosts FROM secrets WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_optional(&st.db)
            .await?;
    if let Some(r) = secret {
        let value = if machine {
            Some(stored_value(st, org_id, "secret", &r)?)
        } else {
            None
        };
        return Ok(Some(Resolved {
            name: name.to_owned(),
            source: "secret".into(),
            sensitive: true,
            value,
            allowed_hosts: binding_of(&r)?,
        }));
    }
    let var = sqlx::query(&format!(
        "SELECT {VAR_COLUMNS} FROM config_variables WHERE org_id = $1 AND name = $2"
    ))
    .bind(org_id)
    .bind(name)
    .fetch_optional(&st.db)
    .await?;
    let Some(r) = var else { return Ok(None) };
    let sensitive = r.try_get::<i64, _>("sensitive")? != 0;
    let value = if machine || !sensitive {
        Some(stored_value(st, org_id, "config_variable", &r)?)
    } else {
        None
    };
    Ok(Some(Resolved {
        name: name.to_owned(),
        source: "config_variable".into(),
        sensitive,
        value,
        allowed_hosts: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_for_their_row() {
        let key = MasterKey::from_bytes(&[7u8; 32]);
        let sealed = key.seal("org_1", "secret", "openai-key", "sk-live-123").expect("seal");
        assert!(!sealed.contains("sk-live"));
        assert_eq!(
            key.open("org_1", "secret", "openai-key", &sealed).expect("open"),
            "sk-live-123"
        );
        assert!(
            key.open("org_1", "secret", "other-key", &sealed).is_err(),
            "bound to the name"
        );
        assert!(
            key.open("org_2", "secret", "openai-key", &sealed).is_err(),
            "bound to the org"
        );
        let other = MasterKey::from_bytes(&[8u8; 32]);
        assert!(other.open("org_1", "secret", "openai-key", &sealed).is_err());
        let again = key.seal("org_1", "secret", "openai-key", "sk-live-123").expect("seal");
        assert_ne!(sealed, again, "fresh nonce each time");
    }

    #[test]
    fn master_keys_parse_from_base64_or_hex_and_are_generated_once() {
        assert!(parse_key(&B64.encode([1u8; 32])).is_some());
        assert!(parse_key(&"ab".repeat(32)).is_some());
        assert!(parse_key("short").is_none());
        assert!(matches!(
            MasterKey::load(Some("nope"), Path::new("/nonexistent")),
            Err(KeyError::BadKey)
        ));
        let dir = tempfile::tempdir().expect("tmp");
        let (a, from) = MasterKey::load(None, dir.path()).expect("generated");
        assert!(from.contains("generated"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secrets.key"))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = a.seal("o", "secret", "n", "v").expect("seal");
        let (b, _) = MasterKey::load(None, dir.path()).expect("reloaded");
        assert_eq!(b.open("o", "secret", "n", &sealed).expect("same key"), "v");
    }

    #[test]
    fn store_names_are_checked() {
        assert!(validate_store_name("openai-key").is_ok());
        assert!(validate_store_name("a.b_c-1").is_ok());
        for bad in ["", "a b", "x'; DROP", "ü"] {
            assert!(validate_store_name(bad).is_err(), "{bad:?}");
        }
    }
}
