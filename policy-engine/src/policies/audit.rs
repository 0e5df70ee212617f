//! `audit-logger`: an allow-only marker placed last in the chain; its settings describe the
//! audit trail (retention, immutability) that the decision event stream carries.

use super::{EvalContext, Outcome, Policy, PolicyError};
use crate::config::AuditLogger as Settings;
use crate::kinds::Phase;

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

impl Policy for AuditLogger {
    fn kind(&self) -> &'static str {
        "audit-logger"
    }
    fn reads_headers(&self) -> bool {
        false
    }
    fn phases(&self) -> &'static [Phase] {
        &[Phase::Input]
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
