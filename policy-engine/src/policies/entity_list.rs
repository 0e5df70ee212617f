//! `entity-list-filter`: blocks requests and responses naming a listed entity (sanctioned
//! parties, watch lists), matched case-insensitively on word boundaries, optionally fuzzy.

use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::EntityListFilter as Settings;
use crate::config::PolicyConfig;
use crate::kinds::Phase;
use crate::scan::ScanPlan;
use crate::text::TermMatcher;

#[derive(Debug)]
pub struct EntityListFilter {
    enabled: bool,
    terms: TermMatcher,
}

impl EntityListFilter {
    pub fn new(s: &Settings, plan: &mut ScanPlan) -> Result<Self, String> {
        Ok(EntityListFilter {
            enabled: s.enabled,
            terms: TermMatcher::new(&s.blocked_entities, s.fuzzy_matching.then_some(s.max_distance), plan)?,
        })
    }
}

/// `entity-list-filter` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "entity-list-filter",
    phases: &[Phase::Input, Phase::Output],
    requires_block: true,
    build,
};

fn build(c: &PolicyConfig, plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(EntityListFilter::new(
        c.policy
            .entity_list_filter
            .as_ref()
            .ok_or("entity-list-filter needs a block")?,
        plan,
    )?))
}

impl Policy for EntityListFilter {
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
        let mut names: Vec<String> = Vec::new();
        let mut n = 0;
        for (i, seg) in cx.texts.iter().enumerate() {
            for hit in self.terms.find(seg.text, cx.hits.get(i, self.terms.owner())) {
                n += 1;
                let name = self.terms.term(hit.term);
                if !names.iter().any(|x| x == name) {
                    names.push(name.to_owned());
                }
            }
        }
        if names.is_empty() {
            return Ok(Outcome::allow());
        }
        Ok(Outcome::block(
            "detected",
            format!(
                "Request blocked: POLICY_VIOLATION, listed entity referenced ({})",
                names.join(", ")
            ),
        )
        .with_entities(names, n))
    }
}
