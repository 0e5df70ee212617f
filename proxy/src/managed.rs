//! Managed mode (`kt run --managed`): keep the gateway on the configuration the control
//! plane assigns it. A long-poll on `GET /v1/gateway/config` returns as soon as a rollout,
//! revert or reload changes it (the poll interval bounds the wait); each new version goes
//! through the one reload path (`PolicySource::reload_files`) on a candidate file and is
//! persisted only once it serves, so a restart without the control plane comes back on
//! the last good configuration. The outcome, applied or refused, is reported back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kt_api::{Client, ManagedConfig, RuntimeReport, VersionRef};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};

use crate::reload::{PolicySource, ReloadOutcome};

/// What a managed gateway needs to follow the control plane.
#[derive(Debug, Clone)]
pub struct ManagedOptions {
    pub client: Client,
    pub gateway_id: String,
    pub poll_interval: Duration,
    /// How often spend is reported (`POST /v1/gateway/usage`).
    pub spend_every: Duration,
    /// Holds `policy-config.yaml` (the last good configuration) and `applied.json`.
    pub state_dir: PathBuf,
    /// What the gateway starts on (from the control plane or the persisted state).
    pub applied: Option<Applied>,
    /// The `secret_key_ref.store` values of the starting configuration.
    pub store: crate::routing::StoreValues,
    /// The gateway keys pushed by the control plane (`caller_auth.mode: control_plane`).
    pub keys: Arc<crate::model_api::FleetKeys>,
}

/// Where a configuration text sends `secret_key_ref.store` values.
pub fn store_names(yaml: &str) -> Vec<kt_policy::secret_binding::StoreUse> {
    kt_policy::config::load_sources(&[kt_policy::config::Source {
        name: "policy-config.yaml".into(),
        text: yaml.to_owned(),
    }])
    .config
    .map(|c| kt_policy::secret_binding::store_uses(&c))
    .unwrap_or_default()
}

/// Resolves the values `uses` names through the control plane (blocking). A secret whose
/// binding does not allow a host the configuration sends it to is refused here as well
/// as by the control plane.
pub fn resolve_store(
    client: &Client,
    uses: &[kt_policy::secret_binding::StoreUse],
) -> Result<crate::routing::StoreValues, String> {
    let mut names: Vec<String> = uses.iter().map(|u| u.name.clone()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(Default::default());
    }
    let r = client
        .resolve(&names)
        .map_err(|e| format!("cannot resolve secret_key_ref.store: {e}"))?;
    let bound = |n: &str| {
        r.data
            .iter()
            .find(|x| x.name == n && (x.source == "secret" || x.sensitive))
            .map(|x| x.allowed_hosts.clone())
    };
    if let Some(v) = kt_policy::secret_binding::violation(uses, bound) {
        return Err(v);
    }
    Ok(r.data
        .into_iter()
        .filter_map(|x| x.value.map(|v| (x.name, v)))
        .collect())
}

/// The configuration version serving, as persisted in `applied.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Applied {
    pub configuration_id: String,
    pub version: i64,
    pub pack_version: String,
    pub generation: i64,
    pub etag: String,
}

impl Applied {
    pub fn of(c: &ManagedConfig) -> Applied {
        Applied {
            configuration_id: c.configuration_id.clone(),
            version: c.version,
            pack_version: c.pack_version.clone(),
            generation: c.generation,
            etag: c.etag.clone(),
        }
    }

    fn version_ref(&self) -> VersionRef {
        VersionRef {
            configuration_id: self.configuration_id.clone(),
            version: self.version,
            pack_version: Some(self.pack_version.clone()),
        }
    }
}

/// The persisted configuration file of a state directory.
pub fn config_path(state_dir: &Path) -> PathBuf {
    state_dir.join("policy-config.yaml")
}

/// Reads what the state directory says was last applied.
pub fn load_applied(state_dir: &Path) -> Option<Applied> {
    let text = std::fs::read_to_string(state_dir.join("applied.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `bytes` to `path` through a temporary file, readable by the owner only (a
/// configuration may hold literal keys).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(&tmp)?.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

/// Writes `bytes` to `path` (through a temporary file, mode 0600), creating its directory
/// readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        private_dir(dir)?;
    }
    write_atomic(path, bytes)
}

/// Creates the state directory readable by the owner only; an existing one keeps its mode
/// (the files kt writes in it are 0600 either way).
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Persists a configuration that now serves.
pub fn persist(state_dir: &Path, yaml: &str, applied: &Applied) -> std::io::Result<()> {
    private_dir(state_dir)?;
    write_atomic(&config_path(state_dir), yaml.as_bytes())?;
    let meta = serde_json::to_vec_pretty(applied).map_err(std::io::Error::other)?;
    write_atomic(&state_dir.join("applied.json"), &meta)
}

pub(crate) struct ManagedSync {
    pub source: Arc<PolicySource>,
    pub opts: ManagedOptions,
}

fn runtime_version() -> String {
    format!("kt/{}", env!("CARGO_PKG_VERSION"))
}

impl ManagedSync {
    /// Applies a configuration from the control plane (its store values already resolved,
    /// or the reason they could not be); returns what to report.
    fn apply(
        &self,
        cfg: &ManagedConfig,
        store: Result<crate::routing::StoreValues, String>,
        current: &mut Option<Applied>,
    ) -> RuntimeReport {
        let store = match store {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "managed: configuration {} version {} refused: {e}",
                    cfg.configuration_id,
                    cfg.version
                );
                return self.report(current, Some(format!("version {} refused: {e}", cfg.version)));
            }
        };
        if let Some(s) = &self.source.store {
            s.store(Arc::new(store));
        }
        let dir = &self.opts.state_dir;
        let candidate = dir.join("candidate.yaml");
        let outcome = match private_dir(dir).and_then(|()| write_atomic(&candidate, cfg.yaml.as_bytes())) {
            Ok(()) => self.source.reload_files(std::slice::from_ref(&candidate)),
            Err(e) => {
                return self.report(current, Some(format!("cannot write {}: {e}", candidate.display())));
            }
        };
        let _ = std::fs::remove_file(&candidate);
        match outcome {
            ReloadOutcome::Applied { digest, .. } => {
                let applied = Applied::of(cfg);
                if let Err(e) = persist(dir, &cfg.yaml, &applied) {
                    tracing::warn!("managed: applied version {} but could not persist it: {e}", cfg.version);
                }
                tracing::info!(
                    "managed: applied configuration {} version {} ({}) digest {}",
                    cfg.configuration_id,
                    cfg.version,
                    cfg.pack_version,
                    &digest[..12.min(digest.len())]
                );
                *current = Some(applied);
                self.report(current, None)
            }
            ReloadOutcome::Rejected(diags) => {
                let text: String = diags.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
                tracing::warn!(
                    "managed: configuration {} version {} refused; the previous configuration keeps serving\n{text}",
                    cfg.configuration_id,
                    cfg.version
                );
                self.report(
                    current,
                    Some(format!("version {} refused: {}", cfg.version, text.trim())),
                )
            }
        }
    }

    fn report(&self, current: &Option<Applied>, error: Option<String>) -> RuntimeReport {
        RuntimeReport {
            applied: current.as_ref().map(Applied::version_ref),
            generation: current.as_ref().map_or(0, |a| a.generation),
            error,
            runtime_version: Some(runtime_version()),
        }
    }
}

#[async_trait]
impl BackgroundService for ManagedSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = self.opts.client.clone();
        let gid = self.opts.gateway_id.clone();
        let wait = self.opts.poll_interval.as_secs().max(1);
        let mut current = self.opts.applied.clone();
        // The starting state, so the control plane knows what runs.
        let report = self.report(&current, None);
        let (c, g) = (client.clone(), gid.clone());
        let _ = off_runtime(move || c.report_runtime_state(&g, &report)).await;
        let mut reachable = true;
        // The ETag asked for: what serves. A refused version is not asked for again until
        // something changes (its ETag is remembered here).
        let mut etag = current.as_ref().map(|a| a.etag.clone());
        loop {
            let (c, tag) = (client.clone(), etag.clone());
            let poll = off_runtime(move || c.managed_config(tag.as_deref(), wait, wait, &runtime_version()));
            let result = tokio::select! {
                _ = shutdown.changed() => return,
                r = poll => r,
            };
            match result {
                Ok(Ok(Some(cfg))) => {
                    if !reachable {
                        tracing::info!("managed: control plane reachable again");
                        reachable = true;
                    }
                    etag = Some(cfg.etag.clone());
                    let (c, uses) = (client.clone(), store_names(&cfg.yaml));
                    let store = off_runtime(move || resolve_store(&c, &uses)).await.unwrap_or_else(Err);
                    let report = self.apply(&cfg, store, &mut current);
                    let (c, g) = (client.clone(), gid.clone());
                    if let Ok(Err(e)) = off_runtime(move || c.report_runtime_state(&g, &report)).await {
                        tracing::warn!("managed: could not report the runtime state: {e}");
                    }
                }
                Ok(Ok(None)) => reachable = true,
                Ok(Err(e)) => {
                    if reachable {
                        tracing::warn!(
                            "managed: cannot fetch the configuration ({e}); serving the current one and retrying every {} s",
                            wait.min(5)
                        );
                        reachable = false;
                    }
                    if stopped_during(&mut shutdown, Duration::from_secs(wait.min(5))).await {
                        return;
                    }
                }
                // The poll's thread could not start or ended without an answer: try again
                // rather than stop following the configuration.
                Err(e) => {
                    tracing::error!("managed: the configuration request failed: {e}");
                    if stopped_during(&mut shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Waits `pause` before the next try; whether the gateway began stopping meanwhile.
async fn stopped_during(shutdown: &mut ShutdownWatch, pause: Duration) -> bool {
    tokio::select! {
        _ = shutdown.changed() => true,
        () = tokio::time::sleep(pause) => false,
    }
}

/// Runs a call to the control plane on a thread of its own. The control plane holds a
/// long-poll open for up to a minute (and a call to an unresponsive one waits for its
/// timeout), and a runtime that stops waits for the tasks of its blocking pool: a call
/// there would hold the gateway's shutdown until the runtime's timeout. A call still
/// waiting when the gateway stops ends with the process.
async fn off_runtime<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kt-control-plane".into())
        .spawn(move || {
            let _ = tx.send(call());
        })
        .map_err(|e| format!("cannot start a thread for the call: {e}"))?;
    rx.await.map_err(|_| "the call ended without an answer".to_owned())
}

/// Keeps the gateway keys as the control plane pushes them: a long-poll on
/// `GET /v1/gateway/keys` that answers as soon as a key is created, rotated or revoked.
/// While the control plane is away the last set keeps serving (and is kept on disk for a
/// restart).
pub(crate) struct KeySync {
    pub client: Client,
    pub keys: Arc<crate::model_api::FleetKeys>,
    pub wait: Duration,
}

#[async_trait]
impl BackgroundService for KeySync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let wait = self.wait.as_secs().clamp(1, 60);
        let mut reachable = true;
        loop {
            let (c, tag) = (self.client.clone(), self.keys.etag());
            let poll = off_runtime(move || c.fleet_keys(tag.as_deref(), wait));
            let result = tokio::select! {
                _ = shutdown.changed() => return,
                r = poll => r,
            };
            match result {
                Ok(Ok(Some(set))) => {
                    if !reachable {
                        tracing::info!("managed: control plane reachable again; gateway keys follow it");
                        reachable = true;
                    }
                    self.keys.apply(&set);
                    tracing::info!(
                        "managed: {} gateway keys and {} organisation budgets in use",
                        self.keys.len(),
                        self.keys.budget_count()
                    );
                }
                Ok(Ok(None)) => reachable = true,
                // The control plane no longer knows this gateway (its token was revoked or
                // the gateway deleted): it accepts no gateway key until it is let back in.
                Ok(Err(e)) if e.status() == Some(401) => {
                    if !self.keys.is_empty() {
                        tracing::error!(
                            "managed: the control plane refuses this gateway's token ({e}); no gateway key is accepted until it is valid again"
                        );
                        self.keys.drop_keys();
                    }
                    reachable = false;
                    if stopped_during(&mut shutdown, Duration::from_secs(5)).await {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    if reachable {
                        tracing::warn!(
                            "managed: cannot fetch the gateway keys ({e}); the last {} keep serving, retrying every second",
                            self.keys.len()
                        );
                        reachable = false;
                    }
                    if stopped_during(&mut shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                }
                // The poll's thread could not start or ended without an answer: try again
                // rather than stop following keys.
                Err(e) => {
                    tracing::error!("managed: the gateway key request failed: {e}");
                    if stopped_during(&mut shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
    }
}
