//! The policy-kind catalog: every kind name the product knows, the phases it runs in, and
//! whether this version enforces it. The enforced kinds come from the policy registry
//! (`policies::REGISTRY`); the rest are listed here. A kind that is known but not enforced
//! is a lint error, never a silent skip.

use serde::Serialize;

/// Where in the request lifecycle a policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Input,
    Tool,
    Output,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Input => "input",
            Phase::Tool => "tool",
            Phase::Output => "output",
        }
    }
}

/// One entry of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub name: &'static str,
    pub phases: &'static [Phase],
    pub enforced: bool,
    /// A chain entry of this kind without a `policy.<kind>` block is E003.
    pub requires_block: bool,
}

const I: &[Phase] = &[Phase::Input];
const O: &[Phase] = &[Phase::Output];
const T: &[Phase] = &[Phase::Tool];
const IO: &[Phase] = &[Phase::Input, Phase::Output];

const fn kind(name: &'static str, phases: &'static [Phase], enforced: bool, requires_block: bool) -> KindInfo {
    KindInfo {
        name,
        phases,
        enforced,
        requires_block,
    }
}

/// The kinds the product documents that this version does not enforce yet.
const NOT_ENFORCED: &[KindInfo] = &[
    kind("agent-firewall", T, false, true),
    kind("cjis-mode", I, false, false),
    kind("student-privacy", I, false, false),
    kind("case-privacy", I, false, false),
    kind("itar-ear-filter", IO, false, false),
    kind("dual-use-filter", I, false, false),
    kind("embedding-detector", IO, false, true),
    kind("language-validator", IO, false, true),
    kind("bot-detector", I, false, false),
    kind("external-moderation", I, false, true),
    kind("content-extractor", I, false, true),
    kind("document-analyzer", I, false, false),
    kind("tool-security", T, false, false),
    kind("tool-budget", T, false, true),
    kind("quality-scorer", O, false, true),
    kind("citation-verifier", O, false, false),
    kind("flagged-review", O, false, true),
    kind("financial-compliance", O, false, false),
    kind("healthcare-compliance", O, false, false),
    kind("bias-monitor", O, false, false),
    kind("mnpi-filter", IO, false, false),
    kind("gdpr-compliance", I, false, false),
    kind("eu-ai-act", O, false, false),
];

/// Every policy kind of the product: the enforced ones (from the registry), then the rest.
pub fn catalog() -> impl Iterator<Item = KindInfo> {
    crate::policies::REGISTRY
        .iter()
        .map(|e| kind(e.name, e.phases, true, e.requires_block))
        .chain(NOT_ENFORCED.iter().copied())
}

pub fn lookup(name: &str) -> Option<KindInfo> {
    catalog().find(|k| k.name == name)
}

pub fn all_names() -> impl Iterator<Item = &'static str> {
    catalog().map(|k| k.name)
}

pub fn enforced_names() -> impl Iterator<Item = &'static str> {
    crate::policies::REGISTRY.iter().map(|e| e.name)
}

/// `prompt-injection` → `prompt_injection`, the prefix of reason codes.
pub fn snake(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_are_unique_kebab_case() {
        let mut names: Vec<_> = all_names().collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        );
        assert_eq!(enforced_names().count(), 12);
    }
}
