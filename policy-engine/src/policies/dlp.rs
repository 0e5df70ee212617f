//! `dlp-filter`: configured regexes and blocked terms (case-insensitive, whole word,
//! optionally fuzzy) on requests and responses, plus built-in classification markers at
//! `sensitivity_level: high` and credentials at `restricted`. Redacts or blocks.

use regex::Regex;

use super::code_sanitizer::SECRET_PATTERNS;
use super::redaction::{self, Finding};
use super::{EvalContext, Outcome, Policy, PolicyError};
use crate::config::{DlpFilter as Settings, RedactOrBlock, SensitivityLevel};
use crate::decision::Verdict;
use crate::kinds::Phase;
use crate::text::TermMatcher;

/// Document classification markings (`high` and above).
const CLASSIFICATION_MARKERS: &[&str] = &[
    r"(?-u:\b)(?:TOP SECRET|SECRET|CONFIDENTIAL)//[A-Z][A-Z/ -]*",
    r"(?-u:\b)CUI//(?:SP-)?[A-Z]+",
    r"(?i)(?-u:\b)(?:strictly confidential|internal use only|proprietary and confidential|company confidential|attorney[- ]client privileged)(?-u:\b)",
];

#[derive(Debug)]
pub struct DlpFilter {
    enabled: bool,
    action: RedactOrBlock,
    patterns: Option<Regex>,
    builtin: Option<Regex>,
    terms: TermMatcher,
    replacement: String,
}

fn alternation<S: AsRef<str>>(patterns: &[S]) -> Result<Option<Regex>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let joined = patterns
        .iter()
        .map(|p| format!("(?:{})", p.as_ref()))
        .collect::<Vec<_>>()
        .join("|");
    regex::RegexBuilder::new(&joined)
        .size_limit(crate::compile::REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|e| e.to_string())
}

impl DlpFilter {
    pub fn new(s: &Settings) -> Result<Self, String> {
        let mut builtin: Vec<&str> = Vec::new();
        if s.sensitivity_level >= SensitivityLevel::High {
            builtin.extend(CLASSIFICATION_MARKERS);
        }
        if s.sensitivity_level >= SensitivityLevel::Restricted {
            builtin.extend(SECRET_PATTERNS.iter().map(|(_, p)| *p));
        }
        Ok(DlpFilter {
            enabled: s.enabled,
            action: s.action,
            patterns: alternation(&s.detect_patterns)?,
            builtin: alternation(&builtin)?,
            terms: TermMatcher::new(&s.blocked_terms, s.fuzzy_matching.then_some(s.max_distance))?,
            replacement: s.replacement.clone().unwrap_or_else(|| "[REDACTED]".to_owned()),
        })
    }
}

impl Policy for DlpFilter {
    fn kind(&self) -> &'static str {
        "dlp-filter"
    }
    fn phases(&self) -> &'static [Phase] {
        &[Phase::Input, Phase::Output]
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn evaluate(&self, cx: &EvalContext<'_>) -> Result<Outcome, PolicyError> {
        let mut findings = Vec::new();
        for (i, seg) in cx.texts.iter().enumerate() {
            for (re, entity) in [(&self.patterns, "pattern"), (&self.builtin, "classified")] {
                if let Some(re) = re {
                    findings.extend(re.find_iter(seg.text).filter(|m| !m.is_empty()).map(|m| Finding {
                        entity,
                        segment: i,
                        range: m.range(),
                    }));
                }
            }
            if !self.terms.is_empty() {
                findings.extend(self.terms.find(seg.text).into_iter().map(|h| Finding {
                    entity: "blocked_term",
                    segment: i,
                    range: h.range,
                }));
            }
        }
        if findings.is_empty() {
            return Ok(Outcome::allow());
        }
        let entities = redaction::entity_names(&findings);
        let n = findings.len();
        Ok(match self.action {
            RedactOrBlock::Block => {
                Outcome::block("detected", "Request blocked: restricted content detected").with_entities(entities, n)
            }
            RedactOrBlock::Redact => {
                let texts: Vec<&str> = cx.texts.iter().map(|t| t.text).collect();
                let settings = crate::config::Redaction {
                    custom_markers: ["pattern", "classified", "blocked_term"]
                        .iter()
                        .map(|k| ((*k).to_owned(), self.replacement.clone()))
                        .collect(),
                    ..Default::default()
                };
                Outcome {
                    verdict: Some(Verdict::Redact),
                    reason: Some("redacted"),
                    edits: redaction::edits(&findings, &texts, &settings),
                    ..Outcome::default()
                }
                .with_entities(entities, n)
            }
        })
    }
}
