//! kt-control: the control plane behind `kt server`. An HTTP API under `/v1/` (plus
//! `/healthz` and `/readyz`) over sqlx storage: a SQLite file by default, PostgreSQL when
//! the database URL says so.

pub mod auth;
mod budgets;
pub mod changes;
pub mod db;
pub mod error;
mod extract;
mod fleet;
mod gateway_keys;
pub mod mfa;
mod routes;
pub mod secrets;
pub mod serve;
mod spend;
pub mod throttle;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AnyPool, Row};

use crate::error::ApiError;

/// What `kt server` was asked to do.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// Holds the SQLite database (and, later, the secrets key) unless a URL says otherwise.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; none: `<data_dir>/kt.db`.
    pub database_url: Option<String>,
    pub bootstrap: Option<Bootstrap>,
    /// The secrets master key (`KT_SECRETS_KEY`); none: `<data_dir>/secrets.key`.
    pub secrets_key: Option<String>,
    /// Connection and request limits of the listener.
    pub limits: serve::Limits,
}

/// The organisation and owner created on first run.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub org: String,
    pub email: String,
    pub password: String,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub db: AnyPool,
    /// Bumped on every change of what a gateway should run; managed gateways' long-polls
    /// wait on it.
    pub fleet: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Bumped on every change of an organisation's gateway keys; gateways' long-polls on
    /// `GET /v1/gateway/keys` wait on it.
    pub keys: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// The key set last built per organisation, reused by every long-poll until `keys`
    /// moves or a key in it expires.
    pub key_sets: std::sync::Arc<gateway_keys::KeySets>,
    /// Encrypts secrets and config variables at rest.
    pub key: secrets::MasterKey,
    /// Failed-login counters per account and client address.
    pub logins: std::sync::Arc<throttle::Throttle>,
    /// Password hashes computed at once at most (each takes 19 MiB and a core).
    pub hashing: std::sync::Arc<tokio::sync::Semaphore>,
    /// The PostgreSQL database replicas share (changes are announced on it); `None` for
    /// SQLite.
    pub postgres_url: Option<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, String),
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error(transparent)]
    Key(#[from] secrets::KeyError),
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The database URL the options name.
pub fn database_url(opts: &ServerOptions) -> String {
    opts.database_url
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| db::sqlite_url(&opts.data_dir))
}

/// Opens storage, applies migrations, bootstraps the first organisation when asked, and
/// serves until the process is stopped.
pub async fn run(opts: ServerOptions) -> Result<(), ServerError> {
    // Listen first: a busy port fails before anything is created or printed.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| ServerError::Listen(opts.listen, e.to_string()))?;
    let addr = listener.local_addr().unwrap_or(opts.listen);
    let url = database_url(&opts);
    if db::kind(&url) == "sqlite" || opts.secrets_key.is_none() {
        private_dir(&opts.data_dir)
            .map_err(|e| ServerError::DataDir(opts.data_dir.display().to_string(), e.to_string()))?;
    }
    if db::kind(&url) == "sqlite" {
        db::private_sqlite_file(&url)
            .map_err(|e| ServerError::DataDir(opts.data_dir.display().to_string(), e.to_string()))?;
    }
    let (key, key_source) = secrets::MasterKey::load(opts.secrets_key.as_deref(), &opts.data_dir)?;
    let pool = db::open(&url).await?;
    println!("Storage: {} ({})", db::kind(&url), db::redact_url(&url));
    println!("Secrets key: {key_source}");
    let state = AppState {
        db: pool,
        fleet: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        keys: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        key_sets: std::sync::Arc::default(),
        key,
        logins: std::sync::Arc::new(throttle::Throttle::new(throttle::Policy::default())),
        hashing: std::sync::Arc::new(tokio::sync::Semaphore::new(hashing_slots())),
        postgres_url: (db::kind(&url) == "postgresql").then(|| url.clone()),
    };
    bootstrap(&state, opts.bootstrap.as_ref()).await?;
    if let Some(pg) = state.postgres_url.clone() {
        tokio::spawn(changes::listen(state.clone(), pg));
    }
    // Unknown accounts are checked against this hash: compute it before the first login.
    let _ = tokio::task::spawn_blocking(auth::dummy_hash).await;
    println!("kt server listening on http://{addr}");
    serve::serve(listener, routes::router(state), opts.limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| ServerError::Listen(addr, e.to_string()))
}

/// Password hashes at once: one per core, at least 2, at most 8 (19 MiB each).
fn hashing_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// Creates `dir` (and its parents) readable by its owner only. A directory that already
/// exists keeps its mode (it may be one the user chose for more than kt, such as a home
/// directory); if others can read it, the server says so.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "the data directory {} can be read by other users; kt's files in it are 0600, but consider `chmod 700 {}`",
                    dir.display(),
                    dir.display()
                );
            }
            return Ok(());
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Creates the organisation and its owner when the database has none.
async fn bootstrap(state: &AppState, boot: Option<&Bootstrap>) -> Result<(), ServerError> {
    let fail = |e: ApiError| ServerError::Bootstrap(e.to_string());
    let mut tx = state.db.begin().await.map_err(|e| fail(e.into()))?;
    // Replicas starting together on one PostgreSQL create one organisation, not one each.
    if state.postgres_url.is_some() {
        sqlx::query("SELECT pg_advisory_xact_lock(7301)")
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(e.into()))?;
    }
    let orgs: i64 = sqlx::query("SELECT COUNT(*) FROM orgs")
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| fail(e.into()))?;
    match (orgs, boot) {
        (0, None) => {
            println!(
                "No organisation yet. Restart with --bootstrap-email and --bootstrap-password \
                 (or KT_BOOTSTRAP_EMAIL / KT_BOOTSTRAP_PASSWORD) to create one and its owner."
            );
        }
        (0, Some(b)) => {
            routes::validate_email(&b.email).map_err(fail)?;
            routes::validate_password(&b.password).map_err(fail)?;
            let org_id = auth::new_id("org");
            let user_id = auth::new_id("user");
            let hash = auth::hash_password(&b.password).map_err(fail)?;
            sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(&org_id)
                .bind(&b.org)
                .bind(now())
                .execute(&mut *tx)
                .await
                .map_err(|e| fail(e.into()))?;
            sqlx::query(
                "INSERT INTO users (id, org_id, email, password_hash, role, created_at) VALUES ($1, $2, $3, $4, 'owner', $5)",
            )
            .bind(&user_id)
            .bind(&org_id)
            .bind(b.email.to_ascii_lowercase())
            .bind(&hash)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(e.into()))?;
            tx.commit().await.map_err(|e| fail(e.into()))?;
            println!(
                "Created organisation '{}' ({org_id}) with owner {}.\nLog in with: kt auth login --email {} --password <the bootstrap password>",
                b.org, b.email, b.email
            );
        }
        (_, Some(_)) => println!("Organisation already set up; bootstrap settings ignored."),
        (_, None) => {}
    }
    Ok(())
}
