#!/usr/bin/env python3
"""Summarise fixtures/corpus/public/pii-detector.json for calibration.

Prints positives per entity, per (entity, country) and per source, with five
examples each, and the negatives per source. Stdlib only; if the optional
`phonenumbers` package is importable, it also reports phone positives whose
number libphonenumber does not accept as valid for the sample's country.

Usage: python3 scripts/corpus/check_pii.py [path/to/pii-detector.json]
"""

import json
import os
import re
import sys
from collections import defaultdict

here = os.path.dirname(os.path.abspath(__file__))
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    here, "..", "..", "fixtures", "corpus", "public", "pii-detector.json")
doc = json.load(open(path, encoding="utf-8"))
samples = doc["samples"]
pos = [s for s in samples if s["label"] == "positive"]
neg = [s for s in samples if s["label"] == "negative"]
print(f"{len(samples)} samples: {len(pos)} positive ({100 * len(pos) / len(samples):.0f} %), {len(neg)} negative\n")


def show(title, groups):
    print(f"== {title}")
    for key in sorted(groups, key=str):
        items = groups[key]
        print(f"-- {key}: {len(items)}")
        for s in items[:5]:
            print(f"     {s['text']!r}  [{s['source']}]")
    print()


by_entity = defaultdict(list)
by_entity_country = defaultdict(list)
by_source = defaultdict(list)
for s in pos:
    by_entity[s["entity"]].append(s)
    by_source[s["source"]].append(s)
    if "country" in s:
        by_entity_country[f"{s['entity']} {s['country']}"].append(s)
show("positives per entity", by_entity)
show("positives per entity and country", by_entity_country)
show("positives per source", by_source)
neg_source = defaultdict(list)
for s in neg:
    neg_source[s["source"]].append(s)
show("negatives per source", neg_source)

countries = {s["country"] for s in pos if s["entity"] in ("PHONE", "IBAN") and "country" in s}
print(f"countries with PHONE or IBAN positives: {len(countries)}")

try:
    import phonenumbers
except ImportError:
    phonenumbers = None
if phonenumbers:
    bad = []
    for s in by_entity["PHONE"]:
        found = list(phonenumbers.PhoneNumberMatcher(s["text"], s.get("country", "US"),
                                                     leniency=phonenumbers.Leniency.VALID))
        ok = [m for m in found
              if phonenumbers.region_code_for_number(m.number) == s.get("country", "US")
              or phonenumbers.is_valid_number_for_region(m.number, s.get("country", "US"))]
        if len(ok) != 1:
            bad.append((s, [m.raw_string for m in found]))
    print(f"phonenumbers {phonenumbers.__version__}: {len(by_entity['PHONE']) - len(bad)} of "
          f"{len(by_entity['PHONE'])} phone positives hold exactly one number valid for their country")
    for s, found in bad:
        print(f"   doubtful: {s['country']} {s['text']!r} -> matcher found {found}")

# ---- negatives that look like a hit to simple, strict validators (label audit) ----
import ipaddress

KT_DEFAULT_REGIONS = ["US", "GB", "DE", "FR", "IN", "JP", "CN", "IL", "BR", "AU", "CA",
                      "ES", "IT", "NL", "MX"]


def luhn(d):
    t = 0
    for i, ch in enumerate(reversed(d)):
        x = int(ch) * (2 if i % 2 else 1)
        t += x - 9 if x > 9 else x
    return t % 10 == 0


def audit(text):
    hits = []
    for m in re.finditer(r"(?<![\w.:])[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*(?:/\d{1,3})?(?![\w])", text):
        tok = m.group(0).rstrip(".")
        try:
            ipaddress.ip_network(tok, strict=False) if "/" in tok else ipaddress.ip_address(tok)
            if tok.count(".") == 3 or ":" in tok:
                hits.append(f"IP {tok}")
        except ValueError:
            pass
    for m in re.finditer(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])", text):
        d = re.sub(r"\D", "", m.group(0))
        if luhn(d):
            hits.append(f"Luhn-valid {m.group(0)}")
    if phonenumbers:
        for region in KT_DEFAULT_REGIONS:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                hits.append(f"phone({region}) {m.raw_string}")
                break
    return hits


print("\n== negatives that a strict validator would flag (doubtful or deliberately hard)")
n = 0
for s in neg:
    h = audit(s["text"])
    if h:
        n += 1
        print(f"   {s['text']!r} [{s['source']}] -> {'; '.join(sorted(set(h)))}")
print(f"{n} of {len(neg)} negatives flagged")
