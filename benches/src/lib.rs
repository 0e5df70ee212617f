//! Workload generators shared by kt's benchmarks: deterministic chat bodies of a given
//! size, and the "realistic" policy configuration the performance goals are stated for.

pub mod harness;

use kt_policy::CompiledPolicy;
use kt_policy::config::{Source, load_sources};
use serde_json::{Value, json};

/// Small deterministic PRNG (xorshift64*), so every run measures the same bytes: the one
/// the fuzz drivers use.
pub use kt_policy::fuzzing::Rng;

const WORDS: &[&str] = &[
    "the",
    "a",
    "to",
    "of",
    "and",
    "in",
    "for",
    "on",
    "with",
    "is",
    "that",
    "this",
    "we",
    "you",
    "our",
    "can",
    "will",
    "customer",
    "order",
    "account",
    "report",
    "quarter",
    "team",
    "product",
    "release",
    "service",
    "support",
    "invoice",
    "meeting",
    "schedule",
    "update",
    "summary",
    "please",
    "review",
    "draft",
    "email",
    "plan",
    "budget",
    "project",
    "data",
    "model",
    "system",
    "rules",
    "process",
    "policy",
    "training",
    "feedback",
    "delivery",
    "shipment",
    "warehouse",
    "price",
    "discount",
    "contract",
    "renewal",
    "analysis",
    "forecast",
    "revenue",
    "growth",
    "market",
    "strategy",
    "launch",
    "feature",
    "issue",
    "ticket",
    "deadline",
    "priority",
    "question",
    "answer",
    "document",
    "section",
    "table",
    "chart",
    "user",
    "manager",
    "engineer",
    "design",
    "test",
    "deploy",
    "server",
    "database",
    "latency",
    "error",
    "retry",
    "cache",
    "improve",
    "explain",
    "describe",
    "compare",
    "suggest",
    "include",
    "write",
    "check",
    "confirm",
    "share",
    "send",
    "quickly",
    "carefully",
    "clearly",
    "about",
    "before",
    "after",
    "during",
    "between",
    "because",
    "however",
    "also",
    "new",
    "old",
    "large",
    "small",
    "important",
    "simple",
    "detailed",
    "weekly",
    "monthly",
    "annual",
    "internal",
    "public",
];

/// English-like prose of about `bytes` bytes, with the odd number and date.
pub fn prose(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 64);
    let mut sentence = 0;
    while s.len() < bytes {
        let n = 8 + rng.below(14);
        for i in 0..n {
            let w = WORDS[rng.below(WORDS.len())];
            if i == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    s.extend(f.to_uppercase());
                    s.push_str(c.as_str());
                }
            } else {
                s.push(' ');
                s.push_str(w);
            }
            if rng.below(40) == 0 {
                s.push_str(&format!(" {}", rng.below(1000)));
            }
        }
        sentence += 1;
        if sentence % 7 == 0 {
            s.push_str(&format!(" by 2024-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)));
        }
        s.push_str(if rng.below(5) == 0 { "?\n" } else { ". " });
    }
    s.truncate(bytes);
    while !s.is_char_boundary(s.len()) {
        s.pop();
    }
    s
}

/// An OpenAI chat-completions request of about `bytes` bytes: a system prompt and
/// alternating user/assistant turns, the last one from the user.
pub fn chat_body(bytes: usize, seed: u64) -> Value {
    let mut rng = Rng::new(seed);
    let system = "You are a helpful assistant for the operations team. Answer concisely.";
    let turns = (bytes / 2048).clamp(1, 16) * 2 - 1;
    let per_turn = bytes.saturating_sub(system.len() + 120 * (turns + 1)) / turns;
    let mut messages = vec![json!({"role": "system", "content": system})];
    for i in 0..turns {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": prose(&mut rng, per_turn.max(16))}));
    }
    json!({"model": "gpt-4o-mini", "messages": messages, "temperature": 0.2})
}

/// A request whose one user message is a document of about `bytes` bytes (a text to
/// summarise), after a short system prompt.
pub fn document_body(bytes: usize, seed: u64) -> Value {
    let mut rng = Rng::new(seed);
    let document = prose(&mut rng, bytes);
    json!({"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
        {"role": "system", "content": "Summarise the document for the operations team."},
        {"role": "user", "content": document},
    ]})
}

/// `n` blocked terms that do not occur in generated prose.
pub fn blocked_terms(n: usize) -> Vec<String> {
    let mut rng = Rng::new(7);
    const SYL: &[&str] = &[
        "ka", "zu", "mir", "tol", "vex", "qua", "ron", "bel", "dax", "fen", "lor", "sib", "tav", "wyn", "yor",
    ];
    (0..n)
        .map(|i| {
            let mut w = String::new();
            for _ in 0..3 {
                w.push_str(SYL[rng.below(SYL.len())]);
            }
            if i % 3 == 0 {
                format!("project {w}")
            } else {
                format!("{w}{i}")
            }
        })
        .collect()
}

/// Twenty DLP regexes of the kind deployments use.
pub const DLP_PATTERNS: &[&str] = &[
    r"AKIA[0-9A-Z]{16}",
    r"ghp_[0-9a-zA-Z]{36}",
    r"xox[baprs]-[0-9A-Za-z-]{10,}",
    r"sk_live_[0-9a-zA-Z]{24,}",
    r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----",
    r"(?:SECRET|TOP SECRET|CONFIDENTIAL)//[A-Z]+",
    r"CUI//(?:SP-)?[A-Z]+",
    r"(?i)proj-[a-z]+-\d{3}",
    r"(?i)codename[:\s]+[a-z]+",
    r"EMP-\d{6}",
    r"CASE-\d{4}-\d{5}",
    r"(?i)internal\.corp\.example",
    r"AIza[0-9A-Za-z_-]{35}",
    r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    r"(?i)do not distribute",
    r"(?i)attorney[- ]client privileged",
    r"ACCT-\d{8}",
    r"SO-\d{7}",
    r"(?i)restricted data",
    r"PO#\d{6,}",
];

/// YAML of the realistic input chain: prompt-injection, pii-detector, dlp-filter with
/// `terms` blocked terms and 20 patterns, audit-logger.
pub fn realistic_config(terms: usize) -> String {
    let mut y = String::from(
        "pack: {name: bench, version: 1.0.0, enabled: true}\npolicies:\n  chain: [prompt-injection, pii-detector, dlp-filter, audit-logger]\npolicy:\n  pii-detector: {action: redact}\n  dlp-filter:\n    action: redact\n    detect_patterns:\n",
    );
    for p in DLP_PATTERNS {
        y.push_str(&format!("      - '{}'\n", p.replace('\'', "''")));
    }
    y.push_str("    blocked_terms:\n");
    for t in blocked_terms(terms) {
        y.push_str(&format!("      - \"{t}\"\n"));
    }
    y.push_str("  audit-logger: {retention_days: 365}\n");
    y
}

/// Loads and compiles a configuration text, panicking with the diagnostics if invalid.
pub fn compile(yaml: &str) -> CompiledPolicy {
    let outcome = load_sources(&[Source {
        name: "bench.yaml".into(),
        text: yaml.to_owned(),
    }]);
    match outcome.config {
        Some(c) => CompiledPolicy::compile(c).unwrap_or_else(|e| panic!("{e}")),
        None => panic!(
            "{}",
            outcome.diagnostics.iter().map(ToString::to_string).collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kt_policy::{EvalOptions, Headers, Verdict};

    #[test]
    fn bodies_have_the_requested_size_and_pass_the_chain_clean() {
        let policy = compile(&realistic_config(1000));
        for kib in [1usize, 16, 64] {
            let mut body = chat_body(kib * 1024, 42);
            let len = serde_json::to_vec(&body).map(|v| v.len()).unwrap_or(0);
            assert!(
                len.abs_diff(kib * 1024) < kib * 1024 / 5 + 300,
                "{kib} KiB body is {len} bytes"
            );
            let d = policy.evaluate_request(&mut body, &Headers::new(), EvalOptions::default());
            assert_eq!(d.verdict, Verdict::Allow, "{kib} KiB: {:?}", d.policy_results);
        }
    }
}
