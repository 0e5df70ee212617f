//! `code-sanitizer`: credentials anywhere in a response, and dangerous commands, destructive
//! SQL, cloud teardown and unsafe calls inside code (fenced blocks and inline code).
//! Matches are replaced by `[REDACTED]`, or the response is blocked with `block_on_match`.

use crate::config::PolicyConfig;
use crate::scan::ScanPlan;
use std::ops::Range;

use std::sync::OnceLock;

use regex::Regex;

use super::redaction::{self, Finding};
use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::builtins::builtin;
use crate::config::{CodeSanitizer as Settings, Redaction};
use crate::decision::Verdict;
use crate::kinds::Phase;

/// Credential formats, detected anywhere in the text (also used by dlp-filter `restricted`).
pub const SECRET_PATTERNS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY", r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)"),
    (
        "AWS_SECRET_KEY",
        r"(?i)aws_secret_access_key\s*[=:]\s*['\x22]?[A-Za-z0-9/+=]{40}",
    ),
    (
        "PRIVATE_KEY",
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
    ),
    (
        "GITHUB_TOKEN",
        r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
    ),
    ("SLACK_TOKEN", r"(?-u:\b)xox[abprs]-[A-Za-z0-9-]{10,}"),
    ("STRIPE_KEY", r"(?-u:\b)(?:sk|rk)_live_[A-Za-z0-9]{24,}"),
    ("ANTHROPIC_KEY", r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{20,}"),
    ("OPENAI_KEY", r"(?-u:\b)sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{32,}"),
    ("GOOGLE_API_KEY", r"(?-u:\b)AIza[0-9A-Za-z_-]{35}"),
    (
        "JWT",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    ),
    (
        "PASSWORD_ASSIGNMENT",
        r"(?i)(?:password|passwd|pwd|secret|api_?key|access_?token|auth_?token)\s*[=:]\s*['\x22][^'\x22\s]{6,}['\x22]",
    ),
    (
        "CONNECTION_STRING",
        r"(?i)(?:postgres(?:ql)?|mysql|mongodb(?:\+srv)?|redis|amqp)://[^:\s/@]+:[^@\s]+@",
    ),
];

/// Dangerous constructs, detected inside code only.
const CODE_PATTERNS: &[(&str, &str)] = &[
    (
        "DESTRUCTIVE_SHELL",
        r"(?-u:\b)rm\s+-[a-zA-Z]*[rR][a-zA-Z]*\s+(?:-[a-zA-Z]+\s+)*(?:/|~|\*|\$HOME|/\*)(?:\s|$|;)",
    ),
    (
        "PIPE_TO_SHELL",
        r"(?-u:\b)(?:curl|wget)\s[^|\n]*\|\s*(?:sudo\s+)?(?:ba|z|da)?sh(?-u:\b)",
    ),
    ("WORLD_WRITABLE", r"(?-u:\b)chmod\s+(?:-R\s+)?0?777(?-u:\b)"),
    (
        "DISK_WIPE",
        r"(?-u:\b)(?:mkfs(?:\.\w+)?\s+/dev/|dd\s+if=\S+\s+of=/dev/(?:sd|nvme|hd|xvd))",
    ),
    ("FORK_BOMB", r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:"),
    (
        "DESTRUCTIVE_SQL",
        r"(?i)(?-u:\b)(?:DROP\s+(?:TABLE|DATABASE|SCHEMA)|TRUNCATE\s+TABLE)(?-u:\b)|(?i)(?-u:\b)DELETE\s+FROM\s+\w+\s*;",
    ),
    (
        "CLOUD_TEARDOWN",
        r"(?-u:\b)(?:aws\s+s3\s+rb\s+\S+\s+--force|aws\s+iam\s+delete-\S+|gcloud\s+projects\s+delete|kubectl\s+delete\s+(?:ns|namespace|--all)|terraform\s+destroy\s+-auto-approve)",
    ),
    (
        "UNSAFE_EVAL",
        r"(?-u:\b)(?:eval|exec)\s*\(|os\.system\s*\(|subprocess\.\w+\([^)]*shell\s*=\s*True|pickle\.loads?\(|verify\s*=\s*False",
    ),
];

#[derive(Debug)]
pub struct CodeSanitizer {
    enabled: bool,
    block: bool,
    secrets: Vec<(&'static str, Regex)>,
    code: Vec<(&'static str, Regex)>,
    fence: Regex,
}

fn compile(list: &[(&'static str, &str)]) -> Result<Vec<(&'static str, Regex)>, String> {
    list.iter()
        .map(|(n, p)| Regex::new(p).map(|r| (*n, r)).map_err(|e| format!("{n}: {e}")))
        .collect()
}

impl CodeSanitizer {
    pub fn new(s: &Settings) -> Result<Self, String> {
        static CODE: OnceLock<Result<Vec<(&'static str, Regex)>, String>> = OnceLock::new();
        static SECRETS: OnceLock<Result<Vec<(&'static str, Regex)>, String>> = OnceLock::new();
        let mut code = builtin(&CODE, || compile(CODE_PATTERNS))?;
        for p in &s.additional_patterns {
            code.push((
                "CUSTOM",
                regex::RegexBuilder::new(p)
                    .size_limit(crate::builtins::REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| e.to_string())?,
            ));
        }
        Ok(CodeSanitizer {
            enabled: s.enabled,
            block: s.block_on_match,
            secrets: builtin(&SECRETS, || compile(SECRET_PATTERNS))?,
            code,
            fence: Regex::new(r"(?s)```.*?(?:```|\z)|`[^`]+`").map_err(|e| e.to_string())?,
        })
    }

    fn code_spans(&self, text: &str) -> Vec<Range<usize>> {
        if !text.contains('`') {
            return Vec::new();
        }
        self.fence.find_iter(text).map(|m| m.range()).collect()
    }
}

/// `code-sanitizer` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "code-sanitizer",
    phases: &[Phase::Output],
    requires_block: false,
    build,
};

fn build(c: &PolicyConfig, _plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(CodeSanitizer::new(
        &c.policy.code_sanitizer.clone().unwrap_or_default(),
    )?))
}

impl Policy for CodeSanitizer {
    fn entry(&self) -> &'static KindEntry {
        &KIND
    }
    fn reads_headers(&self) -> bool {
        false
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn evaluate(&self, cx: &EvalContext<'_>) -> Result<Outcome, PolicyError> {
        let mut findings = Vec::new();
        for (i, seg) in cx.texts.iter().enumerate() {
            for (name, re) in &self.secrets {
                findings.extend(re.find_iter(seg.text).map(|m| Finding {
                    entity: name,
                    segment: i,
                    range: m.range(),
                }));
            }
            for span in self.code_spans(seg.text) {
                let code = &seg.text[span.clone()];
                for (name, re) in &self.code {
                    findings.extend(re.find_iter(code).filter(|m| !m.is_empty()).map(|m| Finding {
                        entity: name,
                        segment: i,
                        range: span.start + m.start()..span.start + m.end(),
                    }));
                }
            }
        }
        if findings.is_empty() {
            return Ok(Outcome::allow());
        }
        let entities = redaction::entity_names(&findings);
        let n = findings.len();
        if self.block {
            return Ok(Outcome::block(
                "detected",
                format!("Response blocked: unsafe code or credentials ({})", entities.join(", ")),
            )
            .with_entities(entities, n));
        }
        let texts: Vec<&str> = cx.texts.iter().map(|t| t.text).collect();
        let settings = Redaction {
            custom_markers: findings
                .iter()
                .map(|f| (f.entity.to_owned(), "[REDACTED]".to_owned()))
                .collect(),
            ..Redaction::default()
        };
        Ok(Outcome {
            verdict: Some(Verdict::Redact),
            reason: Some("redacted"),
            edits: redaction::edits(&findings, &texts, &settings),
            ..Outcome::default()
        }
        .with_entities(entities, n))
    }
}
