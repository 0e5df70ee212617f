//! `tool-validation`: only declared tools may be offered to or called by the model, and a
//! call's arguments must satisfy the tool's JSON Schema.

use crate::config::PolicyConfig;
use crate::scan::ScanPlan;
use std::collections::BTreeMap;

use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::ToolValidation as Settings;
use crate::exchange::ToolArgs;
use crate::kinds::Phase;

pub struct ToolValidation {
    enabled: bool,
    declared: Vec<String>,
    allow_undeclared: bool,
    schemas: BTreeMap<String, jsonschema::Validator>,
}

impl std::fmt::Debug for ToolValidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolValidation")
            .field("declared", &self.declared)
            .field("schemas", &self.schemas.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ToolValidation {
    pub fn new(s: &Settings) -> Result<Self, String> {
        let mut schemas = BTreeMap::new();
        for (name, schema) in &s.schemas {
            let v = jsonschema::validator_for(schema).map_err(|e| format!("schema for tool '{name}': {e}"))?;
            schemas.insert(name.clone(), v);
        }
        Ok(ToolValidation {
            enabled: s.enabled,
            declared: s.declared_tools.clone(),
            allow_undeclared: s.allow_undeclared,
            schemas,
        })
    }
}

/// `tool-validation` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "tool-validation",
    phases: &[Phase::Tool],
    requires_block: true,
    build,
};

fn build(c: &PolicyConfig, _plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(ToolValidation::new(
        c.policy
            .tool_validation
            .as_ref()
            .ok_or("tool-validation needs a block")?,
    )?))
}

impl Policy for ToolValidation {
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
        let mut undeclared: Vec<String> = Vec::new();
        for tool in cx.tools {
            if !self.declared.is_empty() && !self.declared.iter().any(|d| d == tool.name) {
                if !self.allow_undeclared {
                    return Ok(Outcome::block(
                        "undeclared_tool",
                        format!("Tool '{}' is not declared for this gateway", tool.name),
                    )
                    .with_entities(vec![tool.name.to_owned()], 1));
                }
                undeclared.push(tool.name.to_owned());
                continue;
            }
            let (Some(validator), Some(args)) = (self.schemas.get(tool.name), &tool.arguments) else {
                continue;
            };
            let parsed;
            let value = match args {
                ToolArgs::Value(v) => *v,
                ToolArgs::Encoded(s) => match serde_json::from_str::<serde_json::Value>(s) {
                    Ok(v) => {
                        parsed = v;
                        &parsed
                    }
                    Err(e) => {
                        return Ok(Outcome::block(
                            "invalid_arguments",
                            format!("Arguments of tool '{}' are not valid JSON: {e}", tool.name),
                        )
                        .with_entities(vec![tool.name.to_owned()], 1));
                    }
                },
            };
            if let Some(err) = validator.iter_errors(value).next() {
                let at = err.instance_path().to_string();
                let at = if at.is_empty() {
                    String::new()
                } else {
                    format!(" at {at}")
                };
                return Ok(Outcome::block(
                    "invalid_arguments",
                    format!("Arguments of tool '{}' do not match its schema{at}: {err}", tool.name),
                )
                .with_entities(vec![tool.name.to_owned()], 1));
            }
        }
        if !undeclared.is_empty() {
            return Ok(Outcome {
                reason: Some("undeclared_tool"),
                note: Some("allow_undeclared: monitoring only".into()),
                ..Outcome::allow()
            }
            .with_entities(undeclared.clone(), undeclared.len()));
        }
        Ok(Outcome::allow())
    }
}
