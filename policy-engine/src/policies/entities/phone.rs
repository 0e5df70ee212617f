//! Phone numbers checked against the numbering plans of libphonenumber's metadata (through
//! the `phonenumber` crate): international numbers (`+81 90-1234-5678`) by their country
//! code, national numbers against the regions a policy names. A national number written
//! with its trunk prefix and separators (`090-1234-5678`, `09-7625400`, `020 7946 0958`),
//! or as ten digits or more after it (`05321234567`), needs nothing more; shorter digit
//! runs and numbers without a trunk prefix (`13812345678`, `600 123 456`,
//! `(11) 96123-4567`) count only after a phone context word, so order numbers and ids
//! are left alone. After a word of another identifier ("card", "order", "SSN"…) a
//! number is not a phone unless a phone word ("phone", "mobile", "tel"…) says so.
//!
//! Checking a number against a region costs microseconds, so each scan has a budget of
//! region checks ([`MAX_REGION_CHECKS`]); past it, numbers are judged by shape and context
//! alone, which redacts more rather than less.

use std::str::FromStr;
use std::sync::Arc;

use phonenumber::country::Id;

/// Regions whose national formats are recognised unless a policy names its own.
pub const DEFAULT_REGIONS: &[&str] = &[
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "JP", "CN", "IL", "BR", "AU", "CA", "MX",
];

/// Words that make a number a phone number when they come just before it.
const PHONE_WORDS: &[&str] = &[
    "phone",
    "tel",
    "mobile",
    "cell",
    "whatsapp",
    "sms",
    "fax",
    "telefon",
    "téléphone",
    "teléfono",
    "telefone",
    "電話",
    "电话",
    "手机",
];

/// Weaker words: they count when no word of another identifier is closer to the number.
const WEAK_WORDS: &[&str] = &["call", "contact", "number", "dial", "ring", "reach", "text me"];

/// Words of other identifiers: after them a number is a card, account or order number
/// unless a phone word says otherwise.
const OTHER_IDS: &[&str] = &[
    "card",
    "account",
    "acct",
    "order",
    "invoice",
    "iban",
    "ssn",
    "social security",
    "isbn",
    "serial",
    "tracking",
    "routing",
    "passport",
    "licen",
    "policy",
    "member",
    "ticket",
    "reference",
    "build",
    "version",
    "release",
    "sku",
    "part no",
    "serial",
];

/// Bytes before a number in which a context word counts.
const CONTEXT_BEFORE: usize = 40;

/// Region checks one scan may spend (see the module documentation).
pub const MAX_REGION_CHECKS: u32 = 512;

/// One region's plan: what the cheap length filter needs before the library parses.
#[derive(Debug)]
struct Region {
    id: Id,
    trunk: Option<String>,
    lengths: Vec<u16>,
}

impl Region {
    /// The national number (after the trunk prefix) has a length the plan allows.
    fn may_hold(&self, digits: &str) -> bool {
        if self.lengths.is_empty() {
            return true;
        }
        let fits = |d: &str| u16::try_from(d.len()).is_ok_and(|n| self.lengths.contains(&n));
        fits(digits)
            || self
                .trunk
                .as_deref()
                .and_then(|t| digits.strip_prefix(t))
                .is_some_and(fits)
    }
}

/// The regions national numbers are checked against, in order.
#[derive(Debug, Clone)]
pub struct PhoneRegions(Arc<[Region]>);

impl PhoneRegions {
    /// Parses ISO 3166-1 alpha-2 codes (`US`, `gb`); an unknown code is an error that names it.
    pub fn parse<S: AsRef<str>>(codes: &[S]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(codes.len());
        for c in codes {
            let code = c.as_ref().trim().to_ascii_uppercase();
            let id = Id::from_str(&code).map_err(|_| format!("unknown phone region '{}'", c.as_ref()))?;
            let Some(meta) = phonenumber::metadata::DATABASE.by_id(id.as_ref()) else {
                return Err(format!("no numbering plan for phone region '{}'", c.as_ref()));
            };
            if !out.iter().any(|r: &Region| r.id == id) {
                out.push(Region {
                    id,
                    trunk: meta.national_prefix().map(str::to_owned),
                    lengths: meta.descriptors().general().possible_length().to_vec(),
                });
            }
        }
        Ok(PhoneRegions(out.into()))
    }

    pub fn default_regions() -> Self {
        static DEFAULT: std::sync::OnceLock<PhoneRegions> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| PhoneRegions::parse(DEFAULT_REGIONS).unwrap_or(PhoneRegions(Arc::from([]))))
            .clone()
    }

    /// A national number valid in one of the regions; `None` when the budget ran out.
    fn valid_national(&self, s: &str, budget: &mut u32) -> Option<bool> {
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        for r in self.0.iter().filter(|r| r.may_hold(&digits)) {
            *budget = budget.checked_sub(1)?;
            if phonenumber::parse(Some(r.id), s).is_ok_and(|n| phonenumber::is_valid(&n) && national_digits_kept(s, &n))
            {
                return Some(true);
            }
        }
        Some(false)
    }
}

/// The parser may read a leading group as a country code or drop digits it takes for a
/// carrier code; a match must keep at least the number's last seven digits as written.
fn national_digits_kept(s: &str, n: &phonenumber::PhoneNumber) -> bool {
    let written: String = s.chars().filter(char::is_ascii_digit).collect();
    let national = n.national().to_string();
    national.len() >= 6 && written.ends_with(&national)
}

/// `+` and a country code: valid by that country's numbering plan.
pub(super) fn valid_international(s: &str) -> bool {
    phonenumber::parse(None, s).is_ok_and(|n| phonenumber::is_valid(&n))
}

/// A national number: valid in one of `regions`; without a trunk prefix and separators
/// it also needs a context word in the `before` text. Past the budget, shape and context
/// decide.
pub(super) fn valid_national(s: &str, before: &str, regions: &PhoneRegions, budget: &mut u32) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    if !(7..=15).contains(&digits) || date_shaped(s) || list_shaped(s) || super::catalog::after_iban_head(before) {
        return false;
    }
    // A trunk prefix with separators (`030 123456`), or ten digits or more after it
    // (`05321234567`): the way a number is written at home.
    let separated = s.bytes().any(|b| !b.is_ascii_digit());
    let trunk = s.trim_start_matches('(').starts_with('0') && (separated || digits >= 10);
    match context(before) {
        Context::Phone => {}
        Context::OtherId => return false,
        Context::None if !trunk => return false,
        Context::None => {}
    }
    regions.valid_national(s, budget).unwrap_or(true)
}

/// `4 8 15 16 23 42` (single digits past the first group) and `0.256.0.256` (dotted
/// groups of at most three digits) are lists and addresses, not phone numbers.
fn list_shaped(s: &str) -> bool {
    let groups: Vec<&str> = s.split([' ', '.', '-']).filter(|g| !g.is_empty()).collect();
    let singles = groups.iter().skip(1).filter(|g| g.len() == 1).count();
    let dotted = s.contains('.') && groups.len() >= 4 && groups.iter().all(|g| g.len() <= 3);
    singles >= 1 && groups.len() > 3 || dotted
}

/// `01.02.2023`, `03-14-2024`, `2024-03-14`: day, month and year, not a phone number.
fn date_shaped(s: &str) -> bool {
    let groups: Vec<u32> = s
        .split(['.', '-', ' ', '/'])
        .filter(|g| !g.is_empty())
        .map(|g| {
            if g.len() <= 4 {
                g.parse().unwrap_or(u32::MAX)
            } else {
                u32::MAX
            }
        })
        .collect();
    let lens: Vec<usize> = s
        .split(['.', '-', ' ', '/'])
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    match (groups.as_slice(), lens.as_slice()) {
        ([a, b, _], [1 | 2, 1 | 2, 2 | 4]) => (1..=31).contains(a) && (1..=31).contains(b) && (*a <= 12 || *b <= 12),
        ([_, m, d], [4, 1 | 2, 1 | 2]) => (1..=12).contains(m) && (1..=31).contains(d),
        _ => false,
    }
}

fn context(before: &str) -> Context {
    let from = before.len().saturating_sub(CONTEXT_BEFORE);
    let from = (from..before.len())
        .find(|i| before.is_char_boundary(*i))
        .unwrap_or(before.len());
    let tail = before[from..].to_lowercase();
    let last = |words: &[&str]| words.iter().filter_map(|w| tail.rfind(w)).max();
    if PHONE_WORDS.iter().any(|w| tail.contains(w)) {
        return Context::Phone;
    }
    match (last(WEAK_WORDS), last(OTHER_IDS)) {
        (_, Some(_)) => Context::OtherId,
        (Some(_), None) => Context::Phone,
        (None, None) => Context::None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Phone,
    OtherId,
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_numbers_by_region() {
        let regions = PhoneRegions::default_regions();
        for (s, ok) in [
            ("09-7625400", true),
            ("090-1234-5678", true),
            ("020 7946 0958", true),
            ("030 123456", true),
            ("06 12 34 56 78", true),
            ("1234567890", false),
            ("978-3-16-148410-0", false),
            ("2024-03-14", false),
            ("01.02.2023", false),
            ("03-14-2024", false),
            ("0.256.0.256", false),
        ] {
            assert_eq!(
                valid_national(s, "", &regions, &mut MAX_REGION_CHECKS.clone()),
                ok,
                "{s}"
            );
        }
    }

    #[test]
    fn bare_digits_need_a_context_word() {
        let regions = PhoneRegions::default_regions();
        assert!(valid_national("13812345678", "my mobile is ", &regions, &mut 9));
        assert!(valid_national("13812345678", "电话：", &regions, &mut 9));
        assert!(!valid_national("13812345678", "order id ", &regions, &mut 9));
        // Another identifier's word wins over a weak phone word, not over a strong one.
        assert!(!valid_national(
            "030 123456",
            "credit card number is ",
            &regions,
            &mut 9
        ));
        assert!(!valid_national("078-05-0000", "SSN ", &regions, &mut 9));
        assert!(valid_national(
            "030 123456",
            "account manager's phone: ",
            &regions,
            &mut 9
        ));
        // The word counts only close to the number.
        let far = format!("phone{}", " x".repeat(40));
        assert!(!valid_national("13812345678", &far, &regions, &mut 9));
    }

    #[test]
    fn numbers_without_a_trunk_prefix_need_context() {
        let regions = PhoneRegions::parse(&["ES", "BR", "NL"]).expect("regions");
        assert!(valid_national("600 123 456", "Phone: ", &regions, &mut 9));
        assert!(!valid_national("600 123 456", "Total: ", &regions, &mut 9));
        assert!(valid_national(
            "(11) 96123-4567",
            "reach the desk at ",
            &regions,
            &mut 9
        ));
    }

    #[test]
    fn past_the_budget_shape_and_context_decide() {
        let regions = PhoneRegions::default_regions();
        // Invalid everywhere, but the budget is spent: a trunk-prefixed number is redacted.
        assert!(!valid_national("0000 000000", "", &regions, &mut 512));
        assert!(valid_national("0000 000000", "", &regions, &mut 0));
        assert!(!valid_national("1234 5678", "total ", &regions, &mut 0));
    }

    #[test]
    fn regions_are_configurable_and_checked() {
        let jp_only = PhoneRegions::parse(&["jp"]).expect("jp");
        assert!(valid_national("090-1234-5678", "", &jp_only, &mut 9));
        assert!(!valid_national("09-7625400", "", &jp_only, &mut 9));
        let err = PhoneRegions::parse(&["XX"]).expect_err("unknown");
        assert!(err.contains("'XX'"), "{err}");
    }

    #[test]
    fn international_numbers_by_country_code() {
        for (s, ok) in [
            ("+44 20 7946 0958", true),
            ("+81 90-1234-5678", true),
            ("+972-9-7625400", true),
            ("+1 650.555.0123", true),
            ("+1 234", false),
            ("+999 1234 5678", false),
        ] {
            assert_eq!(valid_international(s), ok, "{s}");
        }
    }
}
