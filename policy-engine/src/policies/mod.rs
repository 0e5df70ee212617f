//! One module per policy kind, each implementing `Policy`. A new kind is a new module, a
//! constructor arm in `build`, and a fixture folder; nothing else changes.

pub mod audit;
pub mod code_sanitizer;
pub mod data_routing;
pub mod dlp;
pub mod entities;
pub mod entity_list;
pub mod hipaa;
pub mod human_oversight;
pub mod pii;
pub mod prompt_injection;
pub mod rbac;
pub mod redaction;
pub mod safety;
pub mod tool_validation;

use std::fmt::Debug;
use std::ops::Range;

use serde_json::Value;

use crate::config::PolicyConfig;
use crate::decision::Verdict;
use crate::exchange::{Headers, TextSegment, ToolUse};
use crate::kinds::Phase;
use crate::scan::{HitCache, ScanPlan};

/// Everything a policy may look at during one phase.
#[derive(Debug)]
pub struct EvalContext<'a> {
    pub phase: Phase,
    /// Text of the body under evaluation: the request in input/tool phases, the response
    /// in the output phase.
    pub texts: &'a [TextSegment<'a>],
    /// Tool declarations and calls of the body under evaluation.
    pub tools: &'a [ToolUse<'a>],
    /// The request headers. A gateway may pass none when no policy of the chain
    /// `reads_headers`.
    pub headers: &'a Headers,
    /// The request body (also available in the output phase, for context).
    pub request: &'a Value,
    pub model: Option<&'a str>,
    /// The chain's shared literal scan of `texts`.
    pub hits: &'a HitCache<'a>,
}

/// A rewrite of part of one text segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub segment: usize,
    pub range: Range<usize>,
    pub replacement: String,
}

/// What one policy concluded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub verdict: Option<Verdict>,
    /// Second half of the reason code: `detected` in `prompt_injection.detected`.
    pub reason: Option<&'static str>,
    pub message: Option<String>,
    pub entities: Vec<String>,
    pub matches: usize,
    pub edits: Vec<Edit>,
    pub allowed_targets: Option<Vec<String>>,
    pub note: Option<String>,
}

impl Outcome {
    pub fn allow() -> Self {
        Outcome::default()
    }

    pub fn block(reason: &'static str, message: impl Into<String>) -> Self {
        Outcome {
            verdict: Some(Verdict::Block),
            reason: Some(reason),
            message: Some(message.into()),
            ..Outcome::default()
        }
    }

    pub fn escalate(reason: &'static str, message: impl Into<String>) -> Self {
        Outcome {
            verdict: Some(Verdict::Escalate),
            reason: Some(reason),
            message: Some(message.into()),
            ..Outcome::default()
        }
    }

    pub fn with_entities(mut self, entities: Vec<String>, matches: usize) -> Self {
        self.entities = entities;
        self.matches = matches;
        self
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict.unwrap_or(Verdict::Allow)
    }
}

/// A policy evaluation that could not complete; `--fail-mode` decides what happens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// A compiled policy of one kind.
pub trait Policy: Send + Sync + Debug {
    fn kind(&self) -> &'static str;
    fn phases(&self) -> &'static [Phase];
    fn enabled(&self) -> bool {
        true
    }
    /// Whether the policy looks at `EvalContext::headers`. A gateway hands the request
    /// headers to a chain only when one of its policies does, so a policy that never reads
    /// them says so here; the default is the safe answer.
    fn reads_headers(&self) -> bool {
        true
    }
    fn evaluate(&self, cx: &EvalContext<'_>) -> Result<Outcome, PolicyError>;
}

/// Builds the compiled policy for `kind` from a validated configuration.
pub fn build(kind: &str, config: &PolicyConfig, plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    let b = &config.policy;
    Ok(match kind {
        "prompt-injection" => Box::new(prompt_injection::PromptInjection::new(
            &b.prompt_injection.clone().unwrap_or_default(),
            plan,
        )?),
        "pii-detector" => Box::new(pii::PiiDetector::new(
            &b.pii_detector.clone().unwrap_or_default(),
            plan,
        )?),
        "dlp-filter" => Box::new(dlp::DlpFilter::new(
            b.dlp_filter.as_ref().ok_or("dlp-filter needs a block")?,
            plan,
        )?),
        "hipaa-phi-detector" => Box::new(hipaa::HipaaPhiDetector::new(
            &b.hipaa_phi_detector.clone().unwrap_or(crate::config::HipaaPhiDetector {
                enabled: true,
                mode: Default::default(),
                action: Default::default(),
                safe_harbor_method: true,
                redaction: Default::default(),
            }),
            plan,
        )?),
        "entity-list-filter" => Box::new(entity_list::EntityListFilter::new(
            b.entity_list_filter
                .as_ref()
                .ok_or("entity-list-filter needs a block")?,
            plan,
        )?),
        "code-sanitizer" => Box::new(code_sanitizer::CodeSanitizer::new(
            &b.code_sanitizer.clone().unwrap_or_default(),
        )?),
        "tool-validation" => Box::new(tool_validation::ToolValidation::new(
            b.tool_validation.as_ref().ok_or("tool-validation needs a block")?,
        )?),
        "rbac" => Box::new(rbac::Rbac::new(&b.rbac.clone().unwrap_or_default(), plan)?),
        "human-oversight" => Box::new(human_oversight::HumanOversight::new(
            b.human_oversight.as_ref().ok_or("human-oversight needs a block")?,
        )?),
        "data-routing-policy" => {
            let drp = b
                .data_routing_policy
                .clone()
                .unwrap_or(crate::config::DataRoutingPolicy {
                    enabled: true,
                    require_zero_data_retention: false,
                    require_no_training: false,
                    max_retention_days: None,
                    on_no_compliant_provider: Default::default(),
                    log_provider_selection: true,
                });
            let targets = config.providers.as_ref().map(|p| p.targets.as_slice()).unwrap_or(&[]);
            Box::new(data_routing::DataRouting::new(&drp, targets))
        }
        "safety-filter" => Box::new(safety::SafetyFilter::new(
            &b.safety_filter.clone().unwrap_or_default(),
            plan,
        )?),
        "audit-logger" => Box::new(audit::AuditLogger::new(&b.audit_logger.clone().unwrap_or_default())),
        other => return Err(format!("policy kind '{other}' is not enforced by this version")),
    })
}
