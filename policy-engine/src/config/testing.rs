//! Test-case types shared by golden files (`tests/*.json|yaml`) and inline
//! `testing.suites` (spec §7).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::yes;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Testing {
    /// Threshold for assertions that give none.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub default_threshold: Option<f64>,
    /// Red-team generators; none ship with this version, so the list must stay empty.
    #[serde(default)]
    #[schemars(length(max = 0))]
    pub plugins: Vec<serde_json::Value>,
    /// Attack strategies; none ship with this version, so the list must stay empty.
    #[serde(default)]
    #[schemars(length(max = 0))]
    pub strategies: Vec<serde_json::Value>,
    #[serde(default)]
    pub suites: Vec<TestSuite>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSuite {
    pub name: String,
    pub description: Option<String>,
    /// Provider target id the suite is meant for (informational in local tests).
    pub target: Option<String>,
    /// Checks applied to the output of every case that has an `upstream_response`.
    #[serde(default)]
    pub assertions: Vec<Assertion>,
    pub cases: Vec<TestCase>,
}

/// One case: a request (and optionally a canned upstream answer) and the expected decision.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    pub description: Option<String>,
    pub input: TestInput,
    pub expected: Expected,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// Chat messages (`{role, content}`), as in an OpenAI chat request.
    #[serde(default)]
    pub messages: Vec<serde_json::Value>,
    /// Request headers, e.g. `{"X-User-Id": "u-1"}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra request-body fields (model, tools, …) merged into the chat request.
    pub request: Option<serde_json::Map<String, serde_json::Value>>,
    /// Canned provider answer for output-phase cases: a string (assistant text) or a full
    /// OpenAI chat-completion / Anthropic message object.
    pub upstream_response: Option<serde_json::Value>,
    /// Gateway name the request is attributed to.
    pub proxy_name: Option<String>,
    /// Teams of the caller.
    #[serde(default)]
    pub team_slugs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub verdict: ExpectedVerdict,
    /// Reason code of the deciding policy, e.g. `prompt_injection.detected`.
    pub reason_code: Option<String>,
    /// Strings that must appear in the request or response text after redaction.
    #[serde(default)]
    pub contains: Vec<String>,
    /// Strings that must not appear in the request or response text after redaction.
    #[serde(default)]
    pub not_contains: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVerdict {
    #[default]
    Allow,
    Redact,
    Block,
    Escalate,
}

/// An output assertion (a subset of the quality-scorer vocabulary).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    #[serde(rename = "type")]
    pub kind: AssertionKind,
    pub name: Option<String>,
    /// A string, or a list of strings for `contains-any` / `contains-all`.
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub negate: bool,
    #[serde(default = "yes")]
    pub case_sensitive: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AssertionKind {
    Equals,
    Contains,
    Icontains,
    ContainsAny,
    ContainsAll,
    StartsWith,
    Regex,
    IsJson,
}
