"""Shared data loading, feature extraction (identical word features to
scripts/train-injection-classifier, plus optional hashed char n-grams), caching,
scoring and threshold helpers for the classifier experiments."""
import hashlib
import importlib.machinery
import importlib.util
import json
import math
import os
import pickle

import numpy as np
import scipy.sparse as sp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# Where the feature cache and results go, and where the held-out collections were built
# (scripts/corpus/build_external_hijack.py --out, build_injection.py --external).
WORK = os.environ.get("KT_EXP_DIR", "/tmp/kt-injection-exp")
HIJACK = os.environ.get("KT_HIJACK_DIR", "/tmp/kt-hijack")
EXTERNAL = os.environ.get("KT_EXTERNAL_DIR", "/tmp/kt-external")
CACHE = os.path.join(WORK, "cache")
os.makedirs(CACHE, exist_ok=True)

_loader = importlib.machinery.SourceFileLoader("tic", os.path.join(ROOT, "scripts/train-injection-classifier"))
_spec = importlib.util.spec_from_loader("tic", _loader)
tic = importlib.util.module_from_spec(_spec)
_loader.exec_module(tic)

BUCKETS = tic.BUCKETS
CHAR_LOG2 = 16
CHAR_BUCKETS = 1 << CHAR_LOG2


def load_jsonl(p):
    with open(p, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def datasets():
    train = load_jsonl(os.path.join(ROOT, "datasets/prompt-injection/train.jsonl"))
    with open(os.path.join(ROOT, "fixtures/corpus/public/prompt-injection.json"), encoding="utf-8") as f:
        fx = json.load(f)["samples"]
    fixture = [{"text": s["text"], "label": 1 if s["label"] == "positive" else 0,
                "family": s.get("family", "-"), "source": s.get("source", "-")} for s in fx]
    hijack = load_jsonl(os.path.join(HIJACK, "hijack-leak.jsonl"))
    wild = load_jsonl(os.path.join(EXTERNAL, "inthewild-jailbreak.jsonl"))
    for r in wild:
        r.setdefault("label", 1)
    return {"train": train, "fixture": fixture, "hijack": hijack, "wild": wild}


def hfrac(text, salt=""):
    return hashlib.sha256((salt + text).encode()).digest()[0] / 256.0


# ---------------- word features (memoised, same values as the script) ----------------
_uni, _pair = {}, {}


def _wh(t):
    h = _uni.get(t)
    if h is None:
        h = _uni[t] = tic.word_hash(t)
    return h


def word_feats(win):
    counts = {}
    n = 0
    prev = None
    for t in win:
        h = _wh(t)
        k = h >> (64 - tic.BUCKETS_LOG2)
        counts[k] = counts.get(k, 0) + 1
        n += 1
        if prev is not None:
            key = (prev, h)
            b = _pair.get(key)
            if b is None:
                b = _pair[key] = tic.bucket(tic.pair_hash(prev, h))
            counts[b] = counts.get(b, 0) + 1
            n += 1
        prev = h
    s = 1.0 / math.sqrt(n) if n else 0.0
    return counts, s


# ---------------- char n-gram features ----------------
# Hash: FNV-1a 64 over the UTF-8 bytes of the n-gram of " "-joined normalised tokens
# (padded with a space at both ends), top CHAR_LOG2 bits.  Simple to port to Rust.
FNV_OFF, FNV_PRIME, M64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1
_cg = {}


def fnv(s):
    h = _cg.get(s)
    if h is None:
        h = FNV_OFF
        for b in s.encode():
            h = ((h ^ b) * FNV_PRIME) & M64
        h ^= h >> 29
        h = (h * 0xBF58476D1CE4E5B9) & M64
        h ^= h >> 32
        h = _cg[s] = h >> (64 - CHAR_LOG2)
    return h


def char_feats(win, ns=(3, 4, 5)):
    s = " " + " ".join(win) + " "
    counts = {}
    n = 0
    for k in ns:
        for i in range(len(s) - k + 1):
            b = fnv(s[i:i + k])
            counts[b] = counts.get(b, 0) + 1
            n += 1
    sc = 1.0 / math.sqrt(n) if n else 0.0
    return counts, sc


def build(rows, name, char=False):
    """Returns (Xword csr, Xchar csr or None, owner index array: window -> row)."""
    # The cache is keyed by the rows themselves, so rebuilt inputs are never read stale.
    digest = hashlib.sha256(json.dumps([r["text"] for r in rows]).encode()).hexdigest()[:16]
    path = os.path.join(CACHE, f"{name}{'-c' if char else ''}-{digest}.pkl") if name else None
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    wd, wi, wp = [], [], [0]
    cd, ci, cp = [], [], [0]
    owner = []
    for ri, r in enumerate(rows):
        wins = tic.windows(tic.tokens(r["text"]))
        for w in wins:
            c, s = word_feats(w)
            for k in sorted(c):
                wi.append(k); wd.append(c[k] * s)
            wp.append(len(wi))
            if char:
                c, s = char_feats(w)
                for k in sorted(c):
                    ci.append(k); cd.append(c[k] * s)
                cp.append(len(ci))
            owner.append(ri)
    Xw = sp.csr_matrix((np.array(wd, np.float32), np.array(wi, np.int32), np.array(wp, np.int64)),
                       shape=(len(owner), BUCKETS))
    Xc = None
    if char:
        Xc = sp.csr_matrix((np.array(cd, np.float32), np.array(ci, np.int32), np.array(cp, np.int64)),
                           shape=(len(owner), CHAR_BUCKETS))
    out = (Xw, Xc, np.array(owner, np.int64))
    if path:
        with open(path, "wb") as f:
            pickle.dump(out, f, protocol=4)
    return out


def text_max(win_scores, owner, n):
    out = np.full(n, -np.inf)
    np.maximum.at(out, owner, win_scores)
    return out


def threshold_at(benign_scores, target):
    """Lowest threshold t such that #(benign >= t) <= floor(n * target)."""
    s = np.sort(np.asarray(benign_scores))[::-1]
    allowed = int(math.floor(len(s) * target))
    return float(s[allowed]) + 1e-9 if allowed < len(s) else -np.inf


def is_validation(text):
    return tic.is_validation(text)
