//! kt-gateway: the data plane. A Pingora HTTP service that speaks the OpenAI (chat
//! completions, responses, embeddings, models) and Anthropic Messages APIs, enforces the
//! compiled policy chain of kt-policy on every request and answer, and routes allowed
//! requests among the configured provider targets with fallback and circuit breaking.
//!
//! Endpoints: `POST /v1/chat/completions`, `/v1/messages`, `/v1/responses` (JSON and SSE),
//! `POST /v1/embeddings`, `GET /v1/models`, `GET /health`, `/healthz`, `/readyz`, `/metrics`,
//! `GET /keeptrusts/config`, `GET /keeptrusts/providers/metrics`,
//! `POST /keeptrusts/config/reload`. The configuration also reloads on SIGHUP and when a
//! config file changes; every path ends in `reload::PolicySource::reload`. Everything else
//! answers 404 in the JSON error envelope.

mod app;
mod cache;
pub mod conn;
mod demo;
mod error;
mod events;
pub mod fuzzing;
mod gateway;
mod h1;
mod ids;
mod leases;
mod limits;
mod managed;
mod metrics;
mod model_api;
mod reload;
mod respond;
mod routing;
mod shared;
mod spend;
mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use kt_policy::{CompiledPolicy, FailMode};
use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};

pub use demo::run_demo_provider;
pub use events::EventTarget;
pub use managed::{Applied, ManagedOptions, config_path, load_applied, persist, resolve_store, store_names};
pub use model_api::{FleetKeys, fleet_keys_path};
pub use upstream::{ANSWER_DEADLINE, Upstream, UpstreamError, WireFormat};

/// Everything `kt gateway run` needs.
#[derive(Debug)]
pub struct RunOptions {
    pub listen: String,
    pub policy: CompiledPolicy,
    /// The files `policy` was loaded from, re-read on reload.
    pub policy_files: Vec<std::path::PathBuf>,
    /// The debug `--upstream` override: every request goes there.
    pub upstream_override: Option<Upstream>,
    pub fail_mode: FailMode,
    /// Upstream requests in flight at most (`--max-concurrency`).
    pub max_concurrency: usize,
    /// When set, `/keeptrusts/*` admin routes require `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Where decision events go (`None`: not recorded).
    pub events: Option<EventTarget>,
    /// Managed mode: follow the control plane's configuration for this gateway.
    pub managed: Option<ManagedOptions>,
    /// Client connection timeouts and cap.
    pub conn: conn::ConnLimits,
    /// The longest a whole upstream answer may take (`--upstream-deadline-secs`).
    pub upstream_deadline: std::time::Duration,
}

pub use routing::StoreValues;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid server configuration: {0}")]
    Server(String),
    #[error("{0}")]
    Config(String),
}

/// A bootstrapped Pingora server with our own CLI in charge (no pingora argv parsing),
/// short shutdown grace periods (the 300 s default would hold a stopped gateway for
/// minutes), and one single-threaded runtime per worker thread instead of work stealing:
/// a request never moves between threads, which measured cheaper per request.
pub(crate) fn server(threads: usize, grace_seconds: u64) -> Result<Server, GatewayError> {
    let conf = ServerConf {
        threads: threads.max(1),
        work_stealing: false,
        grace_period_seconds: Some(grace_seconds),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let conf = conf.validate().map_err(|e| GatewayError::Server(e.to_string()))?;
    let opt = Opt {
        upgrade: false,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    Ok(server)
}

/// Runs the gateway until the process is stopped. Fails before serving when a target
/// cannot be set up (a missing credential variable, an unsupported provider).
pub fn run(opts: RunOptions) -> Result<(), GatewayError> {
    let registry = routing::HealthRegistry::default();
    let store = opts.managed.as_ref().map(|m| m.store.clone());
    let fleet = opts.managed.as_ref().map(|m| Arc::clone(&m.keys));
    let runtime = reload::Runtime::new(
        opts.policy,
        opts.upstream_override.as_ref(),
        &registry,
        store.as_ref(),
        fleet.as_ref(),
    )
    .map_err(GatewayError::Config)?;
    log_start(&runtime, &opts.listen);
    let mut server = server(opts.threads, 1)?;
    let cache = Arc::new(cache::ResponseCache::new(runtime.policy.config()));
    let source = Arc::new(reload::PolicySource {
        files: opts.policy_files,
        current: ArcSwap::from_pointee(runtime),
        cache,
        registry,
        override_upstream: opts.upstream_override,
        store: store.map(ArcSwap::from_pointee),
        fleet,
    });
    let watcher = pingora::services::background::background_service(
        "config-reload",
        reload::ReloadService {
            source: Arc::clone(&source),
        },
    );
    server.add_service(watcher);
    let ledger = opts.managed.map(|m| managed_services(&mut server, &source, m));
    let sink = match opts.events {
        Some(target) => {
            let (sink, writer) = events::channel(target);
            server.add_service(pingora::services::background::background_service(
                "decision-events",
                writer,
            ));
            sink
        }
        None => events::EventSink::disabled(),
    };
    let mut gw = gateway::Gateway::new(source, opts.fail_mode, sink, opts.max_concurrency);
    gw.admin_token = opts.api_token.filter(|t| !t.is_empty());
    gw.conn = opts.conn;
    gw.upstreams.answer_deadline = opts.upstream_deadline;
    gw.spend = ledger;
    if gw.admin_token.is_none() {
        tracing::warn!(
            "admin routes (/keeptrusts/config, /keeptrusts/config/reload, /keeptrusts/providers/metrics) answer without a token to clients on this machine (loopback) only; set --api-token (KEEPTRUSTS_GATEWAY_TOKEN) to require a token and use them from elsewhere"
        );
    }
    tracing::info!(
        "Client connections: at most {}, idle {} s, head {} s, body {} s, write {} s",
        opts.conn.max_connections,
        opts.conn.idle_timeout.as_secs(),
        opts.conn.header_timeout.as_secs(),
        opts.conn.body_timeout.as_secs(),
        opts.conn.write_timeout.as_secs()
    );
    let mut service = pingora::services::listening::Service::new("kt gateway".to_owned(), gw);
    service.add_tcp(&opts.listen);
    server.add_service(service);
    server.run_forever()
}

/// Logs the targets and the listen address, and warns about a gateway anyone can call.
fn log_start(runtime: &reload::Runtime, listen: &str) {
    for t in &runtime.router.targets {
        let u = &t.upstream;
        tracing::info!(
            "Target {} ({}{}) -> {}://{}:{}{}",
            t.id,
            t.provider,
            t.model.as_deref().map(|m| format!(", model {m}")).unwrap_or_default(),
            if u.tls { "https" } else { "http" },
            u.host,
            u.port,
            u.path_for("")
        );
    }
    tracing::info!("Gateway listening on http://{}", listen);
    if runtime.callers.is_none() && !is_loopback(listen) {
        tracing::warn!(
            "caller_auth.mode is none and {} is not a loopback address: anyone who reaches it can spend the provider keys (set caller_auth.mode: keys)",
            listen
        );
    }
}

/// The background services of a managed gateway: spend reports, gateway keys and the
/// configuration. Returns the spend ledger the requests record into.
fn managed_services(server: &mut Server, source: &Arc<reload::PolicySource>, m: ManagedOptions) -> Arc<spend::Ledger> {
    let ledger = Arc::new(spend::Ledger::default());
    server.add_service(pingora::services::background::background_service(
        "spend-sync",
        spend::SpendSync {
            client: m.client.clone(),
            ledger: Arc::clone(&ledger),
            every: m.spend_every,
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "key-sync",
        managed::KeySync {
            client: m.client.clone(),
            keys: Arc::clone(&m.keys),
            wait: m.poll_interval,
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "managed-sync",
        managed::ManagedSync {
            source: Arc::clone(source),
            opts: m,
        },
    ));
    ledger
}

/// Whether a listen address (`host:port`) is on the loopback interface only.
fn is_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen.starts_with("localhost:"),
    }
}

#[cfg(test)]
mod listen_tests {
    #[test]
    fn only_loopback_addresses_count_as_local() {
        for local in ["127.0.0.1:41002", "[::1]:8080", "localhost:9000"] {
            assert!(super::is_loopback(local), "{local}");
        }
        for open in ["0.0.0.0:41002", "[::]:8080", "10.0.0.5:80", "gateway.internal:80"] {
            assert!(!super::is_loopback(open), "{open}");
        }
    }
}
