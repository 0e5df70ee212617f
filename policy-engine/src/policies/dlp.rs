//! `dlp-filter`: configured regexes and blocked terms (case-insensitive, whole word,
//! optionally fuzzy) on requests and responses, plus built-in classification markers at
//! `sensitivity_level: high` and credentials at `restricted`. Redacts or blocks.
//!
//! Terms and the literal prefixes of the regexes come from the chain's shared scan; a
//! regex runs anchored at its prefixes' hits, or over the whole text when it has none.

use crate::config::PolicyConfig;
use std::sync::OnceLock;

use super::code_sanitizer::SECRET_PATTERNS;
use super::redaction::{self, Finding};
use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::builtins::builtin;
use crate::config::{DlpFilter as Settings, RedactOrBlock, SensitivityLevel};
use crate::decision::Verdict;
use crate::kinds::Phase;
use crate::scan::{LiteralRegex, OwnerId, ScanPlan};
use crate::text::TermMatcher;

/// Document classification markings (`high` and above).
const CLASSIFICATION_MARKERS: &[&str] = &[
    r"(?-u:\b)(?:TOP SECRET|SECRET|CONFIDENTIAL)//[A-Z][A-Z/ -]*",
    r"(?-u:\b)CUI//(?:SP-)?[A-Z]+",
    r"(?i)(?:strictly confidential|internal use only|proprietary and confidential|company confidential|attorney[- ]client privileged)(?-u:\b)",
];

const PHASES: &[Phase] = &[Phase::Input, Phase::Output];

#[derive(Debug)]
pub struct DlpFilter {
    enabled: bool,
    action: RedactOrBlock,
    /// Configured patterns then built-in ones, with the entity each reports.
    patterns: Vec<(LiteralRegex, &'static str)>,
    /// Scan owner of the patterns' prefixes; a hit's `local` is the pattern index.
    prefix_owner: OwnerId,
    terms: TermMatcher,
    replacement: String,
}

impl DlpFilter {
    pub fn new(s: &Settings, plan: &mut ScanPlan) -> Result<Self, String> {
        static MARKERS: OnceLock<Result<Vec<LiteralRegex>, String>> = OnceLock::new();
        static SECRETS: OnceLock<Result<Vec<LiteralRegex>, String>> = OnceLock::new();
        let compile_all = |list: &mut dyn Iterator<Item = &str>| {
            list.map(|p| LiteralRegex::new(p, false, true))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut patterns: Vec<(LiteralRegex, &'static str)> = Vec::new();
        for p in &s.detect_patterns {
            patterns.push((LiteralRegex::new(p, false, true)?, "pattern"));
        }
        if s.sensitivity_level >= SensitivityLevel::High {
            let markers = builtin(&MARKERS, || compile_all(&mut CLASSIFICATION_MARKERS.iter().copied()))?;
            patterns.extend(markers.into_iter().map(|r| (r, "classified")));
        }
        if s.sensitivity_level >= SensitivityLevel::Restricted {
            let secrets = builtin(&SECRETS, || compile_all(&mut SECRET_PATTERNS.iter().map(|(_, p)| *p)))?;
            patterns.extend(secrets.into_iter().map(|r| (r, "credential")));
        }
        let prefix_owner = plan.owner();
        for (i, (re, _)) in patterns.iter().enumerate() {
            let local = u32::try_from(i).map_err(|_| "too many patterns")?;
            for lit in re.prefixes().unwrap_or(&[]) {
                plan.add(prefix_owner, local, lit);
            }
        }
        Ok(DlpFilter {
            enabled: s.enabled,
            action: s.action,
            patterns,
            prefix_owner,
            terms: TermMatcher::new(&s.blocked_terms, s.fuzzy_matching.then_some(s.max_distance), plan)?,
            replacement: s.replacement.clone().unwrap_or_else(|| "[REDACTED]".to_owned()),
        })
    }
}

/// `dlp-filter` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "dlp-filter",
    phases: PHASES,
    requires_block: true,
    build,
};

fn build(c: &PolicyConfig, plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(DlpFilter::new(
        c.policy.dlp_filter.as_ref().ok_or("dlp-filter needs a block")?,
        plan,
    )?))
}

impl Policy for DlpFilter {
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
        let mut ranges = Vec::new();
        let mut by_pattern = Vec::new();
        for (i, seg) in cx.texts.iter().enumerate() {
            // Group the prefix hits by pattern once instead of filtering per pattern.
            by_pattern.clear();
            by_pattern.extend_from_slice(cx.hits.get(i, self.prefix_owner));
            by_pattern.sort_unstable_by_key(|h| (h.local, h.start));
            for (k, (re, entity)) in self.patterns.iter().enumerate() {
                let k32 = k as u32;
                let lo = by_pattern.partition_point(|h| h.local < k32);
                let hi = lo + by_pattern[lo..].partition_point(|h| h.local <= k32);
                if lo == hi && !re.full_scan() {
                    // A regex with literal prefixes matches only where one of them is.
                    continue;
                }
                ranges.clear();
                re.find(seg.text, &by_pattern[lo..hi], &mut ranges);
                findings.extend(ranges.drain(..).map(|range| Finding {
                    entity,
                    segment: i,
                    range,
                }));
            }
            if !self.terms.is_empty() {
                let hits = self.terms.find(seg.text, cx.hits.get(i, self.terms.owner()));
                findings.extend(hits.into_iter().map(|h| Finding {
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
                    custom_markers: ["pattern", "classified", "credential", "blocked_term"]
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
