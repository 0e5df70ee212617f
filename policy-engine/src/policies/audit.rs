//! `audit-logger`: an allow-only marker placed last in the chain; its settings describe the
//! audit trail (retention, immutability) that the decision event stream carries.

use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::AuditLogger as Settings;
use crate::config::PolicyConfig;
use crate::kinds::Phase;
use crate::scan::ScanPlan;

#[derive(Debug)]
pub struct AuditLogger {
    enabled: bool,
    note: String,
}

impl AuditLogger {
    pub fn new(s: &Settings) -> Self {
        AuditLogger {
            enabled: s.enabled,
            note: format!(
                "retention_days={} immutable={} log_all_access={} hipaa_audit_controls={}",
                s.retention_days, s.immutable, s.log_all_access, s.hipaa_audit_controls
            ),
        }
    }
}

/// `audit-logger` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "audit-logger",
    phases: &[Phase::Input],
    requires_block: false,
    build,
};

fn build(c: &PolicyConfig, _plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(AuditLogger::new(
        &c.policy.audit_logger.clone().unwrap_or_default(),
    )))
}

impl Policy for AuditLogger {
    fn entry(&self) -> &'static KindEntry {
        &KIND
    }
    fn reads_headers(&self) -> bool {
        false
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn evaluate(&self, _cx: &EvalContext<'_>) -> Result<Outcome, PolicyError> {
        Ok(Outcome {
            note: Some(self.note.clone()),
            ..Outcome::allow()
        })
    }
}
