//! Composes rounds of redactions (each round's ranges refer to the text as rewritten by the
//! previous rounds) into one list of ranges in the original text.

use std::ops::Range;

use crate::policies::Edit;

/// One redaction in original coordinates.
type Applied = (Range<usize>, String);

/// Maps the edits of every round (all on segment 0) back to the original text. Ranges are
/// sorted and non-overlapping; an edit that overlaps an earlier replacement widens it.
pub fn compose(rounds: &[Vec<Edit>]) -> Vec<Applied> {
    let mut applied: Vec<Applied> = Vec::new();
    for round in rounds {
        let mut round: Vec<&Edit> = round.iter().filter(|e| e.segment == 0).collect();
        round.sort_by_key(|e| e.range.start);
        let mut next: Vec<Applied> = Vec::new();
        for e in round {
            let (start, end) = (
                to_original(&applied, e.range.start, false),
                to_original(&applied, e.range.end, true),
            );
            next.push((start..end, e.replacement.clone()));
        }
        // Merge: earlier replacements swallowed by a new one disappear.
        for (r, rep) in next {
            applied.retain(|(a, _)| a.end <= r.start || a.start >= r.end);
            applied.push((r, rep));
        }
        applied.sort_by_key(|(r, _)| r.start);
    }
    applied
}

/// Position `x` of the current text (original with `applied` replacements) in the original.
/// Inside a replacement it maps to the replaced range's start (or end, for an end bound).
fn to_original(applied: &[Applied], x: usize, is_end: bool) -> usize {
    let mut shift: isize = 0;
    for (r, rep) in applied {
        let cur_start = (r.start as isize + shift) as usize;
        let cur_end = cur_start + rep.len();
        if x < cur_start || (!is_end && x == cur_start) {
            break;
        }
        if x < cur_end || (is_end && x == cur_end) {
            return if is_end { r.end } else { r.start };
        }
        shift += rep.len() as isize - r.len() as isize;
    }
    (x as isize - shift) as usize
}

/// Applies original-coordinate replacements to `text`.
pub fn apply(text: &str, edits: &[Applied]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for (r, rep) in edits {
        if r.start < pos || r.end > text.len() {
            continue;
        }
        out.push_str(&text[pos..r.start]);
        out.push_str(rep);
        pos = r.end;
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(range: Range<usize>, rep: &str) -> Edit {
        Edit {
            segment: 0,
            range,
            replacement: rep.to_owned(),
        }
    }

    #[test]
    fn later_rounds_map_back_through_earlier_replacements() {
        let original = "mail a@b.co or call 555 now";
        // Round 1 redacts the email; round 2 (on "mail [EMAIL] or call 555 now") the number.
        let r1 = vec![edit(5..11, "[EMAIL]")];
        let after1 = "mail [EMAIL] or call 555 now";
        let r2 = vec![edit(
            after1.find("555").expect("in text")..after1.find("555").expect("in text") + 3,
            "[N]",
        )];
        let all = compose(&[r1, r2]);
        assert_eq!(all, vec![(5..11, "[EMAIL]".to_owned()), (20..23, "[N]".to_owned())]);
        assert_eq!(apply(original, &all), "mail [EMAIL] or call [N] now");
    }

    #[test]
    fn a_later_edit_over_a_marker_widens_to_the_original_entity() {
        let r1 = vec![edit(5..11, "[EMAIL]")];
        let r2 = vec![edit(4..13, "[X]")]; // " [EMAIL] " in the rewritten text
        let all = compose(&[r1, r2]);
        assert_eq!(all, vec![(4..12, "[X]".to_owned())]);
    }
}
