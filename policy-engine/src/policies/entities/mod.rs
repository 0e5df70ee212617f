//! The entity detector library behind pii-detector, hipaa-phi-detector and rbac's minimum
//! necessary check: regexes plus checksums (Luhn, IBAN mod-97, SSN ranges) and context
//! words, run only on the windows of text that can hold an entity (around digits or '@'),
//! found in one pass over the bytes.

use std::ops::Range;

mod catalog;
mod phone;

pub use catalog::{luhn, phi_detectors, pii_detectors, valid_iban};
pub use phone::{DEFAULT_REGIONS as DEFAULT_PHONE_REGIONS, PhoneRegions};

use regex::Regex;

use super::redaction::Finding;
use crate::exchange::TextSegment;
use crate::scan::{Hit, HitCache, OwnerId, ScanPlan};
use crate::text::widen;

/// Where a detector looks: each detector runs only on the windows its trigger yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Number-shaped clusters (digits joined by separators) with at least 7 digits, or a
    /// dotted quad.
    Number,
    /// After one of these context words (matched case-insensitively).
    Context(&'static [&'static str]),
    /// Around any digit.
    Digit,
    /// Around an '@'.
    At,
    /// Around a ':'.
    Colon,
    /// Anything: runs over the whole text.
    Always,
}

/// One entity detector.
#[derive(Debug, Clone)]
pub struct Detector {
    pub entity: &'static str,
    re: Regex,
    /// Capture group holding the entity (0 = whole match); context words stay unredacted.
    group: usize,
    validate: Validate,
    trigger: Trigger,
    /// Rejects a match from the text just before it (e.g. "version 1.2.3.4").
    reject_after: Option<fn(&str) -> bool>,
}

fn any(_: &str) -> bool {
    true
}

/// How a match is confirmed.
#[derive(Debug, Clone)]
enum Validate {
    /// A check of the matched text alone (checksum, ranges).
    Text(fn(&str) -> bool),
    /// A national phone number: valid in one of the regions, and digits alone only after
    /// a phone context word.
    NationalPhone(PhoneRegions),
}

impl Detector {
    pub fn new(
        entity: &'static str,
        pattern: &str,
        group: usize,
        validate: fn(&str) -> bool,
        trigger: Trigger,
    ) -> Result<Self, String> {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(crate::builtins::REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("{entity}: {e}"))?;
        Ok(Detector {
            entity,
            re,
            group,
            validate: Validate::Text(validate),
            trigger,
            reject_after: None,
        })
    }

    fn rejecting_after(mut self, f: fn(&str) -> bool) -> Self {
        self.reject_after = Some(f);
        self
    }

    /// National phone numbers of `regions` (see [`PhoneRegions`]).
    fn national_phone(pattern: &str, regions: PhoneRegions) -> Result<Self, String> {
        let mut d = Detector::new("PHONE", pattern, 0, any, Trigger::Number)?;
        d.validate = Validate::NationalPhone(regions);
        Ok(d)
    }

    /// Points a national phone detector at other regions; other detectors are unchanged.
    pub fn with_phone_regions(mut self, regions: &PhoneRegions) -> Self {
        if let Validate::NationalPhone(r) = &mut self.validate {
            *r = regions.clone();
        }
        self
    }

    fn valid(&self, text: &str, r: &Range<usize>, budget: &mut u32) -> bool {
        match &self.validate {
            Validate::Text(f) => f(&text[r.clone()]),
            Validate::NationalPhone(regions) => {
                phone::valid_national(&text[r.clone()], &text[..r.start], regions, budget)
            }
        }
    }

    /// A user-supplied regex reported as `entity`.
    pub fn custom(entity: &'static str, pattern: &str) -> Result<Self, String> {
        Detector::new(entity, pattern, 0, any, Trigger::Always)
    }

    fn rejected_by_context(&self, text: &str, start: usize) -> bool {
        let Some(f) = self.reject_after else { return false };
        let from = widen(text, start..start, 16).start;
        f(&text[from..start])
    }

    fn scan(&self, text: &str, window: Range<usize>, segment: usize, out: &mut Vec<Finding>, budget: &mut u32) {
        let hay = &text[window.clone()];
        if self.group == 0 {
            for m in self.re.find_iter(hay) {
                if m.is_empty() {
                    continue;
                }
                let r = window.start + m.start()..window.start + m.end();
                if boundary_ok(text, &r, self.entity == "IP_ADDRESS")
                    && self.valid(text, &r, budget)
                    && !self.rejected_by_context(text, r.start)
                {
                    out.push(Finding {
                        entity: self.entity,
                        segment,
                        range: r,
                    });
                }
            }
        } else {
            for caps in self.re.captures_iter(hay) {
                let Some(m) = caps.get(self.group) else { continue };
                let r = window.start + m.start()..window.start + m.end();
                if self.valid(text, &r, budget) {
                    out.push(Finding {
                        entity: self.entity,
                        segment,
                        range: r,
                    });
                }
            }
        }
    }
}

/// Digits glued to a number-shaped match mean it is part of a longer number; letters,
/// digits or colons glued to an IPv6-shaped match mean it is part of malformed text
/// (`2001::db8::1`, `fe80::1text`).
fn boundary_ok(text: &str, r: &Range<usize>, address: bool) -> bool {
    let b = text.as_bytes();
    if address && text[r.clone()].contains(':') {
        let before = r.start.checked_sub(1).and_then(|i| b.get(i)).copied();
        let after = b.get(r.end).copied();
        let glued = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b':');
        let dotted_tail = after == Some(b'.') && b.get(r.end + 1).is_some_and(u8::is_ascii_digit);
        return !(glued(before) || glued(after) || dotted_tail);
    }
    let starts_digit = b.get(r.start).is_some_and(u8::is_ascii_digit);
    let ends_digit = r.end > 0 && b.get(r.end - 1).is_some_and(u8::is_ascii_digit);
    let before = r.start.checked_sub(1).and_then(|i| b.get(i)).copied();
    let after = b.get(r.end).copied();
    let glued_before = starts_digit
        && before.is_some_and(|c| c.is_ascii_digit() || c == b'.' && r.start >= 2 && b[r.start - 2].is_ascii_digit());
    let glued_after = ends_digit
        && (after.is_some_and(|c| c.is_ascii_digit())
            || (after == Some(b'.') || after == Some(b'-')) && b.get(r.end + 1).is_some_and(u8::is_ascii_digit));
    !(glued_before || glued_after)
}

/// An ordered set of detectors; earlier detectors win overlaps.
#[derive(Debug, Clone, Default)]
pub struct EntitySet {
    detectors: Vec<Detector>,
    /// Scan owner of the context words; a hit's `local` indexes `context_owners`.
    owner: OwnerId,
    /// Context word → the detectors it serves.
    context_owners: Vec<Vec<usize>>,
}

/// Bytes of context kept around a digit: longer than any entity plus its context words.
const PAD: usize = 72;
/// Bytes kept around a number cluster (an IBAN's country code sits before its digits).
const NUMBER_PAD: usize = 24;
/// Bytes before a context word that may belong to its phrase.
const CONTEXT_BEFORE: usize = 24;
/// Bytes after a context word in which its entity must start and end.
const CONTEXT_SPAN: usize = 72;

/// Candidate windows of one text, computed on first use by any detector.
#[derive(Default)]
struct Windows {
    number: Option<Vec<Range<usize>>>,
    digit: Option<Vec<Range<usize>>>,
    at: Option<Vec<Range<usize>>>,
    colon: Option<Vec<Range<usize>>>,
    context: Option<Vec<Vec<Range<usize>>>>,
}

impl EntitySet {
    /// Registers the context words of `detectors` with the chain's scan plan.
    pub fn new(detectors: Vec<Detector>, plan: &mut ScanPlan) -> Result<Self, String> {
        let owner = plan.owner();
        let mut words: Vec<&'static str> = Vec::new();
        let mut context_owners: Vec<Vec<usize>> = Vec::new();
        for (i, d) in detectors.iter().enumerate() {
            if let Trigger::Context(list) = d.trigger {
                for w in list {
                    match words.iter().position(|x| x.eq_ignore_ascii_case(w)) {
                        Some(k) => context_owners[k].push(i),
                        None => {
                            plan.add(
                                owner,
                                u32::try_from(words.len()).map_err(|_| "too many context words")?,
                                w,
                            );
                            words.push(w);
                            context_owners.push(vec![i]);
                        }
                    }
                }
            }
        }
        Ok(EntitySet {
            detectors,
            owner,
            context_owners,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    /// Findings in `segments` (only those for which `include` is true), overlaps resolved.
    pub fn find(&self, segments: &[TextSegment<'_>], hits: &HitCache<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut budget = phone::MAX_REGION_CHECKS;
        for (i, seg) in segments.iter().enumerate() {
            self.find_in(seg.text, i, hits.get(i, self.owner), &mut out, &mut budget);
        }
        out
    }

    /// Findings in one text; `context_hits` are the scan's hits for this set's owner;
    /// `budget` bounds the phone numbering-plan checks of the whole scan.
    pub fn find_in(&self, text: &str, segment: usize, context_hits: &[Hit], out: &mut Vec<Finding>, budget: &mut u32) {
        let first = out.len();
        let mut w = Windows::default();
        let full = 0..text.len();
        let whole = std::slice::from_ref(&full);
        for (di, d) in self.detectors.iter().enumerate() {
            let wins: &[Range<usize>] = match d.trigger {
                Trigger::Number => w.number.get_or_insert_with(|| number_windows(text)),
                Trigger::Digit => w.digit.get_or_insert_with(|| digit_windows(text)),
                Trigger::At => w.at.get_or_insert_with(|| byte_windows(text, b'@', PAD)),
                Trigger::Colon => w.colon.get_or_insert_with(|| byte_windows(text, b':', 40)),
                Trigger::Context(_) => &w
                    .context
                    .get_or_insert_with(|| self.context_windows(text, context_hits))[di],
                Trigger::Always => whole,
            };
            let before = out.len();
            for win in wins {
                d.scan(text, win.clone(), segment, out, budget);
            }
            // Drop new findings that overlap a finding of a higher-priority detector.
            let mut k = before;
            while k < out.len() {
                let r = out[k].range.clone();
                if out[first..before]
                    .iter()
                    .any(|f| f.range.start < r.end && r.start < f.range.end)
                {
                    out.swap_remove(k);
                } else {
                    k += 1;
                }
            }
        }
    }

    /// Per detector, the windows after its context words that also hold a digit.
    fn context_windows(&self, text: &str, hits: &[Hit]) -> Vec<Vec<Range<usize>>> {
        let mut per: Vec<Vec<Range<usize>>> = vec![Vec::new(); self.detectors.len()];
        for h in hits {
            // Context phrases ("date of birth") can start before the word the scan found.
            let start = widen(text, h.start..h.start, CONTEXT_BEFORE).start;
            let end = widen(text, h.end..(h.end + CONTEXT_SPAN).min(text.len()), 0).end;
            if !text.as_bytes()[h.end..end].iter().any(u8::is_ascii_digit) {
                continue;
            }
            for &d in &self.context_owners[h.local as usize] {
                push_merged(&mut per[d], start..end);
            }
        }
        per
    }
}

/// Index of the first ASCII digit at or after `from`, eight bytes at a time.
fn next_digit(bytes: &[u8], mut from: usize) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while from + 8 <= bytes.len() {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&bytes[from..from + 8]);
        // Bytes 0x30..=0x39 become 0..=9; "some byte is below 10" is the has-less test.
        let x = u64::from_le_bytes(chunk) ^ (0x30 * LOW);
        if (x.wrapping_sub(10 * LOW) & !x & HIGH) != 0 {
            break;
        }
        from += 8;
    }
    bytes[from..].iter().position(u8::is_ascii_digit).map(|p| from + p)
}

/// Number-shaped clusters (digit runs joined by at most two separators from ` -./()`)
/// that could hold a card, account, phone, SSN or IP: ten or more digits, the 3-2-4
/// shape, a dotted quad, seven or more in groups or after a leading 0, or a `+` prefix. Dates, amounts and short numbers are skipped.
fn number_windows(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut i = 0;
    while let Some(start) = next_digit(bytes, i) {
        let (mut digits, mut dots, mut j) = (0usize, 0usize, start);
        let mut groups: [usize; 4] = [0; 4];
        let mut n_groups = 0usize;
        loop {
            let g = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            digits += j - g;
            if n_groups < 4 {
                groups[n_groups] = j - g;
            }
            n_groups += 1;
            let mut k = j;
            while k < bytes.len() && k - j < 2 && matches!(bytes[k], b' ' | b'-' | b'.' | b'/' | b'(' | b')') {
                k += 1;
            }
            if k > j && k < bytes.len() && bytes[k].is_ascii_digit() {
                dots += bytes[j..k].iter().filter(|b| **b == b'.').count();
                j = k;
            } else {
                break;
            }
        }
        let plus = start > 0 && bytes[start - 1] == b'+';
        let ssn_shape = n_groups == 3 && groups[..3] == [3, 2, 4];
        // Four dotted groups: an IPv4 address, or with a fifth its CIDR prefix length.
        let quad = dots == 3 && (n_groups == 4 || n_groups == 5) && groups.iter().all(|g| (1..=3).contains(g));
        // National phone numbers: `09-7625400`, `600 123 456`, `5123 4567`.
        // Dates (`2024-03-14`, `14.03.2024`) are never phones: no window for them.
        let date = n_groups == 3 && matches!(groups[..3], [4, 1 | 2, 1 | 2] | [1 | 2, 1 | 2, 2 | 4]);
        let national = digits >= 7 && (n_groups >= 2 || bytes[start] == b'0') && !date;
        if digits >= 10 || ssn_shape || quad || national || (plus && digits >= 8) {
            push_merged(&mut out, widen(text, start..j, NUMBER_PAD));
        }
        i = j.max(start + 1);
    }
    out
}

/// Merged windows around every digit run.
fn digit_windows(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut i = 0;
    while let Some(start) = next_digit(bytes, i) {
        let mut end = start;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        push_merged(&mut out, widen(text, start..end, PAD));
        i = end;
    }
    out
}

/// Merged windows around every occurrence of `needle`.
fn byte_windows(text: &str, needle: u8, pad: usize) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for i in memchr::memchr_iter(needle, text.as_bytes()) {
        push_merged(&mut out, widen(text, i..i + 1, pad));
    }
    out
}

fn push_merged(v: &mut Vec<Range<usize>>, r: Range<usize>) {
    if let Some(last) = v.last_mut()
        && r.start <= last.end
    {
        last.end = last.end.max(r.end);
        return;
    }
    v.push(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(detectors: Vec<Detector>) -> (EntitySet, crate::scan::Scanners) {
        let mut plan = ScanPlan::default();
        let set = EntitySet::new(detectors, &mut plan).expect("set");
        (set, plan.build().expect("scanner"))
    }

    fn find(set: &(EntitySet, crate::scan::Scanners), text: &str) -> Vec<(&'static str, String)> {
        let (set, scanners) = set;
        let hits = scanners
            .for_phase(crate::kinds::Phase::Input)
            .map(|s| s.scan(text))
            .unwrap_or_default();
        let mut out = Vec::new();
        set.find_in(
            text,
            0,
            hits.get(set.owner).map(Vec::as_slice).unwrap_or(&[]),
            &mut out,
            &mut phone::MAX_REGION_CHECKS.clone(),
        );
        out.sort_by_key(|f| f.range.start);
        out.into_iter().map(|f| (f.entity, text[f.range].to_owned())).collect()
    }

    #[test]
    fn finds_each_pii_entity() {
        let set = set(pii_detectors(true, false).expect("builds"));
        let text = "Mail jane.doe@example.com or call (415) 555-0132. Card 4111 1111 1111 1111, SSN 123-45-6789, \
                    IBAN DE89 3704 0044 0532 0130 00, host 192.168.10.7, DOB: 03/14/1985.";
        let got = find(&set, text);
        let entities: Vec<&str> = got.iter().map(|(e, _)| *e).collect();
        assert_eq!(
            entities,
            vec![
                "EMAIL",
                "PHONE",
                "CREDIT_CARD",
                "SSN",
                "IBAN",
                "IP_ADDRESS",
                "DATE_OF_BIRTH"
            ],
            "{got:?}"
        );
        assert_eq!(got[6].1, "03/14/1985");
    }

    #[test]
    fn look_alikes_are_not_pii() {
        let set = set(pii_detectors(true, false).expect("builds"));
        for text in [
            "Order 4111 1111 1111 1112 failed the checksum",
            "Released version 1.2.3.4 yesterday",
            "The meeting is on 2024-03-14 at 10:30:00",
            "ISBN 978-3-16-148410-0 is a book",
            "see logo@2x.png for the asset",
            "the range 1000-2000 and 3000",
        ] {
            assert!(find(&set, text).is_empty(), "{text}: {:?}", find(&set, text));
        }
    }

    #[test]
    fn finds_cards_addresses_and_ssns_in_their_other_forms() {
        let set = set(pii_detectors(true, false).expect("builds"));
        for (text, entity, value) in [
            ("UATP card 122000000000003 on file", "CREDIT_CARD", "122000000000003"),
            ("Dankort 5019717010103742 please", "CREDIT_CARD", "5019717010103742"),
            ("Maestro 6759649826438453 ok", "CREDIT_CARD", "6759649826438453"),
            ("Mir 2200 0000 0000 0004 ok", "CREDIT_CARD", "2200 0000 0000 0004"),
            ("ping ::1 now", "IP_ADDRESS", "::1"),
            ("link-local fe80::1 here", "IP_ADDRESS", "fe80::1"),
            ("net 2001:db8::/32 routed", "IP_ADDRESS", "2001:db8::/32"),
            ("allow 10.0.0.0/8 only", "IP_ADDRESS", "10.0.0.0/8"),
            ("SSN 078.05.1123 dotted", "SSN", "078.05.1123"),
            ("SSN 078 05 1123 spaced", "SSN", "078 05 1123"),
        ] {
            let got = find(&set, text);
            assert!(
                got.iter().any(|(e, v)| *e == entity && v == value),
                "{text}: expected {entity} {value}, got {got:?}"
            );
        }
        for text in [
            "bad 2001::db8::1 address",
            "bad fe80::1text address",
            "at 12:30:45 today",
            "use std::vector here",
            "card 1234567812345678 (no brand)",
            "net 10.0.0.0/64 is no prefix",
        ] {
            let got = find(&set, text);
            assert!(
                got.iter().all(|(e, _)| *e != "IP_ADDRESS" && *e != "CREDIT_CARD"),
                "{text}: {got:?}"
            );
        }
    }

    #[test]
    fn finds_national_and_international_phone_numbers() {
        let set = set(pii_detectors(true, false).expect("builds"));
        for (text, value) in [
            ("My Israeli number is 09-7625400", "09-7625400"),
            ("Tokyo office: 090-1234-5678.", "090-1234-5678"),
            ("my mobile is 13812345678", "13812345678"),
            ("call 020 7946 0958 in London", "020 7946 0958"),
            ("Berlin: 030 123456", "030 123456"),
            ("portable 06 12 34 56 78", "06 12 34 56 78"),
            ("reach me at +81 90-1234-5678", "+81 90-1234-5678"),
            ("Call (415) 555-0132 after 5", "(415) 555-0132"),
        ] {
            let got = find(&set, text);
            assert!(
                got.iter().any(|(e, v)| *e == "PHONE" && v == value),
                "{text}: expected PHONE {value}, got {got:?}"
            );
        }
        for text in [
            "order 13812345678 shipped",
            "invoice dated 01.02.2023",
            "due 03-14-2024 at noon",
            "ISBN 978-3-16-148410-0",
            "build 0123456789 of the tool",
            "+999 1234 5678 is no country",
        ] {
            let got = find(&set, text);
            assert!(got.iter().all(|(e, _)| *e != "PHONE"), "{text}: {got:?}");
        }
    }
}
