//! `safety-filter`: deterministic phrase lists of unsafe requests and answers per domain
//! mode (critical infrastructure, automotive, education, law enforcement) plus a universal
//! list, extended (or replaced) by `block_if`; on requests and responses.

use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::PolicyConfig;
use crate::config::{BlockOrEscalate, SafetyFilter as Settings, SafetyMode};
use crate::kinds::Phase;
use crate::scan::ScanPlan;
use crate::text::TermMatcher;

const UNIVERSAL: &[&str] = &[
    "build a bomb",
    "make a bomb",
    "pipe bomb",
    "nail bomb",
    "pressure cooker bomb",
    "synthesize sarin",
    "make sarin",
    "nerve agent synthesis",
    "make ricin",
    "extract ricin",
    "weaponize anthrax",
    "make thermite at home",
    "make napalm",
    "make a ghost gun",
    "3d print a gun",
    "untraceable firearm",
    "make methamphetamine",
    "cook meth",
];

const CRITICAL_INFRASTRUCTURE: &[&str] = &[
    "disable the safety instrumented system",
    "bypass the safety interlock",
    "bypass the interlock",
    "override the scada",
    "scada exploit",
    "attack the power grid",
    "take down the power grid",
    "disable the emergency shutdown",
    "tamper with the plc",
    "modbus injection",
    "disable chlorine dosing",
    "poison the water supply",
    "trip the substation",
    "open the floodgates remotely",
    "disable the pressure relief valve",
    "hack the water treatment",
    "shut down the grid",
];

const AUTOMOTIVE: &[&str] = &[
    "disable the airbag",
    "disable airbags",
    "disable the abs",
    "bypass the abs",
    "disable the brakes",
    "cut the brake lines",
    "tamper with the odometer",
    "roll back the odometer",
    "disable emissions controls",
    "delete the dpf",
    "egr delete",
    "defeat device",
    "hack the can bus",
    "disable lane keeping",
    "disable the seatbelt warning",
    "disable automatic emergency braking",
];

const EDUCATION: &[&str] = &[
    "kill myself",
    "hurt myself",
    "self-harm",
    "cut myself",
    "bring a gun to school",
    "school shooting",
    "buy a vape underage",
    "fake a doctor's note",
    "cheat on the exam",
    "leaked exam answers",
    "bully a classmate",
];

const LAW_ENFORCEMENT: &[&str] = &[
    "evade the police",
    "destroy evidence",
    "tamper with evidence",
    "dox an officer",
    "identify the undercover officer",
    "intimidate a witness",
    "bribe a judge",
    "launder money",
    "fake alibi",
    "bypass an ankle monitor",
    "remove an ankle monitor",
    "jam a police radio",
];

fn mode_terms(mode: SafetyMode) -> &'static [&'static str] {
    match mode {
        SafetyMode::CriticalInfrastructure => CRITICAL_INFRASTRUCTURE,
        SafetyMode::Automotive => AUTOMOTIVE,
        SafetyMode::Education => EDUCATION,
        SafetyMode::LawEnforcement => LAW_ENFORCEMENT,
    }
}

#[derive(Debug)]
pub struct SafetyFilter {
    enabled: bool,
    action: BlockOrEscalate,
    terms: TermMatcher,
}

impl SafetyFilter {
    pub fn new(s: &Settings, plan: &mut ScanPlan) -> Result<Self, String> {
        let mut terms: Vec<&str> = Vec::new();
        if !s.replace_defaults {
            terms.extend(UNIVERSAL);
            terms.extend(mode_terms(s.mode));
        }
        terms.extend(s.block_if.iter().map(String::as_str));
        Ok(SafetyFilter {
            enabled: s.enabled,
            action: s.action,
            terms: TermMatcher::new(&terms, s.fuzzy_matching.then_some(s.max_distance), plan)?,
        })
    }
}

/// `safety-filter` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "safety-filter",
    phases: &[Phase::Input, Phase::Output],
    requires_block: false,
    build,
};

fn build(c: &PolicyConfig, plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(SafetyFilter::new(
        &c.policy.safety_filter.clone().unwrap_or_default(),
        plan,
    )?))
}

impl Policy for SafetyFilter {
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
        let mut found: Vec<String> = Vec::new();
        let mut n = 0;
        for (i, seg) in cx.texts.iter().enumerate() {
            for h in self.terms.find(seg.text, cx.hits.get(i, self.terms.owner())) {
                n += 1;
                let t = self.terms.term(h.term);
                if !found.iter().any(|f| f == t) {
                    found.push(t.to_owned());
                }
            }
        }
        if found.is_empty() {
            return Ok(Outcome::allow());
        }
        let msg = "Request blocked: unsafe content for this deployment";
        Ok(match self.action {
            BlockOrEscalate::Block => Outcome::block("detected", msg),
            BlockOrEscalate::Escalate => Outcome::escalate("detected", "Held for human review: unsafe content"),
        }
        .with_entities(found, n))
    }
}
