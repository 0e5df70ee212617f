//! Agreement with a public PII recogniser's own reference cases (presidio's recogniser
//! tests, MIT; fixtures/corpus/public/SOURCES-pii.md): for each text, pii-detector must
//! report as many entities of the case's type as the reference expects. Cases that test
//! a library setting kt does not have (phone-matching leniency other than the default)
//! are left out. CI holds the agreement at 97 %.

use kt_policy::corpus;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
struct Case {
    text: String,
    entity: String,
    expected_count: usize,
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default)]
    params: Option<serde_json::Value>,
}

const FLOOR: f64 = 0.97;

fn region(code: &str) -> &str {
    if code == "UK" { "GB" } else { code }
}

#[test]
fn pii_detector_agrees_with_the_reference_cases() {
    let path = super::fixtures().join("reference/pii-presidio.json");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("shape");
    let (mut agreed, mut total) = (0usize, 0usize);
    let mut disagreements = Vec::new();
    // One compiled policy per distinct configuration (the phone cases differ in regions).
    let mut compiled: Vec<(String, kt_policy::CompiledPolicy)> = Vec::new();
    for c in &cases {
        let default_leniency = c
            .params
            .as_ref()
            .and_then(|p| p.get("leniency"))
            .is_none_or(|l| l.as_u64() == Some(1));
        if !default_leniency {
            continue;
        }
        let mut config = json!({"action": "redact", "redaction": {"marker_format": "label"}});
        if let Some(r) = &c.regions {
            config["phone_regions"] = r.iter().map(|x| region(x)).collect();
        }
        let file: corpus::CorpusFile = serde_json::from_value(json!({
            "kind": "pii-detector", "phase": "input", "config": config,
            "min_precision": 0, "min_recall": 0, "samples": [],
        }))
        .expect("corpus shape");
        let key = config.to_string();
        let policy = match compiled.iter().find(|(k, _)| *k == key) {
            Some((_, p)) => p,
            None => {
                compiled.push((key, corpus::compile(&file).expect("compiles")));
                &compiled.last().expect("just pushed").1
            }
        };
        let mut request = json!({"model": "m", "messages": [{"role": "user", "content": c.text}]});
        let _ = policy.evaluate_request(
            &mut request,
            &kt_policy::Headers::new(),
            kt_policy::EvalOptions::default(),
        );
        let redacted = request["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let found = redacted.matches(&format!("[{}]", c.entity)).count();
        total += 1;
        if found == c.expected_count {
            agreed += 1;
        } else {
            disagreements.push(format!(
                "{} want {} got {found}: {:?} -> {:?}",
                c.entity, c.expected_count, c.text, redacted
            ));
        }
    }
    let agreement = agreed as f64 / total as f64;
    println!("pii-detector agrees with {agreed} of {total} reference cases ({agreement:.3})");
    for d in &disagreements {
        println!("    {d}");
    }
    assert!(total >= 500, "expected the whole reference set, read {total}");
    assert!(agreement >= FLOOR, "agreement {agreement:.3} is below {FLOOR}");
}
