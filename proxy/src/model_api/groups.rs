//! Consumer groups (`consumer_groups`): each request belongs to at most one group, the
//! first whose `match` it meets (all of the given conditions: its caller key id among
//! `gateway_key_ids`, and every listed header present once with exactly that value), else
//! the group named `default`, else none (the top-level settings alone apply). A group may
//! run its own policy chain, narrow the provider targets and models, and carry its own
//! request and token limits, shared by every request of the group and checked beside the
//! gateway's other limits.

use std::sync::Arc;

use kt_policy::CompiledPolicy;
use kt_policy::config::{ConsumerGroupRule, PolicyConfig};
use pingora::http::RequestHeader;

use crate::error::RequestError;
use crate::limits::{Check, FixedWindow};

/// The name of the group that catches unmatched requests.
pub const DEFAULT_GROUP: &str = "default";

/// One consumer group, resolved once per configuration.
#[derive(Debug)]
pub struct Group {
    pub name: String,
    key_ids: Option<Vec<String>>,
    /// (lower-cased header name, exact value)
    headers: Vec<(String, String)>,
    /// The group's own chain, compiled; `None`: the configuration's chain.
    pub policy: Option<CompiledPolicy>,
    /// Target ids the group may use; `None`: every target.
    providers: Option<Vec<String>>,
    /// Models (as the client names them) the group may use; `None`: every model.
    allowed_models: Option<Vec<String>>,
    requests: Option<Arc<FixedWindow>>,
    /// Tokens per minute and per day, counted from the usage providers report.
    tokens: Vec<(Arc<FixedWindow>, &'static str)>,
}

/// The consumer groups of one configuration.
#[derive(Debug, Default)]
pub struct Groups {
    groups: Vec<Group>,
    default: Option<usize>,
}

impl Groups {
    /// The groups `config` declares (`None` when it declares none); group chains are
    /// compiled from `policy`.
    pub fn of(config: &PolicyConfig, policy: &CompiledPolicy) -> Result<Option<Groups>, String> {
        let rules = config.consumer_groups.as_deref().unwrap_or(&[]);
        if rules.is_empty() {
            return Ok(None);
        }
        let mut out = Groups::default();
        for rule in rules {
            if out.groups.iter().any(|g| g.name == rule.name) {
                return Err(format!("consumer group '{}' is declared twice", rule.name));
            }
            if rule.name == DEFAULT_GROUP {
                out.default = Some(out.groups.len());
            }
            out.groups.push(Group::of(rule, policy)?);
        }
        Ok(Some(out))
    }

    /// The group of a request with these headers and caller key id.
    pub fn resolve(&self, head: &RequestHeader, caller: Option<&str>) -> Option<&Group> {
        self.groups
            .iter()
            .enumerate()
            .find(|(i, g)| Some(*i) != self.default && g.matches(head, caller))
            .map(|(_, g)| g)
            .or_else(|| self.default.and_then(|i| self.groups.get(i)))
    }

    /// The group named `name`.
    pub fn named(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter()
    }

    /// Keeps the counts of groups that `old` had with the same name and quotas.
    pub fn carry(&mut self, old: &Groups) {
        for g in &mut self.groups {
            let Some(before) = old.groups.iter().find(|o| o.name == g.name) else {
                continue;
            };
            if let Some(w) = g.requests.take() {
                g.requests = Some(FixedWindow::carried(w, before.requests.as_ref()));
            }
            for (w, scope) in &mut g.tokens {
                let prior = before.tokens.iter().find(|(_, s)| s == scope).map(|(w, _)| w);
                *w = FixedWindow::carried(Arc::clone(w), prior);
            }
        }
    }
}

impl Group {
    fn of(rule: &ConsumerGroupRule, policy: &CompiledPolicy) -> Result<Group, String> {
        let compiled = match &rule.chain {
            Some(chain) => Some(
                policy
                    .for_chain(chain)
                    .map_err(|e| format!("consumer group '{}': {e}", rule.name))?,
            ),
            None => None,
        };
        let limits = rule.rate_limits.as_ref();
        let window = |n: Option<u64>, seconds: u64| n.map(|n| Arc::new(FixedWindow::new(n, seconds)));
        let tokens = [
            (
                window(limits.and_then(|l| l.tokens_per_minute), 60),
                "consumer_group_tokens_per_minute",
            ),
            (
                window(limits.and_then(|l| l.tokens_per_day), 86_400),
                "consumer_group_tokens_per_day",
            ),
        ]
        .into_iter()
        .filter_map(|(w, scope)| w.map(|w| (w, scope)))
        .collect();
        Ok(Group {
            name: rule.name.clone(),
            key_ids: rule.matcher.gateway_key_ids.clone(),
            headers: header_pairs(rule.matcher.headers.as_ref()),
            policy: compiled,
            providers: rule.providers.clone(),
            allowed_models: rule.allowed_models.clone(),
            requests: window(limits.and_then(|l| l.requests_per_minute), 60),
            tokens,
        })
    }

    /// Whether a request meets every condition of the group's `match`; a group with no
    /// condition matches nothing (only `default` catches the rest). A header sent more
    /// than once never matches: which copy counts is not guessed.
    fn matches(&self, head: &RequestHeader, caller: Option<&str>) -> bool {
        if self.key_ids.is_none() && self.headers.is_empty() {
            return false;
        }
        let key_ok = self
            .key_ids
            .as_ref()
            .is_none_or(|ids| caller.is_some_and(|c| ids.iter().any(|i| i == c)));
        key_ok && headers_match(head, &self.headers)
    }

    /// The group's own windows, shared by all its requests: its request limit, then its
    /// token limits.
    pub(crate) fn checks(&self, out: &mut Vec<Check>) {
        if let Some(w) = &self.requests {
            out.push(Check::new("consumer_group_rate_limit", self.name.as_str(), w, false));
        }
        for (w, scope) in &self.tokens {
            out.push(Check::new(scope, self.name.as_str(), w, true));
        }
    }

    /// Refuses a model the group may not use (`model` as the client sent it).
    pub(crate) fn allows(&self, model: Option<&str>) -> Result<(), RequestError> {
        super::caller::allowlist(self.allowed_models.as_deref(), model, || {
            format!("consumer group '{}'", self.name)
        })
    }

    /// Whether the group may send requests to target `id`.
    pub(crate) fn uses_target(&self, id: &str) -> bool {
        self.providers.as_ref().is_none_or(|p| p.iter().any(|t| t == id))
    }
}

/// Whether each (lower-cased name, value) header is present exactly once with exactly
/// that value: no trimming or folding, and a repeated header never matches.
pub(crate) fn headers_match(head: &RequestHeader, wanted: &[(String, String)]) -> bool {
    wanted.iter().all(|(name, want)| {
        let mut values = head.headers.get_all(name.as_str()).into_iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.as_bytes() == want.as_bytes(),
            _ => false,
        }
    })
}

/// `match.headers` as (lower-cased name, value) pairs.
pub(crate) fn header_pairs(h: Option<&kt_policy::config::HeaderMatch>) -> Vec<(String, String)> {
    h.into_iter()
        .flatten()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Verdict;
    use kt_policy::config::{Source, load_sources};

    fn groups(yaml: &str) -> Groups {
        let base = "pack: {name: g, version: 1.0.0, enabled: true}\npolicies: {chain: []}\n\
            caller_auth: {mode: keys, keys: [{id: k, secret_key_ref: {env: K}}, {id: key-a, secret_key_ref: {env: A}}, \
            {id: key-b, secret_key_ref: {env: B}}]}\n";
        let outcome = load_sources(&[Source {
            name: "t.yaml".into(),
            text: format!("{base}{yaml}"),
        }]);
        let config = outcome.config.expect("valid config");
        let policy = CompiledPolicy::compile(config.clone()).expect("compiles");
        Groups::of(&config, &policy).expect("groups").expect("declared")
    }

    fn head(headers: &[(&str, &str)]) -> RequestHeader {
        let mut h = RequestHeader::build("POST", b"/v1/chat/completions", None).expect("head");
        for (k, v) in headers {
            h.append_header(k.to_string(), *v).expect("header");
        }
        h
    }

    const TEAMS: &str = "consumer_groups:
  - {name: clinic, match: {headers: {X-Tenant: healthcare}}, allowed_models: [m1]}
  - {name: team-a, match: {gateway_key_ids: [key-a]}}
  - {name: team-b-eu, match: {gateway_key_ids: [key-b], headers: {x-region: eu}}}
  - {name: default, rate_limits: {requests_per_minute: 2}}
";

    fn group_of<'g>(g: &'g Groups, headers: &[(&str, &str)], caller: Option<&str>) -> &'g str {
        g.resolve(&head(headers), caller).map_or("(none)", |g| g.name.as_str())
    }

    #[test]
    fn the_first_matching_group_wins_and_default_takes_the_rest() {
        let g = groups(TEAMS);
        assert_eq!(group_of(&g, &[("x-tenant", "healthcare")], Some("key-a")), "clinic");
        assert_eq!(group_of(&g, &[], Some("key-a")), "team-a");
        assert_eq!(group_of(&g, &[("X-Region", "eu")], Some("key-b")), "team-b-eu");
        // Every condition must hold: key-b without the header is not team-b-eu.
        assert_eq!(group_of(&g, &[], Some("key-b")), "default");
        assert_eq!(group_of(&g, &[("x-region", "eu")], None), "default");
        assert_eq!(group_of(&g, &[], None), "default");
    }

    #[test]
    fn header_values_match_exactly_and_once() {
        let g = groups(TEAMS);
        for disguised in ["Healthcare", "healthcare ", "health\u{200b}care", "ｈealthcare"] {
            assert_eq!(
                group_of(&g, &[("x-tenant", disguised)], None),
                "default",
                "{disguised:?}"
            );
        }
        let twice = [("x-tenant", "healthcare"), ("x-tenant", "healthcare")];
        assert_eq!(group_of(&g, &twice, None), "default");
        let mixed = [("x-tenant", "other"), ("x-tenant", "healthcare")];
        assert_eq!(group_of(&g, &mixed, None), "default");
    }

    #[test]
    fn without_a_default_unmatched_requests_have_no_group() {
        let g = groups("consumer_groups: [{name: a, match: {gateway_key_ids: [k]}}]\n");
        assert_eq!(group_of(&g, &[], Some("other")), "(none)");
        assert_eq!(group_of(&g, &[], Some("k")), "a");
    }

    #[test]
    fn a_group_allowlist_refuses_other_models() {
        let g = groups(TEAMS);
        let clinic = g.iter().find(|g| g.name == "clinic").expect("clinic");
        assert!(clinic.allows(Some("m1")).is_ok());
        let e = clinic.allows(Some("m2")).expect_err("m2 refused");
        assert_eq!((e.status(), e.code()), (403, "model_not_allowed"));
        assert!(clinic.allows(None).is_err());
    }

    #[test]
    fn group_limits_are_shared_by_the_group() {
        let g = groups(
            "consumer_groups: [{name: a, match: {gateway_key_ids: [k]}, rate_limits: {requests_per_minute: 2, tokens_per_minute: 100}}]\n",
        );
        let a = g.iter().next().expect("a");
        let now = 6_000;
        let mut checks = Vec::new();
        a.checks(&mut checks);
        let scopes: Vec<&str> = checks.iter().map(|c| c.scope).collect();
        assert_eq!(
            scopes,
            ["consumer_group_rate_limit", "consumer_group_tokens_per_minute"]
        );
        let run = |now| checks.iter().map(|c| c.local(now)).collect::<Vec<_>>();
        assert!(run(now).iter().all(|v| v.allowed));
        checks[1].window.add(&checks[1].key, 100, now);
        let refused: Vec<Verdict> = run(now).into_iter().filter(|v| !v.allowed).collect();
        let refused: Vec<&str> = refused.iter().map(|v| v.scope).collect();
        assert_eq!(refused, ["consumer_group_tokens_per_minute"]);
        // Two requests were counted: the third is refused too.
        assert!(!run(now)[0].allowed);
        // A new minute starts afresh.
        assert!(run(now + 60).iter().all(|v| v.allowed));
    }

    #[test]
    fn counts_carry_over_to_a_group_with_the_same_quota_only() {
        let yaml = |rpm: u32| {
            format!(
                "consumer_groups: [{{name: a, match: {{gateway_key_ids: [k]}}, rate_limits: {{requests_per_minute: {rpm}}}}}]\n"
            )
        };
        let old = groups(&yaml(2));
        let mut checks = Vec::new();
        old.iter().next().expect("a").checks(&mut checks);
        assert!(checks[0].local(60).allowed && checks[0].local(60).allowed);
        let counted = |g: &Groups| {
            let mut c = Vec::new();
            g.iter().next().expect("a").checks(&mut c);
            c[0].window.peek("a", 60, "t").remaining
        };
        let mut same = groups(&yaml(2));
        same.carry(&old);
        assert_eq!(counted(&same), 0, "the two requests are still counted");
        let mut other = groups(&yaml(5));
        other.carry(&old);
        assert_eq!(counted(&other), 5, "a new quota starts afresh");
    }

    #[test]
    fn a_group_chain_is_compiled() {
        let g = groups(
            "policy: {dlp-filter: {blocked_terms: [secret]}}\nconsumer_groups: [{name: a, match: {gateway_key_ids: [k]}, chain: [dlp-filter]}]\n",
        );
        let a = g.iter().next().expect("a");
        let kinds: Vec<&str> = a.policy.as_ref().expect("own chain").chain_kinds().collect();
        assert_eq!(kinds, ["dlp-filter"]);
    }
}
