//! The entity catalogues (PII, healthcare identifiers, HIPAA Safe Harbor identifiers) and
//! the validators behind them: Luhn, IBAN mod-97, SSN ranges, NPI, dates, versions.

use std::sync::OnceLock;

use super::{Detector, PhoneRegions, Trigger};
use crate::builtins::builtin;

fn any(_: &str) -> bool {
    true
}

fn has_digit(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
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

/// A payment card number: 13 to 19 digits, a Luhn check digit, and an issuer range in
/// use — UATP (1…, 15 digits), Mir (2200–2204), Mastercard (2221–2720, 51–55), American
/// Express (34, 37), Diners (300–305, 36, 38), JCB (35), Visa (4), Maestro and Dankort
/// (50, 56–59, 6…), Discover, UnionPay, RuPay and other 6… ranges, UnionPay and RuPay 8…
fn valid_card(s: &str) -> bool {
    let d = digits_of(s);
    if !(13..=19).contains(&d.len()) || d.iter().all(|x| *x == d[0]) {
        return false;
    }
    let p2 = (d[0] - b'0') * 10 + (d[1] - b'0');
    let p4: u32 = d[..4].iter().fold(0, |a, x| a * 10 + u32::from(x - b'0'));
    let brand = match d[0] {
        b'1' => d.len() == 15,
        b'2' => (2200..=2204).contains(&p4) || (2221..=2720).contains(&p4),
        b'3' => (34..=38).contains(&p2) || (300..=305).contains(&(p4 / 10)),
        b'4' | b'6' => true,
        b'5' => p2 == 50 || (51..=59).contains(&p2),
        b'8' => matches!(p2, 81 | 82),
        _ => false,
    };
    brand && luhn(&d)
}

fn valid_ssn(s: &str) -> bool {
    let d = digits_of(s);
    if d.len() != 9 {
        return false;
    }
    // One separator throughout (`078-05-1123`, not `693-09.4444`).
    let mut seps = s.bytes().filter(|b| !b.is_ascii_digit());
    if let Some(first) = seps.next()
        && seps.any(|b| b != first)
    {
        return false;
    }
    // Numbers the SSA voided after they were published (wallet inserts, advertising).
    if matches!(&d[..], b"078051120" | b"219099999" | b"457555462") {
        return false;
    }
    let area = &d[..3];
    let group = &d[3..5];
    let serial = &d[5..];
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

/// A North American number written in its own format: ten digits (after an optional
/// leading 1) whose area code and exchange do not start with 0 or 1.
fn valid_nanp(s: &str) -> bool {
    let d = digits_of(s);
    let d = if d.len() == 11 && d[0] == b'1' { &d[1..] } else { &d[..] };
    d.len() == 10 && d[0] >= b'2' && d[3] >= b'2'
}

/// Text ending in the start of an IBAN (`DE89 `, `NL91 ABNA `): the digits that follow
/// belong to an account number that failed its checksum, not to a card or phone.
pub(super) fn after_iban_head(before: &str) -> bool {
    let b = before.trim_end().as_bytes();
    // Walk back over up to seven 4-character groups to the country code and check digits.
    let mut end = b.len();
    for _ in 0..8 {
        if end >= 4 {
            let g = &b[end - 4..end];
            let head = g[..2].iter().all(u8::is_ascii_uppercase) && g[2..].iter().all(u8::is_ascii_digit);
            if head && (end == 4 || !b[end - 5].is_ascii_alphanumeric()) {
                return true;
            }
            if !g.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
                return false;
            }
        }
        let start = end.saturating_sub(4);
        if start == 0 || b[start - 1] != b' ' {
            return false;
        }
        end = start - 1;
    }
    false
}

/// An address, or a network in CIDR notation (`10.0.0.0/8`): the prefix length fits.
fn split_prefix(s: &str, max: u8) -> Option<&str> {
    match s.split_once('/') {
        Some((addr, len)) => len.parse::<u8>().ok().filter(|l| *l <= max).map(|_| addr),
        None => Some(s),
    }
}

fn valid_ipv4(s: &str) -> bool {
    let Some(s) = split_prefix(s, 32) else {
        return false;
    };
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| p.parse::<u8>().is_ok() && !(p.len() > 1 && p.starts_with('0')))
}

/// "version 1.2.3.4", "v1.2.3.4", "build 10.0.19041.1", "section 4.1.2.3": version and
/// section numbers, not addresses.
fn after_version_word(before: &str) -> bool {
    let b = before.trim_end().to_ascii_lowercase();
    before.ends_with(['v', 'V'])
        || [
            "version",
            "ver",
            "ver.",
            "release",
            "build",
            "firmware",
            "v",
            "section",
            "sect.",
            "chapter",
            "clause",
            "paragraph",
            "step",
            "figure",
            "table",
            "article",
            "rule",
            "item",
            "§",
        ]
        .iter()
        .any(|w| b.ends_with(w))
}

/// An IPv6 address in any of its forms (full, compressed, `::1`), or a network in CIDR
/// notation (`2001:db8::/32`); clock times and malformed text are not addresses.
fn valid_ipv6(s: &str) -> bool {
    let Some(addr) = split_prefix(s, 128) else {
        return false;
    };
    addr.matches(':').count() >= 2
        && (addr.len() >= 6 || addr.starts_with("::"))
        && addr.parse::<std::net::Ipv6Addr>().is_ok()
        && has_digit(s)
}

/// IBAN lengths of the countries in the SWIFT IBAN registry.
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "AD" => 24,
        "AE" => 23,
        "AL" => 28,
        "AT" => 20,
        "AZ" => 28,
        "BA" => 20,
        "BE" => 16,
        "BG" => 22,
        "BH" => 22,
        "BI" => 27,
        "BR" => 29,
        "BY" => 28,
        "CH" => 21,
        "CR" => 22,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DJ" => 27,
        "DK" => 18,
        "DO" => 28,
        "EE" => 20,
        "EG" => 29,
        "ES" => 24,
        "FI" => 18,
        "FK" => 18,
        "FO" => 18,
        "FR" => 27,
        "GB" => 22,
        "GE" => 22,
        "GI" => 23,
        "GL" => 18,
        "GR" => 27,
        "GT" => 28,
        "HN" => 28,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IL" => 23,
        "IQ" => 23,
        "IS" => 26,
        "IT" => 27,
        "JO" => 30,
        "KW" => 30,
        "KZ" => 20,
        "LB" => 28,
        "LC" => 32,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "LY" => 25,
        "MC" => 27,
        "MD" => 24,
        "ME" => 22,
        "MK" => 19,
        "MN" => 20,
        "MR" => 27,
        "MT" => 31,
        "MU" => 30,
        "NI" => 28,
        "NL" => 18,
        "NO" => 15,
        "OM" => 23,
        "PK" => 24,
        "PL" => 28,
        "PS" => 29,
        "PT" => 25,
        "QA" => 29,
        "RO" => 24,
        "RS" => 22,
        "RU" => 33,
        "SA" => 24,
        "SC" => 31,
        "SD" => 18,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "SM" => 27,
        "SO" => 23,
        "ST" => 25,
        "SV" => 28,
        "TL" => 23,
        "TN" => 24,
        "TR" => 26,
        "UA" => 29,
        "VA" => 22,
        "VG" => 24,
        "XK" => 20,
        "YE" => 30,
        _ => return None,
    })
}

/// An IBAN (country length and mod-97); a short group the pattern took from the text
/// after it (`… 8901 X in`, `… 8741 ALL CAPS`) is not part of it.
fn valid_iban_in_text(s: &str) -> bool {
    valid_iban(s)
        || s.rfind([' ', '-'])
            .is_some_and(|i| s.len() - i <= 4 && valid_iban(&s[..i]))
        || {
            // Glued letters: `…8741ALL`.
            let tail = s.len() - s.bytes().rev().take_while(u8::is_ascii_uppercase).count();
            tail < s.len() && s.len() - tail <= 4 && valid_iban(&s[..tail])
        }
}

pub fn valid_iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'-').collect();
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

const DATE: &str = r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?[\s-]+\d{1,2}(?:st|nd|rd|th)?,?[\s-]+\d{4}|\d{1,2}(?:st|nd|rd|th)?[\s-]+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?,?[\s-]+\d{4})";

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
        v.push(Detector::new("CVV", r"(?i)(?:cvv2?|cvc2?|csc|security code|card verification(?: value| code)?)(?:\s*(?:is|was|:|#|-)|\s+(?:on|at|of|in|the|back|front|card|reverse|side|printed|number|code)){0,6}\s*(\d{3,4})(?-u:\b)", 1, any, Context(&["cvv", "cvc", "csc", "security code", "card verification"]))?);
    }
    if healthcare {
        v.extend(healthcare_detectors()?);
    }
    v.push(Detector::new(
        "IBAN",
        r"(?-u:\b)[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?(?-u:\b)",
        0,
        valid_iban_in_text,
        Number,
    )?);
    if pci {
        v.push(
            Detector::new(
                "CREDIT_CARD",
                r"(?-u:\b)\d(?:[ -]?\d){12,18}(?-u:\b)",
                0,
                valid_card,
                Number,
            )?
            .rejecting_after(after_iban_head),
        );
    }
    v.push(Detector::new(
        "SSN",
        r"(?-u:\b)\d{3}[- .]\d{2}[- .]\d{4}(?-u:\b)",
        0,
        valid_ssn,
        Number,
    )?);
    v.push(Detector::new(
        "PHONE",
        r"\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){1,4}\d{2,4}(?-u:\b)",
        0,
        super::phone::valid_international,
        Number,
    )?);
    v.push(Detector::new(
        "PHONE",
        r"(?:\+1[ .-]?)?(?:\(\d{3}\)[ .-]?|(?-u:\b)\d{3}[ .-])\d{3}[ .-]\d{4}(?-u:\b)",
        0,
        valid_nanp,
        Number,
    )?);
    v.push(
        Detector::new(
            "IP_ADDRESS",
            r"(?-u:\b)\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?:/\d{1,2})?(?-u:\b)",
            0,
            valid_ipv4,
            Number,
        )?
        .rejecting_after(after_version_word),
    );
    v.push(Detector::new(
        "IP_ADDRESS",
        r"(?i)(?:(?:[0-9a-f]{1,4}:){1,6}:?(?:[0-9a-f]{1,4}:){0,5}\d{1,3}(?:\.\d{1,3}){3}|::(?:[0-9a-f]{1,4}:){0,5}\d{1,3}(?:\.\d{1,3}){3}|(?:[0-9a-f]{1,4}:){1,7}(?:(?::[0-9a-f]{1,4}){1,7}|[0-9a-f]{1,4}|:)|::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?)(?:/\d{1,3})?",
        0,
        valid_ipv6,
        Colon,
    )?);
    v.push(Detector::new("EMAIL", r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?\.[A-Za-z]{2,24}(?-u:\b)", 0, valid_email, At)?);
    v.push(Detector::national_phone(
        r"(?:\(\d{1,5}\)|(?-u:\b)\d{1,5})(?:[ .-]{0,2}(?:\(\d{1,5}\)|\d{1,5})){0,5}(?-u:\b)",
        PhoneRegions::default_regions(),
    )?);
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
}
