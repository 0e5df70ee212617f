//! Request rate limits checked before any upstream work: `global_rate_limit`,
//! `ip_rate_limit` (client address, or the `X-Forwarded-For` hop `trust_proxy_depth` from
//! the right) and `user_rate_limit` (first present header of `header_names`). Windows are
//! epoch-aligned and fixed, as documented; a refusal carries the seconds to the next window.
//! Counters live with the gateway, not the policy, so a reload with the same quotas keeps
//! them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use kt_policy::Headers;
use kt_policy::config::PolicyConfig;
use kt_policy::config::TokenScope;

/// One fixed-window quota and its counters.
#[derive(Debug)]
pub struct FixedWindow {
    pub max: u64,
    pub window: u64,
    /// key → (window index, requests counted in it)
    counts: Mutex<HashMap<String, (u64, u64)>>,
}

/// The answer to "may this request go on?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the current window ends.
    pub reset: u64,
    /// Which limit refused (for the error message).
    pub scope: &'static str,
}

impl FixedWindow {
    pub fn new(max: u64, window: u64) -> Self {
        FixedWindow {
            max,
            window: window.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The count of `key` in window `idx`, starting it at zero in a new window. Old windows'
    /// keys are dropped once the map grows large.
    fn slot<'m>(counts: &'m mut HashMap<String, (u64, u64)>, key: &str, idx: u64) -> &'m mut u64 {
        if counts.len() > 100_000 {
            counts.retain(|_, (w, _)| *w == idx);
        }
        let entry = counts.entry(key.to_owned()).or_insert((idx, 0));
        if entry.0 != idx {
            *entry = (idx, 0);
        }
        &mut entry.1
    }

    /// The answer for a window with `used` counted at Unix time `now`.
    fn verdict(&self, allowed: bool, used: u64, now: u64, scope: &'static str) -> Verdict {
        Verdict {
            allowed,
            limit: self.max,
            remaining: self.max.saturating_sub(used),
            reset: (now / self.window + 1) * self.window - now,
            scope,
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
        let used = counts.get(key).filter(|(w, _)| *w == idx).map_or(0, |(_, n)| *n);
        self.verdict(used < self.max, used, now, scope)
    }

    /// Counts `n` units for `key` in the current window.
    pub fn add(&self, key: &str, n: u64, now: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let used = Self::slot(&mut counts, key, now / self.window);
        *used = used.saturating_add(n);
    }
}

/// The limits of one configuration.
#[derive(Debug, Default)]
pub struct Limits {
    /// The quotas these were built from: equal quotas keep the counters across reloads.
    pub key: String,
    global: Option<FixedWindow>,
    ip: Option<(FixedWindow, u32)>,
    user: Option<(FixedWindow, Vec<String>)>,
    tokens: Option<TokenLimit>,
}

/// `token_rate_limit`: prompt plus completion tokens per window, counted after each answer
/// and checked before the next request.
#[derive(Debug)]
struct TokenLimit {
    window: FixedWindow,
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
                .map(|g| FixedWindow::new(g.max_requests, g.window_seconds)),
            ip: c
                .ip_rate_limit
                .as_ref()
                .map(|g| (FixedWindow::new(g.max_requests, g.window_seconds), g.trust_proxy_depth)),
            user: c.user_rate_limit.as_ref().map(|g| {
                (
                    FixedWindow::new(g.max_requests, g.window_seconds),
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
                    window: FixedWindow::new(t.max_tokens, t.window_seconds),
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

    /// The token-limit key of a request, and whether its window still has tokens left.
    /// `None` when no token limit is configured.
    pub fn check_tokens(&self, peer: Option<IpAddr>, headers: &Headers, now: u64) -> Option<(String, Verdict)> {
        let t = self.tokens.as_ref()?;
        let key = match t.scope {
            TokenScope::Global | TokenScope::ConsumerGroup => "*".to_owned(),
            TokenScope::Ip => client_ip(peer, headers.get("x-forwarded-for"), t.depth),
            TokenScope::User => t
                .user_headers
                .iter()
                .find_map(|n| headers.get(n))
                .unwrap_or("anonymous")
                .to_owned(),
        };
        let v = t.window.peek(&key, now, "token_rate_limit");
        Some((key, v))
    }

    /// Counts `tokens` used by a finished request against `key`'s window.
    pub fn add_tokens(&self, key: &str, tokens: u64, now: u64) {
        if let Some(t) = &self.tokens {
            t.window.add(key, tokens, now);
        }
    }

    /// Checks every configured limit; the first refusal wins, else the tightest headroom is
    /// reported.
    pub fn check(&self, peer: Option<IpAddr>, headers: &Headers, now: u64) -> Option<Verdict> {
        let mut tightest: Option<Verdict> = None;
        let mut consider = |v: Verdict| -> Option<Verdict> {
            if !v.allowed {
                return Some(v);
            }
            if tightest.as_ref().is_none_or(|t| v.remaining < t.remaining) {
                tightest = Some(v);
            }
            None
        };
        if let Some(g) = &self.global
            && let Some(refused) = consider(g.hit("*", now, "global_rate_limit"))
        {
            return Some(refused);
        }
        if let Some((w, depth)) = &self.ip {
            let ip = client_ip(peer, headers.get("x-forwarded-for"), *depth);
            if let Some(refused) = consider(w.hit(&ip, now, "ip_rate_limit")) {
                return Some(refused);
            }
        }
        if let Some((w, names)) = &self.user
            && let Some(user) = names.iter().find_map(|n| headers.get(n))
            && let Some(refused) = consider(w.hit(user, now, "user_rate_limit"))
        {
            return Some(refused);
        }
        tightest
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
}
