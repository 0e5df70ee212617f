//! Precision and recall of every detector on the labelled corpora in fixtures/corpus/
//! (kt's own samples) and fixtures/corpus/public/ (public collections, see SOURCES.md),
//! scored by the same code as `kt policy test --corpus`. Each file holds floors the
//! detector must meet; the table is printed on every run.

use kt_policy::corpus;

#[test]
fn detectors_meet_their_precision_and_recall_floors() {
    let dir = super::fixtures().join("corpus");
    let paths = corpus::files(&dir).expect("corpus dir");
    let mut below = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    println!(
        "{:<44}{:>6}{:>6}{:>6}{:>6}{:>11}{:>8}{:>10}",
        "corpus", "TP", "FP", "FN", "TN", "precision", "recall", "median µs"
    );
    for path in paths {
        let name = path.strip_prefix(&dir).unwrap_or(&path).display().to_string();
        let file = corpus::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let s = corpus::score(&name, &file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = &s.counts;
        assert!(
            c.tp + c.fn_ >= 8 && c.tn + c.fp >= 8,
            "{name}: needs at least 8 positives and 8 negatives"
        );
        println!(
            "{:<44}{:>6}{:>6}{:>6}{:>6}{:>11.3}{:>8.3}{:>10.1}",
            format!("{name} ({})", s.kind),
            c.tp,
            c.fp,
            c.fn_,
            c.tn,
            s.precision,
            s.recall,
            s.median_us
        );
        for m in s.misses.iter().take(40) {
            let text: String = m.text.chars().take(160).collect();
            println!(
                "    {} {:?} {:?}: {}",
                m.error,
                m.family,
                m.entities,
                text.replace('\n', " ")
            );
        }
        if !s.passed {
            below.push(format!(
                "{name}: precision {:.3} (floor {}), recall {:.3} (floor {})",
                s.precision, s.min_precision, s.recall, s.min_recall
            ));
        }
        kinds.insert(s.kind);
    }
    assert!(kinds.len() >= 8, "expected a corpus per detector, got {kinds:?}");
    assert!(below.is_empty(), "detectors below their floors:\n{}", below.join("\n"));
}
