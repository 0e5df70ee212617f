//! Labelled corpora (`kt policy test --corpus`): a file names one policy kind, its
//! settings, the phase its samples are evaluated in and the precision and recall floors
//! the detector must meet; each sample is a text labelled `positive` or `negative`, with
//! the entity a positive must be reported as, and where it came from. The score is
//! broken down by family (attack family, entity type) and by source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::chain::EvalOptions;
use crate::compile::CompiledPolicy;
use crate::config::{Source, load_sources};
use crate::decision::Verdict;
use crate::exchange::Headers;

/// Largest corpus file read (a corpus is test data, not a document store).
pub const MAX_CORPUS_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusFile {
    pub kind: String,
    /// `input` or `output`.
    pub phase: String,
    /// The `policy.<kind>` block the samples are evaluated with.
    #[serde(default)]
    pub config: Option<Value>,
    pub min_precision: f64,
    pub min_recall: f64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// `positive` or `negative`.
    pub label: String,
    pub text: String,
    /// For positives: the entity type the detector must report.
    #[serde(default)]
    pub entity: Option<String>,
    /// Where the sample came from (see the corpus's SOURCES file).
    #[serde(default)]
    pub source: Option<String>,
    /// Attack family or kind of benign text.
    #[serde(default)]
    pub family: Option<String>,
    /// Country of a phone number, IBAN or national identifier.
    #[serde(default)]
    pub country: Option<String>,
}

/// Counts of one group of samples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub tn: usize,
}

impl Counts {
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Tp => self.tp += 1,
            Outcome::Fp => self.fp += 1,
            Outcome::Fn => self.fn_ += 1,
            Outcome::Tn => self.tn += 1,
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Tp,
    Fp,
    Fn,
    Tn,
}

/// One sample the detector got wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    /// `missed`, `false_positive` or `wrong_entity`.
    pub error: &'static str,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub entities: Vec<String>,
}

/// The score of one corpus file.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusScore {
    pub file: String,
    pub kind: String,
    pub phase: String,
    pub samples: usize,
    #[serde(flatten)]
    pub counts: Counts,
    pub precision: f64,
    pub recall: f64,
    pub min_precision: f64,
    pub min_recall: f64,
    /// Precision and recall at or above their floors.
    pub passed: bool,
    /// Median evaluation time of one sample, in microseconds.
    pub median_us: f64,
    /// By family, else by entity type.
    pub by_family: BTreeMap<String, Counts>,
    pub by_source: BTreeMap<String, Counts>,
    pub misses: Vec<Miss>,
}

/// Reads a corpus file (JSON or YAML, see [`crate::testing::parse_document`]).
pub fn load(path: &Path) -> Result<CorpusFile, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_CORPUS_BYTES {
        return Err(format!(
            "{}: {} bytes is more than the {} a corpus file may hold",
            path.display(),
            meta.len(),
            MAX_CORPUS_BYTES
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value = crate::testing::parse_document(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: CorpusFile = serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))?;
    if !matches!(file.phase.as_str(), "input" | "output") {
        return Err(format!(
            "{}: phase must be input or output, not {}",
            path.display(),
            file.phase
        ));
    }
    if let Some(s) = file
        .samples
        .iter()
        .find(|s| !matches!(s.label.as_str(), "positive" | "negative"))
    {
        return Err(format!(
            "{}: label must be positive or negative, not {}",
            path.display(),
            s.label
        ));
    }
    Ok(file)
}

/// Corpus files under `path` (itself when it is a file), sorted, subdirectories included.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Compiles the policy a corpus file describes: its kind alone in the chain.
pub fn compile(file: &CorpusFile) -> Result<CompiledPolicy, String> {
    let mut doc = json!({
        "pack": {"name": format!("corpus-{}", file.kind), "version": "1.0.0", "enabled": true},
        "policies": {"chain": [file.kind]},
    });
    if let Some(cfg) = &file.config {
        doc["policy"] = json!({ file.kind.clone(): cfg });
    }
    let src = Source {
        name: format!("corpus/{}", file.kind),
        text: doc.to_string(),
    };
    let outcome = load_sources(&[src]);
    let errors: Vec<String> = outcome.errors().map(ToString::to_string).collect();
    match outcome.config {
        Some(config) if errors.is_empty() => CompiledPolicy::compile(config).map_err(|e| e.to_string()),
        _ => Err(format!("{}: {}", file.kind, errors.join("; "))),
    }
}

/// Evaluates one text as a user message (input) or as the assistant's answer (output);
/// returns whether the policy acted and the entities it reported.
pub fn evaluate(policy: &CompiledPolicy, phase: &str, text: &str) -> (bool, Vec<String>) {
    let headers = Headers::new();
    let opts = EvalOptions::default();
    let user = if phase == "input" { text } else { "question" };
    let mut request = json!({"model": "m", "messages": [{"role": "user", "content": user}]});
    let mut d = policy.evaluate_request(&mut request, &headers, opts);
    if phase == "output" && !d.verdict.is_terminal() {
        let mut response = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]});
        d.absorb(policy.evaluate_response(&request, &mut response, &headers, opts));
    }
    let entities = d.policy_results.iter().flat_map(|r| r.entities.clone()).collect();
    (d.verdict != Verdict::Allow, entities)
}

/// Scores every sample of `file` (read from `name`).
pub fn score(name: &str, file: &CorpusFile) -> Result<CorpusScore, String> {
    let policy = compile(file)?;
    let mut counts = Counts::default();
    let mut by_family: BTreeMap<String, Counts> = BTreeMap::new();
    let mut by_source: BTreeMap<String, Counts> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut times = Vec::with_capacity(file.samples.len());
    for s in &file.samples {
        let started = Instant::now();
        let (flagged, entities) = evaluate(&policy, &file.phase, &s.text);
        times.push(started.elapsed().as_secs_f64() * 1e6);
        let positive = s.label == "positive";
        let right_entity = s.entity.as_ref().is_none_or(|e| entities.iter().any(|x| x == e));
        let outcome = match (positive, flagged) {
            (true, true) if right_entity => Outcome::Tp,
            (true, _) => Outcome::Fn,
            (false, true) => Outcome::Fp,
            (false, false) => Outcome::Tn,
        };
        counts.add(outcome);
        let family = s
            .family
            .clone()
            .or_else(|| s.entity.clone())
            .unwrap_or_else(|| s.label.clone());
        by_family.entry(family).or_default().add(outcome);
        by_source
            .entry(s.source.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .add(outcome);
        let error = match outcome {
            Outcome::Fn if flagged => "wrong_entity",
            Outcome::Fn => "missed",
            Outcome::Fp => "false_positive",
            _ => continue,
        };
        misses.push(Miss {
            error,
            text: s.text.clone(),
            family: s.family.clone().or_else(|| s.entity.clone()),
            source: s.source.clone(),
            entities,
        });
    }
    times.sort_by(f64::total_cmp);
    let median_us = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let (precision, recall) = (counts.precision(), counts.recall());
    Ok(CorpusScore {
        file: name.to_owned(),
        kind: file.kind.clone(),
        phase: file.phase.clone(),
        samples: file.samples.len(),
        passed: precision >= file.min_precision && recall >= file.min_recall,
        counts,
        precision,
        recall,
        min_precision: file.min_precision,
        min_recall: file.min_recall,
        median_us,
        by_family,
        by_source,
        misses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(samples: Value) -> CorpusFile {
        serde_json::from_value(json!({
            "kind": "pii-detector", "phase": "input", "config": {"action": "redact"},
            "min_precision": 0.9, "min_recall": 0.9, "samples": samples,
        }))
        .expect("shape")
    }

    #[test]
    fn scores_by_family_and_source() {
        let f = file(json!([
            {"label": "positive", "entity": "EMAIL", "text": "mail a@example.com", "source": "s1"},
            {"label": "positive", "entity": "PHONE", "text": "mail b@example.com", "source": "s1"},
            {"label": "positive", "entity": "EMAIL", "text": "no address here", "source": "s2"},
            {"label": "negative", "text": "room 12 on floor 3 is short", "source": "s2"},
            {"label": "negative", "text": "c@example.org wrote", "source": "s2"},
        ]));
        let s = score("t.json", &f).expect("scores");
        assert_eq!((s.counts.tp, s.counts.fn_, s.counts.fp, s.counts.tn), (1, 2, 1, 1));
        assert!(!s.passed);
        assert_eq!(s.by_family["EMAIL"].tp, 1);
        assert_eq!(s.by_family["EMAIL"].fn_, 1);
        assert_eq!(s.by_source["s2"].fp, 1);
        let kinds: Vec<&str> = s.misses.iter().map(|m| m.error).collect();
        assert_eq!(kinds, ["wrong_entity", "missed", "false_positive"]);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"kind": "x", "kind": "y"}"#).expect("write");
        assert!(load(&p).expect_err("dup").contains("appears twice"));
        std::fs::write(
            &p,
            r#"{"kind": "pii-detector", "phase": "both", "min_precision": 1, "min_recall": 1, "samples": []}"#,
        )
        .expect("write");
        assert!(load(&p).expect_err("phase").contains("phase must be"));
        std::fs::write(
            &p,
            r#"{"kind": "pii-detector", "phase": "input", "min_precision": 1, "min_recall": 1, "samples": [{"label": "maybe", "text": "x"}]}"#,
        )
        .expect("write");
        assert!(load(&p).expect_err("label").contains("label must be"));
    }
}
