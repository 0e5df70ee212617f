//! The shared redaction path: turns findings into non-overlapping edits with the configured
//! marker format, so every redacting policy rewrites text the same way.

use std::ops::Range;

use crate::config::{MarkerFormat, Redaction};

use super::Edit;

/// A detected entity in one text segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub entity: &'static str,
    pub segment: usize,
    pub range: Range<usize>,
}

/// The replacement for `original` under `settings`.
pub fn marker(entity: &str, original: &str, settings: &Redaction) -> String {
    if let Some(custom) = settings.custom_markers.get(entity) {
        return custom.clone();
    }
    let len = original.chars().count();
    match settings.marker_format {
        MarkerFormat::Label => {
            let label = format!("[{entity}]");
            if settings.preserve_length && len > label.len() {
                let mut s = format!("[{entity}");
                s.extend(std::iter::repeat_n('*', len - label.len()));
                s.push(']');
                s
            } else {
                label
            }
        }
        MarkerFormat::Asterisks => "*".repeat(len.max(1)),
        MarkerFormat::Partial => {
            let keep = 4.min(len / 2);
            let mut s: String = "*".repeat(len - keep);
            s.extend(original.chars().skip(len - keep));
            s
        }
    }
}

/// Edits for findings, with overlapping findings in one segment merged into one edit
/// (labelled with the first entity).
pub fn edits(findings: &[Finding], texts: &[&str], settings: &Redaction) -> Vec<Edit> {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| (f.segment, f.range.start, std::cmp::Reverse(f.range.end)));
    let mut out: Vec<(usize, Range<usize>, &'static str)> = Vec::with_capacity(sorted.len());
    for f in sorted {
        if let Some(last) = out.last_mut()
            && last.0 == f.segment
            && f.range.start < last.1.end
        {
            last.1.end = last.1.end.max(f.range.end);
            continue;
        }
        out.push((f.segment, f.range.clone(), f.entity));
    }
    out.into_iter()
        .map(|(segment, range, entity)| {
            let original = &texts[segment][range.clone()];
            Edit {
                segment,
                replacement: marker(entity, original, settings),
                range,
            }
        })
        .collect()
}

/// Applies edits (sorted, non-overlapping, all for this segment) to `text`.
pub fn apply(text: &str, edits: &[&Edit]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for e in edits {
        if e.range.start < pos || e.range.end > text.len() {
            continue;
        }
        out.push_str(&text[pos..e.range.start]);
        out.push_str(&e.replacement);
        pos = e.range.end;
    }
    out.push_str(&text[pos..]);
    out
}

/// Distinct entity names of findings, in first-seen order.
pub fn entity_names(findings: &[Finding]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in findings {
        if !out.iter().any(|e| e == f.entity) {
            out.push(f.entity.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_formats() {
        let mut s = Redaction::default();
        assert_eq!(marker("EMAIL", "a@b.co", &s), "[EMAIL]");
        s.marker_format = MarkerFormat::Asterisks;
        assert_eq!(marker("EMAIL", "a@b.co", &s), "******");
        s.marker_format = MarkerFormat::Partial;
        assert_eq!(marker("CREDIT_CARD", "4111111111111111", &s), "************1111");
        s.marker_format = MarkerFormat::Label;
        s.preserve_length = true;
        assert_eq!(marker("SSN", "123-45-6789", &s).chars().count(), 11);
        s.custom_markers.insert("SSN".into(), "<ssn>".into());
        assert_eq!(marker("SSN", "123-45-6789", &s), "<ssn>");
    }

    #[test]
    fn overlapping_findings_merge() {
        let texts = ["call 555-123-4567 now"];
        let f = vec![
            Finding {
                entity: "PHONE",
                segment: 0,
                range: 5..17,
            },
            Finding {
                entity: "SSN",
                segment: 0,
                range: 9..17,
            },
        ];
        let e = edits(&f, &texts, &Redaction::default());
        assert_eq!(e.len(), 1);
        assert_eq!(apply(texts[0], &e.iter().collect::<Vec<_>>()), "call [PHONE] now");
    }
}
