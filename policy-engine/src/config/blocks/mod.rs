//! `policy.<kind>` blocks: the settings of every policy kind this version enforces
//! (spec §3.2). One struct per kind; every block accepts `enabled` (default true). The
//! content detectors live here, the control kinds in `control`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::yes;

mod control;

pub use control::*;

/// The `policy` map, keyed by policy kind.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBlocks {
    #[serde(rename = "prompt-injection")]
    pub prompt_injection: Option<PromptInjection>,
    #[serde(rename = "pii-detector")]
    pub pii_detector: Option<PiiDetector>,
    #[serde(rename = "dlp-filter")]
    pub dlp_filter: Option<DlpFilter>,
    #[serde(rename = "hipaa-phi-detector")]
    pub hipaa_phi_detector: Option<HipaaPhiDetector>,
    #[serde(rename = "entity-list-filter")]
    pub entity_list_filter: Option<EntityListFilter>,
    #[serde(rename = "code-sanitizer")]
    pub code_sanitizer: Option<CodeSanitizer>,
    #[serde(rename = "tool-validation")]
    pub tool_validation: Option<ToolValidation>,
    pub rbac: Option<Rbac>,
    #[serde(rename = "human-oversight")]
    pub human_oversight: Option<HumanOversight>,
    #[serde(rename = "data-routing-policy")]
    pub data_routing_policy: Option<DataRoutingPolicy>,
    #[serde(rename = "safety-filter")]
    pub safety_filter: Option<SafetyFilter>,
    #[serde(rename = "audit-logger")]
    pub audit_logger: Option<AuditLogger>,
}

// ---------------------------------------------------------------- prompt-injection

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptInjection {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Score at or above which a message is an injection (0–1, default 0.8). Exact
    /// pattern hits score 1.0; similarity to known attacks scores below that.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub embedding_threshold: Option<f64>,
    #[serde(default)]
    pub detection: PiDetection,
    #[serde(default)]
    pub encoding: PiEncoding,
    #[serde(default)]
    pub boundaries: PiBoundaries,
    #[serde(default)]
    pub response: PiResponse,
}

impl Default for PromptInjection {
    fn default() -> Self {
        PromptInjection {
            enabled: true,
            embedding_threshold: None,
            detection: PiDetection::default(),
            encoding: PiEncoding::default(),
            boundaries: PiBoundaries::default(),
            response: PiResponse::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiDetection {
    /// Extra attack regexes, added to the built-in set.
    #[serde(default)]
    pub attack_patterns: Vec<String>,
    /// Same as the top-level `embedding_threshold` (single-document form).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub embedding_threshold: Option<f64>,
    /// Run the statistical classifier (the second layer) on each untrusted message.
    #[serde(default = "yes")]
    pub classifier: bool,
    /// Classifier probability at or above which a message is an injection (0–1; default:
    /// the threshold the shipped model was trained with, 0.72).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub classifier_threshold: Option<f64>,
    /// An external classifier the gateway asks after the built-in layers found nothing
    /// (off unless set).
    pub external: Option<PiExternal>,
}

/// `prompt-injection.detection.external`: an HTTP classifier endpoint. The gateway POSTs
/// `{"texts": [...]}` (the untrusted texts of the request) and reads `{"scores": [...]}`
/// (one probability per text, 0–1).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiExternal {
    /// `http://` or `https://` URL of the classifier.
    pub url: String,
    /// The longest the gateway waits for the whole answer, in milliseconds (default 500,
    /// 1–10000).
    #[schemars(range(min = 1, max = 10000))]
    pub timeout_ms: Option<u64>,
    /// Score at or above which a text is an injection (0–1; default 0.5).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: Option<f64>,
    /// What happens when the classifier cannot answer in time or answers nonsense:
    /// `closed` (default) refuses the request with 503 `classifier_unavailable`; `open`
    /// lets it through, marked degraded.
    #[serde(default)]
    pub fail_mode: ExternalFailMode,
    /// The key sent as `Authorization: Bearer <key>`: `env` (read at startup) or `store`
    /// (a control-plane secret, managed gateways).
    pub secret_key_ref: Option<super::SecretKeyRef>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExternalFailMode {
    #[default]
    Closed,
    Open,
}

impl Default for PiDetection {
    fn default() -> Self {
        PiDetection {
            attack_patterns: Vec::new(),
            embedding_threshold: None,
            classifier: true,
            classifier_threshold: None,
            external: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiEncoding {
    /// Decode base64-looking segments and scan the decoded text too.
    #[serde(default = "yes")]
    pub decode_base64: bool,
    /// Apply Unicode NFKC normalization before matching.
    #[serde(default = "yes")]
    pub normalize_unicode: bool,
    /// Fold look-alike letters (Cyrillic, Greek, fullwidth) to ASCII before matching.
    #[serde(default = "yes")]
    pub detect_homoglyphs: bool,
}

impl Default for PiEncoding {
    fn default() -> Self {
        PiEncoding {
            decode_base64: true,
            normalize_unicode: true,
            detect_homoglyphs: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiBoundaries {
    /// Treat chat-template delimiters (`<|im_start|>`, `[INST]`) in user text as attacks.
    #[serde(default = "yes")]
    pub enforce_delimiters: bool,
    /// Treat fake `system:` / `### System` boundaries in user text as attacks.
    #[serde(default = "yes")]
    pub reject_fake_boundaries: bool,
}

impl Default for PiBoundaries {
    fn default() -> Self {
        PiBoundaries {
            enforce_delimiters: true,
            reject_fake_boundaries: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiResponse {
    #[serde(default)]
    pub action: PiAction,
    /// Text returned in `error.message` when the request is blocked.
    pub message: Option<String>,
    pub log_level: Option<LogLevel>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PiAction {
    #[default]
    Block,
    Escalate,
    Log,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

// ---------------------------------------------------------------- redaction

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RedactOrBlock {
    #[default]
    Redact,
    Block,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    /// `label` → `[EMAIL]`, `asterisks` → `*****`, `partial` → keep the last 4 characters.
    #[serde(default)]
    pub marker_format: MarkerFormat,
    /// Record entity types and counts on the decision.
    #[serde(default = "yes")]
    pub include_metadata: bool,
    /// Pad label markers so the replacement has the original length.
    #[serde(default)]
    pub preserve_length: bool,
    /// Entity type (e.g. `EMAIL`) → replacement text.
    #[serde(default)]
    pub custom_markers: BTreeMap<String, String>,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction {
            marker_format: MarkerFormat::Label,
            include_metadata: true,
            preserve_length: false,
            custom_markers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarkerFormat {
    #[default]
    Label,
    Asterisks,
    Partial,
}

// ---------------------------------------------------------------- pii-detector

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiiDetector {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub action: RedactOrBlock,
    /// Adds medical record numbers, NPI and insurance member ids.
    #[serde(default)]
    pub healthcare_mode: bool,
    /// Card numbers (Luhn-checked) and CVVs next to card context.
    #[serde(default = "yes")]
    pub pci_mode: bool,
    /// Extra regexes; matches are reported as entity `CUSTOM`.
    #[serde(default)]
    pub detect_patterns: Vec<String>,
    /// Regions (ISO 3166-1 alpha-2) whose national phone formats are recognised;
    /// `+` international numbers are recognised for every country.
    #[serde(default = "default_phone_regions")]
    pub phone_regions: Vec<String>,
    #[serde(default)]
    pub redaction: Redaction,
}

fn default_phone_regions() -> Vec<String> {
    crate::policies::DEFAULT_PHONE_REGIONS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

impl Default for PiiDetector {
    fn default() -> Self {
        PiiDetector {
            enabled: true,
            action: RedactOrBlock::Redact,
            healthcare_mode: false,
            pci_mode: true,
            detect_patterns: Vec::new(),
            phone_regions: default_phone_regions(),
            redaction: Redaction::default(),
        }
    }
}

// ---------------------------------------------------------------- dlp-filter

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DlpFilter {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Regexes evaluated on requests and responses.
    #[serde(default)]
    pub detect_patterns: Vec<String>,
    /// Terms matched case-insensitively on word boundaries.
    #[serde(default)]
    pub blocked_terms: Vec<String>,
    #[serde(default)]
    pub action: RedactOrBlock,
    /// Also match words within `max_distance` edits of a blocked term.
    #[serde(default)]
    pub fuzzy_matching: bool,
    #[serde(default = "one_u8")]
    #[schemars(range(min = 0, max = 8))]
    pub max_distance: u8,
    /// `high` adds classification markers; `restricted` adds credentials and keys too.
    #[serde(default)]
    pub sensitivity_level: SensitivityLevel,
    /// Replacement text for matches (default `[REDACTED]`).
    pub replacement: Option<String>,
}

fn one_u8() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SensitivityLevel {
    #[default]
    Standard,
    High,
    Restricted,
}

// ---------------------------------------------------------------- hipaa-phi-detector

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HipaaPhiDetector {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: HipaaMode,
    #[serde(default)]
    pub action: RedactOrBlock,
    #[serde(default = "yes")]
    pub safe_harbor_method: bool,
    #[serde(default)]
    pub redaction: Redaction,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HipaaMode {
    #[default]
    #[serde(rename = "hipaa_18")]
    Hipaa18,
}

// ---------------------------------------------------------------- entity-list-filter

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityListFilter {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Names matched case-insensitively on word boundaries.
    #[schemars(length(min = 1))]
    pub blocked_entities: Vec<String>,
    #[serde(default)]
    pub action: BlockOnly,
    #[serde(default)]
    pub fuzzy_matching: bool,
    #[serde(default = "one_u8")]
    #[schemars(range(min = 0, max = 8))]
    pub max_distance: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockOnly {
    #[default]
    Block,
}

// ---------------------------------------------------------------- code-sanitizer

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeSanitizer {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// true blocks the whole response; false replaces matches with `[REDACTED]`.
    #[serde(default)]
    pub block_on_match: bool,
    /// Extra regexes applied to code, added to the built-in set.
    #[serde(default)]
    pub additional_patterns: Vec<String>,
}

impl Default for CodeSanitizer {
    fn default() -> Self {
        CodeSanitizer {
            enabled: true,
            block_on_match: false,
            additional_patterns: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- safety-filter

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyFilter {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: SafetyMode,
    /// Extra phrases or regexes, added to the mode's built-ins.
    #[serde(default)]
    pub block_if: Vec<String>,
    /// Use only `block_if`, dropping the mode's built-in list.
    #[serde(default)]
    pub replace_defaults: bool,
    #[serde(default)]
    pub action: BlockOrEscalate,
    #[serde(default)]
    pub fuzzy_matching: bool,
    #[serde(default = "one_u8")]
    #[schemars(range(min = 0, max = 8))]
    pub max_distance: u8,
}

impl Default for SafetyFilter {
    fn default() -> Self {
        SafetyFilter {
            enabled: true,
            mode: SafetyMode::default(),
            block_if: Vec::new(),
            replace_defaults: false,
            action: BlockOrEscalate::Block,
            fuzzy_matching: false,
            max_distance: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SafetyMode {
    #[default]
    CriticalInfrastructure,
    Automotive,
    Education,
    LawEnforcement,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockOrEscalate {
    #[default]
    Block,
    Escalate,
}
