//! Route rules (`routes`): the first rule whose `match` a model request meets (path
//! prefix, method, exact single-valued headers; every condition given) may give it its own
//! chain, narrow its provider targets and replace the fallback rules. A consumer group's
//! chain, when it has one, comes before the route's; both groups' and routes' `providers`
//! narrow the targets.

use kt_policy::CompiledPolicy;
use kt_policy::config::{PolicyConfig, RouteRule};
use pingora::http::RequestHeader;

use super::groups::{header_pairs, headers_match};
use crate::routing::FallbackPlan;

/// One route rule, resolved once per configuration.
#[derive(Debug)]
pub struct Route {
    /// The rule's `name`, else `routes[<index>]`.
    pub name: String,
    path_prefix: Option<String>,
    methods: Option<Vec<String>>,
    headers: Vec<(String, String)>,
    /// The rule's own chain, compiled.
    pub policy: Option<CompiledPolicy>,
    /// Target ids the rule allows; `None`: every target.
    providers: Option<Vec<String>>,
    /// The rule's fallback rules, replacing `providers.fallback`.
    pub fallback: Option<FallbackPlan>,
}

/// The route rules of one configuration, in order.
#[derive(Debug, Default)]
pub struct Routes {
    rules: Vec<Route>,
}

impl Routes {
    /// The rules `config` declares (`None` when it declares none).
    pub fn of(config: &PolicyConfig, policy: &CompiledPolicy) -> Result<Option<Routes>, String> {
        let rules = config.routes.as_deref().unwrap_or(&[]);
        if rules.is_empty() {
            return Ok(None);
        }
        let targets = config.providers.as_ref().map_or(0, |p| p.targets.len());
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| Route::of(i, r, policy, targets))
            .collect::<Result<_, _>>()?;
        Ok(Some(Routes { rules }))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.rules.iter()
    }

    /// The first rule a request with this head meets.
    pub fn resolve(&self, head: &RequestHeader) -> Option<&Route> {
        self.rules.iter().find(|r| r.matches(head))
    }
}

impl Route {
    fn of(i: usize, rule: &RouteRule, policy: &CompiledPolicy, targets: usize) -> Result<Route, String> {
        let name = rule.name.clone().unwrap_or_else(|| format!("routes[{i}]"));
        let compiled = match &rule.chain {
            Some(chain) => Some(policy.for_chain(chain).map_err(|e| format!("route '{name}': {e}"))?),
            None => None,
        };
        let m = &rule.matcher;
        Ok(Route {
            path_prefix: m.path_prefix.clone(),
            methods: m
                .methods
                .as_ref()
                .map(|ms| ms.iter().map(|x| x.to_ascii_uppercase()).collect()),
            headers: header_pairs(m.headers.as_ref()),
            policy: compiled,
            providers: rule.providers.clone(),
            fallback: rule.fallback.as_ref().map(|f| FallbackPlan::of(f, targets)),
            name,
        })
    }

    fn matches(&self, head: &RequestHeader) -> bool {
        self.path_prefix
            .as_deref()
            .is_none_or(|p| head.uri.path().starts_with(p))
            && self
                .methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m == head.method.as_str()))
            && headers_match(head, &self.headers)
    }

    /// Whether the rule lets requests go to target `id`.
    pub(crate) fn uses_target(&self, id: &str) -> bool {
        self.providers.as_ref().is_none_or(|p| p.iter().any(|t| t == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kt_policy::config::{Source, load_sources};

    fn routes(yaml: &str) -> Routes {
        let base = "pack: {name: r, version: 1.0.0, enabled: true}\npolicies: {chain: []}\n\
            policy: {dlp-filter: {action: block, blocked_terms: [secret]}}\n\
            providers: {targets: [{id: a, provider: openai-compatible, base_url: 'http://127.0.0.1:9/v1'}, \
            {id: b, provider: openai-compatible, base_url: 'http://127.0.0.1:9/v1'}]}\n";
        let outcome = load_sources(&[Source {
            name: "t.yaml".into(),
            text: format!("{base}{yaml}"),
        }]);
        let config = outcome
            .config
            .unwrap_or_else(|| panic!("invalid: {:?}", outcome.diagnostics));
        let policy = CompiledPolicy::compile(config.clone()).expect("compiles");
        Routes::of(&config, &policy).expect("routes").expect("declared")
    }

    fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut h = RequestHeader::build(method, path.as_bytes(), None).expect("head");
        for (k, v) in headers {
            h.append_header(k.to_string(), *v).expect("header");
        }
        h
    }

    const RULES: &str = "routes:
  - {name: embeddings, match: {path_prefix: /v1/embeddings}, providers: [b], fallback: {enabled: false}}
  - {name: healthcare, match: {path_prefix: /v1/chat/, methods: [post], headers: {X-Tenant: healthcare}}, chain: [dlp-filter]}
  - {match: {headers: {x-tier: free}}, providers: [a]}
";

    fn route_of<'r>(r: &'r Routes, method: &str, path: &str, headers: &[(&str, &str)]) -> &'r str {
        r.resolve(&head(method, path, headers))
            .map_or("(none)", |r| r.name.as_str())
    }

    #[test]
    fn the_first_rule_whose_every_condition_holds_wins() {
        let r = routes(RULES);
        assert_eq!(
            route_of(&r, "POST", "/v1/embeddings", &[("x-tier", "free")]),
            "embeddings"
        );
        let tenant = [("x-tenant", "healthcare")];
        assert_eq!(route_of(&r, "POST", "/v1/chat/completions", &tenant), "healthcare");
        assert_eq!(route_of(&r, "POST", "/v1/chat/completions?x=1", &tenant), "healthcare");
        // A condition that fails: the method, the path, the header's value or its count.
        assert_eq!(route_of(&r, "GET", "/v1/chat/completions", &tenant), "(none)");
        assert_eq!(route_of(&r, "POST", "/v1/messages", &tenant), "(none)");
        assert_eq!(
            route_of(&r, "POST", "/v1/chat/completions", &[("x-tenant", "Healthcare")]),
            "(none)"
        );
        let twice = [("x-tenant", "healthcare"), ("x-tenant", "healthcare")];
        assert_eq!(route_of(&r, "POST", "/v1/chat/completions", &twice), "(none)");
        assert_eq!(route_of(&r, "POST", "/v1/messages", &[("x-tier", "free")]), "routes[2]");
    }

    #[test]
    fn a_rule_carries_its_chain_targets_and_fallback() {
        let r = routes(RULES);
        let emb = r.resolve(&head("POST", "/v1/embeddings", &[])).expect("embeddings");
        assert!(emb.uses_target("b") && !emb.uses_target("a"));
        let fb = emb.fallback.as_ref().expect("own fallback");
        assert_eq!(fb.attempt_budget(), 1);
        assert!(emb.policy.is_none());
        let hc = r
            .resolve(&head("POST", "/v1/chat/completions", &[("x-tenant", "healthcare")]))
            .expect("healthcare");
        let kinds: Vec<&str> = hc.policy.as_ref().expect("chain").chain_kinds().collect();
        assert_eq!(kinds, ["dlp-filter"]);
        assert!(hc.uses_target("a") && hc.uses_target("b") && hc.fallback.is_none());
    }
}
