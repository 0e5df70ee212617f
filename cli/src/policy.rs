//! `kt policy lint | test | schema`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use kt_policy::config::{LoadOutcome, load_files};
use kt_policy::testing::{self, LoadedCase, TestReport};
use kt_policy::{CompiledPolicy, Diagnostic};
use serde_json::json;

use crate::output::{CliError, Exit, print_json, print_lint_text};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy-config.yaml; exits 2 when it is invalid
    Lint(LintArgs),
    /// Run golden tests (tests/*.json|yaml|yml) and inline testing.suites
    Test(TestArgs),
    /// Print the JSON Schema of policy-config.yaml (for editors)
    Schema,
    /// Store a config file as a new version of a gateway's configuration (control plane)
    Push(crate::fleet::PushArgs),
    /// Roll a configuration version out to gateways and wait until each applies it
    #[command(disable_version_flag = true)]
    Deploy(crate::fleet::DeployArgs),
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Config file; repeat to layer several (later files win). Default: ./policy-config.yaml
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Machine-readable output (the report of every case)
    #[arg(long)]
    pub json: bool,
    /// Directory holding policy-config.yaml and tests/ (default: current directory)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub pack_dir: PathBuf,
    /// Config file(s) to test instead of <pack-dir>/policy-config.yaml; repeat to layer
    #[arg(long = "policy-config", value_name = "FILE")]
    pub policy_config: Vec<PathBuf>,
    /// Score labelled corpus files (or every corpus file under a directory) instead:
    /// precision and recall per file, family and source, checked against each file's floors
    #[arg(long, value_name = "PATH")]
    pub corpus: Vec<PathBuf>,
    /// With --corpus: also print each sample a detector got wrong
    #[arg(long, requires = "corpus")]
    pub show_misses: bool,
}

pub fn run(cmd: PolicyCommand, g: &crate::session::GlobalArgs) -> Result<Exit> {
    match cmd {
        PolicyCommand::Push(a) => crate::fleet::push(a, g),
        PolicyCommand::Deploy(a) => crate::fleet::deploy(a, g),
        PolicyCommand::Lint(a) => lint(a),
        PolicyCommand::Test(a) => test(a),
        PolicyCommand::Schema => {
            print_json(kt_policy::config::json_schema())?;
            Ok(Exit::Ok)
        }
    }
}

fn default_files(files: Vec<PathBuf>, dir: &Path) -> Result<Vec<PathBuf>> {
    if !files.is_empty() {
        return Ok(files);
    }
    let default = dir.join("policy-config.yaml");
    if default.exists() {
        return Ok(vec![default]);
    }
    Err(
        CliError::new(Exit::Invalid, format!("no policy-config.yaml in {}", dir.display()))
            .hint("pass --file <path>, or run `kt init` to create one")
            .into(),
    )
}

fn display_names(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

fn lint(args: LintArgs) -> Result<Exit> {
    let files = default_files(args.files, Path::new("."))?;
    let names = display_names(&files);
    let outcome = load_files(&files);
    if args.json {
        print_json(&lint_json(&names, &outcome))?;
    } else {
        print_lint_text(&names.join(" + "), &outcome);
    }
    Ok(if outcome.has_errors() { Exit::Invalid } else { Exit::Ok })
}

fn lint_json(names: &[String], outcome: &LoadOutcome) -> serde_json::Value {
    let warnings: Vec<&Diagnostic> = outcome.warnings().collect();
    let file = names.first().cloned().unwrap_or_default();
    match &outcome.config {
        Some(c) => json!({
            "valid": true,
            "file": file,
            "files": names,
            "pack": {"name": c.pack.name, "version": c.pack.version},
            "chain": c.policies.chain,
            "policy_count": c.policies.chain.len(),
            "warnings": warnings,
        }),
        None => json!({
            "valid": false,
            "file": file,
            "files": names,
            "errors": outcome.errors().collect::<Vec<_>>(),
            "warnings": warnings,
        }),
    }
}

fn test(args: TestArgs) -> Result<Exit> {
    if !args.corpus.is_empty() {
        return test_corpus(&args);
    }
    let files = default_files(args.policy_config, &args.pack_dir)?;
    let names = display_names(&files);
    let outcome = load_files(&files);
    let Some(config) = outcome.config.clone() else {
        if args.json {
            print_json(
                &json!({"ok": false, "error": "configuration is invalid", "lint": lint_json(&names, &outcome), "results": []}),
            )?;
        } else {
            print_lint_text(&names.join(" + "), &outcome);
        }
        return Ok(Exit::Invalid);
    };
    let policy = CompiledPolicy::compile(config).map_err(|e| CliError::new(Exit::Invalid, e.to_string()))?;
    let (mut cases, broken) = golden_cases(&args.pack_dir.join("tests"));
    cases.extend(testing::inline_cases(&policy));
    let mut report = testing::run(&policy, &cases);
    for (source, message) in broken {
        report.results.push(kt_policy::testing::CaseResult {
            name: source.clone(),
            source,
            verdict: None,
            reason_code: None,
            passed: false,
            expected: serde_json::Value::Null,
            failure: Some(format!("invalid test file: {message}")),
            details: kt_policy::testing::CaseDetails {
                policy_results: Vec::new(),
                quality_scores: None,
                assertions: Vec::new(),
                redacted_request: None,
                redacted_response: None,
            },
        });
        report.failed += 1;
        report.ok = false;
    }
    if args.json {
        print_json(&report)?;
    } else {
        print_test_table(&report);
    }
    if report.results.is_empty() {
        eprintln!("warning: no test cases found (add tests/*.json|yaml|yml or testing.suites to the config)");
    }
    Ok(if report.ok { Exit::Ok } else { Exit::Error })
}

/// Golden cases of `dir`, sorted by file name, and the files that could not be read.
fn golden_cases(dir: &Path) -> (Vec<LoadedCase>, Vec<(String, String)>) {
    let mut cases = Vec::new();
    let mut broken = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (cases, broken);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "yaml" | "yml")))
        .collect();
    paths.sort();
    for p in paths {
        match testing::load_golden(&p) {
            Ok(c) => cases.extend(c),
            Err(e) => broken.push((p.display().to_string(), e)),
        }
    }
    (cases, broken)
}

fn print_test_table(report: &TestReport) {
    let width = report
        .results
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    println!("{:<6}{:<width$}  {:<9}REASON", "", "CASE", "VERDICT");
    for r in &report.results {
        let status = if r.passed { "PASS" } else { "FAIL" };
        let verdict = r.verdict.map(|v| v.as_str()).unwrap_or("-");
        println!(
            "{status:<6}{:<width$}  {verdict:<9}{}",
            r.name,
            r.reason_code.as_deref().unwrap_or("-")
        );
        if let Some(f) = &r.failure {
            println!("{:<6}  └ {f}  [{}]", "", r.source);
        }
    }
    let total = report.results.len();
    println!();
    println!(
        "{} of {total} case{} passed{}",
        report.passed,
        if total == 1 { "" } else { "s" },
        if report.failed > 0 {
            format!(", {} failing", report.failed)
        } else {
            String::new()
        }
    );
}

/// `kt policy test --corpus`: every corpus file scored with the kind and settings it names.
fn test_corpus(args: &TestArgs) -> Result<Exit> {
    use kt_policy::corpus;
    let mut paths = Vec::new();
    for p in &args.corpus {
        let found = corpus::files(p).map_err(|e| CliError::new(Exit::Invalid, e))?;
        if found.is_empty() {
            return Err(CliError::new(
                Exit::Invalid,
                format!("no corpus files (*.json, *.yaml) in {}", p.display()),
            )
            .hint("a corpus file names `kind`, `phase`, `min_precision`, `min_recall` and `samples`")
            .into());
        }
        paths.extend(found);
    }
    let mut scores = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if !args.json {
            eprintln!("[{}/{}] scoring {}", i + 1, paths.len(), path.display());
        }
        let file = corpus::load(path).map_err(|e| CliError::new(Exit::Invalid, e))?;
        let score = corpus::score(&path.display().to_string(), &file)
            .map_err(|e| CliError::new(Exit::Invalid, format!("{}: {e}", path.display())))?;
        scores.push(score);
    }
    let ok = scores.iter().all(|s| s.passed);
    if args.json {
        print_json(&json!({"ok": ok, "corpora": scores}))?;
    } else {
        print_corpus_table(&scores, args.show_misses);
    }
    Ok(if ok { Exit::Ok } else { Exit::Error })
}

fn print_corpus_table(scores: &[kt_policy::corpus::CorpusScore], show_misses: bool) {
    let row = |name: &str, c: &kt_policy::corpus::Counts| {
        println!(
            "  {name:<34}{:>6}{:>6}{:>6}{:>6}{:>11.3}{:>8.3}",
            c.tp,
            c.fp,
            c.fn_,
            c.tn,
            c.precision(),
            c.recall()
        );
    };
    for s in scores {
        let status = if s.passed { "PASS" } else { "FAIL" };
        println!(
            "{status}  {} ({}, {} samples): precision {:.3} (floor {}), recall {:.3} (floor {}), median {:.1} µs",
            s.file, s.kind, s.samples, s.precision, s.min_precision, s.recall, s.min_recall, s.median_us
        );
        println!(
            "  {:<34}{:>6}{:>6}{:>6}{:>6}{:>11}{:>8}",
            "FAMILY", "TP", "FP", "FN", "TN", "PRECISION", "RECALL"
        );
        for (name, c) in &s.by_family {
            row(name, c);
        }
        println!("  {:<34}", "SOURCE");
        for (name, c) in &s.by_source {
            row(name, c);
        }
        if show_misses {
            for m in &s.misses {
                let text: String = m.text.chars().take(200).collect();
                println!(
                    "    {} [{}] {}",
                    m.error,
                    m.family.as_deref().unwrap_or("-"),
                    text.replace('\n', " ")
                );
            }
        }
        println!();
    }
}
