//! `hipaa-phi-detector`: the HIPAA Safe Harbor identifiers that text can carry (names in
//! clinical context, dates, contact numbers, record/plan/account/licence/device/vehicle
//! ids, addresses, URLs, IPs, emails, SSNs); redacts or blocks on requests and responses.

use super::entities::{EntitySet, phi_detectors};
use super::pii::decide;
use super::{EvalContext, Outcome, Policy, PolicyError};
use crate::config::{HipaaPhiDetector as Settings, RedactOrBlock, Redaction};
use crate::kinds::Phase;
use crate::scan::ScanPlan;

#[derive(Debug)]
pub struct HipaaPhiDetector {
    enabled: bool,
    action: RedactOrBlock,
    set: EntitySet,
    redaction: Redaction,
}

impl HipaaPhiDetector {
    pub fn new(s: &Settings, plan: &mut ScanPlan) -> Result<Self, String> {
        Ok(HipaaPhiDetector {
            enabled: s.enabled,
            action: s.action,
            set: EntitySet::new(phi_detectors()?, plan)?,
            redaction: s.redaction.clone(),
        })
    }
}

impl Policy for HipaaPhiDetector {
    fn kind(&self) -> &'static str {
        "hipaa-phi-detector"
    }
    fn reads_headers(&self) -> bool {
        false
    }
    fn phases(&self) -> &'static [Phase] {
        &[Phase::Input, Phase::Output]
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn evaluate(&self, cx: &EvalContext<'_>) -> Result<Outcome, PolicyError> {
        let findings = self.set.find(cx.texts, cx.hits);
        Ok(decide(
            findings,
            cx,
            self.action,
            &self.redaction,
            "protected health information",
        ))
    }
}
