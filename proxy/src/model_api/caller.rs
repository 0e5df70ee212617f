//! Caller authentication (`caller_auth`): with `mode: keys`, a model call must carry one
//! of the configured keys, as `Authorization: Bearer <key>` or `x-api-key: <key>`, before
//! anything else about the request is looked at (a caller without a key spends no rate
//! limit and no body read). With `mode: control_plane` the keys are the gateway keys the
//! control plane pushes (`FleetKeys`), swapped in as they change. Keys are kept as SHA-256
//! digests; the key a caller sent is never forwarded upstream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use kt_api::FleetKeySet;
use kt_policy::config::{BudgetPeriod, CallerAuthMode, PolicyConfig};
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
    /// The consumer group every request with this key belongs to (gateway keys).
    pub group: Option<String>,
    /// Unix seconds from which the key is refused (gateway keys).
    expires_at: Option<u64>,
    /// The key's own hard budget: nano-dollars per period (gateway keys).
    pub budget: Option<(u64, BudgetPeriod)>,
}

/// The caller keys of one configuration, resolved once.
#[derive(Debug, Default)]
pub struct Callers {
    keys: Vec<Arc<CallerKey>>,
    by_digest: HashMap<[u8; 32], usize>,
}

/// Where a configuration's caller keys come from.
#[derive(Debug)]
pub enum CallerAuth {
    /// `mode: keys`: the configuration's own keys.
    Static(Callers),
    /// `mode: control_plane`: the gateway keys pushed to this gateway.
    Fleet(Arc<FleetKeys>),
}

impl CallerAuth {
    /// The caller keys `config` requires (`fleet`: the pushed keys of a managed gateway),
    /// or `None` when callers are not authenticated.
    pub fn of(
        config: &PolicyConfig,
        env: EnvLookup<'_>,
        fleet: Option<&Arc<FleetKeys>>,
    ) -> Result<Option<CallerAuth>, String> {
        match config.caller_auth.as_ref().map(|a| a.mode) {
            Some(CallerAuthMode::ControlPlane) => match fleet {
                Some(f) => Ok(Some(CallerAuth::Fleet(Arc::clone(f)))),
                None => Err("caller_auth.mode control_plane needs a managed gateway (kt run --managed), which receives the control plane's gateway keys; an unmanaged gateway uses mode: keys".into()),
            },
            _ => Ok(Callers::of(config, env)?.map(CallerAuth::Static)),
        }
    }

    /// The key `session` presents.
    pub(crate) fn authenticate(&self, session: &Session) -> Result<Arc<CallerKey>, RequestError> {
        match self {
            CallerAuth::Static(c) => c.authenticate(session),
            CallerAuth::Fleet(f) => f.current.load().authenticate(session),
        }
    }

    /// Keeps the request counts of `old`'s keys (pushed keys keep theirs: they are shared).
    pub fn carry(&mut self, old: &CallerAuth) {
        if let (CallerAuth::Static(new), CallerAuth::Static(old)) = (self, old) {
            new.carry(old);
        }
    }
}

/// The gateway keys a managed gateway accepts, as the control plane last pushed them; the
/// set survives a restart in the state directory, so a gateway that cannot reach the
/// control plane keeps enforcing the last set it had.
///
/// The organisation's budgets and model prices come with the keys: every managed gateway
/// applies them, whatever its `caller_auth` mode.
#[derive(Debug)]
pub struct FleetKeys {
    current: ArcSwap<Callers>,
    etag: ArcSwap<Option<String>>,
    /// The organisation's budgets, over the configuration's.
    pub(crate) budgets: ArcSwap<Vec<super::budget::Rule>>,
    /// The organisation's model prices, over the configuration's.
    pub(crate) prices: ArcSwap<kt_policy::pricing::PriceTable>,
    /// The set as applied, so dropping its keys keeps its budgets and prices.
    applied: ArcSwap<FleetKeySet>,
    /// Where the last set is kept (`None`: not kept).
    file: Option<PathBuf>,
}

/// The file of a state directory that holds the last key set.
pub fn fleet_keys_path(state_dir: &Path) -> PathBuf {
    state_dir.join("gateway-keys.json")
}

impl FleetKeys {
    /// The set persisted at `file` (none yet, or unreadable: no key is accepted until the
    /// control plane sends one).
    pub fn load(file: Option<PathBuf>) -> FleetKeys {
        let keys = FleetKeys {
            current: ArcSwap::from_pointee(Callers::default()),
            etag: ArcSwap::from_pointee(None),
            budgets: ArcSwap::from_pointee(Vec::new()),
            prices: ArcSwap::from_pointee(kt_policy::pricing::PriceTable::default()),
            applied: ArcSwap::from_pointee(FleetKeySet {
                org_id: None,
                keys: Vec::new(),
                budgets: Vec::new(),
                prices: Vec::new(),
                etag: String::new(),
            }),
            file,
        };
        let persisted = keys.file.as_ref().and_then(|f| match std::fs::read(f) {
            Ok(bytes) => serde_json::from_slice::<FleetKeySet>(&bytes)
                .map_err(|e| tracing::warn!("ignoring {}: {e}", f.display()))
                .ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", f.display());
                None
            }
        });
        if let Some(set) = persisted {
            keys.swap(&set);
        }
        keys
    }

    /// The ETag of the set in use (to wait for the next one).
    pub fn etag(&self) -> Option<String> {
        self.etag.load().as_ref().clone()
    }

    /// How many keys are in use.
    pub fn len(&self) -> usize {
        self.current.load().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts `set` in use (keys that stay keep their request counts) and persists it.
    pub fn apply(&self, set: &FleetKeySet) {
        self.swap(set);
        if let Some(f) = &self.file {
            let written = serde_json::to_vec(set)
                .map_err(std::io::Error::other)
                .and_then(|bytes| crate::managed::write_private(f, &bytes));
            if let Err(e) = written {
                tracing::warn!("gateway keys applied but not persisted to {}: {e}", f.display());
            }
        }
    }

    /// Accepts no key from now on (the control plane refuses this gateway's token) while
    /// the organisation's budgets and prices stay: losing them would lift limits.
    pub fn drop_keys(&self) {
        let last = self.applied.load();
        self.apply(&FleetKeySet {
            org_id: last.org_id.clone(),
            keys: Vec::new(),
            budgets: last.budgets.clone(),
            prices: last.prices.clone(),
            etag: String::new(),
        });
    }

    /// The organisation the control plane says this gateway serves.
    pub fn org_id(&self) -> Option<String> {
        self.applied.load().org_id.clone()
    }

    /// How many of the organisation's budgets are in use.
    pub fn budget_count(&self) -> usize {
        self.budgets.load().len()
    }

    fn swap(&self, set: &FleetKeySet) {
        self.budgets
            .store(Arc::new(set.budgets.iter().map(super::budget::Rule::pushed).collect()));
        let prices = set.prices.iter().map(|p| {
            let price = kt_policy::pricing::Price {
                input: p.input_cost_per_1k_tokens,
                cached_input: p.cached_input_cost_per_1k_tokens.unwrap_or(p.input_cost_per_1k_tokens),
                output: p.output_cost_per_1k_tokens,
                reasoning: p.reasoning_cost_per_1k_tokens.unwrap_or(p.output_cost_per_1k_tokens),
            };
            (p.model.clone(), price)
        });
        self.prices
            .store(Arc::new(kt_policy::pricing::PriceTable::from_prices(prices)));
        self.applied.store(Arc::new(set.clone()));
        let mut next = Callers::default();
        let before = self.current.load();
        let windows: HashMap<&str, &Arc<FixedWindow>> = before
            .keys
            .iter()
            .filter_map(|k| k.limit.as_ref().map(|w| (k.id.as_str(), w)))
            .collect();
        for k in &set.keys {
            let Some(digest) = hex32(&k.sha256) else {
                tracing::warn!("gateway key {} has a malformed hash; it is not accepted", k.id);
                continue;
            };
            let budget = match &k.budget {
                None => None,
                Some(b) => match period_named(&b.period) {
                    Some(p) => Some(((b.limit_usd.max(0.0) * 1e9) as u64, p)),
                    // A budget this gateway cannot apply must not turn into no budget.
                    None => {
                        tracing::warn!(
                            "gateway key {} has a budget period '{}' this gateway does not know; it is not accepted",
                            k.id,
                            b.period
                        );
                        continue;
                    }
                },
            };
            let limit = k
                .rate_limit
                .map(|l| Arc::new(FixedWindow::new(l.max_requests, l.window_seconds)));
            let prior = windows.get(k.id.as_str()).copied();
            let key = CallerKey {
                id: k.id.clone(),
                allowed_models: k.allowed_models.clone(),
                limit: limit.map(|w| FixedWindow::carried(w, prior)),
                group: k.consumer_group.clone(),
                expires_at: k.expires_at.map(|e| e.max(0) as u64),
                budget,
            };
            next.by_digest.insert(digest, next.keys.len());
            next.keys.push(Arc::new(key));
        }
        self.current.store(Arc::new(next));
        self.etag.store(Arc::new(Some(set.etag.clone())));
    }
}

fn period_named(name: &str) -> Option<BudgetPeriod> {
    match name {
        "hour" => Some(BudgetPeriod::Hour),
        "day" => Some(BudgetPeriod::Day),
        "month" => Some(BudgetPeriod::Month),
        _ => None,
    }
}

/// 64 hex digits as 32 bytes.
fn hex32(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibble(b[2 * i])? << 4 | nibble(b[2 * i + 1])?;
    }
    Some(out)
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
            callers.keys.push(Arc::new(CallerKey {
                id: k.id.clone(),
                allowed_models: k.allowed_models.clone(),
                limit: k
                    .rate_limit
                    .as_ref()
                    .map(|l| Arc::new(FixedWindow::new(l.max_requests, l.window_seconds))),
                group: None,
                expires_at: None,
                budget: None,
            }));
        }
        Ok(Some(callers))
    }

    /// Keeps the request counts of keys that `old` had with the same id and limit.
    pub fn carry(&mut self, old: &Callers) {
        for k in &mut self.keys {
            let before = old.by_id(&k.id).and_then(|o| o.limit.as_ref());
            // Freshly built: this is the only reference.
            if let Some(k) = Arc::get_mut(k)
                && let Some(w) = k.limit.take()
            {
                k.limit = Some(FixedWindow::carried(w, before));
            }
        }
    }

    fn by_id(&self, id: &str) -> Option<&CallerKey> {
        self.keys.iter().find(|k| k.id == id).map(Arc::as_ref)
    }

    /// The key `session` presents.
    pub(crate) fn authenticate(&self, session: &Session) -> Result<Arc<CallerKey>, RequestError> {
        self.lookup(&session.req_header().headers)
    }

    /// The key `headers` present.
    fn lookup(&self, headers: &http::HeaderMap) -> Result<Arc<CallerKey>, RequestError> {
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
        // An empty value (an SDK given `api_key=""`) is no key at all.
        for value in bearer.chain(api_keys).filter(|v| !v.is_empty()) {
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
        let key = self
            .by_digest
            .get(&digest)
            .and_then(|i| self.keys.get(*i))
            .ok_or(RequestError::Unauthorized("invalid_api_key"))?;
        if key.expires_at.is_some_and(|e| crate::ids::now_secs() >= e) {
            return Err(RequestError::Unauthorized("expired_api_key"));
        }
        Ok(Arc::clone(key))
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

#[cfg(test)]
mod tests {
    use super::*;
    use kt_api::{FleetKey, KeyRateLimit};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn fleet_key(id: &str, value: &str, expires_at: Option<i64>) -> FleetKey {
        FleetKey {
            id: id.into(),
            sha256: hex(&Sha256::digest(value.as_bytes())),
            consumer_group: Some("team-a".into()),
            allowed_models: Some(vec!["m".into()]),
            rate_limit: Some(KeyRateLimit {
                max_requests: 5,
                window_seconds: 60,
            }),
            budget: None,
            expires_at,
        }
    }

    fn bearer(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            "authorization",
            http::HeaderValue::from_str(&format!("Bearer {value}")).expect("header"),
        );
        h
    }

    fn code(r: Result<Arc<CallerKey>, RequestError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(RequestError::Unauthorized(c)) => c,
            Err(_) => "other",
        }
    }

    #[test]
    fn pushed_keys_are_swapped_persisted_and_expire() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = fleet_keys_path(dir.path());
        let keys = FleetKeys::load(Some(file.clone()));
        assert!(keys.is_empty() && keys.etag().is_none());
        let now = crate::ids::now_secs() as i64;
        let set = FleetKeySet {
            org_id: None,
            keys: vec![
                fleet_key("gk_live", "kt_gk_live_value_0123456789", None),
                fleet_key("gk_old", "kt_gk_expired_value_0123456789", Some(now - 1)),
                FleetKey {
                    sha256: "not hex".into(),
                    ..fleet_key("gk_bad", "x", None)
                },
            ],
            budgets: Vec::new(),
            prices: Vec::new(),
            etag: "\"keys:1\"".into(),
        };
        keys.apply(&set);
        assert_eq!(keys.len(), 2, "the malformed hash is left out");
        let current = keys.current.load();
        let k = current
            .lookup(&bearer("kt_gk_live_value_0123456789"))
            .expect("live key");
        assert_eq!((k.id.as_str(), k.group.as_deref()), ("gk_live", Some("team-a")));
        assert!(k.allows(Some("m")).is_ok() && k.allows(Some("other")).is_err());
        assert_eq!(
            code(current.lookup(&bearer("kt_gk_expired_value_0123456789"))),
            "expired_api_key"
        );
        assert_eq!(
            code(current.lookup(&bearer("kt_gk_unknown_0123456789"))),
            "invalid_api_key"
        );
        assert_eq!(code(current.lookup(&http::HeaderMap::new())), "missing_api_key");
        assert_eq!(code(current.lookup(&bearer(""))), "missing_api_key");

        // A request counted on the key survives the next push that keeps it.
        let window = k.limit.as_ref().map(Arc::clone).expect("limit");
        let before = Arc::as_ptr(&window);
        keys.apply(&FleetKeySet {
            org_id: None,
            keys: vec![fleet_key("gk_live", "kt_gk_live_value_0123456789", None)],
            budgets: Vec::new(),
            prices: Vec::new(),
            etag: "\"keys:2\"".into(),
        });
        let after = keys
            .current
            .load()
            .by_id("gk_live")
            .and_then(|k| k.limit.as_ref().map(Arc::as_ptr));
        assert_eq!(after, Some(before), "same window carried");

        // What a restart finds: the last set, from a private file.
        let reloaded = FleetKeys::load(Some(file.clone()));
        assert_eq!(reloaded.etag().as_deref(), Some("\"keys:2\""));
        assert_eq!(
            code(reloaded.current.load().lookup(&bearer("kt_gk_live_value_0123456789"))),
            "ok"
        );
        assert_eq!(
            code(
                reloaded
                    .current
                    .load()
                    .lookup(&bearer("kt_gk_expired_value_0123456789"))
            ),
            "invalid_api_key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A damaged file accepts nothing rather than failing the start.
        std::fs::write(&file, b"{not json").expect("write");
        assert!(FleetKeys::load(Some(file)).is_empty());
    }

    #[test]
    fn a_budget_the_gateway_cannot_apply_keeps_the_key_out() {
        let keys = FleetKeys::load(None);
        let budget = |period: &str| {
            Some(kt_api::KeyBudget {
                limit_usd: 2.5,
                period: period.into(),
            })
        };
        keys.apply(&FleetKeySet {
            org_id: None,
            keys: vec![
                FleetKey {
                    budget: budget("day"),
                    ..fleet_key("gk_day", "kt_gk_day_value_0123456789", None)
                },
                FleetKey {
                    budget: budget("fortnight"),
                    ..fleet_key("gk_odd", "kt_gk_odd_value_0123456789", None)
                },
            ],
            budgets: Vec::new(),
            prices: Vec::new(),
            etag: "\"keys:b\"".into(),
        });
        let current = keys.current.load();
        let k = current.lookup(&bearer("kt_gk_day_value_0123456789")).expect("day key");
        assert_eq!(k.budget, Some((2_500_000_000, BudgetPeriod::Day)));
        // Not served unbudgeted: refused.
        assert_eq!(
            code(current.lookup(&bearer("kt_gk_odd_value_0123456789"))),
            "invalid_api_key"
        );
    }

    #[test]
    fn hashes_decode_only_as_64_hex_digits() {
        assert_eq!(hex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(hex32(&"AB".repeat(32)), Some([0xab; 32]));
        assert_eq!(hex32(&"ab".repeat(31)), None);
        assert_eq!(hex32(&"zz".repeat(32)), None);
        assert_eq!(hex32(&"é".repeat(32)), None);
    }
}
