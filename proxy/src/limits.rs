//! Request rate limits checked before any upstream work: `global_rate_limit`,
//! `ip_rate_limit` (client address, or the `X-Forwarded-For` hop `trust_proxy_depth` from
//! the right) and `user_rate_limit` (first present header of `header_names`). Windows are
//! epoch-aligned and fixed, as documented; a refusal carries the seconds to the next window.
//! Counters live with the gateway, not the policy, so a reload with the same quotas keeps
//! them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use kt_policy::Headers;
use kt_policy::config::PolicyConfig;
use kt_policy::config::TokenScope;

/// Keys one limit keeps at most.
pub const MAX_KEYS: usize = 100_000;
/// The shared count of new keys when a window's map is full.
const OVERFLOW: &str = "~overflow";
/// Keys longer than this are kept as a hash (a header value may be kilobytes long).
const MAX_KEY_BYTES: usize = 64;

/// A bounded key for a client-chosen value: long values are kept as a SHA-256 prefix,
/// the same in every process (replicas sharing counters in Redis agree on it).
fn bounded_key(prefix: &str, value: &str) -> String {
    if value.len() <= MAX_KEY_BYTES {
        return format!("{prefix}{value}");
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}#{hex}{:x}", value.len())
}

/// One fixed-window quota and its counters.
#[derive(Debug)]
pub struct FixedWindow {
    pub max: u64,
    pub window: u64,
    counts: Mutex<Counts>,
}

/// key → (window index, requests counted in it), and the window whose older keys were
/// last dropped (at most once per window, so a full map costs no sweep per request).
#[derive(Debug, Default)]
struct Counts {
    map: HashMap<String, (u64, u64)>,
    pruned: Option<u64>,
}

/// The answer to "may this request go on?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the current window ends.
    pub reset: u64,
    /// The window's length in seconds.
    pub window: u64,
    /// Which limit refused (for the error message).
    pub scope: &'static str,
}

impl FixedWindow {
    pub fn new(max: u64, window: u64) -> Self {
        FixedWindow {
            max,
            window: window.max(1),
            counts: Mutex::new(Counts::default()),
        }
    }

    /// The count of `key` in window `idx`, starting it at zero in a new window. Keys of
    /// past windows are dropped once the map reaches [`MAX_KEYS`]; when the current window
    /// alone fills it, new keys share one overflow count (limited together, never
    /// unlimited), so the map stays bounded whatever keys clients send.
    fn slot<'m>(counts: &'m mut Counts, key: &str, idx: u64) -> &'m mut u64 {
        let full = |c: &Counts| c.map.len() >= MAX_KEYS && !c.map.contains_key(key);
        if full(counts) && counts.pruned != Some(idx) {
            counts.map.retain(|_, (w, _)| *w == idx);
            counts.pruned = Some(idx);
        }
        let key = if full(counts) { OVERFLOW } else { key };
        let entry = counts.map.entry(key.to_owned()).or_insert((idx, 0));
        if entry.0 != idx {
            *entry = (idx, 0);
        }
        &mut entry.1
    }

    /// The answer for a window with `used` counted at Unix time `now`.
    pub fn verdict(&self, allowed: bool, used: u64, now: u64, scope: &'static str) -> Verdict {
        Verdict {
            allowed,
            limit: self.max,
            remaining: self.max.saturating_sub(used),
            reset: (now / self.window + 1) * self.window - now,
            window: self.window,
            scope,
        }
    }

    /// `new`, or `old` when both have the same quota: counters carried across a reload.
    pub fn carried(new: Arc<FixedWindow>, old: Option<&Arc<FixedWindow>>) -> Arc<FixedWindow> {
        match old {
            Some(o) if o.max == new.max && o.window == new.window => Arc::clone(o),
            _ => new,
        }
    }

    /// Counts one request for `key` at Unix time `now`.
    pub fn hit(&self, key: &str, now: u64, scope: &'static str) -> Verdict {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let used = Self::slot(&mut counts, key, now / self.window);
        let allowed = *used < self.max;
        if allowed {
            *used += 1;
        }
        self.verdict(allowed, *used, now, scope)
    }

    /// Whether `key` has quota left, without counting anything.
    pub fn peek(&self, key: &str, now: u64, scope: &'static str) -> Verdict {
        let idx = now / self.window;
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let used = counts.map.get(key).filter(|(w, _)| *w == idx).map_or(0, |(_, n)| *n);
        self.verdict(used < self.max, used, now, scope)
    }

    /// Remembers that `key` has no quota left in the current window (Redis said so): the
    /// next requests of the key in this window are refused without asking again.
    pub fn saturate(&self, key: &str, now: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let used = Self::slot(&mut counts, key, now / self.window);
        *used = (*used).max(self.max);
    }

    /// Counts `n` units for `key` in the current window.
    pub fn add(&self, key: &str, n: u64, now: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let used = Self::slot(&mut counts, key, now / self.window);
        *used = used.saturating_add(n);
    }
}

/// The configured identities of a request, for the token limit's `scope`.
#[derive(Debug, Default)]
pub struct Ids<'a> {
    /// The caller key's id, when callers are authenticated.
    pub caller: Option<&'a str>,
    /// The consumer group's name, when the request belongs to one.
    pub group: Option<&'a str>,
}

/// The limits of one configuration.
#[derive(Debug, Default)]
pub struct Limits {
    /// The quotas these were built from: equal quotas keep the counters across reloads.
    pub key: String,
    global: Option<Arc<FixedWindow>>,
    ip: Option<(Arc<FixedWindow>, u32)>,
    user: Option<(Arc<FixedWindow>, Vec<String>)>,
    tokens: Option<TokenLimit>,
}

/// One window a request is checked against.
#[derive(Debug, Clone)]
pub struct Check {
    /// The limit's name in refusals, headers and `shared_state.fail_modes`.
    pub scope: &'static str,
    /// The request's counter in the window (an address, a user, a key id, a group…).
    pub key: String,
    pub window: Arc<FixedWindow>,
    /// A token window: read before the request, charged with its usage after the answer.
    pub tokens: bool,
}

impl Check {
    pub fn new(scope: &'static str, key: impl Into<String>, window: &Arc<FixedWindow>, tokens: bool) -> Self {
        Check {
            scope,
            key: key.into(),
            window: Arc::clone(window),
            tokens,
        }
    }

    /// The answer of this process's own counters: a request window counts the request, a
    /// token window is only read.
    pub fn local(&self, now: u64) -> Verdict {
        if self.tokens {
            self.window.peek(&self.key, now, self.scope)
        } else {
            self.window.hit(&self.key, now, self.scope)
        }
    }

    /// The verdict for `used` units counted in Redis before this request (`counted`: this
    /// request was added to a request window). A window without room is remembered in this
    /// process until it ends (a window's count only grows), see [`refused_here`].
    pub fn verdict_for(&self, used: u64, counted: bool, now: u64) -> Verdict {
        let allowed = used < self.window.max;
        if !allowed {
            self.window.saturate(&self.key, now);
        }
        let after = if allowed && counted && !self.tokens {
            used + 1
        } else {
            used
        };
        self.window.verdict(allowed, after, now, self.scope)
    }
}

/// The first of `checks` this process knows has no room left in its window (with
/// `shared_state`: Redis refused it earlier in the window), without counting anything.
pub fn refused_here(checks: &[Check], now: u64) -> Option<Verdict> {
    checks
        .iter()
        .map(|c| c.window.peek(&c.key, now, c.scope))
        .find(|v| !v.allowed)
}

/// The verdict of this process's own counters for `checks`: every window is looked at
/// first, and the request counted only when all have room, so a refused request uses up
/// no other limit.
pub fn local_verdict(checks: &[Check], now: u64) -> Option<Verdict> {
    if let Some(refused) = checks
        .iter()
        .map(|c| c.window.peek(&c.key, now, c.scope))
        .find(|v| !v.allowed)
    {
        return Some(refused);
    }
    decisive(checks.iter().map(|c| c.local(now)))
}

/// The first refusal among `verdicts`, else the one with the least headroom.
pub fn decisive(verdicts: impl IntoIterator<Item = Verdict>) -> Option<Verdict> {
    let mut tightest: Option<Verdict> = None;
    for v in verdicts {
        if !v.allowed {
            return Some(v);
        }
        if tightest.as_ref().is_none_or(|t| v.remaining < t.remaining) {
            tightest = Some(v);
        }
    }
    tightest
}

/// `token_rate_limit`: prompt plus completion tokens per window, counted after each answer
/// and checked before the next request.
#[derive(Debug)]
struct TokenLimit {
    window: Arc<FixedWindow>,
    scope: TokenScope,
    user_headers: Vec<String>,
    depth: u32,
}

impl Limits {
    pub fn key_of(c: &PolicyConfig) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}",
            c.global_rate_limit.as_ref().map(|g| (g.max_requests, g.window_seconds)),
            c.ip_rate_limit
                .as_ref()
                .map(|g| (g.max_requests, g.window_seconds, g.trust_proxy_depth)),
            c.user_rate_limit
                .as_ref()
                .map(|g| (g.max_requests, g.window_seconds, &g.header_names)),
            c.token_rate_limit
                .as_ref()
                .map(|t| (t.max_tokens, t.window_seconds, t.scope)),
        )
    }

    pub fn new(c: &PolicyConfig) -> Self {
        Limits {
            key: Limits::key_of(c),
            global: c
                .global_rate_limit
                .as_ref()
                .map(|g| Arc::new(FixedWindow::new(g.max_requests, g.window_seconds))),
            ip: c.ip_rate_limit.as_ref().map(|g| {
                (
                    Arc::new(FixedWindow::new(g.max_requests, g.window_seconds)),
                    g.trust_proxy_depth,
                )
            }),
            user: c.user_rate_limit.as_ref().map(|g| {
                (
                    Arc::new(FixedWindow::new(g.max_requests, g.window_seconds)),
                    g.header_names.clone(),
                )
            }),
            tokens: c.token_rate_limit.as_ref().map(|t| {
                let user_headers = c
                    .user_rate_limit
                    .as_ref()
                    .map(|u| u.header_names.clone())
                    .unwrap_or_else(|| vec!["x-user-id".to_owned()]);
                let depth = c.ip_rate_limit.as_ref().map_or(0, |i| i.trust_proxy_depth);
                TokenLimit {
                    window: Arc::new(FixedWindow::new(t.max_tokens, t.window_seconds)),
                    scope: t.scope,
                    user_headers,
                    depth,
                }
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.global.is_none() && self.ip.is_none() && self.user.is_none() && self.tokens.is_none()
    }

    /// The windows of this request, in the order they are checked: the global, address and
    /// user request limits, then the token limit.
    pub fn checks(&self, peer: Option<IpAddr>, headers: &Headers, ids: &Ids<'_>, out: &mut Vec<Check>) {
        if let Some(g) = &self.global {
            out.push(Check::new("global_rate_limit", "*", g, false));
        }
        let depth = self.ip.as_ref().map_or(0, |(_, d)| *d);
        if let Some((w, depth)) = &self.ip {
            let ip = bounded_key("", &client_ip(peer, forwarded_for(headers).as_deref(), *depth));
            out.push(Check::new("ip_rate_limit", ip, w, false));
        }
        if let Some((w, names)) = &self.user {
            out.push(Check::new(
                "user_rate_limit",
                user_key(names, peer, headers, depth),
                w,
                false,
            ));
        }
        if let Some(t) = &self.tokens {
            let key = match t.scope {
                TokenScope::CallerKey => bounded_key("key:", ids.caller.unwrap_or("none")),
                TokenScope::ConsumerGroup => bounded_key("group:", ids.group.unwrap_or("none")),
                TokenScope::Global => "*".to_owned(),
                TokenScope::Ip => bounded_key("", &client_ip(peer, forwarded_for(headers).as_deref(), t.depth)),
                TokenScope::User => user_key(&t.user_headers, peer, headers, t.depth),
            };
            out.push(Check::new("token_rate_limit", key, &t.window, true));
        }
    }
}

/// `X-Forwarded-For`, every line of it in order (a proxy that adds a line of its own after
/// the client's must not leave the client's first line deciding).
fn forwarded_for(headers: &Headers) -> Option<std::borrow::Cow<'_, str>> {
    let mut lines = headers.get_all("x-forwarded-for");
    let first = lines.next()?;
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        return Some(std::borrow::Cow::Borrowed(first));
    }
    Some(std::borrow::Cow::Owned(
        std::iter::once(first).chain(rest).collect::<Vec<_>>().join(", "),
    ))
}

/// The `user_rate_limit` key of a request: the first identifying header present, else
/// the client address (a request without the header is limited per address, never
/// unlimited).
fn user_key(names: &[String], peer: Option<IpAddr>, headers: &Headers, depth: u32) -> String {
    match names.iter().find_map(|n| headers.get(n)) {
        Some(user) => bounded_key("u:", user),
        None => bounded_key("ip:", &client_ip(peer, forwarded_for(headers).as_deref(), depth)),
    }
}

/// The client address: the socket peer, or with `depth` trusted proxies the address that
/// many hops from the right of `X-Forwarded-For`.
pub fn client_ip(peer: Option<IpAddr>, forwarded: Option<&str>, depth: u32) -> String {
    if depth > 0
        && let Some(xff) = forwarded
    {
        let hops: Vec<&str> = xff.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
        if let Some(h) = hops.len().checked_sub(depth as usize).and_then(|i| hops.get(i)) {
            return (*h).to_owned();
        }
    }
    peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_windows_are_epoch_aligned() {
        let w = FixedWindow::new(2, 60);
        assert!(w.hit("a", 120, "g").allowed);
        let v = w.hit("a", 150, "g");
        assert!(v.allowed && v.remaining == 0 && v.reset == 30);
        let refused = w.hit("a", 179, "g");
        assert!(!refused.allowed);
        assert_eq!(refused.reset, 1);
        assert!(w.hit("b", 179, "g").allowed, "keys are independent");
        assert!(
            w.hit("a", 180, "g").allowed,
            "a new window starts at the epoch boundary"
        );
    }

    #[test]
    fn token_windows_refuse_once_spent_and_reset_at_the_boundary() {
        let w = FixedWindow::new(100, 60);
        assert!(w.peek("u", 0, "t").allowed);
        w.add("u", 60, 1);
        let v = w.peek("u", 2, "t");
        assert!(v.allowed && v.remaining == 40);
        // One answer may overshoot; the next request is refused.
        w.add("u", 70, 3);
        let v = w.peek("u", 4, "t");
        assert!(!v.allowed && v.remaining == 0 && v.reset == 56);
        assert!(w.peek("other", 4, "t").allowed);
        assert!(w.peek("u", 60, "t").allowed, "new window");
    }

    #[test]
    fn token_scopes_key_by_caller_and_by_group() {
        let limits = |scope: &str| {
            let yaml = format!(
                "pack: {{name: t, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\ntoken_rate_limit: {{max_tokens: 10, window_seconds: 60, scope: {scope}}}\n\
                 caller_auth: {{mode: keys, keys: [{{id: a, secret_key_ref: {{env: A}}}}]}}\n"
            );
            let outcome = kt_policy::config::load_sources(&[kt_policy::config::Source {
                name: "t.yaml".into(),
                text: yaml,
            }]);
            Limits::new(&outcome.config.expect("valid config"))
        };
        let h = Headers::new();
        let ids = |caller, group| Ids { caller, group };
        let token_check = |l: &Limits, i: &Ids<'_>| {
            let mut out = Vec::new();
            l.checks(None, &h, i, &mut out);
            out.pop().filter(|c| c.tokens).expect("a token check")
        };
        let key = |l: &Limits, i: &Ids<'_>| token_check(l, i).key;
        let by_group = limits("consumer_group");
        assert_eq!(key(&by_group, &ids(Some("a"), Some("eu"))), "group:eu");
        assert_eq!(key(&by_group, &ids(Some("b"), None)), "group:none");
        let eu = token_check(&by_group, &ids(None, Some("eu")));
        eu.window.add(&eu.key, 10, 0);
        assert!(!eu.local(0).allowed);
        assert!(token_check(&by_group, &ids(None, Some("us"))).local(0).allowed);
        let by_key = limits("caller_key");
        assert_eq!(key(&by_key, &ids(Some("a"), Some("eu"))), "key:a");
    }

    #[test]
    fn a_request_refused_by_one_limit_uses_up_no_other() {
        let global = Arc::new(FixedWindow::new(100, 60));
        let key = Arc::new(FixedWindow::new(1, 60));
        let checks = [
            Check::new("global_rate_limit", "*", &global, false),
            Check::new("caller_key_rate_limit", "k", &key, false),
        ];
        assert!(local_verdict(&checks, 0).is_some_and(|v| v.allowed));
        for _ in 0..5 {
            let v = local_verdict(&checks, 0).expect("verdict");
            assert_eq!((v.allowed, v.scope), (false, "caller_key_rate_limit"));
        }
        // Only the admitted request was counted globally.
        assert_eq!(global.peek("*", 0, "g").remaining, 99);
        // Long values are hashed the same way in every process (replicas share keys).
        assert_eq!(bounded_key("u:", &"x".repeat(100)), "u:#09ecb6ebc8bcefc733f6f2ec64");
    }

    #[test]
    fn every_forwarded_for_line_counts() {
        let h: Headers = [("X-Forwarded-For", "6.6.6.6"), ("x-forwarded-for", "1.1.1.1")]
            .into_iter()
            .collect();
        let joined = forwarded_for(&h).expect("present");
        assert_eq!(joined, "6.6.6.6, 1.1.1.1");
        // One trusted proxy appended its own line: the address it saw is the client's.
        assert_eq!(client_ip(None, Some(&joined), 1), "1.1.1.1");
        assert!(forwarded_for(&Headers::new()).is_none());
    }

    #[test]
    fn client_ip_honours_trusted_proxy_depth() {
        let peer = Some(IpAddr::from([10, 0, 0, 9]));
        assert_eq!(client_ip(peer, Some("1.1.1.1, 2.2.2.2"), 0), "10.0.0.9");
        assert_eq!(client_ip(peer, Some("1.1.1.1, 2.2.2.2"), 1), "2.2.2.2");
        assert_eq!(client_ip(peer, Some("1.1.1.1, 2.2.2.2"), 2), "1.1.1.1");
        assert_eq!(
            client_ip(peer, Some("1.1.1.1"), 3),
            "10.0.0.9",
            "fewer hops than trusted: the peer"
        );
    }

    #[test]
    fn key_maps_stay_bounded_and_new_keys_share_an_overflow_count() {
        let w = FixedWindow::new(3, 60);
        for i in 0..MAX_KEYS + 500 {
            w.hit(&format!("k{i}"), 0, "u");
        }
        let n = w.counts.lock().expect("lock").map.len();
        assert!(n <= MAX_KEYS + 1, "{n} keys kept");
        // The newest keys are limited together: three more requests, then refusals.
        let refused = (0..10).filter(|i| !w.hit(&format!("late{i}"), 1, "u").allowed).count();
        assert!(refused >= 7, "overflow keys are limited together: {refused}");
        // A new window makes room again.
        assert!(w.hit("fresh", 61, "u").allowed);
        assert!(w.counts.lock().expect("lock").map.contains_key("fresh"));
    }

    #[test]
    fn long_keys_are_hashed_and_missing_users_fall_back_to_the_address() {
        let long = "x".repeat(10_000);
        let k = bounded_key("u:", &long);
        assert!(k.len() < 40 && k.starts_with("u:#"), "{k}");
        assert_eq!(k, bounded_key("u:", &long), "stable");
        assert_ne!(k, bounded_key("u:", &"y".repeat(10_000)));
        let yaml = "pack: {name: l, version: 1.0.0, enabled: true}\npolicies: {chain: []}\nuser_rate_limit: {max_requests: 2, window_seconds: 60, header_names: [x-user-id]}\n";
        let c = kt_policy::config::load_sources(&[kt_policy::config::Source {
            name: "l.yaml".into(),
            text: yaml.into(),
        }])
        .config
        .expect("valid");
        let limits = Limits::new(&c);
        let none = Headers::default();
        let check = |peer: Option<IpAddr>, h: &Headers| {
            let mut out = Vec::new();
            limits.checks(peer, h, &Ids::default(), &mut out);
            decisive(out.iter().map(|c| c.local(0)))
        };
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(check(a, &none).is_none_or(|v| v.allowed));
        assert!(check(a, &none).is_none_or(|v| v.allowed));
        let third = check(a, &none).expect("limited");
        assert!(!third.allowed, "no header: limited per address, not unlimited");
        assert_eq!(third.scope, "user_rate_limit");
        assert!(
            check(b, &none).is_none_or(|v| v.allowed),
            "another address has its own count"
        );
    }
}
