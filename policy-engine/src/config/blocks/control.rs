//! Blocks of the control kinds: tool-validation, rbac, human-oversight,
//! data-routing-policy and audit-logger.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::yes;

// ---------------------------------------------------------------- tool-validation

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolValidation {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Non-empty: only these tools may be declared or called.
    #[serde(default)]
    pub declared_tools: Vec<String>,
    /// Tool name → JSON Schema its arguments must satisfy.
    #[serde(default)]
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// Monitoring mode: undeclared tools are reported but allowed.
    #[serde(default)]
    pub allow_undeclared: bool,
}

// ---------------------------------------------------------------- rbac

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rbac {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Requests missing any of these headers are denied.
    #[serde(default = "default_deny_if_missing")]
    pub deny_if_missing: Vec<String>,
    /// Require an `Authorization: Bearer …` credential.
    #[serde(default)]
    pub require_auth: bool,
    /// Header carrying the caller's role (default `x-user-role`).
    #[serde(default = "default_role_header")]
    pub role_header: String,
    /// Role name → permissions.
    #[serde(default)]
    pub roles: BTreeMap<String, RolePermissions>,
    #[serde(default)]
    pub minimum_necessary: MinimumNecessary,
}

impl Default for Rbac {
    fn default() -> Self {
        Rbac {
            enabled: true,
            deny_if_missing: default_deny_if_missing(),
            require_auth: false,
            role_header: default_role_header(),
            roles: BTreeMap::new(),
            minimum_necessary: MinimumNecessary::default(),
        }
    }
}

fn default_deny_if_missing() -> Vec<String> {
    vec!["X-User-ID".to_owned()]
}

fn default_role_header() -> String {
    "x-user-role".to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolePermissions {
    /// Tool names or globs (`*`, `search_*`) this role may use.
    pub allowed_tools: Option<Vec<String>>,
    #[serde(default)]
    pub denied_tools: Vec<String>,
    /// Models this role may request; absent allows all.
    pub allowed_models: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinimumNecessary {
    /// Deny requests carrying PHI from roles not listed in `allowed_phi_roles`.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_phi_roles")]
    pub allowed_phi_roles: Vec<String>,
}

impl Default for MinimumNecessary {
    fn default() -> Self {
        MinimumNecessary {
            enabled: false,
            allowed_phi_roles: default_phi_roles(),
        }
    }
}

fn default_phi_roles() -> Vec<String> {
    vec!["clinician".to_owned(), "admin".to_owned()]
}

// ---------------------------------------------------------------- human-oversight

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HumanOversight {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Decision categories that need a human.
    #[schemars(length(min = 1))]
    pub require_human_for: Vec<OversightCategory>,
    #[serde(default)]
    pub action: EscalateOrBlock,
    /// Reviewer notified first (an email address).
    pub default_assignee: Option<String>,
    /// How long a held response waits for a reviewer.
    #[schemars(range(min = 1, max = 604800))]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OversightCategory {
    FinancialAdvice,
    MedicalDecisions,
    LegalOpinions,
    HiringActions,
    SafetyCritical,
}

impl OversightCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            OversightCategory::FinancialAdvice => "financial_advice",
            OversightCategory::MedicalDecisions => "medical_decisions",
            OversightCategory::LegalOpinions => "legal_opinions",
            OversightCategory::HiringActions => "hiring_actions",
            OversightCategory::SafetyCritical => "safety_critical",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalateOrBlock {
    #[default]
    Escalate,
    Block,
}

// ---------------------------------------------------------------- data-routing-policy

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataRoutingPolicy {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub require_zero_data_retention: bool,
    #[serde(default)]
    pub require_no_training: bool,
    /// Targets retaining prompts longer than this are removed.
    pub max_retention_days: Option<u32>,
    #[serde(default)]
    pub on_no_compliant_provider: OnNoCompliant,
    #[serde(default = "yes")]
    pub log_provider_selection: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnNoCompliant {
    #[default]
    Block,
    AllowAny,
}

// ---------------------------------------------------------------- audit-logger

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogger {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub immutable: bool,
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 36500))]
    pub retention_days: u32,
    #[serde(default)]
    pub hipaa_audit_controls: bool,
    /// true records every request; false only non-allow decisions.
    #[serde(default = "yes")]
    pub log_all_access: bool,
}

impl Default for AuditLogger {
    fn default() -> Self {
        AuditLogger {
            enabled: true,
            immutable: true,
            retention_days: default_retention(),
            hipaa_audit_controls: false,
            log_all_access: true,
        }
    }
}

fn default_retention() -> u32 {
    365
}
