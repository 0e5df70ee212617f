//! Text primitives shared by the detectors: Unicode folding for evasion-resistant matching,
//! word-boundary tests, bounded edit distance, and `TermMatcher`, the case-insensitive
//! multi-term matcher (aho-corasick, optionally fuzzy) behind blocked terms and entity lists.

use std::borrow::Cow;
use std::ops::Range;

use std::collections::HashMap;

use crate::scan::{Hit, OwnerId, ScanPlan, whole_words};
use unicode_normalization::UnicodeNormalization;

/// NFKC-normalizes and/or folds look-alike letters to ASCII. ASCII text is returned as is,
/// without allocating.
pub fn fold(text: &str, nfkc: bool, homoglyphs: bool) -> Cow<'_, str> {
    if text.is_ascii() || !(nfkc || homoglyphs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut push = |c: char| {
        if is_invisible(c) {
            return;
        }
        let c = if homoglyphs { homoglyph(c) } else { c };
        out.push(c);
    };
    if nfkc {
        text.nfkc().for_each(&mut push);
    } else {
        text.chars().for_each(&mut push);
    }
    Cow::Owned(out)
}

/// Zero-width and bidi-control characters used to split trigger words.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

/// Maps Cyrillic, Greek and other letters that look like Latin ones to their Latin twin.
fn homoglyph(c: char) -> char {
    match c {
        'а' => 'a',
        'А' => 'A',
        'е' => 'e',
        'Е' => 'E',
        'о' => 'o',
        'О' => 'O',
        'р' => 'p',
        'Р' => 'P',
        'с' => 'c',
        'С' => 'C',
        'у' => 'y',
        'У' => 'Y',
        'х' => 'x',
        'Х' => 'X',
        'і' => 'i',
        'І' => 'I',
        'ј' => 'j',
        'Ј' => 'J',
        'ѕ' => 's',
        'Ѕ' => 'S',
        'ԁ' => 'd',
        'ɡ' => 'g',
        'һ' => 'h',
        'Һ' => 'H',
        'ӏ' => 'l',
        'Ӏ' => 'I',
        'ԛ' => 'q',
        'ԝ' => 'w',
        'Ԝ' => 'W',
        'В' => 'B',
        'Н' => 'H',
        'К' => 'K',
        'М' => 'M',
        'Т' => 'T',
        'ν' => 'v',
        'ο' => 'o',
        'Ο' => 'O',
        'α' => 'a',
        'Α' => 'A',
        'ε' => 'e',
        'Ε' => 'E',
        'ι' => 'i',
        'Ι' => 'I',
        'κ' => 'k',
        'Κ' => 'K',
        'ρ' => 'p',
        'Ρ' => 'P',
        'τ' => 't',
        'Τ' => 'T',
        'υ' => 'u',
        'χ' => 'x',
        'Χ' => 'X',
        'Β' => 'B',
        'Η' => 'H',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ζ' => 'Z',
        'ℓ' => 'l',
        'ı' => 'i',
        'ȷ' => 'j',
        other => other,
    }
}

pub fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// True when `range` of `text` does not start or end inside a word.
pub fn on_word_boundaries(text: &str, range: &Range<usize>) -> bool {
    let bytes = text.as_bytes();
    let first_word = bytes.get(range.start).is_some_and(|b| is_word_byte(*b));
    let last_word = range.end > 0 && bytes.get(range.end - 1).is_some_and(|b| is_word_byte(*b));
    let before_ok = !first_word || range.start == 0 || !is_word_byte(bytes[range.start - 1]);
    let after_ok = !last_word || range.end >= bytes.len() || !is_word_byte(bytes[range.end]);
    before_ok && after_ok
}

/// Edit distance with adjacent transpositions (optimal string alignment) between `a` and
/// `b`, ASCII case-insensitive, or `None` if it exceeds `max`.
pub fn bounded_levenshtein(a: &[u8], b: &[u8], max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let (n, m) = (a.len(), b.len());
    let big = max + 1;
    let eq = |x: u8, y: u8| x.eq_ignore_ascii_case(&y);
    let mut prev2 = vec![big; m + 1];
    let mut prev: Vec<usize> = (0..=m).map(|j| j.min(big)).collect();
    let mut cur = vec![big; m + 1];
    for i in 1..=n {
        cur.iter_mut().for_each(|c| *c = big);
        cur[0] = i.min(big);
        let mut row_min = cur[0];
        let lo = i.saturating_sub(max).max(1);
        let hi = (i + max).min(m);
        for j in lo..=hi {
            let cost = usize::from(!eq(a[i - 1], b[j - 1]));
            let mut v = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1);
            if i > 1 && j > 1 && eq(a[i - 1], b[j - 2]) && eq(a[i - 2], b[j - 1]) {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v.min(big);
            row_min = row_min.min(cur[j]);
        }
        if row_min > max {
            return None;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    (prev[m] <= max).then_some(prev[m])
}

/// A hit of a `TermMatcher`: which term, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermHit {
    pub term: usize,
    pub range: Range<usize>,
}

/// Case-insensitive whole-word matching of many terms, found by the chain's shared
/// literal scan, with optional fuzzy matching (edit distance) of terms long enough for it
/// to be meaningful.
#[derive(Debug, Clone)]
pub struct TermMatcher {
    owner: OwnerId,
    terms: Vec<String>,
    fuzzy: Option<FuzzyIndex>,
}

/// (term index, lower-cased term bytes with single spaces)
type FuzzyTerm = (usize, Vec<u8>);

#[derive(Debug, Clone)]
struct FuzzyIndex {
    max_distance: usize,
    /// (words in term, byte length) → (term index, lower-cased term bytes)
    buckets: HashMap<(usize, usize), Vec<FuzzyTerm>>,
    max_words: usize,
}

/// Shortest term that fuzzy matching applies to: below it, one edit turns most words into
/// other real words.
pub fn fuzzy_min_len(max_distance: usize) -> usize {
    (3 * max_distance + 2).max(5)
}

impl TermMatcher {
    /// Registers `terms` with the chain's scan plan for `phases`.
    pub fn new<S: AsRef<str>>(terms: &[S], fuzzy_distance: Option<u8>, plan: &mut ScanPlan) -> Result<Self, String> {
        let terms: Vec<String> = terms
            .iter()
            .map(|t| t.as_ref().trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        let owner = plan.owner();
        plan.across_joints(owner);
        for (i, t) in terms.iter().enumerate() {
            plan.add(owner, u32::try_from(i).map_err(|_| "too many terms")?, t);
        }
        let fuzzy = fuzzy_distance.filter(|d| *d > 0).map(|d| {
            let d = usize::from(d);
            let mut buckets: HashMap<(usize, usize), Vec<FuzzyTerm>> = HashMap::new();
            let mut max_words = 0;
            for (i, t) in terms.iter().enumerate().filter(|(_, t)| t.len() >= fuzzy_min_len(d)) {
                let lower = crate::normalize::fold_literal(&t.to_lowercase()).into_owned();
                let words = lower.split_whitespace().count();
                max_words = max_words.max(words);
                let joined = lower.split_whitespace().collect::<Vec<_>>().join(" ").into_bytes();
                buckets.entry((words, joined.len())).or_default().push((i, joined));
            }
            FuzzyIndex {
                max_distance: d,
                buckets,
                max_words,
            }
        });
        Ok(TermMatcher { owner, terms, fuzzy })
    }

    pub fn owner(&self) -> OwnerId {
        self.owner
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn term(&self, i: usize) -> &str {
        &self.terms[i]
    }

    /// Every whole-word hit in `text` given the scan's `hits` for this matcher, exact ones
    /// first then fuzzy ones not overlapping them.
    pub fn find(&self, text: &str, hits: &[Hit]) -> Vec<TermHit> {
        let mut out: Vec<TermHit> = whole_words(text, hits)
            .into_iter()
            .map(|h| TermHit {
                term: h.local as usize,
                range: h.range(),
            })
            .collect();
        if let Some(fz) = &self.fuzzy {
            find_fuzzy(fz, text, &mut out);
        }
        out
    }
}

fn find_fuzzy(fz: &FuzzyIndex, text: &str, hits: &mut Vec<TermHit>) {
    if fz.buckets.is_empty() {
        return;
    }
    let words: Vec<Range<usize>> = word_ranges(text);
    let bytes = text.as_bytes();
    let mut window = Vec::with_capacity(64);
    for start in 0..words.len() {
        for n in 1..=fz.max_words.min(words.len() - start) {
            let range = words[start].start..words[start + n - 1].end;
            window.clear();
            for (k, w) in words[start..start + n].iter().enumerate() {
                if k > 0 {
                    window.push(b' ');
                }
                window.extend_from_slice(&bytes[w.clone()]);
            }
            let lo = window.len().saturating_sub(fz.max_distance);
            let found = (lo..=window.len() + fz.max_distance).find_map(|len| {
                fz.buckets
                    .get(&(n, len))?
                    .iter()
                    .find(|(_, term)| bounded_levenshtein(&window, term, fz.max_distance).is_some())
            });
            if let Some((term, _)) = found
                && !hits
                    .iter()
                    .any(|h| h.range.start < range.end && range.start < h.range.end)
            {
                hits.push(TermHit { term: *term, range });
            }
        }
    }
}

/// Byte ranges of the words (runs of word characters) of `text`.
pub fn word_ranges(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, b) in text.bytes().enumerate() {
        match (is_word_byte(b), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..text.len());
    }
    out
}

/// Widens `range` to char boundaries of `text`, plus `pad` bytes each side.
pub fn widen(text: &str, range: Range<usize>, pad: usize) -> Range<usize> {
    let mut start = range.start.saturating_sub(pad);
    while start > 0 && !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (range.end + pad).min(text.len());
    while end < text.len() && !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_defeats_homoglyphs_and_fullwidth() {
        assert_eq!(fold("іgnоrе", true, true), "ignore");
        assert_eq!(fold("ｉｇｎｏｒｅ", true, false), "ignore");
        assert_eq!(fold("ig\u{200B}nore", true, true), "ignore");
        assert!(matches!(fold("plain", true, true), Cow::Borrowed(_)));
    }

    #[test]
    fn bounded_levenshtein_matches_reference() {
        assert_eq!(bounded_levenshtein(b"kitten", b"sitting", 3), Some(3));
        assert_eq!(bounded_levenshtein(b"kitten", b"sitting", 2), None);
        assert_eq!(bounded_levenshtein(b"Secret", b"secret", 0), Some(0));
        assert_eq!(bounded_levenshtein(b"", b"ab", 2), Some(2));
        assert_eq!(bounded_levenshtein(b"falconre", b"falconer", 1), Some(1));
        assert_eq!(bounded_levenshtein(b"project falcon", b"projekt falcon", 1), Some(1));
    }

    fn matcher(terms: &[&str], fuzzy: Option<u8>) -> (TermMatcher, crate::scan::Scanners) {
        let mut plan = ScanPlan::default();
        let m = TermMatcher::new(terms, fuzzy, &mut plan).expect("builds");
        (m, plan.build().expect("scanner"))
    }

    fn find(m: &TermMatcher, s: &crate::scan::Scanners, text: &str) -> Vec<TermHit> {
        let hits = s
            .for_phase(crate::kinds::Phase::Input)
            .map(|sc| sc.scan(text))
            .unwrap_or_default();
        m.find(text, hits.get(m.owner()).map(Vec::as_slice).unwrap_or(&[]))
    }

    #[test]
    fn term_matcher_is_case_insensitive_and_whole_word() {
        let (m, s) = matcher(&["Project Falcon", "ass"], None);
        assert_eq!(
            find(&m, &s, "the PROJECT FALCON plan, in class"),
            vec![TermHit { term: 0, range: 4..18 }]
        );
    }

    #[test]
    fn term_matcher_fuzzy_catches_typos_of_long_terms_only() {
        let (m, s) = matcher(&["falconer", "cat"], Some(1));
        let hits = find(&m, &s, "the falconre and the car");
        assert_eq!(hits.len(), 1);
        assert_eq!(m.term(hits[0].term), "falconer");
    }

    #[test]
    fn word_boundaries() {
        assert!(on_word_boundaries("a cat.", &(2..5)));
        assert!(!on_word_boundaries("concat", &(3..6)));
    }
}
