//! `kt config show` (the CLI's effective settings and where each came from) and
//! `kt doctor` (can this machine reach and use kt?).

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;

use crate::output::{Exit, print_json};
use crate::session::{self, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The effective CLI settings, each with its source (flag, env, file, default); secrets masked
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Policy config to check (default: ./policy-config.yaml when present)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The local gateway to probe
    #[arg(long, default_value = "http://127.0.0.1:41002", value_name = "URL")]
    pub gateway_url: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Setting {
    key: &'static str,
    value: Option<String>,
    source: &'static str,
}

/// `kt_live_abcd…` → `kt_live_abcd****` (enough to recognise, not to use).
fn mask(secret: &str) -> String {
    let keep = secret.rfind('_').map_or(0, |i| i + 1) + 4;
    format!(
        "{}****",
        secret.chars().take(keep.min(secret.len())).collect::<String>()
    )
}

/// Where a clap value that also reads `env` came from.
fn flag_or_env(value: &Option<String>, env: &str) -> &'static str {
    match (value, std::env::var(env).ok()) {
        (None, _) => "unset",
        (Some(v), Some(e)) if *v == e => "env",
        _ => "flag",
    }
}

pub fn config(cmd: ConfigCommand, g: &GlobalArgs) -> Result<Exit> {
    let ConfigCommand::Show { json } = cmd;
    let creds = session::load_credentials()?;
    let (url, url_source) = session::api_url(g, &creds);
    let url_source = match url_source {
        "flag or KEEPTRUSTS_API_URL" => flag_or_env(&g.api_url, "KEEPTRUSTS_API_URL"),
        "profile" => "file",
        other => other,
    };
    let profile_source = match std::env::var("KEEPTRUSTS_PROFILE").ok() {
        Some(p) if p == g.profile => "env",
        _ if g.profile == "default" => "default",
        _ => "flag",
    };
    let config_dir_source = if std::env::var_os("KEEPTRUSTS_CONFIG_DIR").is_some_and(|v| !v.is_empty()) {
        "env"
    } else if std::env::var_os("XDG_CONFIG_HOME").is_some_and(|v| !v.is_empty()) {
        "env (XDG_CONFIG_HOME)"
    } else {
        "default"
    };
    let env_token = std::env::var("KEEPTRUSTS_API_TOKEN").ok().filter(|t| !t.is_empty());
    let profile = creds.profiles.get(&g.profile);
    let (token, token_source) = match (&env_token, profile) {
        (Some(t), _) => (Some(mask(t)), "env"),
        (None, Some(p)) => (Some(mask(&p.token)), "file"),
        (None, None) => (None, "unset"),
    };
    let env_setting = |key: &'static str, var: &str, secret: bool| {
        let v = std::env::var(var).ok().filter(|v| !v.is_empty());
        Setting {
            key,
            source: if v.is_some() { "env" } else { "unset" },
            value: v.map(|v| if secret { mask(&v) } else { v }),
        }
    };
    let settings = vec![
        Setting {
            key: "profile",
            value: Some(g.profile.clone()),
            source: profile_source,
        },
        Setting {
            key: "api_url",
            value: Some(url),
            source: url_source,
        },
        Setting {
            key: "api_token",
            value: token,
            source: token_source,
        },
        Setting {
            key: "session.user",
            value: profile.map(|p| p.email.clone()),
            source: if profile.is_some() { "file" } else { "unset" },
        },
        Setting {
            key: "session.expires_at",
            value: profile.map(|p| crate::output::rfc3339(p.expires_at)),
            source: if profile.is_some() { "file" } else { "unset" },
        },
        Setting {
            key: "config_dir",
            value: Some(session::config_dir().display().to_string()),
            source: config_dir_source,
        },
        env_setting("gateway_id", "KEEPTRUSTS_GATEWAY_ID", false),
        env_setting("gateway_token", "KEEPTRUSTS_GATEWAY_TOKEN", true),
        env_setting("upstream_url", "KEEPTRUSTS_UPSTREAM_URL", false),
    ];
    if json {
        print_json(&json!({"settings": settings}))?;
    } else {
        for s in &settings {
            println!("{:<20} {:<48} ({})", s.key, s.value.as_deref().unwrap_or("-"), s.source);
        }
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    /// `ok`, `fail` or `skip`.
    status: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: "ok",
            detail: detail.into(),
            hint: None,
            latency_ms: None,
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: "fail",
            detail: detail.into(),
            hint: Some(hint.into()),
            latency_ms: None,
        }
    }

    fn skip(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: "skip",
            detail: detail.into(),
            hint: None,
            latency_ms: None,
        }
    }

    fn latency(mut self, d: Duration) -> Check {
        self.latency_ms = Some(d.as_millis() as u64);
        self
    }
}

/// `host:port` of an http(s) URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let uri: http_uri::Parts = http_uri::parse(url)?;
    Some((uri.host, uri.port))
}

/// A tiny URL splitter (scheme, host, port) for reachability checks.
mod http_uri {
    pub struct Parts {
        pub host: String,
        pub port: u16,
    }

    pub fn parse(url: &str) -> Option<Parts> {
        let (scheme, rest) = url.split_once("://")?;
        let default = match scheme {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let authority = rest.split(['/', '?']).next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = if let Some(end) = authority.strip_prefix('[').and_then(|a| a.find(']')) {
            let host = &authority[1..=end];
            let port = authority[end + 2..].strip_prefix(':').and_then(|p| p.parse().ok());
            (host.to_owned(), port.unwrap_or(default))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().ok()?),
                None => (authority.to_owned(), default),
            }
        };
        (!host.is_empty()).then_some(Parts { host, port })
    }
}

fn tcp_reach(host: &str, port: u16) -> Result<Duration, String> {
    let t = Instant::now();
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
            Ok(_) => return Ok(t.elapsed()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn http_get(url: &str) -> Result<(u16, Duration), String> {
    let t = Instant::now();
    let agent = ureq_agent();
    match agent.get(url).call() {
        Ok(r) => Ok((r.status(), t.elapsed())),
        Err(ureq::Error::Status(code, _)) => Ok((code, t.elapsed())),
        Err(e) => Err(e.to_string()),
    }
}

fn ureq_agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(3)).build()
}

pub fn doctor(args: DoctorArgs, g: &GlobalArgs) -> Result<Exit> {
    let mut checks = Vec::new();
    let creds = session::load_credentials()?;
    let (api, _) = session::api_url(g, &creds);

    // The control plane.
    let reachable = match http_get(&format!("{api}/healthz")) {
        Ok((200, d)) => {
            checks.push(Check::ok("api", format!("API reachable ({api})")).latency(d));
            true
        }
        Ok((code, _)) => {
            checks.push(Check::fail(
                "api",
                format!("{api}/healthz answered HTTP {code}"),
                "is --api-url / KEEPTRUSTS_API_URL a kt server?",
            ));
            false
        }
        Err(e) => {
            checks.push(Check::fail(
                "api",
                format!("API not reachable at {api}: {e}"),
                "start it with `kt server`, or point --api-url / KEEPTRUSTS_API_URL at it",
            ));
            false
        }
    };
    match session::client(g) {
        Err(_) => checks.push(Check::skip(
            "auth",
            "not logged in (no session, no KEEPTRUSTS_API_TOKEN)",
        )),
        Ok(_) if !reachable => checks.push(Check::skip("auth", "API not reachable")),
        Ok(client) => match client.whoami() {
            Ok(me) => checks.push(Check::ok(
                "auth",
                format!(
                    "Authenticated as {} ({}, org {})",
                    me.user.map_or(me.token_id.clone(), |u| u.email),
                    me.role,
                    me.org.name
                ),
            )),
            Err(e) => checks.push(Check::fail(
                "auth",
                format!("credentials refused: {e}"),
                "log in again with `kt auth login`, or check KEEPTRUSTS_API_TOKEN",
            )),
        },
    }

    // The policy configuration, and its providers.
    let config_path = args.config.clone().or_else(|| {
        let p = PathBuf::from("policy-config.yaml");
        p.exists().then_some(p)
    });
    let mut providers = Vec::new();
    match &config_path {
        None => checks.push(Check::skip("config", "no policy-config.yaml here (pass --config FILE)")),
        Some(p) => {
            let outcome = kt_policy::config::load_files(std::slice::from_ref(p));
            match &outcome.config {
                Some(c) => {
                    checks.push(Check::ok(
                        "config",
                        format!("Configuration file valid ({})", p.display()),
                    ));
                    for t in c.providers.iter().flat_map(|p| p.targets.iter()) {
                        let url = kt_policy::provider_catalog::serving(t).ok().map(|s| s.base_url);
                        providers.push((t.id.clone(), url));
                    }
                }
                None => checks.push(Check::fail(
                    "config",
                    format!(
                        "Configuration file invalid ({}): {} error(s)",
                        p.display(),
                        outcome.errors().count()
                    ),
                    format!("see `kt policy lint --file {}`", p.display()),
                )),
            }
        }
    }

    // The state directory.
    let dir = session::config_dir();
    let probe = dir.join(".doctor-probe");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&probe, b"ok")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            checks.push(Check::ok(
                "state_dir",
                format!("State directory writable ({})", dir.display()),
            ));
        }
        Err(e) => checks.push(Check::fail(
            "state_dir",
            format!("State directory not writable ({}): {e}", dir.display()),
            "set KEEPTRUSTS_CONFIG_DIR to a writable directory",
        )),
    }

    // A local gateway.
    match http_get(&format!("{}/healthz", args.gateway_url.trim_end_matches('/'))) {
        Ok((200, d)) => checks.push(Check::ok("gateway", format!("Gateway alive ({})", args.gateway_url)).latency(d)),
        Ok((code, _)) => checks.push(Check::fail(
            "gateway",
            format!("{} answered HTTP {code}", args.gateway_url),
            "is a kt gateway listening there?",
        )),
        Err(_) => checks.push(Check::skip(
            "gateway",
            format!("no gateway at {} (start one with `kt gateway run`)", args.gateway_url),
        )),
    }

    for (id, url) in providers {
        let name = format!("provider:{id}");
        match url.as_deref().and_then(host_port) {
            None => checks.push(Check::skip(name, format!("Provider: {id} has no base_url to probe"))),
            Some((host, port)) => match tcp_reach(&host, port) {
                Ok(d) => checks.push(
                    Check::ok(name, format!("Provider: {id} reachable (latency: {}ms)", d.as_millis())).latency(d),
                ),
                Err(e) => checks.push(Check::fail(
                    name,
                    format!("Provider: {id} not reachable ({host}:{port}): {e}"),
                    "check the target's base_url, DNS and outbound network",
                )),
            },
        }
    }

    let failed = checks.iter().any(|c| c.status == "fail");
    if args.json {
        print_json(&json!({"ok": !failed, "checks": checks}))?;
    } else {
        println!("Keeptrusts Gateway Diagnostics");
        println!();
        for c in &checks {
            let mark = match c.status {
                "ok" => "✓",
                "fail" => "✗",
                _ => "-",
            };
            println!("{mark} {}", c.detail);
            if let Some(h) = &c.hint {
                println!("    hint: {h}");
            }
        }
    }
    Ok(if failed { Exit::Error } else { Exit::Ok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_urls_split() {
        assert_eq!(mask("kt_live_abcdef0123"), "kt_live_abcd****");
        assert_eq!(mask("sk"), "sk****");
        let p = http_uri::parse("https://api.openai.com/v1").expect("url");
        assert_eq!((p.host.as_str(), p.port), ("api.openai.com", 443));
        let p = http_uri::parse("http://127.0.0.1:8000/v1").expect("url");
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 8000));
        let p = http_uri::parse("http://[::1]:9000").expect("url");
        assert_eq!((p.host.as_str(), p.port), ("::1", 9000));
        assert!(http_uri::parse("ftp://x").is_none());
    }
}
