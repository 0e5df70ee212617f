//! Semantic checks: policy kinds in chains (E001, E003, E011, W001), SemVer (E009), target
//! wiring (E007, E008), credential references, regexes (E012) and tool schemas. They read
//! the raw document so they still run, and still report, when a structural check failed
//! elsewhere in the file; ill-typed values are left to the structural check.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::PolicyConfig;
use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::kinds;

fn strs(v: Option<&Value>) -> Vec<(usize, &str)> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .filter_map(|(i, x)| x.as_str().map(|s| (i, s)))
                .collect()
        })
        .unwrap_or_default()
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

/// Checks that need only the raw document.
pub fn check_raw(doc: &Value, out: &mut Vec<Diagnostic>) {
    check_semver(doc, out);
    let blocks: HashSet<&str> = doc
        .get("policy")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut used: HashSet<&str> = HashSet::new();
    check_chain(
        strs(get(doc, &["policies", "chain"])),
        "policies.chain",
        &blocks,
        &mut used,
        out,
    );
    for section in ["routes", "consumer_groups"] {
        if let Some(rules) = doc.get(section).and_then(Value::as_array) {
            for (i, rule) in rules.iter().enumerate() {
                if rule.get("chain").is_some() {
                    check_chain(
                        strs(rule.get("chain")),
                        &format!("{section}[{i}].chain"),
                        &blocks,
                        &mut used,
                        out,
                    );
                }
            }
        }
    }
    let mut unreferenced: Vec<&&str> = blocks
        .iter()
        .filter(|b| !used.contains(**b) && kinds::lookup(b).is_some_and(|k| k.enforced))
        .collect();
    unreferenced.sort();
    for b in unreferenced {
        out.push(
            Diagnostic::error(
                Code::UnreferencedPolicyBlock,
                &format!("policy.{b}"),
                format!("policy.{b} is configured but '{b}' is not in policies.chain, so it never runs"),
            )
            .with_help(format!("add '{b}' to policies.chain or remove the block")),
        );
    }
    if doc.get("pack").and_then(|p| p.get("enabled")) == Some(&Value::Bool(false)) {
        out.push(
            Diagnostic::error(
                Code::PackDisabled,
                "pack.enabled",
                "pack.enabled is false: no policy runs, traffic is only routed",
            )
            .with_help("set pack.enabled: true to enforce the chain"),
        );
    }
    check_targets(doc, out);
    check_regexes(doc, out);
    check_phone_regions(doc, out);
    check_external(doc, out);
    check_caller_auth(doc, out);
    super::groups::check(doc, out);
}

/// `caller_auth.mode` as written (`none` when absent).
pub(crate) fn caller_mode(doc: &Value) -> &str {
    get(doc, &["caller_auth", "mode"])
        .and_then(Value::as_str)
        .unwrap_or("none")
}

/// `caller_auth`: keys only with `mode: keys`, at least one key then, unique well-formed
/// ids, one secret source per key.
fn check_caller_auth(doc: &Value, out: &mut Vec<Diagnostic>) {
    let keyed = caller_mode(doc) != "none";
    if get(doc, &["token_rate_limit", "scope"]).and_then(Value::as_str) == Some("caller_key") && !keyed {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                "token_rate_limit.scope",
                "token_rate_limit.scope is caller_key but caller_auth.mode is none: no request has a caller key",
            )
            .with_help("set caller_auth.mode: keys (or control_plane on a managed gateway), or pick another scope"),
        );
    }
    let Some(auth) = doc.get("caller_auth") else {
        return;
    };
    let keys = auth
        .get("keys")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mode = auth.get("mode").and_then(Value::as_str).unwrap_or("none");
    let err = |path: &str, msg: String, help: &str| Diagnostic::error(Code::InvalidValue, path, msg).with_help(help);
    match (mode, keys.is_empty()) {
        ("keys", true) => out.push(err(
            "caller_auth.keys",
            "caller_auth.mode is keys but caller_auth.keys is empty: no caller could get in".into(),
            "add a key: {id: team-a, secret_key_ref: {env: TEAM_A_KEY}}",
        )),
        ("none", false) => out.push(err(
            "caller_auth.mode",
            "caller_auth.keys are set but caller_auth.mode is none, so they are not checked".into(),
            "set caller_auth.mode: keys",
        )),
        ("control_plane", false) => out.push(err(
            "caller_auth.keys",
            "caller_auth.keys are not read under caller_auth.mode control_plane: the control plane's gateway keys are"
                .into(),
            "remove caller_auth.keys and create keys with `kt spend gateway-key create`, or set caller_auth.mode: keys",
        )),
        _ => {}
    }
    let mut seen = HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        let id = k.get("id").and_then(Value::as_str).unwrap_or_default();
        if !id.is_empty() && !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            out.push(err(
                &format!("caller_auth.keys[{i}].id"),
                format!("caller_auth.keys[{i}].id '{id}' may hold only letters, digits, '-', '_' and '.'"),
                "ids name keys in metrics and events",
            ));
        }
        if id == "none" {
            out.push(err(
                &format!("caller_auth.keys[{i}].id"),
                format!("caller_auth.keys[{i}].id 'none' is reserved (it labels requests without a valid key)"),
                "pick another id",
            ));
        }
        if !id.is_empty() && !seen.insert(id) {
            out.push(err(
                &format!("caller_auth.keys[{i}].id"),
                format!("caller_auth.keys[{i}].id '{id}' is used by an earlier key"),
                "give each key its own id",
            ));
        }
        exactly_one(
            k,
            "secret_key_ref",
            ["env", "store"],
            &format!("caller_auth.keys[{i}]"),
            out,
        );
        if k.pointer("/secret_key_ref/store").is_some_and(|v| !v.is_null()) {
            out.push(err(
                &format!("caller_auth.keys[{i}].secret_key_ref.store"),
                format!("caller_auth.keys[{i}] reads its value from the environment only (secret_key_ref.env)"),
                "export the key in the gateway's environment and name it with secret_key_ref.env",
            ));
        }
    }
}

/// `policy.prompt-injection.detection.external`: what the schema cannot say (the URL's
/// form, the key reference), checked as compilation checks it.
fn check_external(doc: &Value, out: &mut Vec<Diagnostic>) {
    const PATH: &str = "policy.prompt-injection.detection.external";
    let Some(v) = get(doc, &["policy", "prompt-injection", "detection", "external"]) else {
        return;
    };
    // A block of the wrong shape is the schema's finding.
    let Ok(x) = serde_json::from_value::<super::PiExternal>(v.clone()) else {
        return;
    };
    if let Err(why) = crate::external::ExternalClassifier::check(&x) {
        out.push(
            Diagnostic::error(Code::InvalidValue, PATH, format!("policy.prompt-injection.{why}"))
                .with_help("url: http(s)://host[:port]/path; secret_key_ref: {env: NAME} or {store: NAME}"),
        );
    }
}

/// `policy.pii-detector.phone_regions`: region codes with a numbering plan.
fn check_phone_regions(doc: &Value, out: &mut Vec<Diagnostic>) {
    for (i, code) in strs(get(doc, &["policy", "pii-detector", "phone_regions"])) {
        if let Err(why) = crate::policies::PhoneRegions::parse(&[code]) {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    &format!("policy.pii-detector.phone_regions[{i}]"),
                    format!("policy.pii-detector.phone_regions[{i}]: {why}"),
                )
                .with_help("use ISO 3166-1 alpha-2 codes such as US, GB, DE, JP"),
            );
        }
    }
}

fn check_semver(doc: &Value, out: &mut Vec<Diagnostic>) {
    if let Some(v) = get(doc, &["pack", "version"]).and_then(Value::as_str)
        && semver::Version::parse(v).is_err()
    {
        let mut d = Diagnostic::error(
            Code::InvalidSemver,
            "pack.version",
            format!("pack.version '{v}' is not a SemVer version (MAJOR.MINOR.PATCH)"),
        );
        let parts: Vec<&str> = v.trim_start_matches('v').split('.').collect();
        if parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && parts.len() < 3
        {
            let mut fixed = parts.join(".");
            for _ in parts.len()..3 {
                fixed.push_str(".0");
            }
            d = d.with_help(format!("write \"{fixed}\""));
        } else if let Some(stripped) = v.strip_prefix('v').filter(|s| semver::Version::parse(s).is_ok()) {
            d = d.with_help(format!("drop the leading 'v': \"{stripped}\""));
        }
        out.push(d);
    }
}

fn check_chain<'a>(
    chain: Vec<(usize, &'a str)>,
    path: &str,
    blocks: &HashSet<&str>,
    used: &mut HashSet<&'a str>,
    out: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, kind) in chain {
        let at = format!("{path}[{i}]");
        used.insert(kind);
        if let Some(first) = seen.insert(kind, i) {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    &at,
                    format!("Policy kind '{kind}' appears twice in {path}"),
                )
                .with_help(format!("remove this entry; it already runs at {path}[{first}]")),
            );
            continue;
        }
        match kinds::lookup(kind) {
            None => {
                let mut d = Diagnostic::error(Code::UnknownPolicyKind, &at, format!("Unknown policy kind '{kind}'"));
                if let Some(s) = did_you_mean(kind, kinds::all_names()) {
                    d = d.with_help(format!("Did you mean '{s}'?"));
                }
                out.push(d);
            }
            Some(info) if !info.enforced => out.push(super::schema::not_enforced(kind, &at)),
            Some(info) => {
                if info.requires_block && !blocks.contains(kind) {
                    out.push(
                        Diagnostic::error(
                            Code::MissingPolicyBlock,
                            &at,
                            format!("Policy '{kind}' is in chain but has no config block"),
                        )
                        .with_help(format!(
                            "add a `policy.{kind}` block; see `kt policy schema` for its fields"
                        )),
                    );
                }
            }
        }
    }
}

/// A known provider the gateway could not serve as configured: the same resolution the
/// gateway makes at start, so lint never accepts what the gateway refuses.
fn check_serving(t: &Value, base: &str, out: &mut Vec<Diagnostic>) {
    use crate::provider_catalog::{ServingError, serving};
    // A target that does not even deserialize has its schema errors already.
    let Ok(target) = serde_json::from_value::<super::ProviderTarget>(t.clone()) else {
        return;
    };
    match serving(&target) {
        Ok(_) | Err(ServingError::Unknown(_)) => {}
        Err(e @ ServingError::NotServed(_)) => out.push(
            Diagnostic::error(
                Code::KindNotEnforced,
                &format!("{base}.provider"),
                format!("{base}: {e}"),
            )
            .with_help(format!(
                "served providers: {}",
                crate::provider_catalog::served_ids().collect::<Vec<_>>().join(", ")
            )),
        ),
        Err(e @ ServingError::NeedsBaseUrl(_)) => out.push(
            Diagnostic::error(Code::MissingField, &format!("{base}.base_url"), format!("{base}: {e}"))
                .with_help("e.g. base_url: http://127.0.0.1:8000/v1"),
        ),
        Err(e @ ServingError::NeedsDeployment) => out.push(Diagnostic::error(
            Code::MissingField,
            &format!("{base}.azure_deployment"),
            format!("{base}: {e}"),
        )),
        // The scheme check below reports what is wrong with the URL itself.
        Err(ServingError::BadBaseUrl(_))
            if !t
                .get("base_url")
                .and_then(Value::as_str)
                .is_some_and(|u| u.starts_with("http")) => {}
        Err(e @ ServingError::BadBaseUrl(_)) => out.push(Diagnostic::error(
            Code::InvalidValue,
            &format!("{base}.base_url"),
            format!("{base}: {e}"),
        )),
    }
}

/// `t.<field>`, when present, sets exactly one of `keys`.
fn exactly_one(t: &Value, field: &str, keys: [&str; 2], base: &str, out: &mut Vec<Diagnostic>) {
    let Some(r) = t.get(field).and_then(Value::as_object) else {
        return;
    };
    let n = keys.iter().filter(|k| r.get(**k).is_some_and(|v| !v.is_null())).count();
    if n != 1 {
        let [a, b] = keys;
        out.push(Diagnostic::error(
            Code::InvalidValue,
            &format!("{base}.{field}"),
            format!("{base}.{field} must set exactly one of `{a}` or `{b}` (found {n})"),
        ));
    }
}

/// The checks of one target that need no other target.
fn check_target(t: &Value, base: &str, out: &mut Vec<Diagnostic>) {
    if let Some(p) = t.get("provider").and_then(Value::as_str)
        && crate::provider_catalog::lookup(p).is_none()
    {
        let mut d = Diagnostic::error(
            Code::InvalidEnumValue,
            &format!("{base}.provider"),
            format!("{base}.provider: unknown provider '{p}'"),
        );
        if let Some((prov, _)) = p.split_once(':') {
            d = d.with_help(format!(
                "the `provider:api:model` form is legacy; write `provider: {prov}` and put the model in `model`"
            ));
        } else if let Some(s) = did_you_mean(p, crate::provider_catalog::ids()) {
            d = d.with_help(format!("Did you mean '{s}'?"));
        } else {
            d = d.with_help("for any OpenAI-compatible server use `provider: openai` with its `base_url`");
        }
        out.push(d);
    }
    check_serving(t, base, out);
    exactly_one(t, "secret_key_ref", ["env", "store"], base, out);
    if let Some(name) = t.pointer("/secret_key_ref/store").and_then(Value::as_str)
        && (name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
    {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                &format!("{base}.secret_key_ref.store"),
                format!("secret name '{name}' is not valid"),
            )
            .with_help("secret names use ASCII letters, digits, '_', '-' and '.' only"),
        );
    }
    if let Some(name) = t.pointer("/secret_key_ref/env").and_then(Value::as_str)
        && crate::secret_binding::is_own_setting(name)
    {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                &format!("{base}.secret_key_ref.env"),
                format!("`{name}` is one of kt's own settings, never a provider key"),
            )
            .with_help("name the variable that holds the provider's key, e.g. OPENAI_API_KEY"),
        );
    }
    if let Some(tpl) = t.get("path_template").and_then(Value::as_str)
        && !crate::secret_binding::is_plain_path(tpl)
    {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                &format!("{base}.path_template"),
                format!("path_template '{tpl}' is not a path on the target's base_url"),
            )
            .with_help(
                "start it with '/', without a scheme, host, '//', '..', '?' or '#', e.g. /deployments/{model}/chat",
            ),
        );
    }
    exactly_one(t, "escalation_routing", ["team_id", "user_id"], base, out);
    for (a, b) in [
        ("cloudflare_account_id_env", "accountIdEnvar"),
        ("snowflake_account_identifier_env", "accountIdentifierEnvar"),
    ] {
        if t.get(a).is_some() && t.get(b).is_some() {
            out.push(Diagnostic::error(
                Code::InvalidValue,
                &format!("{base}.{b}"),
                format!("`{b}` is an alias of `{a}`; set only one"),
            ));
        }
    }
    if let Some(url) = t.get("base_url").and_then(Value::as_str)
        && !(url.starts_with("http://")
            || url.starts_with("https://")
            || url.starts_with("ws://")
            || url.starts_with("wss://"))
    {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                &format!("{base}.base_url"),
                format!("{base}.base_url '{url}' is not an http(s) or ws(s) URL"),
            )
            .with_help("write the full URL, e.g. https://api.openai.com"),
        );
    }
}

fn check_targets(doc: &Value, out: &mut Vec<Diagnostic>) {
    let targets = get(doc, &["providers", "targets"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        let base = format!("providers.targets[{i}]");
        if let Some(id) = t.get("id").and_then(Value::as_str)
            && let Some(first) = ids.insert(id, i)
        {
            out.push(
                Diagnostic::error(
                    Code::DuplicateTargetId,
                    &format!("{base}.id"),
                    format!("{base}.id: duplicate target id \"{id}\""),
                )
                .with_help(format!(
                    "providers.targets[{first}] already uses this id; target ids must be unique"
                )),
            );
        }
        check_target(t, &base, out);
    }

    let known: HashSet<&str> = ids.keys().copied().collect();
    let mut refs: Vec<(String, &str)> = Vec::new();
    fn collect<'a>(refs: &mut Vec<(String, &'a str)>, path: String, v: Option<&'a Value>) {
        for (i, s) in strs(v) {
            refs.push((format!("{path}[{i}]"), s));
        }
    }
    collect(
        &mut refs,
        "providers.routing.order".into(),
        get(doc, &["providers", "routing", "order"]),
    );
    collect(
        &mut refs,
        "providers.fallback.order".into(),
        get(doc, &["providers", "fallback", "order"]),
    );
    let groups = doc
        .get("model_groups")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (i, g) in groups.iter().enumerate() {
        collect(&mut refs, format!("model_groups[{i}].targets"), g.get("targets"));
    }
    for section in ["routes", "consumer_groups"] {
        for (i, r) in doc
            .get(section)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            collect(&mut refs, format!("{section}[{i}].providers"), r.get("providers"));
        }
    }
    if let Some(variants) = get(doc, &["providers", "ab_test", "variants"]).and_then(Value::as_array) {
        for (i, v) in variants.iter().enumerate() {
            if let Some(id) = v.get("provider_id").and_then(Value::as_str) {
                refs.push((format!("providers.ab_test.variants[{i}].provider_id"), id));
            }
        }
    }
    if let Some(id) = get(doc, &["providers", "mirror", "mirror_target"]).and_then(Value::as_str) {
        refs.push(("providers.mirror.mirror_target".into(), id));
    }
    for (path, id) in refs {
        if !known.contains(id) {
            let mut d = Diagnostic::error(
                Code::UnknownTargetRef,
                &path,
                format!("{path} refers to unknown target id \"{id}\""),
            );
            if let Some(s) = did_you_mean(id, known.iter().copied()) {
                d = d.with_help(format!("Did you mean '{s}'?"));
            } else if known.is_empty() {
                d = d.with_help("declare the target under providers.targets");
            } else {
                let mut k: Vec<&str> = known.iter().copied().collect();
                k.sort_unstable();
                d = d.with_note(format!("known targets: {}", k.join(", ")));
            }
            out.push(d);
        }
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        let mut all = strs(g.get("aliases")).into_iter().map(|(_, s)| s).collect::<Vec<_>>();
        if let Some(n) = g.get("name").and_then(Value::as_str) {
            all.push(n);
        }
        for n in all {
            if let Some(first) = names.insert(n, i)
                && first != i
            {
                out.push(Diagnostic::error(
                    Code::InvalidValue,
                    &format!("model_groups[{i}]"),
                    format!("model group name or alias '{n}' is already used by model_groups[{first}]"),
                ));
            }
        }
    }
    for (i, g) in groups.iter().enumerate() {
        if let Some(fb) = g.get("fallback_group").and_then(Value::as_str)
            && !groups.iter().any(|o| o.get("name").and_then(Value::as_str) == Some(fb))
        {
            out.push(Diagnostic::error(
                Code::UnknownTargetRef,
                &format!("model_groups[{i}].fallback_group"),
                format!("model_groups[{i}].fallback_group refers to unknown group \"{fb}\""),
            ));
        }
    }
}

fn check_regexes(doc: &Value, out: &mut Vec<Diagnostic>) {
    let lists: [(&[&str], &str); 4] = [
        (
            &["policy", "pii-detector", "detect_patterns"],
            "policy.pii-detector.detect_patterns",
        ),
        (
            &["policy", "dlp-filter", "detect_patterns"],
            "policy.dlp-filter.detect_patterns",
        ),
        (
            &["policy", "prompt-injection", "detection", "attack_patterns"],
            "policy.prompt-injection.detection.attack_patterns",
        ),
        (
            &["policy", "code-sanitizer", "additional_patterns"],
            "policy.code-sanitizer.additional_patterns",
        ),
    ];
    for (keys, path) in lists {
        for (i, pattern) in strs(get(doc, keys)) {
            if let Err(e) = regex::RegexBuilder::new(pattern)
                .size_limit(crate::builtins::REGEX_SIZE_LIMIT)
                .build()
            {
                let msg = e.to_string();
                let last = msg.lines().last().unwrap_or(&msg).trim();
                let first = last.strip_prefix("error: ").unwrap_or(last).to_owned();
                out.push(
                    Diagnostic::error(
                        Code::InvalidRegex,
                        &format!("{path}[{i}]"),
                        format!("invalid regex '{pattern}': {first}"),
                    )
                    .with_help(
                        "patterns use Rust regex syntax; escape literal characters such as . ( ) [ with a backslash",
                    ),
                );
            }
        }
    }
    if let Some(schemas) = get(doc, &["policy", "tool-validation", "schemas"]).and_then(Value::as_object) {
        let declared: Vec<&str> = strs(get(doc, &["policy", "tool-validation", "declared_tools"]))
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        for (tool, schema) in schemas {
            let path = format!("policy.tool-validation.schemas.{tool}");
            if let Err(e) = jsonschema::validator_for(schema) {
                out.push(Diagnostic::error(
                    Code::InvalidValue,
                    &path,
                    format!("schema for tool '{tool}' is not a valid JSON Schema: {e}"),
                ));
            }
            if !declared.is_empty() && !declared.contains(&tool.as_str()) {
                out.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        &path,
                        format!("schema given for '{tool}', which is not in declared_tools"),
                    )
                    .with_help(format!("add '{tool}' to declared_tools or remove its schema")),
                );
            }
        }
    }
}

/// Checks that need the typed configuration.
pub fn check(config: &PolicyConfig, out: &mut Vec<Diagnostic>) {
    if config
        .cache
        .as_ref()
        .is_some_and(|c| c.mode == super::CacheMode::Semantic)
    {
        out.push(
            Diagnostic::error(
                Code::KindNotEnforced,
                "cache.mode",
                "semantic caching is not enforced by this version of kt",
            )
            .with_help("use `mode: exact`; kt refuses settings it would not enforce"),
        );
    }
    if let (Some(drp), Some(providers)) = (&config.policy.data_routing_policy, &config.providers)
        && config.policies.chain.iter().any(|k| k == "data-routing-policy")
        && !providers.targets.is_empty()
        && drp.on_no_compliant_provider == super::OnNoCompliant::Block
        && crate::policies::data_routing::compliant_targets(drp, &providers.targets).is_empty()
    {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                "policy.data-routing-policy",
                "no provider target satisfies data-routing-policy, so every request would be blocked",
            )
            .with_help("mark a compliant target's data_policy (zero_data_retention, training_opt_out, retention_days) or relax the policy"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_phone_regions_are_named() {
        let doc = json!({
            "pack": {"name": "p", "version": "1.0.0", "enabled": true},
            "policies": {"chain": ["pii-detector"]},
            "policy": {"pii-detector": {"phone_regions": ["US", "gb", "XX"]}},
        });
        let mut out = Vec::new();
        check_raw(&doc, &mut out);
        let phone: Vec<&Diagnostic> = out.iter().filter(|d| d.message.contains("phone_regions")).collect();
        assert_eq!(phone.len(), 1, "{out:?}");
        assert_eq!(phone[0].code.as_str(), "E015");
        assert!(
            phone[0].message.contains("[2]") && phone[0].message.contains("'XX'"),
            "{:?}",
            phone[0]
        );
    }

    #[test]
    fn caller_auth_mistakes_are_named() {
        let lint = |auth: serde_json::Value| {
            let doc = json!({
                "pack": {"name": "p", "version": "1.0.0", "enabled": true},
                "policies": {"chain": []},
                "caller_auth": auth,
            });
            let mut out = Vec::new();
            check_raw(&doc, &mut out);
            out.into_iter().map(|d| d.message).collect::<Vec<_>>().join("\n")
        };
        let key = |id: &str| json!({"id": id, "secret_key_ref": {"env": "K"}});
        assert_eq!(lint(json!({"mode": "keys", "keys": [key("team-a"), key("b.2")]})), "");
        assert_eq!(lint(json!({"mode": "none"})), "");
        let scoped = |auth: serde_json::Value| {
            let doc = json!({
                "pack": {"name": "p", "version": "1.0.0", "enabled": true},
                "policies": {"chain": []},
                "caller_auth": auth,
                "token_rate_limit": {"max_tokens": 10, "window_seconds": 60, "scope": "caller_key"},
            });
            let mut out = Vec::new();
            check_raw(&doc, &mut out);
            out.into_iter().map(|d| d.message).collect::<Vec<_>>().join("\n")
        };
        assert!(scoped(json!({"mode": "none"})).contains("scope is caller_key"));
        assert_eq!(scoped(json!({"mode": "keys", "keys": [key("a")]})), "");
        // The control plane's gateway keys: no keys in the file, per-key scopes allowed.
        assert_eq!(lint(json!({"mode": "control_plane"})), "");
        assert_eq!(scoped(json!({"mode": "control_plane"})), "");
        assert!(lint(json!({"mode": "control_plane", "keys": [key("a")]})).contains("not read under"));
        for (auth, says) in [
            (json!({"mode": "keys"}), "keys is empty"),
            (json!({"keys": [key("a")]}), "mode is none"),
            (json!({"mode": "keys", "keys": [key("a b")]}), "may hold only"),
            (
                json!({"mode": "keys", "keys": [key("a"), key("a")]}),
                "used by an earlier key",
            ),
            (json!({"mode": "keys", "keys": [key("none")]}), "reserved"),
            (
                json!({"mode": "keys", "keys": [{"id": "a", "secret_key_ref": {"store": "s"}}]}),
                "environment only",
            ),
            (
                json!({"mode": "keys", "keys": [{"id": "a", "secret_key_ref": {}}]}),
                "exactly one",
            ),
        ] {
            let found = lint(auth.clone());
            assert!(found.contains(says), "{auth}: {found}");
        }
    }
}
