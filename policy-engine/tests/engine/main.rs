//! Data-driven engine tests: every pack under fixtures/policies/ (a config plus
//! `cases.yaml`) must lint clean and pass all its cases, and the detection corpus under
//! fixtures/corpus/ must meet per-detector precision and recall floors.

mod corpus;
mod reference;
mod robustness;

use std::path::{Path, PathBuf};

use kt_policy::CompiledPolicy;
use kt_policy::config::load_files;
use kt_policy::testing;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn packs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures().join("policies"))
        .expect("fixtures/policies exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("policy-config.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_fixture_pack_passes_its_cases() {
    let packs = packs();
    assert!(
        packs.len() >= 12,
        "expected a fixture pack per enforced kind, found {}",
        packs.len()
    );
    let mut failures = Vec::new();
    let mut total = 0;
    for dir in packs {
        let outcome = load_files(&[dir.join("policy-config.yaml")]);
        let errors: Vec<String> = outcome.errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{}: {}", dir.display(), errors.join(""));
        let policy = CompiledPolicy::compile(outcome.config.expect("valid")).expect("compiles");
        let cases = testing::load_golden(&dir.join("cases.yaml")).expect("cases load");
        assert!(!cases.is_empty(), "{} has no cases", dir.display());
        total += cases.len();
        let report = testing::run(&policy, &cases);
        for r in report.results.iter().filter(|r| !r.passed) {
            failures.push(format!(
                "{} / {}: {}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                r.name,
                r.failure.as_deref().unwrap_or("")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn short_circuit_reports_skipped_policies() {
    let outcome = load_files(&[fixtures().join("policies/chain/policy-config.yaml")]);
    let policy = CompiledPolicy::compile(outcome.config.expect("valid")).expect("compiles");
    let mut body = serde_json::json!({"messages": [{"role": "user", "content": "mail a@b.example now"}]});
    let d = policy.evaluate_request(&mut body, &kt_policy::Headers::new(), kt_policy::EvalOptions::default());
    let summary: Vec<(&str, &str, Option<&str>)> = d
        .policy_results
        .iter()
        .map(|r| (r.kind, r.verdict.as_str(), r.note.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("pii-detector", "redact", None),
            ("dlp-filter", "block", None),
            ("prompt-injection", "allow", Some("chain short-circuited")),
            ("audit-logger", "allow", Some("chain short-circuited")),
        ]
    );
    assert_eq!(d.http_status(), 409);
    assert_eq!(d.error_body()["error"]["code"], "input_blocked");
    assert_eq!(d.error_body()["error"]["policy"], "dlp-filter");
    // The redaction already happened in the body, and only in the content string.
    assert_eq!(
        body,
        serde_json::json!({"messages": [{"role": "user", "content": "mail [EMAIL] now"}]})
    );
}

#[test]
fn digest_is_stable_and_content_sensitive() {
    let a = load_files(&[fixtures().join("policies/pii-detector/policy-config.yaml")])
        .config
        .expect("valid");
    let mut b = a.clone();
    let d1 = CompiledPolicy::compile(a.clone())
        .expect("compiles")
        .digest()
        .to_owned();
    let d2 = CompiledPolicy::compile(a).expect("compiles").digest().to_owned();
    assert_eq!(d1, d2);
    assert_eq!(d1.len(), 64);
    b.pack.version = "1.0.1".into();
    assert_ne!(CompiledPolicy::compile(b).expect("compiles").digest(), d1);
}

#[test]
fn compiled_policy_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledPolicy>();
}

/// A decision without its policy timings, which differ from run to run.
fn untimed(mut d: kt_policy::Decision) -> kt_policy::Decision {
    for r in &mut d.policy_results {
        r.duration_us = 0.0;
    }
    d
}

/// The gateway reads most answers as a view instead of a tree (`evaluate_answer_view`):
/// over every fixture case with an answer, the view decides exactly as the tree does, and
/// declines only where the tree path rewrote the answer.
#[test]
fn answer_view_decides_as_the_tree_does() {
    use kt_policy::exchange::chat_answer_view;
    use kt_policy::{EvalOptions, Headers};
    let (mut viewed, mut declined) = (0, 0);
    for dir in packs() {
        let outcome = load_files(&[dir.join("policy-config.yaml")]);
        let policy = CompiledPolicy::compile(outcome.config.expect("valid")).expect("compiles");
        for loaded in testing::load_golden(&dir.join("cases.yaml")).expect("cases load") {
            let Some(up) = &loaded.case.input.upstream_response else {
                continue;
            };
            let headers: Headers = loaded.case.input.headers.iter().collect();
            let mut request = testing::request_body(&loaded.case);
            policy.evaluate_request(&mut request, &headers, EvalOptions::default());
            let original = testing::response_body(up);
            let bytes = serde_json::to_vec(&original).expect("encode");
            let mut tree = original.clone();
            let by_tree = untimed(policy.evaluate_response(&request, &mut tree, &headers, EvalOptions::default()));
            let Some(view) = chat_answer_view(&bytes) else { continue };
            let name = format!("{} / {}", dir.display(), loaded.case.name);
            match policy.evaluate_answer_view(&request, &view.texts(), &headers, EvalOptions::default()) {
                Some(d) => {
                    viewed += 1;
                    assert_eq!(untimed(d), by_tree, "{name}");
                    assert_eq!(
                        tree, original,
                        "{name}: the view decided, yet the tree path rewrote the answer"
                    );
                }
                None => {
                    declined += 1;
                    assert_ne!(tree, original, "{name}: the view declined an answer nothing rewrites");
                }
            }
        }
    }
    assert!(viewed >= 5 && declined >= 2, "viewed {viewed}, declined {declined}");
}

/// A gateway skips collecting request headers for a chain that does not `reads_headers`:
/// over every fixture case, with its headers and identity headers added, such a chain
/// decides the same without them,
/// on the request and on the answer; and the packs that read them (rbac) say so.
#[test]
fn chains_that_do_not_read_headers_decide_the_same_without_them() {
    use kt_policy::{EvalOptions, Headers};
    let (mut compared, mut readers) = (0, 0);
    for dir in packs() {
        let outcome = load_files(&[dir.join("policy-config.yaml")]);
        let policy = CompiledPolicy::compile(outcome.config.expect("valid")).expect("compiles");
        if policy.reads_headers() {
            readers += 1;
            continue;
        }
        for loaded in testing::load_golden(&dir.join("cases.yaml")).expect("cases load") {
            let name = format!("{} / {}", dir.display(), loaded.case.name);
            // The case's own headers, and the identity headers policies might look at.
            let mut headers: Headers = loaded.case.input.headers.iter().collect();
            for (k, v) in [
                ("x-user-id", "u-1"),
                ("x-user-role", "admin"),
                ("authorization", "Bearer t"),
                ("x-keeptrusts-agent-id", "a-1"),
            ] {
                headers.insert(k, v);
            }
            let run = |h: &Headers| {
                let mut request = testing::request_body(&loaded.case);
                let d = untimed(policy.evaluate_request(&mut request, h, EvalOptions::default()));
                let answer = loaded.case.input.upstream_response.as_ref().map(|up| {
                    let mut tree = testing::response_body(up);
                    let d = untimed(policy.evaluate_response(&request, &mut tree, h, EvalOptions::default()));
                    (d, tree)
                });
                (d, request, answer)
            };
            assert_eq!(run(&headers), run(&Headers::new()), "{name}");
            compared += 1;
        }
    }
    assert!(readers >= 1, "the rbac pack reads headers");
    assert!(compared >= 20, "compared {compared} cases");
}
