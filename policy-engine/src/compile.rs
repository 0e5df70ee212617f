//! `CompiledPolicy`: a validated configuration turned into something ready to run —
//! automata and regexes built, the chain resolved to policy objects, a content digest.
//! Immutable once built; share it behind an `Arc` (the gateway swaps it with arc-swap).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{LoadOutcome, PolicyConfig, Source, load_sources};
use crate::diagnostics::Diagnostic;
use crate::kinds::Phase;
use crate::policies::{self, Policy};
use crate::scan::{ScanPlan, Scanners};

/// Why a configuration could not become a `CompiledPolicy`.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("configuration is invalid ({} error(s))", .0.iter().filter(|d| d.is_error()).count())]
    Invalid(Vec<Diagnostic>),
    #[error("policy '{kind}' could not be built: {message}")]
    Policy { kind: String, message: String },
}

#[derive(Debug)]
pub struct CompiledPolicy {
    config: Arc<PolicyConfig>,
    pub(crate) chain: Vec<Box<dyn Policy>>,
    pub(crate) scanners: Scanners,
    /// Chain positions of the policies of each phase (input, tool, output), in order.
    phases: [Vec<usize>; 3],
    digest: String,
    /// Whether an enabled policy of the chain reads the request headers.
    reads_headers: bool,
    /// prompt-injection's external classifier, when one is configured.
    external: Option<crate::external::ExternalClassifier>,
}

fn phase_index(chain: &[Box<dyn Policy>]) -> [Vec<usize>; 3] {
    [Phase::Input, Phase::Tool, Phase::Output]
        .map(|ph| (0..chain.len()).filter(|i| chain[*i].phases().contains(&ph)).collect())
}

fn reads_headers(chain: &[Box<dyn Policy>]) -> bool {
    chain.iter().any(|p| p.enabled() && p.reads_headers())
}

impl CompiledPolicy {
    /// Whether any enabled policy of the chain reads the request headers: when none does,
    /// a caller may evaluate with empty `Headers` and skip collecting them.
    pub fn reads_headers(&self) -> bool {
        self.reads_headers
    }

    /// prompt-injection's external classifier (`detection.external`), which the gateway
    /// asks after the input phase allowed a request.
    pub fn external_classifier(&self) -> Option<&crate::external::ExternalClassifier> {
        self.external.as_ref()
    }

    /// Compiles a configuration that passed validation.
    pub fn compile(config: PolicyConfig) -> Result<Self, CompileError> {
        crate::normalize::prepare();
        let mut chain = Vec::with_capacity(config.policies.chain.len());
        let mut plan = ScanPlan::default();
        for kind in &config.policies.chain {
            let p = policies::build(kind, &config, &mut plan).map_err(|message| CompileError::Policy {
                kind: kind.clone(),
                message,
            })?;
            chain.push(p);
        }
        let scanners = plan.build().map_err(|message| CompileError::Policy {
            kind: "chain".into(),
            message,
        })?;
        let external = crate::external::ExternalClassifier::of(&config).map_err(|message| CompileError::Policy {
            kind: "prompt-injection".into(),
            message,
        })?;
        let canonical = serde_json::to_vec(&config).unwrap_or_default();
        let digest = Sha256::digest(&canonical).iter().map(|b| format!("{b:02x}")).collect();
        Ok(CompiledPolicy {
            config: Arc::new(config),
            phases: phase_index(&chain),
            reads_headers: reads_headers(&chain),
            chain,
            scanners,
            digest,
            external,
        })
    }

    /// The same configuration running `chain` instead of `policies.chain` (a consumer
    /// group's or route's own chain; the lint checks its kinds like the main chain's).
    pub fn for_chain(&self, chain: &[String]) -> Result<Self, CompileError> {
        let mut config = PolicyConfig::clone(&self.config);
        config.policies.chain = chain.to_vec();
        Self::compile(config)
    }

    /// Parses, validates and compiles configuration texts (layered in order).
    pub fn from_sources(sources: &[Source]) -> Result<(Self, Vec<Diagnostic>), CompileError> {
        let LoadOutcome {
            config, diagnostics, ..
        } = load_sources(sources);
        match config {
            Some(c) => Ok((Self::compile(c)?, diagnostics)),
            None => Err(CompileError::Invalid(diagnostics)),
        }
    }

    /// A policy running `chain` under an otherwise empty, enabled configuration.
    #[cfg(test)]
    pub(crate) fn with_chain(chain: Vec<Box<dyn Policy>>) -> Self {
        let mut config = PolicyConfig::default();
        config.pack.enabled = true;
        CompiledPolicy {
            config: Arc::new(config),
            phases: phase_index(&chain),
            reads_headers: reads_headers(&chain),
            chain,
            scanners: Scanners::default(),
            digest: String::new(),
            external: None,
        }
    }

    /// Chain positions of the policies that run in `phase`.
    pub(crate) fn phase_members(&self, phase: Phase) -> &[usize] {
        match phase {
            Phase::Input => &self.phases[0],
            Phase::Tool => &self.phases[1],
            Phase::Output => &self.phases[2],
        }
    }

    /// Whether any policy runs in `phase` (false for a disabled pack).
    pub fn runs_phase(&self, phase: Phase) -> bool {
        self.config.pack.enabled && !self.phase_members(phase).is_empty()
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// SHA-256 of the canonical configuration: equal configs have equal digests.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn chain_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.chain.iter().map(|p| p.kind())
    }
}
