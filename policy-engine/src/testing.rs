//! `kt policy test`: golden files (`tests/*.json|yaml|yml`) and inline `testing.suites`,
//! evaluated in process against the same `CompiledPolicy` the gateway runs, with
//! `upstream_response` standing in for the provider. Output shape of spec §7.4.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::chain::EvalOptions;
use crate::compile::CompiledPolicy;
use crate::config::{Assertion, AssertionKind, ExpectedVerdict, TestCase};
use crate::decision::{Decision, PolicyResult, Verdict};
use crate::exchange::{self, Headers};
use crate::yaml;

/// A case with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    /// `tests/blocks_injection.json` or `suite:<name>`.
    pub source: String,
    pub case: TestCase,
    pub assertions: Vec<Assertion>,
}

/// The result of one case, serialized as an element of `results`.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub source: String,
    pub verdict: Option<Verdict>,
    pub reason_code: Option<String>,
    pub passed: bool,
    pub expected: Value,
    /// Why the case failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub details: CaseDetails,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseDetails {
    pub policy_results: Vec<PolicyResult>,
    pub quality_scores: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assertions: Vec<AssertionResult>,
    /// The request body after input-phase redaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted_request: Option<Value>,
    /// The response body after output-phase redaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted_response: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssertionResult {
    pub name: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    pub ok: bool,
    pub passed: usize,
    pub failed: usize,
    pub results: Vec<CaseResult>,
}

/// Reads one golden file: a single case, or a list of cases.
pub fn load_golden(path: &Path) -> Result<Vec<LoadedCase>, String> {
    let source = path.display().to_string();
    let src = crate::config::read_source(path).map_err(|d| d.message)?;
    let value = parse_document(&src.text)?;
    let items = match value {
        Value::Array(a) => a,
        other => vec![other],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<TestCase>(v)
                .map(|case| LoadedCase {
                    source: source.clone(),
                    case,
                    assertions: Vec::new(),
                })
                .map_err(|e| format!("case {i}: {e}"))
        })
        .collect()
}

/// A test or corpus document: JSON when it starts with `{` or `[` (as `json.dump` writes
/// it, so every JSON escape holds, surrogate pairs such as "\ud83d\ude00" included), YAML
/// otherwise; a repeated key is an error in both.
pub fn parse_document(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with(['{', '[']) {
        return crate::json::parse_strict(text.as_bytes()).map_err(|e| match e {
            crate::json::BodyError::Syntax(why) => format!("invalid JSON: {why}"),
            crate::json::BodyError::DuplicateKey(k) => {
                format!("invalid JSON: the key \"{k}\" appears twice in one object")
            }
        });
    }
    let (doc, dups) = yaml::parse(text).map_err(|d| d.iter().map(describe).collect::<Vec<_>>().join("; "))?;
    match dups.first() {
        Some(d) => Err(describe(d)),
        None => Ok(doc.value),
    }
}

fn describe(d: &crate::Diagnostic) -> String {
    match d.location {
        Some(l) => format!("{} (line {}, column {})", d.message, l.line, l.column),
        None => d.message.clone(),
    }
}

/// Builds the chat request a case describes.
pub fn request_body(case: &TestCase) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!("kt-test-model"));
    body.insert("messages".into(), Value::Array(case.input.messages.clone()));
    if let Some(extra) = &case.input.request {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    Value::Object(body)
}

/// Normalizes `upstream_response`: a bare string becomes an OpenAI chat completion.
pub fn response_body(upstream: &Value) -> Value {
    match upstream {
        Value::String(s) => json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": s}, "finish_reason": "stop"}]
        }),
        other => other.clone(),
    }
}

/// Runs one case.
pub fn run_case(policy: &CompiledPolicy, loaded: &LoadedCase) -> CaseResult {
    let case = &loaded.case;
    let headers: Headers = case.input.headers.iter().collect();
    let opts = EvalOptions::default();
    let mut request = request_body(case);
    let mut decision = policy.evaluate_request(&mut request, &headers, opts);
    let mut response = None;
    if !decision.verdict.is_terminal()
        && let Some(up) = &case.input.upstream_response
    {
        let mut body = response_body(up);
        let out = policy.evaluate_response(&request, &mut body, &headers, opts);
        decision.absorb(out);
        response = Some(body);
    }
    let assertions: Vec<AssertionResult> = match &response {
        Some(body) if !decision.verdict.is_terminal() => {
            let text: String = exchange::response_texts(body)
                .iter()
                .map(|s| s.text)
                .collect::<Vec<_>>()
                .join("\n");
            loaded
                .assertions
                .iter()
                .filter(|a| a.enabled)
                .map(|a| check_assertion(a, &text))
                .collect()
        }
        _ => Vec::new(),
    };
    let mut seen: Vec<&str> = exchange::request_texts(&request).iter().map(|s| s.text).collect();
    if let Some(body) = &response {
        seen.extend(exchange::response_texts(body).iter().map(|s| s.text));
    }
    let failure = failure(&decision, case, &assertions).or_else(|| text_failure(case, &seen.join("\n")));
    let redacted = decision.policy_results.iter().any(|r| r.verdict == Verdict::Redact);
    CaseResult {
        name: case.name.clone(),
        source: loaded.source.clone(),
        verdict: Some(decision.verdict),
        reason_code: decision.reason_code.clone(),
        passed: failure.is_none(),
        expected: serde_json::to_value(&case.expected).unwrap_or(Value::Null),
        failure,
        details: CaseDetails {
            policy_results: decision.policy_results,
            quality_scores: None,
            assertions,
            redacted_request: redacted.then_some(request),
            redacted_response: if redacted { response } else { None },
        },
    }
}

fn failure(decision: &Decision, case: &TestCase, assertions: &[AssertionResult]) -> Option<String> {
    let want = match case.expected.verdict {
        ExpectedVerdict::Allow => Verdict::Allow,
        ExpectedVerdict::Redact => Verdict::Redact,
        ExpectedVerdict::Block => Verdict::Block,
        ExpectedVerdict::Escalate => Verdict::Escalate,
    };
    if decision.verdict != want {
        let why = decision
            .reason_code
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Some(format!(
            "expected {}, got {}{why}",
            want.as_str(),
            decision.verdict.as_str()
        ));
    }
    if let Some(rc) = &case.expected.reason_code
        && decision.reason_code.as_deref() != Some(rc.as_str())
    {
        return Some(format!(
            "expected reason_code {rc}, got {}",
            decision.reason_code.as_deref().unwrap_or("none")
        ));
    }
    if let Some(a) = assertions.iter().find(|a| !a.passed) {
        return Some(format!(
            "assertion '{}' failed{}",
            a.name,
            a.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        ));
    }
    None
}

fn text_failure(case: &TestCase, text: &str) -> Option<String> {
    if let Some(missing) = case.expected.contains.iter().find(|c| !text.contains(c.as_str())) {
        return Some(format!(
            "expected the text to contain {missing:?}, got {:?}",
            truncate(text, 200)
        ));
    }
    if let Some(present) = case.expected.not_contains.iter().find(|c| text.contains(c.as_str())) {
        return Some(format!("expected the text not to contain {present:?}"));
    }
    None
}

fn check_assertion(a: &Assertion, output: &str) -> AssertionResult {
    let name = a.name.clone().unwrap_or_else(|| {
        serde_json::to_value(a.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    });
    let values: Vec<String> = match &a.value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Some(other) => vec![other.to_string()],
        None => Vec::new(),
    };
    let fold = |s: &str| {
        if a.case_sensitive {
            s.to_owned()
        } else {
            s.to_lowercase()
        }
    };
    let hay = fold(output);
    let needs_value = !matches!(a.kind, AssertionKind::IsJson);
    if needs_value && values.is_empty() {
        return AssertionResult {
            name,
            passed: false,
            message: Some("assertion has no value".into()),
        };
    }
    let result: Result<bool, String> = match a.kind {
        AssertionKind::Equals => Ok(hay.trim() == fold(&values[0]).trim()),
        AssertionKind::Contains => Ok(hay.contains(&fold(&values[0]))),
        AssertionKind::Icontains => Ok(output.to_lowercase().contains(&values[0].to_lowercase())),
        AssertionKind::ContainsAny => Ok(values.iter().any(|v| hay.contains(&fold(v)))),
        AssertionKind::ContainsAll => Ok(values.iter().all(|v| hay.contains(&fold(v)))),
        AssertionKind::StartsWith => Ok(hay.trim_start().starts_with(&fold(&values[0]))),
        AssertionKind::Regex => regex::RegexBuilder::new(&values[0])
            .case_insensitive(!a.case_sensitive)
            .build()
            .map(|r| r.is_match(output))
            .map_err(|e| format!("invalid regex: {e}")),
        AssertionKind::IsJson => Ok(serde_json::from_str::<Value>(output.trim()).is_ok()),
    };
    match result {
        Ok(ok) => {
            let passed = ok != a.negate;
            AssertionResult {
                name,
                passed,
                message: (!passed).then(|| format!("output: {}", truncate(output, 120))),
            }
        }
        Err(e) => AssertionResult {
            name,
            passed: false,
            message: Some(e),
        },
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Inline suites of the compiled configuration as loaded cases.
pub fn inline_cases(policy: &CompiledPolicy) -> Vec<LoadedCase> {
    let Some(testing) = &policy.config().testing else {
        return Vec::new();
    };
    testing
        .suites
        .iter()
        .flat_map(|s| {
            s.cases.iter().map(move |c| LoadedCase {
                source: format!("suite:{}", s.name),
                case: c.clone(),
                assertions: s.assertions.clone(),
            })
        })
        .collect()
}

/// Runs cases and builds the report.
pub fn run(policy: &CompiledPolicy, cases: &[LoadedCase]) -> TestReport {
    let results: Vec<CaseResult> = cases.iter().map(|c| run_case(policy, c)).collect();
    let passed = results.iter().filter(|r| r.passed).count();
    let failed = results.len() - passed;
    TestReport {
        ok: failed == 0,
        passed,
        failed,
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_test_files_take_every_json_escape() {
        let dir = tempfile::tempdir().expect("tmp");
        // What Python's json.dump writes for an emoji and an accented letter.
        let path = dir.path().join("emoji.json");
        std::fs::write(
            &path,
            r#"{"name": "emoji", "input": {"messages": [{"role": "user", "content": "smile \ud83d\ude00 caf\u00e9"}]}, "expected": {"verdict": "allow"}}"#,
        )
        .expect("write");
        let cases = load_golden(&path).expect("loads");
        assert_eq!(cases[0].case.input.messages[0]["content"], "smile 😀 café");
        // A lone surrogate is not text: a clear error naming the problem.
        std::fs::write(
            &path,
            r#"{"name": "x", "input": {"messages": [{"role": "user", "content": "\ud83d"}]}}"#,
        )
        .expect("write");
        let err = load_golden(&path).expect_err("refused");
        assert!(err.starts_with("invalid JSON") && err.contains("escape"), "{err}");
        // Repeated keys are refused in JSON as in YAML.
        std::fs::write(&path, r#"{"name": "a", "name": "b", "input": {"messages": []}}"#).expect("write");
        let err = load_golden(&path).expect_err("refused");
        assert!(err.contains("\"name\" appears twice"), "{err}");
        // YAML files still load as YAML.
        let yaml = dir.path().join("case.yaml");
        std::fs::write(
            &yaml,
            "name: y\ninput: {messages: [{role: user, content: hi}]}\nexpected: {verdict: allow}\n",
        )
        .expect("write");
        assert_eq!(load_golden(&yaml).expect("loads")[0].case.name, "y");
    }
}
