//! `kt server`: the control plane (API under `/v1/`, storage in SQLite or PostgreSQL).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use kt_control::{Bootstrap, ServerOptions};

use crate::output::{CliError, Exit};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (loopback by default; clear of the gateway's 41002 and 8080)
    #[arg(long, env = "KT_LISTEN", default_value = "127.0.0.1:41001", value_name = "HOST:PORT")]
    pub listen: String,
    /// Directory for the SQLite database (default: $XDG_DATA_HOME/keeptrusts or ~/.local/share/keeptrusts)
    #[arg(long, env = "KT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL, or sqlite://…; default: <data-dir>/kt.db
    #[arg(long, env = "KT_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Name of the organisation created on first run
    #[arg(long, env = "KT_BOOTSTRAP_ORG", default_value = "default", value_name = "NAME")]
    pub bootstrap_org: String,
    /// Owner account created on first run (with --bootstrap-password)
    #[arg(long, env = "KT_BOOTSTRAP_EMAIL", value_name = "EMAIL")]
    pub bootstrap_email: Option<String>,
    /// Master key for secrets at rest: 32 bytes as base64 or hex (default: a generated <data-dir>/secrets.key)
    #[arg(long, env = "KT_SECRETS_KEY", value_name = "KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// Password of the first-run owner (prefer the environment variable)
    #[arg(long, env = "KT_BOOTSTRAP_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub bootstrap_password: Option<String>,
    /// Seconds a client has to send a request head (idle keep-alive connections close after it)
    #[arg(long, env = "KT_HEADER_TIMEOUT_SECS", default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request body
    #[arg(long, env = "KT_BODY_TIMEOUT_SECS", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,
    /// Seconds a whole request may take, body and answer included (at least 65: managed gateways wait up to 60 s)
    #[arg(long, env = "KT_REQUEST_TIMEOUT_SECS", default_value_t = 90, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(65..=3600))]
    pub request_timeout_secs: u64,
    /// Open connections from one client address at most; further ones are closed at once
    #[arg(long, env = "KT_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 128, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_client: u64,
    /// Seconds a write to a client may make no progress before the connection is closed
    #[arg(long, env = "KT_WRITE_TIMEOUT_SECS", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout_secs: u64,
    /// Open connections at most; further ones are closed at once
    #[arg(long, env = "KT_MAX_CONNECTIONS", default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("keeptrusts");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local").join("share").join("keeptrusts")
}

pub fn run(args: ServerArgs) -> Result<Exit> {
    let listen = args.listen.parse().map_err(|_| {
        CliError::new(Exit::Invalid, format!("--listen '{}' is not HOST:PORT", args.listen))
            .hint("e.g. --listen 127.0.0.1:41001")
    })?;
    let bootstrap = match (args.bootstrap_email, args.bootstrap_password) {
        (Some(email), Some(password)) => Some(Bootstrap {
            org: args.bootstrap_org,
            email,
            password,
        }),
        (None, None) => None,
        _ => {
            return Err(CliError::new(Exit::Invalid, "--bootstrap-email and --bootstrap-password go together").into());
        }
    };
    let opts = ServerOptions {
        listen,
        data_dir: args.data_dir.unwrap_or_else(default_data_dir),
        database_url: args.database_url,
        bootstrap,
        secrets_key: args.secrets_key,
        limits: kt_control::serve::Limits {
            header_timeout: std::time::Duration::from_secs(args.header_timeout_secs),
            body_timeout: std::time::Duration::from_secs(args.body_timeout_secs),
            request_timeout: std::time::Duration::from_secs(args.request_timeout_secs),
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            max_connections_per_client: usize::try_from(args.max_connections_per_client).unwrap_or(usize::MAX),
            write_timeout: std::time::Duration::from_secs(args.write_timeout_secs),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match rt.block_on(kt_control::run(opts)) {
        Ok(()) => Ok(Exit::Ok),
        Err(e) => Err(CliError::new(Exit::Error, e.to_string()).into()),
    }
}
