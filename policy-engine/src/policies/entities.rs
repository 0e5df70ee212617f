//! The entity detector library behind pii-detector, hipaa-phi-detector and rbac's minimum
//! necessary check: regexes plus checksums (Luhn, IBAN mod-97, SSN ranges) and context
//! words, run only on the windows of text that can hold an entity (around digits or '@'),
//! found in one pass over the bytes.

use std::ops::Range;

use std::sync::OnceLock;

use regex::Regex;

use super::redaction::Finding;
use crate::compile::builtin;
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
    validate: fn(&str) -> bool,
    trigger: Trigger,
    /// Rejects a match from the text just before it (e.g. "version 1.2.3.4").
    reject_after: Option<fn(&str) -> bool>,
}

fn any(_: &str) -> bool {
    true
}

fn has_digit(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
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
            .size_limit(crate::compile::REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("{entity}: {e}"))?;
        Ok(Detector {
            entity,
            re,
            group,
            validate,
            trigger,
            reject_after: None,
        })
    }

    fn rejecting_after(mut self, f: fn(&str) -> bool) -> Self {
        self.reject_after = Some(f);
        self
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

    fn scan(&self, text: &str, window: Range<usize>, segment: usize, out: &mut Vec<Finding>) {
        let hay = &text[window.clone()];
        if self.group == 0 {
            for m in self.re.find_iter(hay) {
                if m.is_empty() {
                    continue;
                }
                let r = window.start + m.start()..window.start + m.end();
                if boundary_ok(text, &r) && (self.validate)(m.as_str()) && !self.rejected_by_context(text, r.start) {
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
                if (self.validate)(m.as_str()) {
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

/// Digits glued to a number-shaped match mean it is part of a longer number.
fn boundary_ok(text: &str, r: &Range<usize>) -> bool {
    let b = text.as_bytes();
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
        for (i, seg) in segments.iter().enumerate() {
            self.find_in(seg.text, i, hits.get(i, self.owner), &mut out);
        }
        out
    }

    /// Findings in one text; `context_hits` are the scan's hits for this set's owner.
    pub fn find_in(&self, text: &str, segment: usize, context_hits: &[Hit], out: &mut Vec<Finding>) {
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
                d.scan(text, win.clone(), segment, out);
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
            let start = widen(text, h.start..h.start, 1).start;
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
/// shape, a dotted quad, or a `+` prefix. Dates, amounts and short numbers are skipped.
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
        let quad = dots == 3 && n_groups == 4 && groups.iter().all(|g| (1..=3).contains(g));
        if digits >= 10 || ssn_shape || quad || (plus && digits >= 8) {
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

// ---------------------------------------------------------------- validators

pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn digits_of(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).collect()
}

fn valid_card(s: &str) -> bool {
    let d = digits_of(s);
    if !(13..=19).contains(&d.len()) || d.iter().all(|x| *x == d[0]) {
        return false;
    }
    let p2 = (d[0] - b'0') * 10 + (d[1] - b'0');
    let p4: u32 = d[..4].iter().fold(0, |a, x| a * 10 + u32::from(x - b'0'));
    let brand = d[0] == b'4'
        || (51..=55).contains(&p2)
        || (2221..=2720).contains(&p4)
        || p2 == 34
        || p2 == 37
        || p4 == 6011
        || p2 == 65
        || p2 == 35
        || p2 == 36
        || p2 == 38
        || (300..=305).contains(&(p4 / 10));
    brand && luhn(&d)
}

fn valid_ssn(s: &str) -> bool {
    let d = digits_of(s);
    if d.len() != 9 {
        return false;
    }
    let area = &d[..3];
    let group = &d[3..5];
    let serial = &d[5..];
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

fn valid_phone(s: &str) -> bool {
    let d = digits_of(s);
    if s.starts_with('+') {
        return (8..=15).contains(&d.len());
    }
    let d = if d.len() == 11 && d[0] == b'1' { &d[1..] } else { &d[..] };
    d.len() == 10 && d[0] >= b'2' && d[3] >= b'2'
}

fn valid_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| p.parse::<u8>().is_ok() && !(p.len() > 1 && p.starts_with('0')))
}

/// "version 1.2.3.4", "v1.2.3.4", "build 10.0.19041.1": version numbers, not addresses.
fn after_version_word(before: &str) -> bool {
    let b = before.trim_end().to_ascii_lowercase();
    before.ends_with(['v', 'V'])
        || ["version", "ver", "ver.", "release", "build", "firmware", "v"]
            .iter()
            .any(|w| b.ends_with(w))
}

fn valid_ipv6(s: &str) -> bool {
    s.matches(':').count() >= 2 && s.len() >= 6 && s.parse::<std::net::Ipv6Addr>().is_ok() && has_digit(s)
}

fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "AD" => 24,
        "AE" => 23,
        "AT" => 20,
        "BE" => 16,
        "BG" => 22,
        "BH" => 22,
        "BR" => 29,
        "CH" => 21,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DK" => 18,
        "EE" => 20,
        "ES" => 24,
        "FI" => 18,
        "FR" => 27,
        "GB" => 22,
        "GR" => 27,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IL" => 23,
        "IS" => 26,
        "IT" => 27,
        "KW" => 30,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "MC" => 27,
        "MT" => 31,
        "NL" => 18,
        "NO" => 15,
        "PL" => 28,
        "PT" => 25,
        "QA" => 29,
        "RO" => 24,
        "SA" => 24,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "SM" => 27,
        "TR" => 26,
        "UA" => 29,
        _ => return None,
    })
}

pub fn valid_iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let Ok(text) = std::str::from_utf8(&compact) else {
        return false;
    };
    if text.len() < 15 || iban_length(&text[..2]) != Some(text.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut rem: u32 = 0;
    for &c in rearranged {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn valid_email(s: &str) -> bool {
    let tld = s.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    !matches!(
        tld.as_str(),
        "png"
            | "jpg"
            | "jpeg"
            | "gif"
            | "svg"
            | "webp"
            | "js"
            | "ts"
            | "css"
            | "html"
            | "py"
            | "rs"
            | "md"
            | "txt"
            | "json"
    )
}

fn valid_date(s: &str) -> bool {
    let nums: Vec<u32> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect();
    match nums.as_slice() {
        [y, m, d] if *y > 1000 => (1..=12).contains(m) && (1..=31).contains(d),
        [a, b, _y] => (1..=31).contains(a) && (1..=31).contains(b) && (*a <= 12 || *b <= 12),
        [d, _y] => (1..=31).contains(d),
        _ => false,
    }
}

fn valid_npi(s: &str) -> bool {
    let mut d = b"80840".to_vec();
    d.extend(digits_of(s));
    d.len() == 15 && luhn(&d)
}

fn valid_vin(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    (3..17).contains(&digits)
}

// ---------------------------------------------------------------- catalogues

const DATE: &str = r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}|\d{1,2}(?:st|nd|rd|th)?\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?,?\s+\d{4})";

/// Detectors of the PII catalogue, highest priority first.
pub fn pii_detectors(pci: bool, healthcare: bool) -> Result<Vec<Detector>, String> {
    static CACHE: [OnceLock<Result<Vec<Detector>, String>>; 4] = [const { OnceLock::new() }; 4];
    builtin(&CACHE[usize::from(pci) * 2 + usize::from(healthcare)], || {
        build_pii_detectors(pci, healthcare)
    })
}

fn build_pii_detectors(pci: bool, healthcare: bool) -> Result<Vec<Detector>, String> {
    use Trigger::*;
    let mut v = vec![Detector::new(
        "DATE_OF_BIRTH",
        &format!(
            r"(?i)(?:(?-u:\b)dob(?-u:\b)|d\.o\.b\.?|date of birth|birth ?date|born on|born|birthday)\s*(?:is|was|:|-|,)?\s*({DATE})"
        ),
        1,
        valid_date,
        Context(&["dob", "d.o.b", "birth", "born"]),
    )?];
    v.push(Detector::new(
        "SSN",
        r"(?i)(?:ssn|social security(?: number| no\.?| #)?)\s*(?:is|:|#)?\s*(\d{9})(?-u:\b)",
        1,
        valid_ssn,
        Context(&["ssn", "social security"]),
    )?);
    if pci {
        v.push(Detector::new("CVV", r"(?i)(?:cvv2?|cvc2?|csc|security code|card verification(?: value| code)?)\s*(?:is|:|#)?\s*(\d{3,4})(?-u:\b)", 1, any, Context(&["cvv", "cvc", "csc", "security code", "card verification"]))?);
    }
    if healthcare {
        v.extend(healthcare_detectors()?);
    }
    v.push(Detector::new(
        "IBAN",
        r"(?-u:\b)[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)",
        0,
        valid_iban,
        Number,
    )?);
    if pci {
        v.push(Detector::new(
            "CREDIT_CARD",
            r"(?-u:\b)\d(?:[ -]?\d){12,18}(?-u:\b)",
            0,
            valid_card,
            Number,
        )?);
    }
    v.push(Detector::new(
        "SSN",
        r"(?-u:\b)\d{3}([- ])\d{2}[- ]\d{4}(?-u:\b)",
        0,
        valid_ssn,
        Number,
    )?);
    v.push(Detector::new(
        "PHONE",
        r"(?:\+1[ .-]?)?(?:\(\d{3}\)[ .-]?|(?-u:\b)\d{3}[ .-])\d{3}[ .-]\d{4}(?-u:\b)|\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){1,4}\d{2,4}(?-u:\b)",
        0,
        valid_phone,
        Number,
    )?);
    v.push(
        Detector::new(
            "IP_ADDRESS",
            r"(?-u:\b)\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?-u:\b)",
            0,
            valid_ipv4,
            Number,
        )?
        .rejecting_after(after_version_word),
    );
    v.push(Detector::new(
        "IP_ADDRESS",
        r"(?i)(?:[0-9a-f]{1,4}:){1,7}(?::|(?::[0-9a-f]{1,4}){1,7}|[0-9a-f]{1,4})",
        0,
        valid_ipv6,
        Colon,
    )?);
    v.push(Detector::new("EMAIL", r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?\.[A-Za-z]{2,24}(?-u:\b)", 0, valid_email, At)?);
    Ok(v)
}

fn healthcare_detectors() -> Result<Vec<Detector>, String> {
    use Trigger::*;
    Ok(vec![
        Detector::new(
            "MRN",
            r"(?i)(?:(?-u:\b)mrn(?-u:\b)|medical record (?:number|no\.?|#)|patient id)\s*(?:is|:|#)?\s*([A-Z0-9][A-Z0-9-]{4,14})(?-u:\b)",
            1,
            has_digit,
            Context(&["mrn", "medical record", "patient id"]),
        )?,
        Detector::new(
            "NPI",
            r"(?i)(?-u:\b)npi(?: number| no\.?)?\s*(?:is|:|#)?\s*(\d{10})(?-u:\b)",
            1,
            valid_npi,
            Context(&["npi"]),
        )?,
        Detector::new(
            "INSURANCE_ID",
            r"(?i)(?:member|subscriber|beneficiary|insurance|health plan|medicaid|medicare)\s*(?:id|number|no\.?|#)\s*(?:is|:|#)?\s*([A-Z0-9][A-Z0-9-]{5,19})(?-u:\b)",
            1,
            has_digit,
            Context(&[
                "member",
                "subscriber",
                "beneficiary",
                "insurance",
                "health plan",
                "medicaid",
                "medicare",
            ]),
        )?,
    ])
}

/// Detectors for the 18 HIPAA Safe Harbor identifiers that text can carry.
pub fn phi_detectors() -> Result<Vec<Detector>, String> {
    static CACHE: OnceLock<Result<Vec<Detector>, String>> = OnceLock::new();
    builtin(&CACHE, build_phi_detectors)
}

fn build_phi_detectors() -> Result<Vec<Detector>, String> {
    use Trigger::*;
    let mut v = healthcare_detectors()?;
    v.extend([
        Detector::new(
            "NAME",
            r"(?:(?i:patient|pt\.|client|resident)(?:'s)?(?:\s+(?i:name))?\s*(?:is|:|-)?\s*|(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)([A-Z][a-z]+(?:[ -][A-Z][a-z]+){0,2})",
            1,
            any,
            Always,
        )?,
        Detector::new("FAX", r"(?i)fax(?: number| no\.?| #)?\s*(?::|is)?\s*(\+?[\d(][\d ().-]{8,18}\d)", 1, any, Context(&["fax"]))?,
        Detector::new("ACCOUNT_NUMBER", r"(?i)(?:account|acct)\s*(?:number|no\.?|#)\s*(?:is|:|#)?\s*([A-Z0-9-]{6,20})(?-u:\b)", 1, has_digit, Context(&["account", "acct"]))?,
        Detector::new(
            "LICENSE_NUMBER",
            r"(?i)(?:license|licence|certificate|dea|permit)\s*(?:number|no\.?|#)\s*(?:is|:|#)?\s*([A-Z0-9-]{5,20})(?-u:\b)",
            1,
            has_digit,
            Context(&["license", "licence", "certificate", "dea", "permit"]),
        )?,
        Detector::new("DEVICE_ID", r"(?i)(?:serial|device|implant)\s*(?:number|no\.?|#|id)\s*(?:is|:|#)?\s*([A-Z0-9-]{5,24})(?-u:\b)", 1, has_digit, Context(&["serial", "device", "implant"]))?,
        Detector::new("VEHICLE_ID", r"(?-u:\b)[A-HJ-NPR-Z0-9]{17}(?-u:\b)", 0, valid_vin, Digit)?,
        Detector::new("URL", r"(?i)(?-u:\b)https?://[^\s<>()]+", 0, any, Always)?,
    ]);
    v.extend(pii_detectors(false, false)?);
    v.extend([
        Detector::new("DATE", &format!(r"(?i)(?-u:\b){DATE}(?-u:\b)"), 0, valid_date, Digit)?,
        Detector::new(
            "ADDRESS",
            r"(?-u:\b)\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl)\.?(?-u:\b)",
            0,
            any,
            Digit,
        )?,
        Detector::new("ZIP_CODE", r"(?-u:\b)[A-Z]{2}\s+(\d{5}(?:-\d{4})?)(?-u:\b)", 1, any, Digit)?,
    ]);
    Ok(v)
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
        set.find_in(text, 0, hits.get(set.owner).map(Vec::as_slice).unwrap_or(&[]), &mut out);
        out.sort_by_key(|f| f.range.start);
        out.into_iter().map(|f| (f.entity, text[f.range].to_owned())).collect()
    }

    #[test]
    fn checksums() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(valid_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!valid_iban("GB82 WEST 1234 5698 7654 33"));
        assert!(valid_ssn("123-45-6789"));
        assert!(!valid_ssn("666-45-6789") || !valid_ssn("000-12-3456"));
        assert!(valid_npi("1234567893"));
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
}
