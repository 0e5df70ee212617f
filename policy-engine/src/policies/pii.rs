//! `pii-detector`: emails, phone numbers, SSNs, payment cards (Luhn), IBANs (mod-97), IP
//! addresses and dates of birth, plus medical identifiers in `healthcare_mode`; redacts or
//! blocks, on requests and on buffered responses.

use super::entities::{Detector, EntitySet, PhoneRegions, pii_detectors};
use super::redaction::{self, Finding};
use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::PolicyConfig;
use crate::config::{PiiDetector as Settings, RedactOrBlock, Redaction};
use crate::decision::Verdict;
use crate::kinds::Phase;
use crate::scan::ScanPlan;

#[derive(Debug)]
pub struct PiiDetector {
    enabled: bool,
    action: RedactOrBlock,
    set: EntitySet,
    redaction: Redaction,
}

impl PiiDetector {
    pub fn new(s: &Settings, plan: &mut ScanPlan) -> Result<Self, String> {
        let regions = PhoneRegions::parse(&s.phone_regions)?;
        let mut detectors: Vec<Detector> = pii_detectors(s.pci_mode, s.healthcare_mode)?
            .into_iter()
            .map(|d| d.with_phone_regions(&regions))
            .collect();
        for p in &s.detect_patterns {
            detectors.push(Detector::custom("CUSTOM", p)?);
        }
        Ok(PiiDetector {
            enabled: s.enabled,
            action: s.action,
            set: EntitySet::new(detectors, plan)?,
            redaction: s.redaction.clone(),
        })
    }
}

/// Shared by the detectors that redact or block on entity findings.
pub(crate) fn decide(
    findings: Vec<Finding>,
    cx: &EvalContext<'_>,
    action: RedactOrBlock,
    redaction: &Redaction,
    what: &str,
) -> Outcome {
    if findings.is_empty() {
        return Outcome::allow();
    }
    let entities = if redaction.include_metadata {
        redaction::entity_names(&findings)
    } else {
        Vec::new()
    };
    let n = findings.len();
    match action {
        RedactOrBlock::Block => {
            let list = redaction::entity_names(&findings).join(", ");
            Outcome::block("detected", format!("Request blocked: {what} detected ({list})")).with_entities(entities, n)
        }
        RedactOrBlock::Redact => {
            let texts: Vec<&str> = cx.texts.iter().map(|t| t.text).collect();
            Outcome {
                verdict: Some(Verdict::Redact),
                reason: Some("redacted"),
                edits: redaction::edits(&findings, &texts, redaction),
                ..Outcome::default()
            }
            .with_entities(entities, n)
        }
    }
}

/// `pii-detector` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "pii-detector",
    phases: &[Phase::Input, Phase::Output],
    requires_block: false,
    build,
};

fn build(c: &PolicyConfig, plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(PiiDetector::new(
        &c.policy.pii_detector.clone().unwrap_or_default(),
        plan,
    )?))
}

impl Policy for PiiDetector {
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
        let findings = self.set.find(cx.texts, cx.hits);
        Ok(decide(findings, cx, self.action, &self.redaction, "personal data"))
    }
}
