//! `consumer_groups` and `routes` checks the schema cannot make: unique, well-formed
//! names; a `default` group without conditions and every other group with some; key ids
//! that name configured caller keys; route paths, methods and fallbacks the gateway can
//! apply; a warning (W003) for groups and routes any caller can choose by sending a header.

use std::collections::HashSet;

use serde_json::Value;

use crate::diagnostics::{Code, Diagnostic, did_you_mean};

/// The group that catches unmatched requests.
const DEFAULT: &str = "default";

pub(super) fn check(doc: &Value, out: &mut Vec<Diagnostic>) {
    check_routes(doc, out);
    check_groups(doc, out);
    check_shared_state(doc, out);
    check_budgets(doc, out);
}

/// `budgets.limits`: unique names, and an `id` that names something of its scope.
fn check_budgets(doc: &Value, out: &mut Vec<Diagnostic>) {
    let Some(limits) = doc.pointer("/budgets/limits").and_then(Value::as_array) else {
        return;
    };
    let names = |pointer: &str, field: &str| -> Vec<&str> {
        doc.pointer(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.get(field).and_then(Value::as_str))
            .collect()
    };
    let keys = names("/caller_auth/keys", "id");
    let groups = names("/consumer_groups", "name");
    let mode = super::validate::caller_mode(doc);
    let keyed = mode != "none";
    let mut seen = HashSet::new();
    for (i, b) in limits.iter().enumerate() {
        let at = format!("budgets.limits[{i}]");
        let err = |field: &str, msg: String, help: &str| {
            Diagnostic::error(Code::InvalidValue, &format!("{at}.{field}"), msg).with_help(help)
        };
        if let Some(name) = b.get("name").and_then(Value::as_str) {
            if !well_formed(name) {
                out.push(err(
                    "name",
                    format!("{at}.name '{name}' may hold only letters, digits, '-', '_' and '.' (at most 64)"),
                    "budget names appear in refusals, events and Redis keys",
                ));
            }
            if !seen.insert(name) {
                out.push(err(
                    "name",
                    format!("{at}.name '{name}' is used by an earlier budget"),
                    "give each budget its own name",
                ));
            }
        }
        let scope = b.get("scope").and_then(Value::as_str).unwrap_or("organisation");
        let id = b.get("id").and_then(Value::as_str);
        match (scope, id) {
            ("organisation", Some(_)) => out.push(err(
                "id",
                format!("{at} is the organisation's budget; it takes no id"),
                "remove id, or set scope: caller_key or consumer_group",
            )),
            ("caller_key", _) if !keyed => out.push(err(
                "scope",
                format!("{at} is per caller key but caller_auth.mode is none: no request has a caller key"),
                "set caller_auth.mode: keys with its keys (or control_plane on a managed gateway)",
            )),
            ("caller_key", Some(id)) if mode == "keys" && !keys.contains(&id) => out.push(err(
                "id",
                format!("{at}.id '{id}' is not a caller key id"),
                "use the id of a key under caller_auth.keys",
            )),
            ("consumer_group", Some(id)) if !groups.contains(&id) => out.push(err(
                "id",
                format!("{at}.id '{id}' is not a consumer group"),
                "use the name of a group under consumer_groups",
            )),
            ("provider", Some(id)) if crate::provider_catalog::lookup(id).is_none() => out.push(err(
                "id",
                format!("{at}.id '{id}' is not a provider"),
                "use a provider name as targets name it: openai, anthropic, azure, vllm…",
            )),
            ("consumer_group", None) if groups.is_empty() => out.push(err(
                "scope",
                format!("{at} is per consumer group but no consumer_groups are declared"),
                "declare consumer_groups, or use scope: organisation",
            )),
            _ => {}
        }
    }
}

/// `shared_state`: a Redis URL, and fail modes of known limits; a shared cache needs it.
fn check_shared_state(doc: &Value, out: &mut Vec<Diagnostic>) {
    let shared_cache = doc.pointer("/cache/shared").and_then(Value::as_bool) == Some(true);
    let Some(shared) = doc.get("shared_state") else {
        if shared_cache {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    "cache.shared",
                    "cache.shared keeps answers in shared_state's Redis, but there is no shared_state section"
                        .to_owned(),
                )
                .with_help("add shared_state: {redis_url: 'redis://host:6379'}, or remove cache.shared"),
            );
        }
        return;
    };
    if let Some(url) = shared.get("redis_url").and_then(Value::as_str)
        && !(url.starts_with("redis://") || url.starts_with("rediss://"))
    {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                "shared_state.redis_url",
                "shared_state.redis_url must start with redis:// or rediss://".to_owned(),
            )
            .with_help("e.g. redis://127.0.0.1:6379, or leave it out and set KEEPTRUSTS_REDIS_URL"),
        );
    }
    for scope in shared
        .get("fail_modes")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
    {
        if !super::LIMIT_SCOPES.contains(&scope.as_str()) {
            let mut d = Diagnostic::error(
                Code::InvalidValue,
                &format!("shared_state.fail_modes.{scope}"),
                format!("shared_state.fail_modes names '{scope}', which is not a limit"),
            )
            .with_help(format!("limits: {}", super::LIMIT_SCOPES.join(", ")));
            if let Some(s) = did_you_mean(scope, super::LIMIT_SCOPES) {
                d = d.with_help(format!("Did you mean '{s}'?"));
            }
            out.push(d);
        }
    }
}

/// HTTP methods a route may name.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

fn check_routes(doc: &Value, out: &mut Vec<Diagnostic>) {
    let Some(routes) = doc.get("routes").and_then(Value::as_array) else {
        return;
    };
    let err = |path: String, msg: String, help: &str| Diagnostic::error(Code::InvalidValue, &path, msg).with_help(help);
    let mut seen = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if let Some(name) = r.get("name").and_then(Value::as_str)
            && !seen.insert(name)
        {
            out.push(err(
                format!("{at}.name"),
                format!("{at}.name '{name}' is used by an earlier route"),
                "give each route its own name (decision events carry it)",
            ));
        }
        let m = r.get("match");
        if let Some(prefix) = m.and_then(|m| m.get("path_prefix")).and_then(Value::as_str)
            && !prefix.starts_with('/')
        {
            out.push(err(
                format!("{at}.match.path_prefix"),
                format!("{at}.match.path_prefix '{prefix}' does not start with '/', so no request path matches it"),
                "e.g. path_prefix: /v1/chat/",
            ));
        }
        for (j, method) in m
            .and_then(|m| m.get("methods"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(method) = method.as_str() else { continue };
            if !METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                out.push(err(
                    format!("{at}.match.methods[{j}]"),
                    format!("{at}.match.methods[{j}] '{method}' is not an HTTP method"),
                    "model requests are POST",
                ));
            }
        }
        if r.pointer("/fallback/order").is_some_and(|o| !o.is_null()) {
            out.push(err(
                format!("{at}.fallback.order"),
                format!("{at}.fallback.order is not applied per route: the order of targets is the model's"),
                "narrow the targets with the route's providers, or set providers.fallback.order",
            ));
        }
        if m.and_then(|m| m.get("headers"))
            .and_then(Value::as_object)
            .is_some_and(|h| !h.is_empty())
        {
            out.push(
                Diagnostic::error(
                    Code::ClientChosenGroup,
                    &format!("{at}.match.headers"),
                    format!(
                        "{at} is chosen by request headers: any caller that sends them gets the route's chain, providers and fallback"
                    ),
                )
                .with_help("match the route by path instead, or set the headers only at a proxy you trust"),
            );
        }
    }
}

fn check_groups(doc: &Value, out: &mut Vec<Diagnostic>) {
    let Some(groups) = doc.get("consumer_groups").and_then(Value::as_array) else {
        return;
    };
    let auth = doc.get("caller_auth");
    let mode = super::validate::caller_mode(doc);
    let key_ids: Vec<&str> = auth
        .and_then(|a| a.get("keys"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|k| k.get("id").and_then(Value::as_str))
        .collect();
    let err = |path: String, msg: String, help: &str| Diagnostic::error(Code::InvalidValue, &path, msg).with_help(help);
    let mut seen = HashSet::new();
    for (i, g) in groups.iter().enumerate() {
        let at = format!("consumer_groups[{i}]");
        let name = g.get("name").and_then(Value::as_str).unwrap_or_default();
        if !name.is_empty() && !well_formed(name) {
            out.push(err(
                format!("{at}.name"),
                format!("{at}.name '{name}' may hold only letters, digits, '-', '_' and '.' (at most 64)"),
                "group names label metrics and events",
            ));
        }
        if name == "none" {
            out.push(err(
                format!("{at}.name"),
                format!("{at}.name 'none' is reserved (it labels requests of no group)"),
                "pick another name",
            ));
        }
        if !name.is_empty() && !seen.insert(name) {
            out.push(err(
                format!("{at}.name"),
                format!("{at}.name '{name}' is used by an earlier group"),
                "give each group its own name",
            ));
        }
        let matcher = g.get("match");
        let ids = matcher.and_then(|m| m.get("gateway_key_ids")).and_then(Value::as_array);
        let headers = matcher.and_then(|m| m.get("headers")).and_then(Value::as_object);
        let conditions = ids.is_some_and(|a| !a.is_empty()) || headers.is_some_and(|h| !h.is_empty());
        match (name == DEFAULT, conditions) {
            (true, true) => out.push(err(
                format!("{at}.match"),
                format!("{at} is the default group, which takes every unmatched request; it has no match"),
                "remove its match, or rename the group",
            )),
            // Under control_plane, gateway keys created with --consumer-group choose it.
            (false, false) if mode != "control_plane" => out.push(err(
                format!("{at}.match"),
                format!("{at} ('{name}') has no match conditions, so no request ever belongs to it"),
                "add match.gateway_key_ids or match.headers, or name it default",
            )),
            _ => {}
        }
        if ids.is_some_and(|a| a.is_empty()) {
            out.push(err(
                format!("{at}.match.gateway_key_ids"),
                format!("{at}.match.gateway_key_ids is empty, so it matches no caller"),
                "list caller key ids, or remove the field",
            ));
        }
        for (j, id) in ids.into_iter().flatten().enumerate() {
            let Some(id) = id.as_str() else { continue };
            let path = format!("{at}.match.gateway_key_ids[{j}]");
            if mode == "none" {
                out.push(err(
                    path,
                    format!("{at} matches caller key '{id}' but caller_auth.mode is none: no request has a caller key"),
                    "set caller_auth.mode: keys with its keys, or match by headers",
                ));
            } else if mode == "keys" && !key_ids.contains(&id) {
                let mut d = err(
                    path,
                    format!("{at} matches caller key '{id}', which caller_auth.keys does not declare"),
                    "use the id of a key under caller_auth.keys",
                );
                if let Some(s) = did_you_mean(id, key_ids.iter().copied()) {
                    d = d.with_help(format!("Did you mean '{s}'?"));
                }
                out.push(d);
            }
        }
        if name != DEFAULT && headers.is_some_and(|h| !h.is_empty()) && ids.is_none_or(|a| a.is_empty()) {
            out.push(
                Diagnostic::error(
                    Code::ClientChosenGroup,
                    &format!("{at}.match.headers"),
                    format!(
                        "{at} ('{name}') is chosen by request headers alone: any caller that sends them gets the group's chain, providers, models and limits"
                    ),
                )
                .with_help("add match.gateway_key_ids too, or set the headers only at a proxy you trust"),
            );
        }
    }
}

/// An empty name is the schema's to report.
fn well_formed(name: &str) -> bool {
    name.is_empty() || super::well_formed_name(name)
}

#[cfg(test)]
mod tests {
    use crate::config::{Source, load_sources};

    /// (code, path) of each diagnostic of a configuration with `extra` appended.
    fn findings(extra: &str) -> Vec<(String, String)> {
        let base = "pack: {name: g, version: 1.0.0, enabled: true}\npolicies: {chain: []}\n";
        let outcome = load_sources(&[Source {
            name: "t.yaml".into(),
            text: format!("{base}{extra}"),
        }]);
        outcome
            .diagnostics
            .iter()
            .map(|d| (d.code.as_str().to_owned(), d.path.clone()))
            .collect()
    }

    const KEYS: &str = "caller_auth: {mode: keys, keys: [{id: key-a, secret_key_ref: {env: A}}, {id: key-b, secret_key_ref: {env: B}}]}\n";

    #[test]
    fn a_sound_layout_passes() {
        let yaml = format!(
            "{KEYS}consumer_groups:\n  - {{name: team-a, match: {{gateway_key_ids: [key-a]}}}}\n  - {{name: eu, match: {{gateway_key_ids: [key-b], headers: {{x-region: eu}}}}}}\n  - {{name: default}}\n"
        );
        assert_eq!(findings(&yaml), Vec::<(String, String)>::new());
    }

    #[test]
    fn each_mistake_is_named() {
        let yaml = format!(
            "{KEYS}consumer_groups:
  - {{name: 'a b', match: {{gateway_key_ids: [key-a]}}}}
  - {{name: none, match: {{gateway_key_ids: [key-a]}}}}
  - {{name: t, match: {{gateway_key_ids: [key-c]}}}}
  - {{name: t, match: {{gateway_key_ids: []}}}}
  - {{name: idle}}
  - {{name: default, match: {{gateway_key_ids: [key-a]}}}}
"
        );
        let got = findings(&yaml);
        for (code, path) in [
            ("E015", "consumer_groups[0].name"),
            ("E015", "consumer_groups[1].name"),
            ("E015", "consumer_groups[2].match.gateway_key_ids[0]"),
            ("E015", "consumer_groups[3].name"),
            ("E015", "consumer_groups[3].match.gateway_key_ids"),
            ("E015", "consumer_groups[4].match"),
            ("E015", "consumer_groups[5].match"),
        ] {
            assert!(
                got.contains(&(code.to_owned(), path.to_owned())),
                "{code} at {path} missing from {got:?}"
            );
        }
    }

    #[test]
    fn key_ids_need_caller_keys() {
        let got = findings("consumer_groups: [{name: a, match: {gateway_key_ids: [k]}}]\n");
        assert_eq!(
            got,
            [(
                "E015".to_owned(),
                "consumer_groups[0].match.gateway_key_ids[0]".to_owned()
            )]
        );
    }

    #[test]
    fn control_plane_keys_choose_groups_and_budgets() {
        // Gateway keys come from the control plane: ids are not known here, and a group
        // without conditions is chosen by keys bound to it.
        let got = findings(
            "caller_auth: {mode: control_plane}\nconsumer_groups:\n  - {name: team-a}\n  - {name: ops, match: {gateway_key_ids: [gk_0123]}}\nbudgets: {limits: [{name: k, scope: caller_key, limit_usd: 1}, {name: one, scope: caller_key, id: gk_0123, limit_usd: 1}]}\ntoken_rate_limit: {max_tokens: 10, window_seconds: 60, scope: caller_key}\n",
        );
        assert_eq!(got, Vec::<(String, String)>::new());
        // The same group without keys to choose it is still refused.
        let got = findings(
            "caller_auth: {mode: keys, keys: [{id: a, secret_key_ref: {env: A}}]}\nconsumer_groups: [{name: team-a}]\n",
        );
        assert_eq!(got, [("E015".to_owned(), "consumer_groups[0].match".to_owned())]);
    }

    #[test]
    fn routes_the_gateway_cannot_apply_are_refused() {
        let got = findings(
            "routes:\n  - {name: r, match: {path_prefix: v1/chat, methods: [POST, FETCH]}, fallback: {order: [a]}}\n  - {name: r, match: {headers: {x-tenant: t}}}\n",
        );
        for (code, path) in [
            ("E015", "routes[0].match.path_prefix"),
            ("E015", "routes[0].match.methods[1]"),
            ("E015", "routes[0].fallback.order"),
            ("E015", "routes[1].name"),
            ("W003", "routes[1].match.headers"),
        ] {
            assert!(
                got.contains(&(code.to_owned(), path.to_owned())),
                "{code} at {path} missing from {got:?}"
            );
        }
        assert_eq!(got.len(), 5, "{got:?}");
        let sound = findings("routes: [{name: chat, match: {path_prefix: /v1/chat/, methods: [post]}}]\n");
        assert_eq!(sound, Vec::<(String, String)>::new());
    }

    #[test]
    fn shared_state_needs_a_redis_url_and_known_limits() {
        let got = findings("shared_state: {redis_url: 'http://r:6379', fail_modes: {global_rate_limt: closed}}\n");
        assert_eq!(
            got,
            [
                ("E015".to_owned(), "shared_state.redis_url".to_owned()),
                ("E015".to_owned(), "shared_state.fail_modes.global_rate_limt".to_owned()),
            ]
        );
        let sound =
            findings("shared_state: {redis_url: 'redis://127.0.0.1:6379', fail_modes: {token_rate_limit: closed}}\n");
        assert_eq!(sound, Vec::<(String, String)>::new());
        let alone = findings("cache: {shared: true}\n");
        assert_eq!(alone, [("E015".to_owned(), "cache.shared".to_owned())]);
        let shared_cache = findings("cache: {shared: true}\nshared_state: {redis_url: 'redis://127.0.0.1:6379'}\n");
        assert_eq!(shared_cache, Vec::<(String, String)>::new());
        for (leases, refused) in [("0", true), ("1001", true), ("1", false), ("1000", false)] {
            let got = findings(&format!(
                "shared_state: {{redis_url: 'redis://127.0.0.1:6379', lease_requests: {leases}}}\n"
            ));
            let want = if refused {
                vec![("E013".to_owned(), "shared_state.lease_requests".to_owned())]
            } else {
                Vec::new()
            };
            assert_eq!(got, want, "lease_requests: {leases}");
        }
    }

    #[test]
    fn budgets_name_what_their_scope_holds() {
        let got = findings(&format!(
            "{KEYS}consumer_groups: [{{name: eu, match: {{gateway_key_ids: [key-a]}}}}]\nbudgets:\n  limits:\n    - {{name: a, id: x, limit_usd: 1}}\n    - {{name: a, scope: caller_key, id: key-z, limit_usd: 1}}\n    - {{name: c, scope: consumer_group, id: us, limit_usd: 1}}\n    - {{name: d, scope: caller_key, limit_usd: 1}}\n    - {{name: e, scope: consumer_group, id: eu, limit_usd: 1, period: hour, mode: soft}}\n"
        ));
        assert_eq!(
            got,
            [
                ("E015".to_owned(), "budgets.limits[0].id".to_owned()),
                ("E015".to_owned(), "budgets.limits[1].name".to_owned()),
                ("E015".to_owned(), "budgets.limits[1].id".to_owned()),
                ("E015".to_owned(), "budgets.limits[2].id".to_owned()),
            ]
        );
        let providers = findings(
            "budgets: {limits: [{name: p, scope: provider, id: openai, limit_usd: 1}, {name: q, scope: provider, id: opnai, limit_usd: 1}, {name: r, scope: provider, limit_usd: 1}]}\n",
        );
        assert_eq!(providers, [("E015".to_owned(), "budgets.limits[1].id".to_owned())]);
        let unkeyed = findings("budgets: {limits: [{name: k, scope: caller_key, limit_usd: 1}]}\n");
        assert_eq!(unkeyed, [("E015".to_owned(), "budgets.limits[0].scope".to_owned())]);
    }

    #[test]
    fn budget_names_are_well_formed() {
        let got = findings("budgets: {limits: [{name: 'a:b', limit_usd: 1}, {name: '@key', limit_usd: 1}]}\n");
        assert_eq!(
            got,
            [
                ("E015".to_owned(), "budgets.limits[0].name".to_owned()),
                ("E015".to_owned(), "budgets.limits[1].name".to_owned()),
            ]
        );
    }

    #[test]
    fn header_only_groups_are_warned_about() {
        let got = findings("consumer_groups: [{name: clinic, match: {headers: {x-tenant: healthcare}}}]\n");
        assert_eq!(
            got,
            [("W003".to_owned(), "consumer_groups[0].match.headers".to_owned())]
        );
    }
}
