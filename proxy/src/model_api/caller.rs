//! Caller authentication (`caller_auth`): with `mode: keys`, a model call must carry one
//! of the configured keys, as `Authorization: Bearer <key>` or `x-api-key: <key>`, before
//! anything else about the request is looked at (a caller without a key spends no rate
//! limit and no body read). Keys are kept as SHA-256 digests; the key a caller sent is
//! never forwarded upstream.

use std::collections::HashMap;
use std::sync::Arc;

use kt_policy::config::{CallerAuthMode, PolicyConfig};
use pingora::protocols::http::ServerSession as Session;
use sha2::{Digest, Sha256};

use crate::error::RequestError;
use crate::limits::{Check, FixedWindow};
use crate::routing::EnvLookup;

/// The shortest caller key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// One configured caller key.
#[derive(Debug)]
pub struct CallerKey {
    pub id: String,
    /// Models this key may ask for; `None`: every model.
    pub allowed_models: Option<Vec<String>>,
    /// The key's own request limit (its counts carry over a reload with the same limit).
    limit: Option<Arc<FixedWindow>>,
}

/// The caller keys of one configuration, resolved once.
#[derive(Debug, Default)]
pub struct Callers {
    keys: Vec<CallerKey>,
    by_digest: HashMap<[u8; 32], usize>,
}

impl Callers {
    /// The keys `config` requires, or `None` when callers are not authenticated.
    pub fn of(config: &PolicyConfig, env: EnvLookup<'_>) -> Result<Option<Callers>, String> {
        let Some(auth) = config.caller_auth.as_ref().filter(|a| a.mode == CallerAuthMode::Keys) else {
            return Ok(None);
        };
        let mut callers = Callers::default();
        for k in &auth.keys {
            let owner = format!("caller_auth key '{}'", k.id);
            let name = k
                .secret_key_ref
                .env
                .as_deref()
                .ok_or_else(|| format!("{owner} needs secret_key_ref.env"))?;
            let value = env(name).ok_or_else(|| {
                format!("{owner} reads its value from ${name}, which is not set (export {name}=… before starting the gateway)")
            })?;
            if value.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "{owner}: the value of ${name} has {} bytes; caller keys need at least {MIN_KEY_BYTES}",
                    value.len()
                ));
            }
            let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
            if callers.by_digest.insert(digest, callers.keys.len()).is_some() {
                return Err(format!("{owner} has the same value as another caller key"));
            }
            callers.keys.push(CallerKey {
                id: k.id.clone(),
                allowed_models: k.allowed_models.clone(),
                limit: k
                    .rate_limit
                    .as_ref()
                    .map(|l| Arc::new(FixedWindow::new(l.max_requests, l.window_seconds))),
            });
        }
        Ok(Some(callers))
    }

    /// Keeps the request counts of keys that `old` had with the same id and limit.
    pub fn carry(&mut self, old: &Callers) {
        for k in &mut self.keys {
            let before = old.keys.iter().find(|o| o.id == k.id).and_then(|o| o.limit.as_ref());
            if let Some(w) = k.limit.take() {
                k.limit = Some(FixedWindow::carried(w, before));
            }
        }
    }

    /// The key `session` presents.
    pub(crate) fn authenticate(&self, session: &Session) -> Result<&CallerKey, RequestError> {
        let headers = &session.req_header().headers;
        let mut presented: Option<&[u8]> = None;
        let bearer = headers.get_all("authorization").into_iter().map(|v| {
            let v = v.as_bytes();
            match v.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => v[7..].trim_ascii(),
                _ => b"" as &[u8],
            }
        });
        let api_keys = headers
            .get_all("x-api-key")
            .into_iter()
            .map(|v| v.as_bytes().trim_ascii());
        for value in bearer.chain(api_keys) {
            match presented {
                // Two different credentials: which one counts is not guessed.
                Some(p) if p != value => return Err(RequestError::Unauthorized("conflicting_api_keys")),
                _ => presented = Some(value),
            }
        }
        let key = match presented {
            None => return Err(RequestError::Unauthorized("missing_api_key")),
            Some(k) => k,
        };
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.by_digest
            .get(&digest)
            .and_then(|i| self.keys.get(*i))
            .ok_or(RequestError::Unauthorized("invalid_api_key"))
    }
}

impl CallerKey {
    /// The key's own request limit, as a window to check.
    pub(crate) fn check(&self) -> Option<Check> {
        self.limit
            .as_ref()
            .map(|w| Check::new("caller_key_rate_limit", self.id.as_str(), w, false))
    }

    /// Refuses a model this key may not use (`model` as the client sent it).
    pub(crate) fn allows(&self, model: Option<&str>) -> Result<(), RequestError> {
        allowlist(self.allowed_models.as_deref(), model, || {
            format!("caller key '{}'", self.id)
        })
    }
}

/// Refuses a model missing from `list` (`None`: every model is allowed); `whose` names the
/// list's owner in the refusal.
pub(crate) fn allowlist(
    list: Option<&[String]>,
    model: Option<&str>,
    whose: impl Fn() -> String,
) -> Result<(), RequestError> {
    let Some(list) = list else {
        return Ok(());
    };
    match model {
        Some(m) if list.iter().any(|a| a == m) => Ok(()),
        _ => Err(RequestError::ModelNotAllowedFor(format!(
            "model '{}' is not in the allowed_models of {}",
            model.unwrap_or("(none)"),
            whose()
        ))),
    }
}
