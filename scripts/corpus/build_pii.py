#!/usr/bin/env python3
"""Build the public, labelled PII corpus for kt's pii-detector.

Stdlib only. Reads three public repositories from local bare git mirrors at
pinned commits (never the network) and writes:

  fixtures/corpus/public/pii-detector.json   labelled samples (corpus format)
  fixtures/reference/pii-presidio.json  presidio's recogniser test cases
  fixtures/corpus/public/SOURCES-pii.md      provenance, licences, counts

Only *data* is taken from the sources (test strings, example numbers); no
code is copied. The phone formatter below is written from the metadata
format's documentation, not ported from libphonenumber.

Usage:
  python3 scripts/corpus/build_pii.py [--mirrors /work/.mirror] [--out fixtures/corpus/public]

Mirrors are bare git directories at <mirrors>/<owner>+<name>/repo (what the
workspace `fetch` tool produces; `git clone --bare` of the GitHub repo works
too). The script fails if a pinned commit is missing.

Determinism: no randomness except a seeded random.Random for the synthetic
SSN/CVV/DOB values; the output is byte-identical between runs.
"""

import argparse
import ast
import json
import os
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

# ---------------------------------------------------------------------------
# Pinned sources
# ---------------------------------------------------------------------------

SOURCES = {
    "presidio": {
        "repo": "microsoft/presidio",
        "url": "https://github.com/microsoft/presidio",
        "commit": "0aa9f8e44275cb52c00fbbebe19168e934e1f076",
        "license_file": "LICENSE",
        "license_first_line": "The MIT License (MIT)",
        "spdx": "MIT",
    },
    "libphonenumber": {
        "repo": "google/libphonenumber",
        "url": "https://github.com/google/libphonenumber",
        "commit": "f7e3e88c92b905c8d6edb81f336dbe25edc05b52",
        "license_file": "LICENSE",
        "license_first_line": "Apache License",
        "spdx": "Apache-2.0",
    },
    "validator.js": {
        "repo": "validatorjs/validator.js",
        "url": "https://github.com/validatorjs/validator.js",
        "commit": "cdb7dafc281d14125b924969bf3ee5bc482ec169",
        "license_file": "LICENSE",
        "license_first_line": "Copyright (c) 2018 Chris O'Hara",
        "license_marker": "Permission is hereby granted, free of charge",
        "spdx": "MIT",
    },
}

PRESIDIO_TESTS = "presidio-analyzer/tests/"
PRESIDIO_PHONE_SRC = (
    "presidio-analyzer/presidio_analyzer/predefined_recognizers/generic/phone_recognizer.py"
)
LIBPHONENUMBER_XML = "resources/PhoneNumberMetadata.xml"
VALIDATOR_TESTS = "test/validators.test.js"
VALIDATOR_IP_TESTS = "test/validators/isIP.test.js"
VALIDATOR_ISBN_TESTS = "test/validators/isISBN.test.js"

MIRRORS = "/work/.mirror"


def git_show(source, path):
    meta = SOURCES[source]
    gitdir = os.path.join(MIRRORS, meta["repo"].replace("/", "+"), "repo")
    out = subprocess.run(
        ["git", "--git-dir", gitdir, "show", f"{meta['commit']}:{path}"],
        capture_output=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(
            f"cannot read {meta['repo']}@{meta['commit']}:{path} from {gitdir}: "
            f"{out.stderr.decode(errors='replace').strip()}"
        )
    return out.stdout.decode("utf-8")


def check_licences():
    for name, meta in SOURCES.items():
        text = git_show(name, meta["license_file"])
        ok = meta["license_first_line"] in text[:400]
        if "license_marker" in meta:
            ok = ok and meta["license_marker"] in text
        if not ok:
            sys.exit(f"licence file of {meta['repo']} is not the expected {meta['spdx']} text")


# ---------------------------------------------------------------------------
# Validators used to filter data (our own implementations of public algorithms)
# ---------------------------------------------------------------------------


def luhn_ok(digits):
    digits = re.sub(r"[ -]", "", digits)
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# IBAN lengths from the SWIFT IBAN registry (facts), used only to label
# validator.js extras that presidio does not cover.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}


def iban_ok(text):
    s = re.sub(r"[ -]", "", text)
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", s):
        return False
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    rearranged = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in rearranged)
    return int(num) % 97 == 1


def ssn_ok(text):
    d = re.sub(r"[ .-]", "", text)
    if not re.fullmatch(r"\d{9}", d):
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# ---------------------------------------------------------------------------
# Sentence templates (stated here so reviewers can see the wrapping)
# ---------------------------------------------------------------------------

TEMPLATES = {
    "EMAIL": [
        "Please send the signed form to {v} by Friday.",
        "You can reach me at {v}",
        "Contact: {v}",
        "I forwarded the thread to {v} this morning.",
        "Her work address is {v}, not the gmail one.",
    ],
    "PHONE_NATIONAL": [
        "Call me on {v} after six.",
        "My number is {v}",
        "You can reach the front desk at {v}.",
        "Phone: {v}",
        "Text me at {v} when you land.",
        "The clinic's number is {v}, ask for Dana.",
        "If the line drops, ring {v} again.",
    ],
    "PHONE_INTL": [
        "Our office line is {v}.",
        "Please call {v} to confirm the booking.",
        "Mobile: {v}",
        "He gave me {v} as his contact number.",
        "Dial {v} from abroad.",
    ],
    "SSN": [
        "My SSN is {v}.",
        "Social security number: {v}",
        "The applicant's social security no. {v} was verified.",
        "ssn {v} on the W-2 form",
    ],
    "CREDIT_CARD": [
        "Please charge my card {v} for the deposit.",
        "Card number: {v}",
        "I paid with {v}, expiry 09/28.",
        "The customer read out {v} over the phone.",
        "Use the card ending in the digits of {v} for the refund.",
    ],
    "CVV": [
        "The CVV is {v}.",
        "cvv: {v}",
        "Security code {v}, expiry 11/27.",
        "card verification code: {v}",
        "Enter CVC {v} when asked.",
        "the 3-digit security code on the back is {v}",
    ],
    "IBAN": [
        "Please wire the money to IBAN {v}.",
        "Account: {v}",
        "Transfer the refund to {v} by Monday.",
        "My bank details are {v} (current account).",
        "IBAN: {v}",
    ],
    "IP_ADDRESS": [
        "The request came from {v}.",
        "Server IP: {v}",
        "Block {v} on the firewall.",
        "ssh admin@{v} failed three times",
        "Traffic to {v} spiked at noon.",
        "Add {v} to the allow list.",
    ],
    "IP_PREFIX": [
        "Route {v} through the VPN.",
        "Allow inbound traffic from {v}.",
        "The subnet {v} belongs to the lab.",
    ],
    "DATE_OF_BIRTH": [
        "DOB: {v}",
        "Date of birth: {v}",
        "She was born on {v} in Porto.",
        "Patient dob {v}, allergies none.",
        "My birthday is {v}.",
        "born {v}",
    ],
}


def wrap(kind, value, index):
    if kind == "IP_ADDRESS" and "/" in value:
        kind = "IP_PREFIX"
    tpls = TEMPLATES[kind]
    return tpls[index % len(tpls)].format(v=value)


# ---------------------------------------------------------------------------
# presidio: parse pytest parametrize tables with ast (data only)
# ---------------------------------------------------------------------------

PRESIDIO_FILES = {
    # file: (recognizer, presidio entity, kt entity, regions)
    "test_email_recognizer.py": ("EmailRecognizer", "EMAIL_ADDRESS", "EMAIL", None),
    "test_credit_card_recognizer.py": ("CreditCardRecognizer", "CREDIT_CARD", "CREDIT_CARD", None),
    "test_iban_recognizer.py": ("IbanRecognizer", "IBAN_CODE", "IBAN", None),
    "test_ip_recognizer.py": ("IpRecognizer", "IP_ADDRESS", "IP_ADDRESS", None),
    "test_us_ssn_recognizer.py": ("UsSsnRecognizer", "US_SSN", "SSN", None),
    "test_phone_recognizer.py": ("PhoneRecognizer", "PHONE_NUMBER", "PHONE", "default"),
    "test_tr_phone_number_recognizer.py": ("PhoneRecognizer", "TR_PHONE_NUMBER", "PHONE", ["TR"]),
    "test_ph_mobile_number_recognizer.py": ("PhoneRecognizer", "PH_MOBILE_NUMBER", "PHONE", ["PH"]),
}
# test_date_recognizer.py is skipped for the reference set: its DATE_TIME cases
# carry no birth-date context (they are reused as DATE_OF_BIRTH negatives).

TEXT_ARGS = ("text", "iban")
COUNT_ARGS = ("expected_len",)
SPAN_ARGS = ("expected_positions", "expected_res")
IGNORED_ARGS = ("expected_scores", "expected_score_ranges", "score", "entities",
                "expected_textual_explanations")


def lit(node):
    """Evaluate a literal node; f-strings without placeholders are allowed."""
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if not isinstance(v, ast.Constant):
                raise ValueError("formatted f-string")
            parts.append(v.value)
        return "".join(parts)
    if isinstance(node, (ast.Tuple, ast.List)):
        return [lit(e) for e in node.elts]
    return ast.literal_eval(node)


def presidio_default_regions():
    src = git_show("presidio", PRESIDIO_PHONE_SRC)
    m = re.search(r"DEFAULT_SUPPORTED_REGIONS\s*=\s*\(([^)]*)\)", src)
    return re.findall(r'"([A-Z]{2})"', m.group(1))


def presidio_cases():
    default_regions = presidio_default_regions()
    cases = []
    for fname, (recognizer, p_entity, kt_entity, regions) in PRESIDIO_FILES.items():
        path = PRESIDIO_TESTS + fname
        tree = ast.parse(git_show("presidio", path))
        for fn in tree.body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            for dec in fn.decorator_list:
                if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
                    continue
                argnames = [a.strip() for a in lit(dec.args[0]).split(",")]
                for row in dec.args[1].elts:
                    values = dict(zip(argnames, lit(row)))
                    text = next(values[a] for a in TEXT_ARGS if a in values)
                    count = next(values[a] for a in COUNT_ARGS if a in values)
                    spans = next((values[a] for a in SPAN_ARGS if a in values), [])
                    params = {k: v for k, v in values.items()
                              if k not in TEXT_ARGS + COUNT_ARGS + SPAN_ARGS + IGNORED_ARGS}
                    case = {
                        "text": text,
                        "entity": kt_entity,
                        "presidio_entity": p_entity,
                        "expected_count": count,
                        "spans": [list(s) for s in spans],
                        "source_file": path,
                        "recognizer": recognizer,
                        "test": fn.name,
                    }
                    if regions is not None:
                        if regions == "default":
                            r = list(default_regions)
                            # test_when_all_phones_then_succeed builds its recogniser
                            # with DEFAULT_SUPPORTED_REGIONS + ("JP", "CN").
                            if fn.name == "test_when_all_phones_then_succeed":
                                r += ["JP", "CN"]
                        else:
                            r = regions
                        case["regions"] = r
                    if params:
                        case["params"] = params
                    cases.append(case)
    return cases


def presidio_date_texts():
    tree = ast.parse(git_show("presidio", PRESIDIO_TESTS + "test_date_recognizer.py"))
    out = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize":
                argnames = [a.strip() for a in lit(dec.args[0]).split(",")]
                for row in dec.args[1].elts:
                    values = dict(zip(argnames, lit(row)))
                    if values.get("expected_len", 0) >= 1:
                        out.append(values["text"])
    return out


# ---------------------------------------------------------------------------
# libphonenumber: example numbers, national and international formats
# ---------------------------------------------------------------------------

PHONE_REGIONS = [
    # kt's likely default region list first
    "US", "GB", "DE", "FR", "IN", "JP", "CN", "IL", "BR", "AU", "CA", "ES", "IT", "NL", "MX",
    # further regions (international form always detectable; national form only if enabled)
    "KR", "RU", "PL", "SE", "CH", "AT", "BE", "PT", "IE", "NZ", "ZA", "SG", "HK", "TW", "TR",
    "AR", "CO", "CL", "EG", "NG", "KE", "AE", "SA", "TH", "ID", "PH", "VN", "UA", "GR", "CZ",
    "DK", "NO", "FI",
]
KT_DEFAULT_REGIONS = set(PHONE_REGIONS[:15])


def _text(el):
    return re.sub(r"\s+", "", el.text or "")


def load_phone_metadata():
    root = ET.fromstring(git_show("libphonenumber", LIBPHONENUMBER_XML))
    territories = {}
    for t in root.iter("territory"):
        tid = t.get("id")
        formats = []
        af = t.find("availableFormats")
        if af is not None:
            for nf in af.findall("numberFormat"):
                lds = [_text(e) for e in nf.findall("leadingDigits")]
                intl = [(e.text or "").strip() for e in nf.findall("intlFormat")]
                formats.append({
                    "pattern": nf.get("pattern"),
                    "rule": nf.get("nationalPrefixFormattingRule"),
                    "leading": lds[-1] if lds else None,
                    "format": nf.find("format").text.strip(),
                    "intl": intl[0] if intl else None,
                })
        examples = {}
        for kind in ("fixedLine", "mobile", "tollFree"):
            e = t.find(kind)
            if e is not None and e.find("exampleNumber") is not None:
                examples[kind] = _text(e.find("exampleNumber"))
        territories[tid] = {
            "cc": t.get("countryCode"),
            "np": t.get("nationalPrefix"),
            "rule": t.get("nationalPrefixFormattingRule"),
            "main": t.get("mainCountryForCode") == "true",
            "formats": formats,
            "examples": examples,
        }
    # Regions without their own formats share those of the main region of the code.
    for tid, t in territories.items():
        if not t["formats"]:
            for other in territories.values():
                if other["cc"] == t["cc"] and other["main"] and other["formats"]:
                    t["formats"] = other["formats"]
                    t["rule"] = t["rule"] or other["rule"]
    return territories


def _pick_format(t, number):
    for f in t["formats"]:
        if f["leading"] and not re.match(f["leading"], number):
            continue
        if re.fullmatch(f["pattern"], number):
            return f
    return None


def _apply(pattern, fmt, number):
    return re.sub(pattern, re.sub(r"\$(\d)", r"\\\1", fmt), number)


def format_national(t, number):
    f = _pick_format(t, number)
    np = t["np"] or ""
    if f is None:
        return np + number
    fmt = f["format"]
    rule = f["rule"] or t["rule"]
    if rule and "$CC" not in rule:
        # the rule wraps the first group that appears in the format ($FG)
        fmt = re.sub(r"\$\d", lambda m: rule.replace("$NP", np).replace("$FG", m.group(0)),
                     fmt, count=1)
    return _apply(f["pattern"], fmt, number)


def format_international(t, number):
    f = _pick_format(t, number)
    if f is None:
        return f"+{t['cc']} {number}"
    fmt = f["intl"] or f["format"]
    if fmt == "NA":
        return None
    return f"+{t['cc']} " + _apply(f["pattern"], fmt, number)


def phone_samples():
    meta = load_phone_metadata()
    out = []
    i = 0
    for region in PHONE_REGIONS:
        t = meta[region]
        ex = t["examples"]
        picks = [("mobile", "national"), ("fixedLine", "national"), ("mobile", "international")]
        if region in KT_DEFAULT_REGIONS:
            picks.append(("fixedLine", "international"))
        seen = set()
        for kind, form in picks:
            number = ex.get(kind)
            if not number:
                continue
            if form == "national":
                v = format_national(t, number)
                text = wrap("PHONE_NATIONAL", v, i)
            else:
                v = format_international(t, number)
                if v is None:
                    continue
                text = wrap("PHONE_INTL", v, i)
            if v in seen:  # US/CA-style regions where fixed and mobile examples coincide
                continue
            seen.add(v)
            i += 1
            out.append(pos("PHONE", text, "libphonenumber", region))
    return out


# ---------------------------------------------------------------------------
# validator.js: pull string lists out of `it('...', () => { test({...}) })`
# ---------------------------------------------------------------------------


def js_strings(block):
    """Single-quoted JS string literals in a list body (template literals skipped)."""
    out = []
    for m in re.finditer(r"'((?:[^'\\\n]|\\.)*)'", block):
        out.append(m.group(1).encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
                   if "\\" in m.group(1) else m.group(1))
    return out


def js_list(src, it_title, key, occurrence=0, validator=None):
    start = src.index(f"it('{it_title}'")
    end = src.find("\n  it('", start + 1)
    body = src[start:end if end != -1 else len(src)]
    if validator:
        body = body[body.index(f"validator: '{validator}'"):]
    hits = [m.end() - 1 for m in re.finditer(r"(?<![A-Za-z])" + key + r": \[", body)]
    j = hits[occurrence]  # index of the opening bracket
    depth, k = 0, j + 1
    while True:
        ch = body[k]
        if ch == "[":
            depth += 1
        elif ch == "]":
            if depth == 0:
                break
            depth -= 1
        k += 1
    return js_strings(body[j + 1:k])


# ---------------------------------------------------------------------------
# Hand-listed facts (public test values; no code)
# ---------------------------------------------------------------------------

# Stripe's documented test card numbers, https://docs.stripe.com/testing ("Cards by brand").
STRIPE_TEST_PANS = [
    "4242424242424242", "4000056655665556", "5555555555554444", "2223003122003222",
    "5200828282828210", "5105105105105100", "378282246310005", "371449635398431",
    "6011111111111117", "6011000990139424", "6011981111111113", "3056930009020004",
    "36227206271667", "6555900000604105", "3566002020360505", "6200000000000005",
    "6200000000000047", "6205500000000000004",
]

# IPv6/IPv4 text-representation examples from RFCs (facts):
# RFC 4291 section 2.2 (forms 1-3) and 2.3 (prefixes), RFC 5952 section 4,
# RFC 5737 (IPv4 documentation blocks), RFC 3849 (IPv6 documentation prefix).
RFC_IPS = [
    ("ABCD:EF01:2345:6789:ABCD:EF01:2345:6789", "RFC 4291"),
    ("2001:DB8:0:0:8:800:200C:417A", "RFC 4291"),
    ("FF01:0:0:0:0:0:0:101", "RFC 4291"),
    ("0:0:0:0:0:0:0:1", "RFC 4291"),
    ("2001:DB8::8:800:200C:417A", "RFC 4291"),
    ("FF01::101", "RFC 4291"),
    ("::1", "RFC 4291"),
    ("0:0:0:0:0:0:13.1.68.3", "RFC 4291"),
    ("0:0:0:0:0:FFFF:129.144.52.38", "RFC 4291"),
    ("::13.1.68.3", "RFC 4291"),
    ("::FFFF:129.144.52.38", "RFC 4291"),
    ("2001:0DB8:0000:CD30:0000:0000:0000:0000/60", "RFC 4291"),
    ("2001:0DB8::CD30:0:0:0:0/60", "RFC 4291"),
    ("2001:0DB8:0:CD30::/60", "RFC 4291"),
    ("2001:db8::1", "RFC 5952"),
    ("2001:db8:0:0:0:0:2:1", "RFC 5952"),
    ("2001:db8::2:1", "RFC 5952"),
    ("2001:db8:0:1:1:1:1:1", "RFC 5952"),
    ("2001:db8::aaaa:0:0:1", "RFC 5952"),
    ("2001:0db8::0001", "RFC 5952"),
    ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:0001", "RFC 5952"),
    ("2001:db8:0:0:1:0:0:1", "RFC 5952"),
    ("2001:db8::1:0:0:1", "RFC 5952"),
    ("192.0.2.17", "RFC 5737"),
    ("198.51.100.23", "RFC 5737"),
    ("203.0.113.195", "RFC 5737"),
    ("198.51.100.0/24", "RFC 5737"),
    ("2001:db8::/32", "RFC 3849"),
]

# Floors kt's CI holds pii-detector to on this corpus (see docs/configuration.md).
MIN_PRECISION = 0.97
MIN_RECALL = 0.95

# Widely published SSNs that the SSA has voided (facts): no one's number, so negatives.
PUBLISHED_SSNS = ["078-05-1120", "219-09-9999"]


# ---------------------------------------------------------------------------
# Sample helpers
# ---------------------------------------------------------------------------


def pos(entity, text, source, country=None):
    s = {"label": "positive", "entity": entity, "text": text, "source": source}
    if country:
        s["country"] = country
    return s


def neg(text, source, country=None):
    s = {"label": "negative", "text": text, "source": source}
    if country:
        s["country"] = country
    return s


def spaced(iban):
    s = iban.replace(" ", "")
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def build_samples(ref):
    samples = []
    rng = random.Random(20240601)

    def ref_where(entity, count=None):
        return [c for c in ref if c["entity"] == entity and (count is None or c["expected_count"] == count)]

    # ---------------- EMAIL ----------------
    i = 0
    for c in ref_where("EMAIL", 1):
        samples.append(pos("EMAIL", c["text"], "presidio"))
    vjs = git_show("validator.js", VALIDATOR_TESTS)
    for e in js_list(vjs, "should validate email addresses", "valid"):
        # keep plain ASCII addresses; quoted locals and mis-encoded UTF-8 ("端")
        # are legal for validator.js but not what a prompt-side detector targets.
        if not re.fullmatch(r"[A-Za-z0-9._%+|-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", e) or "|" in e:
            continue
        samples.append(pos("EMAIL", wrap("EMAIL", e, i), "validator.js"))
        i += 1
    for c in ref_where("EMAIL", 0):
        samples.append(neg(c["text"], "presidio"))
    # validator.js invalid addresses that contain no valid address as a substring
    for e in ("invalidemail@", "invalid.com", "@invalid.com"):
        assert e in js_list(vjs, "should validate email addresses", "invalid")
        samples.append(neg(f"The form rejected '{e}' as an address.", "validator.js"))

    # ---------------- PHONE ----------------
    for c in ref:
        if c["entity"] == "PHONE" and c["expected_count"] == 1 and "params" not in c \
                and c["recognizer"] == "PhoneRecognizer" and c["source_file"].endswith("test_phone_recognizer.py"):
            country = {"09-7625400": "IL", "090-1234-5678": "JP", "13812345678": "CN"}
            cc = "US"
            for k, v in country.items():
                if k in c["text"]:
                    cc = v
            if "+55" in c["text"]:
                cc = "BR"
            samples.append(pos("PHONE", c["text"], "presidio", cc))
    for c in ref:
        # TR / PH recogniser cases written as sentences with context
        if c["entity"] == "PHONE" and c["expected_count"] == 1 and c.get("regions") in (["TR"], ["PH"]) \
                and " " in c["text"] and re.search(r"[a-z]{3}", c["text"]):
            samples.append(pos("PHONE", c["text"], "presidio", c["regions"][0]))
    samples.extend(phone_samples())
    # presidio TR/PH zero-match cases kept as negatives: malformed lengths or glued
    # digits. Left out: bare 10-digit strings valid as US numbers (612/712/812/912...)
    # and PH mobiles without trunk prefix (9171234567), which are phone numbers.
    # Also left out: 0917123456 and 091712345678 (too short/long for PH, but valid
    # national numbers in FR/DE/IT/NL).
    keep = {"532123456", "15053212345678", "10000000146", "34 ABC 1234", "15091712345678"}
    for c in ref:
        if c["entity"] == "PHONE" and c["expected_count"] == 0 and c["text"] in keep:
            samples.append(neg(f"Reference {c['text']} is on the invoice.", "presidio", c["regions"][0]))

    # ---------------- SSN ----------------
    for c in ref_where("SSN", 1):
        t = c["text"]
        digits = re.sub(r"\D", "", t)
        if re.fullmatch(r"(abc )?\d{3}[-. ]\d{2}[-. ]\d{4}( abc)?", t):
            v = t.replace("abc ", "").replace(" abc", "")
            samples.append(pos("SSN", wrap("SSN", v, len(samples)), "presidio", "US"))
        elif re.fullmatch(r"\d{9}", t):
            samples.append(pos("SSN", f"SSN: {digits}", "presidio", "US"))
    for k, v in enumerate(PUBLISHED_SSNS):
        samples.append(neg(wrap("SSN", v, k + 1), "published-ssn", "US"))
    seps = ["-", " ", "-", "", "-", "."]
    for k in range(18):
        while True:
            area = rng.randint(1, 899)
            if area != 666:
                break
        v = f"{area:03d}{seps[k % 6]}{rng.randint(1, 99):02d}{seps[k % 6]}{rng.randint(1, 9999):04d}"
        assert ssn_ok(v)
        samples.append(pos("SSN", wrap("SSN", v, k), "synthetic", "US"))
    for c in ref_where("SSN", 0):
        samples.append(neg(f"SSN {c['text']}" if c["text"][0].isdigit() else c["text"], "presidio", "US"))
    for v in ("000-12-3456", "666-12-3456", "900-12-3456", "987-65-4321", "123-00-4567", "123-45-0000"):
        assert not ssn_ok(v)
        samples.append(neg(f"My SSN is {v}.", "synthetic-invalid", "US"))

    # ---------------- CREDIT_CARD ----------------
    cards = []
    for c in ref_where("CREDIT_CARD", 1):
        cards.append((c["text"], "presidio", c["text"] == re.sub(r"[^\d]", "", c["text"])))
    for n in js_list(vjs, "should validate credit cards", "valid"):
        cards.append((n, "validator.js", True))
    for n in STRIPE_TEST_PANS:
        cards.append((n, "stripe-test-cards", True))
    seen = set()
    i = 0
    for text, src, bare in cards:
        digits = re.sub(r"\D", "", text)
        if digits in seen or not luhn_ok(digits):
            continue
        seen.add(digits)
        if not bare:  # already a sentence
            samples.append(pos("CREDIT_CARD", text, src))
            continue
        style = i % 3
        v = text
        if style == 1 and len(digits) == 16 and text.isdigit():
            v = " ".join(digits[j:j + 4] for j in range(0, 16, 4))
        elif style == 2 and len(digits) == 16 and text.isdigit():
            v = "-".join(digits[j:j + 4] for j in range(0, 16, 4))
        samples.append(pos("CREDIT_CARD", wrap("CREDIT_CARD", v, i), src))
        i += 1
    for c in ref_where("CREDIT_CARD", 0):
        samples.append(neg(c["text"], "presidio"))
    # Luhn-failing variants of the Stripe test PANs (last digit + 1)
    for k, n in enumerate(STRIPE_TEST_PANS):
        bad = n[:-1] + str((int(n[-1]) + 1) % 10)
        assert not luhn_ok(bad)
        t = ["Order {v} has shipped.", "Reference number: {v}", "Ticket {v} was closed.",
             "card {v} declined: invalid number"][k % 4]
        samples.append(neg(t.format(v=bad), "derived-stripe-luhn-fail"))
    for n in js_list(vjs, "should validate credit cards", "invalid"):
        d = re.sub(r"\D", "", n)
        if n.isdigit() and 13 <= len(n) <= 19 and not luhn_ok(d):
            samples.append(neg(f"Card number {n} was rejected by the terminal.", "validator.js"))
        elif n in ("2721465526338453", "2220175103860763"):
            # Luhn-valid but outside every issuer range (Mastercard ends at 2720, Mir is 2200-2204)
            samples.append(neg(f"Reference {n} is not a card number.", "validator.js"))

    # ---------------- CVV (no public corpus: synthetic values) ----------------
    for k in range(16):
        v = f"{rng.randint(0, 999):03d}" if k % 4 else f"{rng.randint(0, 9999):04d}"
        samples.append(pos("CVV", wrap("CVV", v, k), "synthetic"))
    for t in ("Room 737 is on the third floor.", "The code review took 123 minutes.",
              "Page 482 explains the CVV field but contains no value.",
              "We shipped 250 units and 4 returns.", "Meet at gate 18, terminal 3.",
              "Error 404 means the page was not found."):
        samples.append(neg(t, "handwritten"))

    # ---------------- IBAN ----------------
    by_country = {}
    for c in ref_where("IBAN", 1):
        cc = c["text"][:2]
        by_country.setdefault(cc, []).append(c["text"])
    i = 0
    for cc in sorted(by_country):
        texts = by_country[cc]
        bare = [t for t in texts if re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9 ]+", t) and iban_ok(t)]
        if bare:
            v = bare[i % len(bare)]
            if iban_ok(v):
                samples.append(pos("IBAN", wrap("IBAN", v, i), "presidio", cc))
                i += 1
    for c in ref_where("IBAN", 1):
        if " " in c["text"] and not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9 ]+", c["text"]) \
                and c["text"].lower().startswith(("this", "dash")):
            samples.append(pos("IBAN", c["text"], "presidio", "VG" if "VG96" in c["text"] else "AL"))
    have = {s["country"] for s in samples if s.get("entity") == "IBAN"}
    for v in js_list(vjs, "should validate IBAN", "valid"):
        cc = v[:2]
        if cc in have or not iban_ok(v):
            continue
        have.add(cc)
        samples.append(pos("IBAN", wrap("IBAN", v if " " in v else spaced(v), i), "validator.js", cc))
        i += 1
    # negatives: the checksum-failing variant per country (last character changed)
    negs_by_cc = {}
    for c in ref_where("IBAN", 0):
        t = c["text"]
        if re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9 ]+", t) and not iban_ok(t):
            negs_by_cc.setdefault(t[:2], []).append(t)
    for k, cc in enumerate(sorted(negs_by_cc)):
        t = negs_by_cc[cc][-1]
        samples.append(neg(wrap("IBAN", t, k) if k % 2 else t, "presidio", cc))
    # format-invalid variants (a letter where the BBAN needs a digit, or truncated):
    # the first zero-match case per country, for every other country
    first_bad = {}
    for c in ref_where("IBAN", 0):
        t = c["text"]
        if re.fullmatch(r"[A-Z]{2}\d{2}[A-Za-z0-9 ]+", t) and t not in negs_by_cc.get(t[:2], [])[-1:]:
            first_bad.setdefault(t[:2], t)
    for k, cc in enumerate(sorted(first_bad)):
        if k % 2 == 0:
            samples.append(neg(wrap("IBAN", first_bad[cc], k), "presidio", cc))
    for c in ref_where("IBAN", 0):
        if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9 ]+", c["text"]):
            if re.search(r"\b440-600-5124\b", c["text"]):
                # an IBAN negative in presidio, but it holds a valid US phone number
                samples.append(pos("PHONE", c["text"], "presidio", "US"))
                continue
            samples.append(neg(c["text"], "presidio"))

    # ---------------- IP_ADDRESS ----------------
    i = 0
    for c in ref_where("IP_ADDRESS", 1):
        samples.append(pos("IP_ADDRESS", c["text"], "presidio"))
    for v, rfc in RFC_IPS:
        samples.append(pos("IP_ADDRESS", wrap("IP_ADDRESS", v, i), rfc))
        i += 1
    vip = git_show("validator.js", VALIDATOR_IP_TESTS)
    seen_ip = {v for v, _ in RFC_IPS}
    for v in js_list(vip, "should validate IP addresses", "valid"):
        if v in seen_ip:
            continue
        seen_ip.add(v)
        samples.append(pos("IP_ADDRESS", wrap("IP_ADDRESS", v, i), "validator.js"))
        i += 1
    # presidio negatives; skipped: those where a valid address is a separator-bounded
    # substring (listed in SOURCES-pii.md as doubtful)
    doubtful_ip_neg = {"::ffff:192.168.1", "2001:db8::256.1.1.1", "::ffff:256.0.0.1"}
    for c in ref_where("IP_ADDRESS", 0):
        if c["text"] not in doubtful_ip_neg:
            samples.append(neg(c["text"], "presidio"))
    # union of the invalid lists of the first three test({...}) calls (any version, 4)
    vip_invalid = js_list(vip, "should validate IP addresses", "invalid", 0) \
        + js_list(vip, "should validate IP addresses", "invalid", 2)
    for v in ("256.0.0.0", "0.0.0.256", "26.0.0.256", "::banana", "banana::", "::1banana",
              "::11111", "11111:1:1:1:1:1:1:1", "0.256.0.256", "255.256.255.256"):
        assert v in vip_invalid, v
        samples.append(neg(f"The parser rejected the value {v} as malformed.", "validator.js"))
    for t in ("Upgraded Windows to build 10.0.19045.3570 yesterday.",
              "The NIC's MAC address is 00:1A:2B:3C:4D:5E.",
              "The job started at 12:30:45 and ended at 13:02:10.",
              "use std::collections::HashMap;",
              "Mix cement, sand and gravel at a 1:2:3 ratio.",
              "See section 3.2.1 of the manual.",
              "Release v2.14.0 ships on Monday.",
              "The timestamp 2024-03-15T14:30:00Z is in UTC."):
        samples.append(neg(t, "handwritten"))

    # ---------------- DATE_OF_BIRTH (values synthetic; date shapes from presidio) ----------------
    months = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]
    for k in range(24):
        y, m, d = rng.randint(1930, 2010), rng.randint(1, 12), rng.randint(1, 28)
        shape = k % 6
        v = [f"{m:02d}/{d:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{d}.{m}.{y}",
             f"{months[m - 1]} {d}, {y}", f"{d} {months[m - 1]} {y}", f"{d}-{months[m - 1][:3]}-{y}"][shape]
        samples.append(pos("DATE_OF_BIRTH", wrap("DATE_OF_BIRTH", v, k), "synthetic"))
    for t in presidio_date_texts():
        if "\r" in t or "\n" in t:
            continue
        samples.append(neg(t, "presidio"))

    # ---------------- generic negatives ----------------
    visbn = git_show("validator.js", VALIDATOR_ISBN_TESTS)
    for v in js_list(visbn, "should validate ISBNs", "valid", 1):  # ISBN-13 list
        samples.append(neg(f"ISBN {v}", "validator.js"))
    for t in ("Your order #88412 ships Tuesday; the total was $1,299.00.",
              "Invoice INV-2024-00317 is due on the 30th.",
              "The meeting moved to 3:45 pm in room B-204.",
              "Tracking code 1Z 999 AA1 01 234 567 is not a phone number.",
              "Temperature dropped from 21.5 to 14.2 degrees overnight.",
              "We need 12 chairs, 4 tables and 2 projectors.",
              "The lottery numbers were 4 8 15 16 23 42.",
              "Please read chapters 7-9 before Thursday.",
              "Set the timeout to 30000 ms and retries to 5.",
              "Population grew by 1,234,567 between 2010 and 2020.",
              "Can you summarise this article about renewable energy?",
              "Write a haiku about autumn leaves.",
              "What is the capital of Australia?",
              "The quarterly revenue was up 14 percent year over year."):
        samples.append(neg(t, "handwritten"))
    return samples


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def count_by(samples, key):
    out = {}
    for s in samples:
        k = s.get(key)
        if k is not None:
            out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def write_sources_md(path, samples, ref):
    pos_ = [s for s in samples if s["label"] == "positive"]
    neg_ = [s for s in samples if s["label"] == "negative"]
    by_src = {}
    for s in samples:
        d = by_src.setdefault(s["source"], {"positive": 0, "negative": 0})
        d[s["label"]] += 1
    ent = count_by(pos_, "entity")
    phone_cc = count_by([s for s in pos_ if s["entity"] == "PHONE"], "country")
    iban_cc = count_by([s for s in pos_ if s["entity"] == "IBAN"], "country")
    ref_ent = count_by(ref, "entity")
    lines = [
        "# Sources of the public PII corpus",
        "",
        "Generated by `scripts/corpus/build_pii.py`; do not edit by hand. The script reads",
        "the repositories below from bare git mirrors at the pinned commits and copies data",
        "only (test strings, example numbers), never code.",
        "",
        f"`pii-detector.json`: {len(samples)} samples, {len(pos_)} positive "
        f"({100 * len(pos_) // len(samples)} %), {len(neg_)} negative.",
        f"`fixtures/reference/pii-presidio.json`: {len(ref)} presidio test cases.",
        "",
        "## Repositories",
        "",
    ]
    files = {
        "presidio": [PRESIDIO_TESTS + f for f in PRESIDIO_FILES] + [
            PRESIDIO_TESTS + "test_date_recognizer.py", PRESIDIO_PHONE_SRC + " (DEFAULT_SUPPORTED_REGIONS only)"],
        "libphonenumber": [LIBPHONENUMBER_XML],
        "validator.js": [VALIDATOR_TESTS, VALIDATOR_IP_TESTS, VALIDATOR_ISBN_TESTS],
    }
    for name, meta in SOURCES.items():
        lines += [
            f"### {meta['repo']}",
            "",
            f"- URL: {meta['url']}",
            f"- Commit: `{meta['commit']}`",
            f"- Licence: {meta['spdx']} (verified from `{meta['license_file']}` at that commit)",
            "- Files read: " + ", ".join(f"`{f}`" for f in files[name]),
            "",
        ]
    lines += [
        "## What each source contributes",
        "",
        "- presidio: the parametrised cases of its email, credit-card, IBAN, IP, US SSN and",
        "  phone recogniser tests (including the TR and PH phone configurations) go verbatim",
        "  into `fixtures/reference/pii-presidio.json`. Single-match cases are reused as positives",
        "  (bare values wrapped in a sentence template for SSN and IBAN), zero-match cases as",
        "  negatives, and the texts of its DATE_TIME tests as DATE_OF_BIRTH negatives (dates",
        "  without a birth context). `test_date_recognizer.py` has no birth-date case, so no",
        "  DATE_TIME case is in the reference set.",
        "- libphonenumber: `exampleNumber` of the fixedLine and mobile descriptions of "
        f"{len(PHONE_REGIONS)} regions,",
        "  formatted nationally (national prefix + the region's `numberFormat` pattern and",
        "  `nationalPrefixFormattingRule`) and internationally (`+CC` + `intlFormat`/`format`).",
        "  The formatter is written in the script from the metadata format description.",
        "- validator.js: valid/invalid strings from its isEmail, isCreditCard, isIBAN, isIP and",
        "  isISBN tests. Only values checked by the script (Luhn, IBAN mod-97 and registry",
        "  length) are used as positives.",
        "- stripe-test-cards: Stripe's published test card numbers (https://docs.stripe.com/testing),",
        "  public facts, Luhn-checked by the script.",
        "- RFC 4291, RFC 5952, RFC 5737, RFC 3849: example address texts (facts).",
        "- published-ssn: 078-05-1120 (the 1938 Woolworth wallet-card number) and 219-09-9999",
        "  (an SSA advertising example), both voided and widely published: labelled negative.",
        "- synthetic: seeded random SSNs (valid area/group/serial), CVVs and birth dates, wrapped",
        "  in templates. No public labelled corpus for CVV or birth dates with a compatible",
        "  licence was found.",
        "- synthetic-invalid: SSNs with area 000/666/9xx, group 00 or serial 0000.",
        "- handwritten: look-alike negatives (versions, MAC address, times, order numbers,",
        "  prices, ordinary requests).",
        "",
        "## Counts",
        "",
        "| source | positive | negative |",
        "| --- | --- | --- |",
    ]
    for k, v in sorted(by_src.items()):
        lines.append(f"| {k} | {v['positive']} | {v['negative']} |")
    lines += ["", "| entity | positives | reference cases |", "| --- | --- | --- |"]
    for k in sorted(set(ent) | set(ref_ent)):
        lines.append(f"| {k} | {ent.get(k, 0)} | {ref_ent.get(k, 0)} |")
    lines += [
        "",
        f"Phone positives by country ({len(phone_cc)}): "
        + ", ".join(f"{k} {v}" for k, v in phone_cc.items()) + ".",
        "",
        f"IBAN positives by country ({len(iban_cc)}): "
        + ", ".join(f"{k} {v}" for k, v in iban_cc.items()) + ".",
        "",
        "## Caveats",
        "",
        "- Phone positives in national format are only detectable when the sample's `country`",
        "  is in the detector's region list; international (`+`) ones always are.",
        "- Sentence templates are listed in `TEMPLATES` in the script.",
        "- Left out of the corpus (kept in the reference set) because a valid address is a",
        "  separator-bounded substring: presidio IP negatives `::ffff:192.168.1`,",
        "  `2001:db8::256.1.1.1`, `::ffff:256.0.0.1`.",
        "- IBAN positives from validator.js for countries outside presidio's set are kept",
        "  only when they pass mod-97 and the registry length.",
        "",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main():
    global MIRRORS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirrors", default=os.environ.get("KT_MIRRORS", MIRRORS))
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "fixtures", "corpus", "public"))
    args = ap.parse_args()
    MIRRORS = args.mirrors
    check_licences()
    ref = presidio_cases()
    samples = build_samples(ref)
    # de-duplicate exact (label, entity, text) repeats, keep first
    seen, uniq = set(), []
    for s in samples:
        key = (s["label"], s.get("entity"), s["text"])
        if key in seen:
            continue
        seen.add(key)
        uniq.append(s)
    samples = uniq
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    doc = {
        "kind": "pii-detector",
        "phase": "input",
        "config": {"action": "redact"},
        "min_precision": MIN_PRECISION,
        "min_recall": MIN_RECALL,
        "samples": samples,
    }
    with open(os.path.join(out, "pii-detector.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    ref_out = [{k: c[k] for k in ("text", "entity", "expected_count", "spans", "source_file",
                                  "recognizer", "presidio_entity", "test", "regions", "params")
                if k in c} for c in ref]
    ref_dir = os.path.join(out, "..", "..", "reference")
    os.makedirs(ref_dir, exist_ok=True)
    with open(os.path.join(ref_dir, "pii-presidio.json"), "w", encoding="utf-8") as f:
        json.dump(ref_out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    write_sources_md(os.path.join(out, "SOURCES-pii.md"), samples, ref)
    npos = sum(1 for s in samples if s["label"] == "positive")
    print(f"{len(samples)} samples ({npos} positive), {len(ref)} reference cases -> {out}")


if __name__ == "__main__":
    main()
