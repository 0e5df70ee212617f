//! One module per policy kind, each implementing `Policy` and declaring its `KIND` (name,
//! phases, whether a chain entry needs a block, how it compiles) for the registry below. A
//! new kind is a new module, its line in `REGISTRY`, its `policy.<kind>` block in
//! `config::PolicyBlocks`, and a fixture folder; the kind catalog, lint and the builder
//! read the registry.

pub mod audit;
pub mod classifier;
pub mod code_sanitizer;
pub mod data_routing;
pub mod dlp;
pub mod entities;
pub use entities::{DEFAULT_PHONE_REGIONS, PhoneRegions};
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

/// One enforced policy kind in the registry.
#[derive(Debug)]
pub struct KindEntry {
    pub name: &'static str,
    pub phases: &'static [Phase],
    /// A chain entry of this kind without a `policy.<kind>` block is E003.
    pub requires_block: bool,
    /// Compiles the kind from a validated configuration.
    pub build: BuildFn,
}

/// How a kind compiles: its settings from the configuration, its literals into the scan plan.
pub type BuildFn = fn(&PolicyConfig, &mut ScanPlan) -> Result<Box<dyn Policy>, String>;

/// Every kind this version enforces, in catalog order.
pub const REGISTRY: &[&KindEntry] = &[
    &data_routing::KIND,
    &prompt_injection::KIND,
    &pii::KIND,
    &hipaa::KIND,
    &rbac::KIND,
    &audit::KIND,
    &dlp::KIND,
    &safety::KIND,
    &entity_list::KIND,
    &tool_validation::KIND,
    &human_oversight::KIND,
    &code_sanitizer::KIND,
];

/// A compiled policy of one kind.
pub trait Policy: Send + Sync + Debug {
    /// The kind's registry entry.
    fn entry(&self) -> &'static KindEntry;
    fn kind(&self) -> &'static str {
        self.entry().name
    }
    fn phases(&self) -> &'static [Phase] {
        self.entry().phases
    }
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
    match REGISTRY.iter().find(|e| e.name == kind) {
        Some(e) => (e.build)(config, plan),
        None => Err(format!("policy kind '{kind}' is not enforced by this version")),
    }
}
