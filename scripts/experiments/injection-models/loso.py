"""Leave-one-source-out recall table (val-chosen thresholds) from results/*proto=loso*.json."""
import json, glob, collections, os
rows = collections.defaultdict(dict)
for p in sorted(glob.glob(os.path.join(os.environ.get("KT_EXP_DIR", "/tmp/kt-injection-exp"), "results/*proto=loso:*.json"))):
    r = json.load(open(p)); m, src = r["name"].split(",proto=loso:")
    for tn in ("fp0.5", "fp1"):
        rows[(m, tn)][src] = r[tn]["hijack"]["unseen-source"]
srcs = sorted({s for v in rows.values() for s in v})
print("model thr | " + " | ".join(srcs))
for (m, tn), v in sorted(rows.items()):
    print(f"{m} {tn} | " + " | ".join(f"{v[s][2]:.2f}" if s in v else "-" for s in srcs))
