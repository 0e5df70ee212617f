//! The starter packs `kt init` writes, embedded in the binary.

/// One starter pack: a config and its golden tests.
#[derive(Debug)]
pub struct Template {
    pub name: &'static str,
    pub description: &'static str,
    pub config: &'static str,
    pub tests: &'static [(&'static str, &'static str)],
}

macro_rules! file {
    ($t:literal, $f:literal) => {
        ($f, include_str!(concat!("../templates/", $t, "/tests/", $f)))
    };
}

pub const TEMPLATES: &[Template] = &[
    Template {
        name: "default",
        description: "Injection blocking, PII and secret redaction, audit trail",
        config: include_str!("../templates/default/policy-config.yaml"),
        tests: &[
            file!("default", "allows_clean_request.json"),
            file!("default", "blocks_obvious_injection.json"),
            file!("default", "redacts_personal_data.json"),
            file!("default", "redacts_leaked_key.json"),
        ],
    },
    Template {
        name: "prompt-injection-detection",
        description: "Block jailbreaks and instruction overrides (homoglyph- and base64-aware)",
        config: include_str!("../templates/prompt-injection-detection/policy-config.yaml"),
        tests: &[
            file!("prompt-injection-detection", "blocks_override.json"),
            file!("prompt-injection-detection", "blocks_homoglyph_attack.json"),
            file!("prompt-injection-detection", "blocks_base64_attack.json"),
            file!("prompt-injection-detection", "allows_questions_about_prompts.json"),
        ],
    },
    Template {
        name: "pii-redaction",
        description: "Redact personal data in requests and buffered responses",
        config: include_str!("../templates/pii-redaction/policy-config.yaml"),
        tests: &[
            file!("pii-redaction", "redacts_card_and_ssn.json"),
            file!("pii-redaction", "redacts_email_in_answer.json"),
            file!("pii-redaction", "allows_order_numbers.json"),
        ],
    },
    Template {
        name: "zero-data-retention",
        description: "Route only to providers that keep no prompts; redact PII",
        config: include_str!("../templates/zero-data-retention/policy-config.yaml"),
        tests: &[
            file!("zero-data-retention", "allows_routed_request.json"),
            file!("zero-data-retention", "redacts_phone_number.json"),
        ],
    },
    Template {
        name: "citation-verification",
        description: "Guard RAG loops: injection in retrieved text, PII in answers",
        config: include_str!("../templates/citation-verification/policy-config.yaml"),
        tests: &[
            file!("citation-verification", "blocks_injection_in_retrieved_text.json"),
            file!("citation-verification", "allows_grounded_answer.json"),
        ],
    },
];

pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}
