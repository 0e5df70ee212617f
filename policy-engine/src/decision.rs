//! What the chain decided: the verdict, the reason code, per-policy results for the audit
//! event, and what the gateway answers with (HTTP status and the error envelope of §1.5).

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::kinds::Phase;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Redact,
    Escalate,
    Block,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Redact => "redact",
            Verdict::Block => "block",
            Verdict::Escalate => "escalate",
        }
    }

    /// Block and escalate stop the chain.
    pub fn is_terminal(self) -> bool {
        matches!(self, Verdict::Block | Verdict::Escalate)
    }
}

/// One policy's part in a decision, as recorded on the decision event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyResult {
    pub kind: &'static str,
    pub phase: Phase,
    pub verdict: Verdict,
    pub reason_code: Option<String>,
    /// Entity types matched (`EMAIL`, `CREDIT_CARD`, `blocked_term`, a tool name…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<String>,
    /// How many matches the policy found.
    #[serde(skip_serializing_if = "is_zero")]
    pub matches: usize,
    /// Evaluation time in microseconds.
    pub duration_us: f64,
    /// Set when the policy did not run: `disabled`, `chain short-circuited`, `error: …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl PolicyResult {
    pub fn skipped(kind: &'static str, phase: Phase, note: &str) -> Self {
        PolicyResult {
            kind,
            phase,
            verdict: Verdict::Allow,
            reason_code: None,
            entities: Vec::new(),
            matches: 0,
            duration_us: 0.0,
            note: Some(note.to_owned()),
        }
    }

    pub(crate) fn set_duration(&mut self, d: Duration) {
        self.duration_us = d.as_secs_f64() * 1e6;
    }
}

/// The outcome of running one phase (or several) of a chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Reason code of the deciding policy (`prompt_injection.detected`); `None` on a clean allow.
    pub reason_code: Option<String>,
    /// Kind of the policy that blocked, escalated or redacted.
    pub policy: Option<&'static str>,
    /// Message for the client on block/escalate.
    pub message: Option<String>,
    /// The phase in which the decision was made.
    pub phase: Option<Phase>,
    pub policy_results: Vec<PolicyResult>,
    /// Provider targets allowed by data-routing-policy (`None` = all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_targets: Option<Vec<String>>,
    /// A policy errored and `--fail-mode allow` let the request through.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

impl Default for Decision {
    fn default() -> Self {
        Decision {
            verdict: Verdict::Allow,
            reason_code: None,
            policy: None,
            message: None,
            phase: None,
            policy_results: Vec::new(),
            allowed_targets: None,
            degraded: false,
        }
    }
}

impl Decision {
    /// Folds the result of a later phase into this decision.
    pub fn absorb(&mut self, later: Decision) {
        self.policy_results.extend(later.policy_results);
        self.degraded |= later.degraded;
        if later.allowed_targets.is_some() {
            self.allowed_targets = later.allowed_targets;
        }
        if later.verdict > self.verdict || (later.verdict == self.verdict && self.reason_code.is_none()) {
            self.verdict = later.verdict;
            self.reason_code = later.reason_code;
            self.policy = later.policy;
            self.message = later.message;
            self.phase = later.phase;
        }
    }

    /// HTTP status the gateway answers with when the decision stops the request.
    pub fn http_status(&self) -> u16 {
        match self.verdict {
            Verdict::Block | Verdict::Escalate => 409,
            Verdict::Allow | Verdict::Redact => 200,
        }
    }

    /// The documented error envelope for a block or escalation.
    pub fn error_body(&self) -> Value {
        let code = match (self.verdict, self.phase) {
            (Verdict::Escalate, _) => "escalation_required",
            (_, Some(Phase::Output)) => "output_blocked",
            _ => "input_blocked",
        };
        let message = self.message.clone().unwrap_or_else(|| match self.verdict {
            Verdict::Escalate => "Request held for human review".to_owned(),
            _ => format!("Request blocked by policy {}", self.policy.unwrap_or("policy")),
        });
        json!({
            "error": {
                "type": "policy_violation",
                "message": message,
                "policy": self.policy,
                "code": code,
                "reason_code": self.reason_code,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_envelope_matches_the_documented_shape() {
        let d = Decision {
            verdict: Verdict::Block,
            reason_code: Some("prompt_injection.detected".into()),
            policy: Some("prompt-injection"),
            message: Some("Request blocked: prompt contains disallowed content".into()),
            phase: Some(Phase::Input),
            ..Decision::default()
        };
        assert_eq!(d.http_status(), 409);
        let body = d.error_body();
        assert_eq!(body["error"]["type"], "policy_violation");
        assert_eq!(body["error"]["code"], "input_blocked");
        assert_eq!(body["error"]["policy"], "prompt-injection");
        let esc = Decision {
            verdict: Verdict::Escalate,
            ..d
        };
        assert_eq!(esc.error_body()["error"]["code"], "escalation_required");
    }

    #[test]
    fn absorb_keeps_the_strongest_verdict() {
        let mut a = Decision {
            verdict: Verdict::Redact,
            reason_code: Some("pii_detector.redacted".into()),
            ..Decision::default()
        };
        a.absorb(Decision::default());
        assert_eq!(a.verdict, Verdict::Redact);
        a.absorb(Decision {
            verdict: Verdict::Block,
            reason_code: Some("x.y".into()),
            phase: Some(Phase::Output),
            ..Decision::default()
        });
        assert_eq!(a.verdict, Verdict::Block);
        assert_eq!(a.error_body()["error"]["code"], "output_blocked");
    }
}
