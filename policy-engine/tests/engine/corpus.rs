//! Precision and recall of every detector on the labelled corpus in fixtures/corpus/.
//! Each file names a policy kind, its settings, the phase the samples are evaluated in,
//! and floors the detector must meet. The table is printed on every run.

use kt_policy::config::{Source, load_sources};
use kt_policy::{CompiledPolicy, EvalOptions, Headers, Verdict};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    kind: String,
    phase: String,
    #[serde(default)]
    config: Option<Value>,
    min_precision: f64,
    min_recall: f64,
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    label: String,
    text: String,
    /// For positives: the entity type the detector must report.
    #[serde(default)]
    entity: Option<String>,
}

struct Score {
    kind: String,
    tp: usize,
    fp: usize,
    fn_: usize,
    tn: usize,
    misses: Vec<String>,
}

impl Score {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

fn compile(file: &CorpusFile) -> CompiledPolicy {
    let mut doc = json!({
        "pack": {"name": format!("corpus-{}", file.kind), "version": "1.0.0", "enabled": true},
        "policies": {"chain": [file.kind]},
    });
    if let Some(cfg) = &file.config {
        doc["policy"] = json!({ file.kind.clone(): cfg });
    }
    let src = Source {
        name: format!("corpus/{}.yaml", file.kind),
        text: doc.to_string(),
    };
    let outcome = load_sources(&[src]);
    let errors: Vec<String> = outcome.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{}: {}", file.kind, errors.join(""));
    CompiledPolicy::compile(outcome.config.expect("valid")).expect("compiles")
}

fn evaluate(policy: &CompiledPolicy, phase: &str, text: &str) -> (Verdict, Vec<String>) {
    let headers = Headers::new();
    let opts = EvalOptions::default();
    let mut request = json!({"model": "m", "messages": [{"role": "user", "content": if phase == "input" { text } else { "question" }}]});
    let mut d = policy.evaluate_request(&mut request, &headers, opts);
    if phase == "output" && !d.verdict.is_terminal() {
        let mut response = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]});
        d.absorb(policy.evaluate_response(&request, &mut response, &headers, opts));
    }
    let entities = d.policy_results.iter().flat_map(|r| r.entities.clone()).collect();
    (d.verdict, entities)
}

#[test]
fn detectors_meet_their_precision_and_recall_floors() {
    let dir = super::fixtures().join("corpus");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    let mut scores = Vec::new();
    let mut below = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read");
        let (doc, _) = kt_policy::yaml::parse(&text).expect("corpus parses");
        let file: CorpusFile = serde_json::from_value(doc.value).expect("corpus shape");
        let policy = compile(&file);
        let mut s = Score {
            kind: file.kind.clone(),
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
            misses: Vec::new(),
        };
        for sample in &file.samples {
            let (verdict, entities) = evaluate(&policy, &file.phase, &sample.text);
            let flagged = verdict != Verdict::Allow;
            match (sample.label.as_str(), flagged) {
                ("positive", true) => {
                    if let Some(e) = &sample.entity
                        && !entities.iter().any(|x| x == e)
                    {
                        s.fn_ += 1;
                        s.misses
                            .push(format!("wrong entity (want {e}, got {entities:?}): {}", sample.text));
                    } else {
                        s.tp += 1;
                    }
                }
                ("positive", false) => {
                    s.fn_ += 1;
                    s.misses.push(format!("missed: {}", sample.text));
                }
                ("negative", true) => {
                    s.fp += 1;
                    s.misses.push(format!("false positive ({entities:?}): {}", sample.text));
                }
                ("negative", false) => s.tn += 1,
                (other, _) => panic!("{}: label must be positive or negative, not {other}", path.display()),
            }
        }
        assert!(
            s.tp + s.fn_ >= 8 && s.tn + s.fp >= 8,
            "{}: needs at least 8 positives and 8 negatives",
            file.kind
        );
        if s.precision() < file.min_precision || s.recall() < file.min_recall {
            below.push(format!(
                "{}: precision {:.3} (floor {}), recall {:.3} (floor {})\n  {}",
                s.kind,
                s.precision(),
                file.min_precision,
                s.recall(),
                file.min_recall,
                s.misses.join("\n  ")
            ));
        }
        scores.push(s);
    }
    println!(
        "{:<22}{:>5}{:>5}{:>5}{:>5}{:>11}{:>8}",
        "detector", "TP", "FP", "FN", "TN", "precision", "recall"
    );
    for s in &scores {
        println!(
            "{:<22}{:>5}{:>5}{:>5}{:>5}{:>11.3}{:>8.3}",
            s.kind,
            s.tp,
            s.fp,
            s.fn_,
            s.tn,
            s.precision(),
            s.recall()
        );
        for m in &s.misses {
            println!("    {m}");
        }
    }
    assert!(scores.len() >= 8, "expected a corpus per detector");
    assert!(below.is_empty(), "detectors below their floors:\n{}", below.join("\n"));
}
