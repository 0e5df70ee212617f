//! `hipaa-phi-detector`: the HIPAA Safe Harbor identifiers that text can carry (names in
//! clinical context, dates, contact numbers, record/plan/account/licence/device/vehicle
//! ids, addresses, URLs, IPs, emails, SSNs); redacts or blocks on requests and responses.

use super::entities::{EntitySet, phi_detectors};
use super::pii::decide;
use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::PolicyConfig;
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

/// `hipaa-phi-detector` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "hipaa-phi-detector",
    phases: &[Phase::Input, Phase::Output],
    requires_block: false,
    build,
};

fn build(c: &PolicyConfig, plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    let settings = c
        .policy
        .hipaa_phi_detector
        .clone()
        .unwrap_or(crate::config::HipaaPhiDetector {
            enabled: true,
            mode: Default::default(),
            action: Default::default(),
            safe_harbor_method: true,
            redaction: Default::default(),
        });
    Ok(Box::new(HipaaPhiDetector::new(&settings, plan)?))
}

impl Policy for HipaaPhiDetector {
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
        Ok(decide(
            findings,
            cx,
            self.action,
            &self.redaction,
            "protected health information",
        ))
    }
}
