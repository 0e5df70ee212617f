//! `rbac`: header-based access control. Input phase: required headers, a bearer
//! credential, the caller's role and the models it may use, and HIPAA minimum-necessary
//! (PHI only for listed roles). Tool phase: the tools each role may use.

use crate::config::PolicyConfig;
use std::collections::BTreeMap;

use super::entities::{EntitySet, phi_detectors};
use super::{EvalContext, KindEntry, Outcome, Policy, PolicyError};
use crate::config::{Rbac as Settings, RolePermissions};
use crate::kinds::Phase;
use crate::scan::ScanPlan;

#[derive(Debug)]
pub struct Rbac {
    enabled: bool,
    required: Vec<String>,
    require_auth: bool,
    role_header: String,
    roles: BTreeMap<String, RolePermissions>,
    phi: Option<(EntitySet, Vec<String>)>,
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

impl Rbac {
    pub fn new(s: &Settings, plan: &mut ScanPlan) -> Result<Self, String> {
        let phi = if s.minimum_necessary.enabled {
            Some((
                EntitySet::new(phi_detectors()?, plan)?,
                s.minimum_necessary.allowed_phi_roles.clone(),
            ))
        } else {
            None
        };
        Ok(Rbac {
            enabled: s.enabled,
            required: s.deny_if_missing.clone(),
            require_auth: s.require_auth,
            role_header: s.role_header.clone(),
            roles: s.roles.clone(),
            phi,
        })
    }

    fn input(&self, cx: &EvalContext<'_>) -> Outcome {
        let missing: Vec<&str> = self
            .required
            .iter()
            .map(String::as_str)
            .filter(|h| cx.headers.get(h).is_none_or(|v| v.trim().is_empty()))
            .collect();
        if !missing.is_empty() {
            return Outcome::block(
                "missing_header",
                format!("Request blocked: missing required header {}", missing.join(", ")),
            )
            .with_entities(missing.iter().map(|s| (*s).to_owned()).collect(), missing.len());
        }
        if self.require_auth {
            let ok = cx
                .headers
                .get("authorization")
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .is_some_and(|t| !t.trim().is_empty());
            if !ok {
                return Outcome::block("unauthenticated", "Request blocked: a Bearer credential is required");
            }
        }
        let role = cx.headers.get(&self.role_header).map(str::trim);
        if !self.roles.is_empty() {
            let Some(perms) = role.and_then(|r| self.roles.get(r)) else {
                return Outcome::block(
                    "role_denied",
                    format!("Request blocked: role '{}' is not permitted", role.unwrap_or("")),
                );
            };
            if let (Some(allowed), Some(model)) = (&perms.allowed_models, cx.model)
                && !allowed.iter().any(|p| glob(p, model))
            {
                return Outcome::block(
                    "model_denied",
                    format!(
                        "Request blocked: role '{}' may not use model '{model}'",
                        role.unwrap_or("")
                    ),
                )
                .with_entities(vec![model.to_owned()], 1);
            }
        }
        if let Some((set, allowed_roles)) = &self.phi
            && !role.is_some_and(|r| allowed_roles.iter().any(|a| a == r))
        {
            let findings = set.find(cx.texts, cx.hits);
            if !findings.is_empty() {
                return Outcome::block(
                    "phi_access_denied",
                    "Request blocked: role may not access protected health information",
                )
                .with_entities(super::redaction::entity_names(&findings), findings.len());
            }
        }
        Outcome::allow()
    }

    fn tools(&self, cx: &EvalContext<'_>) -> Outcome {
        if self.roles.is_empty() {
            return Outcome::allow();
        }
        let role = cx.headers.get(&self.role_header).map(str::trim).unwrap_or("");
        let Some(perms) = self.roles.get(role) else {
            return if cx.tools.is_empty() {
                Outcome::allow()
            } else {
                Outcome::block(
                    "tool_denied",
                    format!("Tool use denied: role '{role}' is not permitted"),
                )
            };
        };
        for t in cx.tools {
            let denied = perms.denied_tools.iter().any(|p| glob(p, t.name));
            let allowed = perms
                .allowed_tools
                .as_ref()
                .is_none_or(|a| a.iter().any(|p| glob(p, t.name)));
            if denied || !allowed {
                return Outcome::block(
                    "tool_denied",
                    format!("Tool '{}' is not allowed for role '{role}'", t.name),
                )
                .with_entities(vec![t.name.to_owned()], 1);
            }
        }
        Outcome::allow()
    }
}

/// `rbac` in the policy-kind registry.
pub const KIND: KindEntry = KindEntry {
    name: "rbac",
    phases: &[Phase::Input, Phase::Tool],
    requires_block: false,
    build,
};

fn build(c: &PolicyConfig, plan: &mut ScanPlan) -> Result<Box<dyn Policy>, String> {
    Ok(Box::new(Rbac::new(&c.policy.rbac.clone().unwrap_or_default(), plan)?))
}

impl Policy for Rbac {
    fn entry(&self) -> &'static KindEntry {
        &KIND
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn evaluate(&self, cx: &EvalContext<'_>) -> Result<Outcome, PolicyError> {
        Ok(match cx.phase {
            Phase::Tool => self.tools(cx),
            _ => self.input(cx),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("search_*", "search_web"));
        assert!(glob("*_admin", "db_admin"));
        assert!(!glob("search_*", "delete_all"));
        assert!(glob("exact", "exact"));
    }
}
