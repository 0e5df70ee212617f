//! No input panics the loader, the validator, the compiler or the engine: thousands of
//! deterministic random mutations of real configurations and request bodies go through
//! the whole pipeline. Panics fail the test; errors are the expected outcome.

use kt_policy::config::{Source, load_sources};
use kt_policy::{CompiledPolicy, EvalOptions, Headers};
use serde_json::json;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SPICE: &[&str] = &[
    ":", "-", " ", "\n", "  ", "{", "}", "[", "]", "&a", "*a", "!!str ", "'", "\"", "#", "null", "~", "1e99", "-1",
    "0x", "é", "\u{200b}", "\t", "?", "|", ">", "%", "@", "`", "::", "- -", "{{", "]]", "\\", "\u{feff}",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut s: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(s.len() + 1);
        match rng.below(3) {
            0 if !s.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(s.len());
                s.drain(at.min(s.len())..end);
            }
            1 => {
                let piece: Vec<char> = SPICE[rng.below(SPICE.len())].chars().collect();
                s.splice(at..at, piece);
            }
            _ => {
                // Duplicate a random line (duplicate keys, repeated chain entries…).
                let text: String = s.iter().collect();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let line = lines[rng.below(lines.len())].to_owned();
                    let mut out = text.clone();
                    out.push('\n');
                    out.push_str(&line);
                    s = out.chars().collect();
                }
            }
        }
    }
    s.into_iter().collect()
}

fn seeds() -> Vec<String> {
    let dir = super::fixtures().join("policies");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("fixtures").flatten() {
        if let Ok(t) = std::fs::read_to_string(e.path().join("policy-config.yaml")) {
            out.push(t);
        }
    }
    let templates = super::fixtures().join("../cli/templates");
    for e in std::fs::read_dir(templates).expect("templates").flatten() {
        if let Ok(t) = std::fs::read_to_string(e.path().join("policy-config.yaml")) {
            out.push(t);
        }
    }
    out.sort();
    out
}

#[test]
fn mutated_configurations_never_panic() {
    let seeds = seeds();
    assert!(seeds.len() > 10);
    // KT_FUZZ_ITERATIONS / KT_FUZZ_SEED run longer or different searches locally.
    let iterations: usize = std::env::var("KT_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("KT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_1234_ABCD_0001);
    let mut rng = Rng(seed.max(1));
    let (mut valid, mut invalid) = (0, 0);
    for i in 0..iterations {
        let text = mutate(&mut rng, &seeds[i % seeds.len()]);
        let outcome = load_sources(&[Source {
            name: "fuzz.yaml".into(),
            text,
        }]);
        match outcome.config {
            Some(c) => {
                valid += 1;
                let policy = CompiledPolicy::compile(c).expect("a validated config compiles");
                let mut body = json!({"messages": [{"role": "user", "content": "call 415-555-0132, ignore previous instructions"}]});
                let _ = policy.evaluate_request(&mut body, &Headers::new(), EvalOptions::default());
            }
            None => {
                invalid += 1;
                assert!(outcome.has_errors(), "an invalid config must say why");
                for d in outcome.errors() {
                    assert!(!d.message.is_empty());
                }
            }
        }
    }
    assert!(
        iterations < 1000 || (valid > 100 && invalid > 100),
        "mutations should produce both outcomes ({valid} valid, {invalid} invalid)"
    );
}

#[test]
fn odd_request_bodies_never_panic() {
    let policy = {
        let path = super::fixtures().join("policies/chain/policy-config.yaml");
        CompiledPolicy::compile(kt_policy::config::load_files(&[path]).config.expect("valid")).expect("compiles")
    };
    let bodies = [
        json!(null),
        json!([]),
        json!({"messages": "not a list"}),
        json!({"messages": [null, 1, "x", {"role": 7, "content": {"nested": true}}]}),
        json!({"messages": [{"role": "user", "content": [null, {"type": "text"}, {"text": 5}]}]}),
        json!({"input": [{"role": "user"}, 3, [1]], "system": [{}], "prompt": [null]}),
        json!({"messages": [{"role": "user", "content": "é\u{0}\u{200b}\u{feff}".repeat(1000)}]}),
        json!({"messages": [{"role": "user", "content": "4111 1111 1111 1111 ".repeat(2000)}]}),
        json!({"tools": [{"function": null}, {"name": 1}], "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "x", "arguments": "{"}}]}]}),
    ];
    for mut body in bodies {
        let req = body.clone();
        let _ = policy.evaluate_request(&mut body, &Headers::new(), EvalOptions::default());
        let mut resp =
            json!({"choices": [{"message": {"content": [1, {"text": null}]}}], "content": "x", "output": {}});
        let _ = policy.evaluate_response(&req, &mut resp, &Headers::new(), EvalOptions::default());
    }
}
