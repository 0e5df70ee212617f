//! `human-oversight`: holds answers that make decisions in sensitive categories (financial
//! advice, medical decisions, legal opinions, hiring actions, safety-critical instructions)
//! for human review, or blocks them.

use crate::config::PolicyConfig;
use crate::scan::ScanPlan;
use regex::Regex;

use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::{EscalateOrBlock, HumanOversight as Settings, OversightCategory};
use crate::exchange::{Role, request_texts};
use crate::kinds::Phase;

fn category_pattern(c: OversightCategory) -> &'static str {
    match c {
        OversightCategory::FinancialAdvice => {
            r"(?i)(?-u:\b)(?:(?:you should(?: consider)?|you must|i (?:would )?(?:recommend|suggest|advise)(?: that you)?)\s+(?:buying|selling|investing in|shorting|buy|sell|invest in|short)|(?:guaranteed|risk-free)\s+(?:returns?|profits?|investment)|put (?:all )?your (?:money|savings) (?:in|into)|(?:allocate|move)\s+\d+\s*%\s+of your (?:portfolio|savings|401k))"
        }
        OversightCategory::MedicalDecisions => {
            r"(?i)(?-u:\b)(?:you (?:should|can|must) (?:stop|start|increase|decrease|double|skip) (?:taking )?(?:your )?(?:medication|medicine|dose|dosage|insulin|treatment|prescription)|take \d+\s?(?:mg|ml|mcg|units)(?-u:\b)|you (?:have|are suffering from|are diagnosed with) (?:a |an )?[a-z]+|(?:the|my) diagnosis is|i (?:prescribe|diagnose)|(?:no|don't) need to see a doctor)"
        }
        OversightCategory::LegalOpinions => {
            r"(?i)(?-u:\b)(?:you (?:should|can|must) (?:sue|file (?:a )?(?:lawsuit|claim|suit)|plead (?:guilty|not guilty)|sign the (?:contract|agreement|settlement))|you (?:have|don't have) a (?:strong |valid |good )?(?:case|claim)|my legal (?:advice|opinion) is|you are (?:not )?(?:liable|entitled to))"
        }
        OversightCategory::HiringActions => {
            r"(?i)(?-u:\b)(?:(?:we|you) should (?:not )?(?:hire|reject|fire|terminate|promote)|(?:reject|hire|fire|terminate|promote) (?:this|the) (?:candidate|applicant|employee)|(?:candidate|applicant) (?:is|should be) (?:rejected|hired|not a (?:good )?fit)|recommendation:?\s+(?:hire|reject|do not hire))"
        }
        OversightCategory::SafetyCritical => {
            r"(?i)(?-u:\b)(?:(?:disable|bypass|override) (?:the )?(?:safety|interlock|alarm|emergency stop|e-stop|pressure relief|lockout)|(?:increase|raise) (?:the )?(?:pressure|voltage|temperature) (?:beyond|above|past) (?:the )?(?:rated|safe|maximum)|safe to (?:operate|fly|drive) (?:without|with a (?:broken|failed)))"
        }
    }
}

#[derive(Debug)]
pub struct HumanOversight {
    enabled: bool,
    action: EscalateOrBlock,
    categories: Vec<(OversightCategory, Regex)>,
    assignee: Option<String>,
}

impl HumanOversight {
    pub fn new(s: &Settings) -> Result<Self, String> {
        let categories = s
            .require_human_for
            .iter()
            .map(|c| {
                Regex::new(category_pattern(*c))
                    .map(|r| (*c, r))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(HumanOversight {
            enabled: s.enabled,
            action: s.action,
            categories,
            assignee: s.default_assignee.clone(),
        })
    }
}

/// `human-oversight` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "human-oversight",
    phases: &[Phase::Output],
    requires_block: true,
    build,
};

fn build(c: &PolicyConfig, _plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(HumanOversight::new(
        c.policy
            .human_oversight
            .as_ref()
            .ok_or("human-oversight needs a block")?,
    )?))
}

impl Policy for HumanOversight {
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
        let asked = request_texts(cx.request);
        let texts = cx.texts.iter().chain(asked.iter().filter(|s| s.role == Role::User));
        let mut hit: Vec<String> = Vec::new();
        for seg in texts {
            for (c, re) in &self.categories {
                if !hit.iter().any(|h| h == c.as_str()) && re.is_match(seg.text) {
                    hit.push(c.as_str().to_owned());
                }
            }
        }
        if hit.is_empty() {
            return Ok(Outcome::allow());
        }
        let n = hit.len();
        let what = hit.join(", ");
        let mut out = match self.action {
            EscalateOrBlock::Escalate => {
                Outcome::escalate("review_required", format!("Response held for human review ({what})"))
            }
            EscalateOrBlock::Block => Outcome::block(
                "review_required",
                format!("Response blocked: requires human review ({what})"),
            ),
        };
        out.note = self.assignee.as_ref().map(|a| format!("assignee {a}"));
        Ok(out.with_entities(hit, n))
    }
}
