//! `data-routing-policy`: keeps only provider targets whose data policy (zero retention,
//! no training, retention days) satisfies the requirements; blocks when none remains. The
//! compliant set is computed once at compile time.

use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::PolicyConfig;
use crate::config::{DataCollection, DataRoutingPolicy as Settings, OnNoCompliant, ProviderTarget};
use crate::kinds::Phase;
use crate::scan::ScanPlan;

/// Ids of the targets that satisfy `s`, in target order.
pub fn compliant_targets(s: &Settings, targets: &[ProviderTarget]) -> Vec<String> {
    targets
        .iter()
        .filter(|t| {
            let dp = t.data_policy.clone().unwrap_or_default();
            let zdr = t.zdr.unwrap_or(false) || dp.zero_data_retention;
            let no_training = dp.training_opt_out || zdr || t.data_collection == Some(DataCollection::Deny);
            let retention = if zdr { Some(0) } else { dp.retention_days };
            (!s.require_zero_data_retention || zdr)
                && (!s.require_no_training || no_training)
                && s.max_retention_days
                    .is_none_or(|max| retention.is_some_and(|r| r <= max))
        })
        .map(|t| t.id.clone())
        .collect()
}

#[derive(Debug)]
pub struct DataRouting {
    enabled: bool,
    compliant: Vec<String>,
    all: usize,
    on_none: OnNoCompliant,
}

impl DataRouting {
    pub fn new(s: &Settings, targets: &[ProviderTarget]) -> Self {
        DataRouting {
            enabled: s.enabled,
            compliant: compliant_targets(s, targets),
            all: targets.len(),
            on_none: s.on_no_compliant_provider,
        }
    }
}

/// `data-routing-policy` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "data-routing-policy",
    phases: &[Phase::Input],
    requires_block: false,
    build,
};

fn build(c: &PolicyConfig, _plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    let settings = c
        .policy
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
    let targets = c.providers.as_ref().map(|p| p.targets.as_slice()).unwrap_or(&[]);
    Ok(Box::new(DataRouting::new(&settings, targets)))
}

impl Policy for DataRouting {
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
        if self.compliant.is_empty() {
            return Ok(match self.on_none {
                OnNoCompliant::Block => Outcome::block(
                    "no_compliant_provider",
                    "Request blocked: no provider satisfies the data routing policy",
                ),
                OnNoCompliant::AllowAny => Outcome {
                    note: Some("no compliant provider; routing to any".into()),
                    ..Outcome::allow()
                },
            });
        }
        Ok(Outcome {
            allowed_targets: (self.compliant.len() < self.all).then(|| self.compliant.clone()),
            note: Some(format!("compliant targets: {}", self.compliant.join(", "))),
            ..Outcome::allow()
        })
    }
}
