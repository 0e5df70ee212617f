//! The JSON Schema of `policy-config.yaml`, generated from the serde types, and the
//! structural check that walks a document against it and reports every unknown key, missing
//! field, wrong type, invalid enum value and out-of-range number in one pass.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::PolicyConfig;
use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::kinds;

/// The JSON Schema (draft 2020-12) printed by `kt policy schema`.
pub fn json_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = schemars::schema_for!(PolicyConfig);
        serde_json::to_value(schema).unwrap_or(Value::Null)
    })
}

/// Walks `value` against the generated schema, appending diagnostics (paths only; the
/// caller attaches file locations).
pub fn check(value: &Value, out: &mut Vec<Diagnostic>) {
    let root = json_schema();
    let walker = Walker {
        defs: root.get("$defs").and_then(Value::as_object),
    };
    walker.check(root, value, "", out);
}

struct Walker<'s> {
    defs: Option<&'s Map<String, Value>>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

fn type_matches(expected: &str, v: &Value) -> bool {
    match expected {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn human_type(t: &str) -> &str {
    match t {
        "array" => "list",
        "object" => "mapping",
        "boolean" => "boolean (true/false)",
        other => other,
    }
}

impl<'s> Walker<'s> {
    fn resolve(&self, schema: &'s Value) -> &'s Value {
        let mut s = schema;
        for _ in 0..16 {
            let Some(r) = s.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let Some(name) = r.strip_prefix("#/$defs/") else { break };
            match self.defs.and_then(|d| d.get(name)) {
                Some(next) => s = next,
                None => break,
            }
        }
        s
    }

    /// Enumerated string values of a schema, whether written as `enum` or as `oneOf` consts.
    fn enum_values(&self, schema: &'s Value) -> Option<Vec<&'s str>> {
        if let Some(list) = schema.get("enum").and_then(Value::as_array) {
            return Some(list.iter().filter_map(Value::as_str).collect());
        }
        if let Some(c) = schema.get("const").and_then(Value::as_str) {
            return Some(vec![c]);
        }
        let branches = schema.get("oneOf").or_else(|| schema.get("anyOf"))?.as_array()?;
        let mut out = Vec::new();
        for b in branches {
            out.extend(self.enum_values(self.resolve(b))?);
        }
        Some(out)
    }

    fn check(&self, schema: &'s Value, value: &Value, path: &str, out: &mut Vec<Diagnostic>) {
        let schema = self.resolve(schema);
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.check(s, value, path, out);
            }
        }
        if let Some(values) = self.enum_values(schema)
            && (schema.get("oneOf").is_some() || schema.get("anyOf").is_some() || schema.get("enum").is_some())
        {
            self.check_enum(&values, value, path, out);
            return;
        }
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            self.check_branches(branches, value, path, out);
            return;
        }
        if let Some(t) = schema.get("type") {
            let allowed: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !allowed.is_empty() && !allowed.iter().any(|t| type_matches(t, value)) {
                self.type_error(&allowed, value, path, out);
                return;
            }
        }
        match value {
            Value::Object(map) => self.check_object(schema, map, path, out),
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{path}[{i}]"), out);
                    }
                }
                let len = items.len() as f64;
                if let Some(min) = schema.get("minItems").and_then(Value::as_f64)
                    && len < min
                {
                    let what = if min == 1.0 {
                        "at least one entry".to_owned()
                    } else {
                        format!("at least {min} entries")
                    };
                    out.push(Diagnostic::error(
                        Code::OutOfRange,
                        path,
                        format!("{path} needs {what}"),
                    ));
                }
                if let Some(max) = schema.get("maxItems").and_then(Value::as_f64)
                    && len > max
                {
                    let msg = if max == 0.0 {
                        format!("{path} is not supported by this version and must be empty")
                    } else {
                        format!("{path} allows at most {max} entries, found {len}")
                    };
                    out.push(Diagnostic::error(Code::OutOfRange, path, msg));
                }
            }
            Value::String(s) => {
                let len = s.chars().count() as f64;
                if let Some(min) = schema.get("minLength").and_then(Value::as_f64)
                    && len < min
                {
                    out.push(Diagnostic::error(
                        Code::OutOfRange,
                        path,
                        format!("{path} must not be empty"),
                    ));
                }
                if let Some(max) = schema.get("maxLength").and_then(Value::as_f64)
                    && len > max
                {
                    out.push(Diagnostic::error(
                        Code::OutOfRange,
                        path,
                        format!("{path} is {len} characters long; the limit is {max}"),
                    ));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                let min = schema.get("minimum").and_then(Value::as_f64);
                let max = schema.get("maximum").and_then(Value::as_f64);
                if min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m) {
                    let range = match (min, max) {
                        (Some(a), Some(b)) => format!("between {a} and {b}"),
                        (Some(a), None) => format!("at least {a}"),
                        (None, Some(b)) => format!("at most {b}"),
                        (None, None) => String::new(),
                    };
                    out.push(Diagnostic::error(
                        Code::OutOfRange,
                        path,
                        format!("{path} is {n}; it must be {range}"),
                    ));
                }
            }
            _ => {}
        }
    }

    fn check_enum(&self, values: &[&str], value: &Value, path: &str, out: &mut Vec<Diagnostic>) {
        if value.is_null() && values.is_empty() {
            return;
        }
        let found = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if values.contains(&found.as_str()) {
            return;
        }
        let mut d = Diagnostic::error(
            Code::InvalidEnumValue,
            path,
            format!(
                "{path}: invalid value '{found}', expected one of [{}]",
                values.join(", ")
            ),
        );
        if let Some(s) = did_you_mean(&found, values.iter().copied()) {
            d = d.with_help(format!("Did you mean '{s}'?"));
        }
        out.push(d);
    }

    fn check_branches(&self, branches: &'s [Value], value: &Value, path: &str, out: &mut Vec<Diagnostic>) {
        let mut best: Option<Vec<Diagnostic>> = None;
        for b in branches {
            let b = self.resolve(b);
            // Skip branches whose declared type cannot hold the value; they only add noise.
            if let Some(t) = b.get("type").and_then(Value::as_str)
                && !type_matches(t, value)
            {
                continue;
            }
            let mut diags = Vec::new();
            self.check(b, value, path, &mut diags);
            if diags.is_empty() {
                return;
            }
            if best.as_ref().is_none_or(|cur| diags.len() < cur.len()) {
                best = Some(diags);
            }
        }
        match best {
            Some(diags) => out.extend(diags),
            None => {
                let mut types: Vec<&str> = Vec::new();
                for b in branches {
                    let b = self.resolve(b);
                    match b.get("type") {
                        Some(Value::String(t)) if t != "null" => types.push(t),
                        None if b.get("properties").is_some() => types.push("object"),
                        _ => {}
                    }
                }
                self.type_error(&types, value, path, out);
            }
        }
    }

    fn type_error(&self, allowed: &[&str], value: &Value, path: &str, out: &mut Vec<Diagnostic>) {
        let expected: Vec<&str> = allowed
            .iter()
            .filter(|t| **t != "null")
            .map(|t| human_type(t))
            .collect();
        let expected = if expected.is_empty() {
            "a value".to_owned()
        } else {
            expected.join(" or ")
        };
        let mut d = Diagnostic::error(
            Code::WrongType,
            path,
            format!(
                "{}: expected {expected}, found {}",
                if path.is_empty() { "document" } else { path },
                type_name(value)
            ),
        );
        if path == "pack.version" && value.is_number() {
            let mut v = value.to_string();
            while v.matches('.').count() < 2 {
                v.push_str(".0");
            }
            d = d.with_help(format!("write a quoted SemVer version: \"{v}\""));
        } else if allowed.contains(&"string") && value.is_number() {
            d = d.with_help(format!("quote the value: \"{value}\""));
        } else if allowed.contains(&"string") && value.is_null() {
            d = d.with_help("the value is empty; write a string");
        } else if path.is_empty() {
            d = d.with_help(
                "a policy-config.yaml is a mapping with at least `pack` and `policies`; run `kt init` for a starter",
            );
        }
        out.push(d);
    }

    fn check_object(&self, schema: &'s Value, map: &Map<String, Value>, path: &str, out: &mut Vec<Diagnostic>) {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    let where_ = if path.is_empty() {
                        "at top level".to_owned()
                    } else {
                        format!("in {path}")
                    };
                    out.push(Diagnostic::error(
                        Code::MissingField,
                        path,
                        format!("Missing required field '{r}' {where_}"),
                    ));
                }
            }
        }
        let additional = schema.get("additionalProperties");
        for (key, v) in map {
            let child = join(path, key);
            if let Some(p) = props.and_then(|p| p.get(key)) {
                self.check(p, v, &child, out);
                continue;
            }
            match additional {
                Some(Value::Bool(false)) => {
                    let mut valid: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    valid.sort_unstable();
                    out.push(unknown_key(path, key, &valid));
                }
                Some(s @ Value::Object(_)) => self.check(s, v, &child, out),
                _ => {}
            }
        }
    }
}

/// Keys of the legacy dialect and their canonical replacements: (parent path suffix or
/// empty for anywhere, key, hint).
const LEGACY_HINTS: &[(&str, &str, &str)] = &[
    (
        "",
        "version",
        "the legacy `version: \"1\"` dialect is not supported; set the config version in `pack.version`",
    ),
    (
        "",
        "gateway",
        "listen settings are flags of `kt gateway run` (--listen), not config keys",
    ),
    (
        "",
        "rate_limits",
        "use the top-level `global_rate_limit`, `ip_rate_limit`, `user_rate_limit` or `token_rate_limit`",
    ),
    (
        "",
        "rate_limit_defaults",
        "use `consumer_groups[].rate_limits` or the top-level rate-limit sections",
    ),
    (
        "",
        "response_headers",
        "the gateway always sends its X-RateLimit-* and decision headers",
    ),
    ("", "provider_routing", "use `providers.routing`"),
    ("", "provider_fallback", "use `providers.fallback`"),
    (
        "",
        "retry_on",
        "use `triggers` (rate_limit, server_error, timeout, connection_error)",
    ),
    ("", "max_retries", "use `max_fallback_attempts`"),
    ("", "recovery_timeout", "use `cooldown_seconds`"),
    (
        "fallback",
        "strategy",
        "fallback tries targets in `fallback.order` (default: target order); the routing strategy is `providers.routing.strategy`",
    ),
    (
        "",
        "entities",
        "pii-detector detects its built-in entities by default; add regexes with `detect_patterns`",
    ),
    ("", "threshold", "prompt-injection takes `embedding_threshold`"),
];

/// Documented fields of enforced kinds that this version does not implement yet:
/// (block path, key, what to do instead).
const UNSUPPORTED_FIELDS: &[(&str, &str, &str)] = &[
    (
        "policy.human-oversight",
        "confidence_threshold",
        "escalation by model confidence needs token probabilities; list the decision categories in `require_human_for`",
    ),
    (
        "policy.rbac",
        "data_access",
        "gate content by sensitivity with dlp-filter `sensitivity_level` and rbac roles",
    ),
    (
        "policy.safety-filter",
        "max_age",
        "age-gated content is not enforced; remove the key",
    ),
    (
        "policy.tool-validation",
        "semantic_validation",
        "LLM-based argument checks are not enforced; validate arguments with `schemas`",
    ),
];

/// Documented top-level sections that this version does not implement yet.
const UNSUPPORTED_SECTIONS: &[&str] = &["loads", "history", "workflow_cache", "fabric"];

fn unknown_key(path: &str, key: &str, valid: &[&str]) -> Diagnostic {
    let child = join(path, key);
    if path == "policy" {
        return unknown_policy_block(key, &child);
    }
    if path.is_empty() && UNSUPPORTED_SECTIONS.contains(&key) {
        return Diagnostic::error(
            Code::KindNotEnforced,
            &child,
            format!("Section '{key}' is not supported by this version of kt"),
        )
        .with_help("remove the section; kt refuses settings it would not enforce");
    }
    if let Some((_, _, instead)) = UNSUPPORTED_FIELDS.iter().find(|(p, k, _)| *p == path && *k == key) {
        return Diagnostic::error(
            Code::KindNotEnforced,
            &child,
            format!("Field '{key}' of {path} is not enforced by this version of kt"),
        )
        .with_help(format!("{instead}; kt refuses settings it would not enforce"));
    }
    if path == "policy.prompt-injection" && key == "action" {
        return Diagnostic::error(Code::UnknownKey, &child, format!("Unknown key '{key}' in {path}"))
            .with_note(format!("valid keys: {}", valid.join(", ")))
            .with_help("use `response.action`");
    }
    let where_ = if path.is_empty() {
        "at top level".to_owned()
    } else {
        format!("in {path}")
    };
    let mut d = Diagnostic::error(Code::UnknownKey, &child, format!("Unknown key '{key}' {where_}"))
        .with_note(format!("valid keys: {}", valid.join(", ")));
    if let Some((_, _, hint)) = LEGACY_HINTS
        .iter()
        .find(|(parent, k, _)| *k == key && path.ends_with(parent))
    {
        d = d.with_help(*hint);
    } else if let Some(s) = did_you_mean(key, valid.iter().copied()) {
        d = d.with_help(format!("Did you mean '{s}'?"));
    }
    d
}

fn unknown_policy_block(key: &str, path: &str) -> Diagnostic {
    match kinds::lookup(key) {
        Some(info) if !info.enforced => not_enforced(key, path),
        _ => {
            let mut d = Diagnostic::error(Code::UnknownPolicyKind, path, format!("Unknown policy kind '{key}'"));
            if let Some(s) = did_you_mean(key, kinds::all_names()) {
                d = d.with_help(format!("Did you mean '{s}'?"));
            } else if matches!(key, "name" | "version" | "enabled") {
                d = d.with_help(
                    "single-policy documents (`policy: {name, version, enabled}`) are not supported; \
                     write `pack`, `policies.chain` and `policy.<kind>` (run `kt init` for an example)",
                );
            }
            d
        }
    }
}

/// The diagnostic for a catalog kind this version cannot enforce.
pub(crate) fn not_enforced(kind: &str, path: &str) -> Diagnostic {
    let enforced: Vec<&str> = kinds::enforced_names().collect();
    Diagnostic::error(
        Code::KindNotEnforced,
        path,
        format!("Policy kind '{kind}' is not enforced by this version of kt"),
    )
    .with_note(format!("enforced kinds: {}", enforced.join(", ")))
    .with_help(format!("remove '{kind}'; kt refuses a control it would silently skip"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diags(v: Value) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        check(&v, &mut out);
        out
    }

    fn minimal() -> Value {
        json!({"pack": {"name": "p", "version": "1.0.0", "enabled": true}, "policies": {"chain": []}})
    }

    #[test]
    fn schema_is_generated_and_strict() {
        let s = json_schema();
        assert_eq!(s["additionalProperties"], json!(false));
        assert!(s["properties"]["providers"].is_object());
        assert!(diags(minimal()).is_empty(), "{:?}", diags(minimal()));
    }

    #[test]
    fn reports_every_structural_problem() {
        let mut v = minimal();
        v["pack"].as_object_mut().expect("map").remove("enabled");
        v["policy"] =
            json!({"pii-detector": {"actions": "redact", "pci_mode": "yes"}, "quality-scorer": {}, "pii-detectr": {}});
        v["size_limits"] = json!({"max_body_bytes": 0});
        v["providers"] = json!({"routing": {"strategy": "round-robin"}, "targets": []});
        let d = diags(v);
        let codes: Vec<&str> = d.iter().map(|d| d.code.as_str()).collect();
        for want in ["E005", "E002", "E006", "E011", "E001", "E013", "E004"] {
            assert!(codes.contains(&want), "missing {want} in {d:#?}");
        }
        let unknown = d.iter().find(|d| d.code == Code::UnknownKey).expect("E002");
        assert_eq!(unknown.message, "Unknown key 'actions' in policy.pii-detector");
        assert_eq!(unknown.help.as_deref(), Some("Did you mean 'action'?"));
        assert!(unknown.note.as_deref().is_some_and(|n| n.contains("healthcare_mode")));
        let e004 = d.iter().find(|d| d.code == Code::InvalidEnumValue).expect("E004");
        assert_eq!(e004.help.as_deref(), Some("Did you mean 'round_robin'?"));
    }

    #[test]
    fn numbers_where_strings_belong_suggest_quoting() {
        let mut v = minimal();
        v["pack"]["version"] = json!(1.0);
        let d = diags(v);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::WrongType);
        assert!(d[0].help.as_deref().is_some_and(|h| h.contains("quote")));
    }

    #[test]
    fn documented_but_unenforced_fields_are_refused_plainly() {
        let mut v = minimal();
        v["policy"] =
            json!({"human-oversight": {"require_human_for": ["financial_advice"], "confidence_threshold": 0.5}});
        let d = diags(v);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::KindNotEnforced);
        assert!(d[0].message.contains("confidence_threshold"), "{}", d[0].message);
        let mut v = minimal();
        v["policy"] = json!({"name": "prompt-injection"});
        assert!(diags(v)[0].help.as_deref().is_some_and(|h| h.contains("single-policy")));
    }

    #[test]
    fn the_cache_section_is_checked_and_semantic_mode_refused() {
        use crate::config::{Source, load_sources};
        let text = |cache: &str| Source {
            name: "c.yaml".into(),
            text: format!(
                "pack: {{name: c, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\ncache: {cache}\n"
            ),
        };
        let ok = load_sources(&[text("{ttl_seconds: 60}")]);
        let cache = ok.config.and_then(|c| c.cache).expect("cache section");
        assert!(cache.enabled && cache.ttl_seconds == 60 && cache.max_entries == 10_000);
        let semantic = load_sources(&[text("{mode: semantic}")]);
        assert!(semantic.config.is_none());
        assert!(
            semantic
                .diagnostics
                .iter()
                .any(|d| d.code == Code::KindNotEnforced && d.path == "cache.mode")
        );
        let bad = load_sources(&[text("{ttl: 60}")]);
        assert!(bad.diagnostics.iter().any(|d| d.code == Code::UnknownKey));
    }

    #[test]
    fn legacy_keys_get_a_pointer_to_the_canonical_key() {
        let mut v = minimal();
        v["rate_limits"] = json!({});
        let d = diags(v);
        assert!(d[0].help.as_deref().is_some_and(|h| h.contains("global_rate_limit")));
    }
}
