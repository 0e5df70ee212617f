//! Where the CLI finds the control plane and its credentials: global flags, then
//! `KEEPTRUSTS_*` environment variables, then the active profile's stored session, then
//! built-in defaults. Sessions live in `<config dir>/credentials.json`, mode 0600.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kt_api::{Client, ClientError};
use serde::{Deserialize, Serialize};

use crate::output::{CliError, Exit};

/// Flags every control-plane command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// CLI profile whose session and settings to use
    #[arg(long, global = true, env = "KEEPTRUSTS_PROFILE", default_value = "default")]
    pub profile: String,
    /// Control-plane API URL (default: the profile's, else http://127.0.0.1:41001)
    #[arg(long, global = true, env = "KEEPTRUSTS_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// Log lines of long-running commands (gateway, control plane): text or json
    #[arg(long, global = true, env = "KEEPTRUSTS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Which log lines to keep: a level (error, warn, info, debug, trace) or per-module
    /// directives such as `info,kt_gateway=debug` (default: kt's own lines from info,
    /// Pingora's from warn)
    #[arg(
        long,
        global = true,
        env = "KEEPTRUSTS_LOG",
        default_value = DEFAULT_LOG,
        value_name = "FILTER"
    )]
    pub log: String,
}

/// kt's own log lines from info on; Pingora's server lifecycle lines only from warn.
pub const DEFAULT_LOG: &str = "info,pingora_core=warn,pingora=warn";

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sends `tracing` events (and the `log` records of libraries such as Pingora) to standard
/// error in `format`, keeping those `filter` allows. A filter that does not parse falls back
/// to `info`, with a warning.
pub fn init_logging(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let done = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if done.is_ok()
        && let Some(e) = bad
    {
        tracing::warn!("--log / KEEPTRUSTS_LOG is not a valid filter ({e}); logging at info");
    }
}

/// A stored login session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub api_url: String,
    pub token: String,
    pub token_id: String,
    pub email: String,
    pub org: String,
    pub expires_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// The CLI's state directory: `$KEEPTRUSTS_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/keeptrusts`, else `~/.config/keeptrusts`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KEEPTRUSTS_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("keeptrusts");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config").join("keeptrusts")
}

fn credentials_path() -> PathBuf {
    config_dir().join("credentials.json")
}

pub fn load_credentials() -> Result<Credentials> {
    let path = credentials_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            CliError::new(Exit::Error, format!("{} is not valid: {e}", path.display()))
                .hint("delete it and log in again with `kt auth login`")
                .into()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes the credentials file atomically, readable by its owner only.
pub fn save_credentials(creds: &Credentials) -> Result<PathBuf> {
    let path = credentials_path();
    let dir = config_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(".credentials.json.tmp");
    let text = serde_json::to_string_pretty(creds)?;
    write_private(&tmp, text.as_bytes()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The API URL in effect and where it came from.
pub fn api_url(g: &GlobalArgs, creds: &Credentials) -> (String, &'static str) {
    if let Some(u) = g.api_url.as_ref().filter(|u| !u.is_empty()) {
        return (u.clone(), "flag or KEEPTRUSTS_API_URL");
    }
    if let Some(p) = creds.profiles.get(&g.profile) {
        return (p.api_url.clone(), "profile");
    }
    (kt_api::DEFAULT_API_URL.to_owned(), "default")
}

/// A client with the caller's credentials: `KEEPTRUSTS_API_TOKEN`, else the profile's
/// session. Commands that need to be logged in fail with exit code 3 when neither exists.
pub fn client(g: &GlobalArgs) -> Result<Client> {
    let creds = load_credentials()?;
    let (url, _) = api_url(g, &creds);
    if let Some(t) = std::env::var("KEEPTRUSTS_API_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Ok(Client::new(&url, Some(t)));
    }
    match creds.profiles.get(&g.profile) {
        // A stored session goes only to the API that issued it: another --api-url /
        // KEEPTRUSTS_API_URL never receives it.
        Some(p) if same_api(&p.api_url, &url) => Ok(Client::new(&url, Some(p.token.clone()))),
        Some(p) => Err(CliError::new(
            Exit::Auth,
            format!(
                "the stored session of profile '{}' belongs to {}, not {url}; it is not sent elsewhere",
                g.profile, p.api_url
            ),
        )
        .hint(format!(
            "log in to {url} with `kt auth login --api-url {url} …` (or use another --profile), or set KEEPTRUSTS_API_TOKEN"
        ))
        .into()),
        None => Err(
            CliError::new(Exit::Auth, format!("not logged in (profile '{}')", g.profile))
                .hint("run `kt auth login --email <e> --password <p>` or set KEEPTRUSTS_API_TOKEN")
                .into(),
        ),
    }
}

/// Whether two API base URLs name the same server (a trailing slash and the case of the
/// scheme and host do not count).
fn same_api(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        let u = u.trim().trim_end_matches('/');
        match u.split_once("://") {
            Some((scheme, rest)) => {
                let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
                format!("{}://{}/{path}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase())
            }
            None => u.to_owned(),
        }
    };
    norm(a) == norm(b)
}

/// A CLI error for a failed API call, with the documented exit code.
pub fn api_error(e: ClientError) -> anyhow::Error {
    let exit = match e.status() {
        Some(401 | 403) => Exit::Auth,
        Some(400 | 413 | 422) => Exit::Invalid,
        _ => Exit::Error,
    };
    let hint = match e.code() {
        Some("auth.unauthenticated") => Some("log in again with `kt auth login`, or check KEEPTRUSTS_API_TOKEN"),
        Some("auth.mfa_required") => Some("complete an MFA challenge: `kt auth mfa challenge --code <TOTP code>`"),
        Some("auth.forbidden") => Some("use a token that holds the scope named above"),
        None => Some("is `kt server` running? check --api-url / KEEPTRUSTS_API_URL"),
        _ => None,
    };
    let mut err = CliError::new(exit, e.to_string());
    if let Some(h) = hint {
        err = err.hint(h);
    }
    err.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_stay_with_the_api_that_issued_them() {
        assert!(same_api("http://127.0.0.1:41001", "http://127.0.0.1:41001/"));
        assert!(same_api("HTTP://Kt.Example.com/api", "http://kt.example.com/api/"));
        assert!(!same_api("http://127.0.0.1:41001", "http://127.0.0.1:41002"));
        assert!(!same_api("https://kt.example.com", "http://kt.example.com"));
        assert!(!same_api(
            "https://kt.example.com",
            "https://kt.example.com.evil.example"
        ));
    }
}
