//! Where a stored secret may be sent. Each control-plane secret carries a list of allowed
//! hosts; a secret with none may go only to the public endpoints of the provider catalog.
//! The control plane checks a configuration against these bindings when it is pushed and
//! again when a gateway resolves the secret, and the gateway checks once more before it
//! puts the value in a request, so a token that may write configurations cannot route a
//! production key to a listener of its own.

use crate::config::PolicyConfig;
use crate::provider_catalog::{CATALOG, serving};

/// The longest allowed-host entry and the most entries a secret keeps.
pub const MAX_HOST_LEN: usize = 253;
pub const MAX_HOSTS: usize = 32;

/// The host (lower case, IPv6 without brackets) and explicit port of an http(s) URL;
/// `None` for anything else, including URLs with user information (`user@host`), whose
/// host readers disagree on.
pub fn url_host(url: &str) -> Option<(String, Option<u16>)> {
    url_parts(url).map(|(_, h, p)| (h, p))
}

/// Whether the URL is https, its host and its explicit port.
fn url_parts(url: &str) -> Option<(bool, String, Option<u16>)> {
    let (https, rest) = match url.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("http://")?),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    split_host_port(authority).map(|(h, p)| (https, h, p))
}

/// The allowed-host entry that admits exactly `url`'s scheme, host and port.
pub fn entry_for(url: &str) -> Option<String> {
    let (https, host, port) = url_parts(url)?;
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Some(match (https, port) {
        (true, None | Some(443)) => host,
        (true, Some(p)) => format!("{host}:{p}"),
        (false, p) => format!("http://{host}:{}", p.unwrap_or(80)),
    })
}

fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_');
    if host.is_empty() || !host.chars().all(ok_char) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// The hosts of the catalog's public endpoints served over https: where a secret without
/// a binding may go.
pub fn official_hosts() -> Vec<String> {
    let mut hosts: Vec<String> = CATALOG
        .iter()
        .filter_map(|p| p.base_url)
        .filter(|u| u.starts_with("https://"))
        .filter_map(|u| url_host(u).map(|(h, _)| h))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Checks and normalises one allowed-host entry: `host` or `host:port` (https; without a
/// port, 443), `http://host[:port]` (plain http, spelled out; without a port, 80), or
/// `*.domain` (https on 443 to any subdomain of `domain`, not `domain` itself).
pub fn normalize_entry(entry: &str) -> Result<String, String> {
    let e = entry.trim();
    let bad =
        || format!("'{entry}' is not a host: use host, host:port, http://host:port or *.domain (no path or user)");
    if e.is_empty() || e.len() > MAX_HOST_LEN {
        return Err(bad());
    }
    let (http, e) = match (e.strip_prefix("http://"), e.strip_prefix("https://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) if e.contains("://") => return Err(bad()),
        (None, None) => (false, e),
    };
    let e = e.strip_suffix('/').unwrap_or(e);
    let (wild, rest) = match e.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, e),
    };
    let (host, port) = split_host_port(rest).ok_or_else(bad)?;
    if wild && (http || port.is_some() || !host.contains('.') || host.contains('*')) {
        return Err(bad());
    }
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Ok(match (wild, http, port) {
        (true, ..) => format!("*.{host}"),
        (false, true, p) => format!("http://{host}:{}", p.unwrap_or(80)),
        (false, false, None | Some(443)) => host,
        (false, false, Some(p)) => format!("{host}:{p}"),
    })
}

/// Whether `entry` (normalised) admits a URL's scheme, host and port.
fn admits(entry: &str, https: bool, host: &str, port: Option<u16>) -> bool {
    if let Some(rest) = entry.strip_prefix("http://") {
        return !https && split_host_port(rest).is_some_and(|(eh, ep)| eh == host && ep == Some(port.unwrap_or(80)));
    }
    if !https || port.unwrap_or(443) != 443 && entry.starts_with("*.") {
        return false;
    }
    if let Some(domain) = entry.strip_prefix("*.") {
        return host.len() > domain.len() + 1
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.';
    }
    split_host_port(entry).is_some_and(|(eh, ep)| eh == host && ep.unwrap_or(443) == port.unwrap_or(443))
}

/// Whether a secret bound to `allowed` (none: the official hosts) may be sent to `url`.
pub fn allows(allowed: Option<&[String]>, url: &str) -> bool {
    let Some((https, host, port)) = url_parts(url) else {
        return false;
    };
    match allowed {
        Some(list) if !list.is_empty() => list.iter().any(|e| admits(e, https, &host, port)),
        _ => https && port.is_none_or(|p| p == 443) && official_hosts().contains(&host),
    }
}

/// Whether an environment variable name is one of kt's own settings (`KEEPTRUSTS_*`,
/// `KT_*`): a configuration may never send one as a provider key (a gateway's own
/// control-plane token is among them).
pub fn is_own_setting(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("KEEPTRUSTS_") || upper.starts_with("KT_")
}

/// Whether `path_template` is a plain path on the target's host: it cannot name another
/// host, leave the base path with `..`, or carry a query or fragment.
pub fn is_plain_path(tpl: &str) -> bool {
    tpl.starts_with('/')
        && !tpl.starts_with("//")
        && !tpl.contains("://")
        && !tpl.contains(['?', '#', '\\', '@'])
        && !tpl.split('/').any(|seg| seg == ".." || seg == ".")
        && !tpl.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// One place a configuration sends a stored value: `secret_key_ref.store` of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUse {
    pub name: String,
    pub target: String,
    /// Where the target's requests go (the catalog's endpoint when the target sets none).
    pub base_url: Option<String>,
}

/// Every `secret_key_ref.store` a configuration uses, with where it is sent.
pub fn store_uses(config: &PolicyConfig) -> Vec<StoreUse> {
    let external = config
        .policy
        .prompt_injection
        .as_ref()
        .and_then(|pi| pi.detection.external.as_ref())
        .and_then(|x| {
            Some(StoreUse {
                name: x.secret_key_ref.as_ref()?.store.clone()?,
                target: "prompt-injection.detection.external".to_owned(),
                base_url: Some(x.url.clone()),
            })
        });
    let Some(providers) = &config.providers else {
        return external.into_iter().collect();
    };
    providers
        .targets
        .iter()
        .filter_map(|t| {
            let name = t.secret_key_ref.as_ref()?.store.clone()?;
            let base_url = serving(t).ok().map(|s| s.base_url).or_else(|| t.base_url.clone());
            Some(StoreUse {
                name,
                target: t.id.clone(),
                base_url,
            })
        })
        .chain(external)
        .collect()
}

/// The first use of a stored value that its binding does not allow, as a message naming
/// the secret, the target and the host. `binding(name)` gives a secret's allowed hosts
/// (`None`: not a bound secret, nothing to check; `Some(None)`: the official hosts).
pub fn violation(uses: &[StoreUse], binding: impl Fn(&str) -> Option<Option<Vec<String>>>) -> Option<String> {
    uses.iter().find_map(|u| {
        let allowed = binding(&u.name)?;
        let url = u.base_url.as_deref().unwrap_or("");
        if allows(allowed.as_deref(), url) {
            return None;
        }
        let host = url_host(url).map_or_else(|| url.to_owned(), |(h, _)| h);
        let entry = entry_for(url).unwrap_or_else(|| host.clone());
        let bound = match &allowed {
            Some(list) if !list.is_empty() => list.join(", "),
            _ => "the providers' public endpoints".to_owned(),
        };
        Some(format!(
            "target '{}' would send stored secret '{}' to '{host}', but that secret may only be sent to {bound}; \
             an administrator with the secrets:bind scope can allow the host (kt secret update --secret-id … --allowed-host {entry})",
            u.target, u.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_like_the_gateway_reads_them() {
        assert_eq!(
            url_host("https://API.openai.com/v1"),
            Some(("api.openai.com".into(), None))
        );
        assert_eq!(
            url_host("http://127.0.0.1:8080/v1"),
            Some(("127.0.0.1".into(), Some(8080)))
        );
        assert_eq!(url_host("http://[::1]:9/v1"), Some(("::1".into(), Some(9))));
        for bad in [
            "https://api.openai.com@evil.example/v1",
            "ftp://x",
            "https://",
            "https://a b/",
            "https://h:99999/",
            "https://h:/",
        ] {
            assert_eq!(url_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn unbound_secrets_go_only_to_public_endpoints() {
        assert!(allows(None, "https://api.openai.com/v1"));
        assert!(allows(None, "https://api.anthropic.com/v1"));
        assert!(!allows(None, "http://api.openai.com/v1"), "never in clear text");
        assert!(!allows(None, "https://api.openai.com:8443/v1"));
        assert!(
            !allows(None, "http://127.0.0.1:11434/v1"),
            "ollama's local default is not public"
        );
        assert!(!allows(None, "https://evil.example/v1"));
        assert!(!allows(None, "https://api.openai.com.evil.example/v1"));
        assert!(!allows(Some(&[]), "https://evil.example/v1"));
    }

    #[test]
    fn bindings_admit_exact_schemes_hosts_ports_and_subdomains() {
        let list: Vec<String> = [
            "llm.internal",
            "gpu.internal:8443",
            "http://10.0.0.5:8000",
            "*.openai.azure.com",
            "[::1]:9",
        ]
        .iter()
        .map(|e| normalize_entry(e).expect("valid"))
        .collect();
        let ok = |u: &str| allows(Some(&list), u);
        assert!(ok("https://LLM.internal/v1"));
        assert!(ok("https://llm.internal:443/v1"));
        assert!(!ok("https://llm.internal:31337/v1"), "a bare host means port 443");
        assert!(!ok("http://llm.internal/v1"), "a bare host means https");
        assert!(ok("https://gpu.internal:8443/v1"));
        assert!(ok("http://10.0.0.5:8000/v1"), "plain http only where spelled out");
        assert!(!ok("http://10.0.0.5:8001/v1"));
        assert!(!ok("https://10.0.0.5:8000/v1"));
        assert!(ok("https://res.openai.azure.com"));
        assert!(!ok("http://res.openai.azure.com"));
        assert!(!ok("https://res.openai.azure.com:8443"));
        assert!(!ok("https://openai.azure.com"), "a wildcard needs a subdomain");
        assert!(!ok("https://evilopenai.azure.com"));
        assert!(!ok("https://res.openai.azure.com.evil.example"));
        assert!(ok("https://[::1]:9/v1"));
        assert!(!ok("https://api.openai.com/v1"), "a binding replaces the defaults");
        assert_eq!(
            entry_for("http://127.0.0.1:5000/v1").as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(entry_for("https://x.example/v1").as_deref(), Some("x.example"));
    }

    #[test]
    fn entries_are_checked() {
        assert_eq!(normalize_entry(" API.Example.com ").as_deref(), Ok("api.example.com"));
        assert_eq!(normalize_entry("[::1]:80").as_deref(), Ok("[::1]:80"));
        assert_eq!(normalize_entry("https://x.example:443").as_deref(), Ok("x.example"));
        assert_eq!(
            normalize_entry("http://x.example").as_deref(),
            Ok("http://x.example:80")
        );
        for bad in [
            "",
            "ftp://x.example",
            "http://*.x.example",
            "x.example/v1",
            "u@x.example",
            "*.com:443",
            "*.com",
            "*",
            "a b",
            "*.*.x.example",
        ] {
            assert!(normalize_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn violations_name_the_secret_target_and_host() {
        let uses = vec![
            StoreUse {
                name: "prod".into(),
                target: "a".into(),
                base_url: Some("https://api.openai.com/v1".into()),
            },
            StoreUse {
                name: "prod".into(),
                target: "b".into(),
                base_url: Some("http://attacker.example:9/v1".into()),
            },
        ];
        let msg = violation(&uses, |n| (n == "prod").then_some(None)).expect("refused");
        assert!(
            msg.contains("'b'") && msg.contains("'prod'") && msg.contains("attacker.example"),
            "{msg}"
        );
        assert_eq!(violation(&uses, |_| None), None, "config variables are not bound");
        let bound = Some(vec![
            "http://attacker.example:9".to_owned(),
            "api.openai.com".to_owned(),
        ]);
        assert_eq!(violation(&uses, |_| Some(bound.clone())), None);
    }

    #[test]
    fn lint_refuses_own_settings_as_keys_and_paths_that_leave_the_host() {
        assert!(is_own_setting("KEEPTRUSTS_GATEWAY_TOKEN") && is_own_setting("kt_secrets_key"));
        assert!(!is_own_setting("OPENAI_API_KEY"));
        assert!(is_plain_path("/deployments/{model}/chat/completions"));
        for bad in [
            "https://evil.example/x",
            "//evil.example/x",
            "x/y",
            "/a/../b",
            "/a?b=1",
            "/a#f",
            "/a@b",
            "/a b",
        ] {
            assert!(!is_plain_path(bad), "{bad}");
        }
        let lint = |target: &str| {
            let text = format!(
                "pack: {{name: p, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\nproviders:\n  targets:\n    - {{id: a, provider: openai, model: m, {target}}}\n"
            );
            crate::config::load_sources(&[crate::config::Source {
                name: "p.yaml".into(),
                text,
            }])
            .errors()
            .map(|d| d.to_string())
            .collect::<String>()
        };
        assert!(lint("secret_key_ref: {env: KEEPTRUSTS_GATEWAY_TOKEN}").contains("own settings"));
        assert!(lint("path_template: \"https://evil.example/v1/chat\"").contains("path_template"));
        assert!(lint("path_template: /v1/chat/completions").is_empty());
    }
}
