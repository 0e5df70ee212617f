"""Which fixture benign samples (by source) a model flags at its val-chosen thresholds."""
import json, sys, collections, numpy as np, common as c
D = c.datasets()
for name in sys.argv[1:]:
    fn = name.replace(",", "_")
    r = json.load(open(f"{c.WORK}/results/{fn}.json")); s = np.load(f"{c.WORK}/results/{fn}.scores.npz")["fixture"]
    for tn in ("fp0.5", "fp1"):
        t = r[tn]["threshold_logit"]
        cnt = collections.Counter((x["family"], x["source"]) for i, x in enumerate(D["fixture"]) if x["label"] == 0 and s[i] >= t)
        print(name, tn, dict(cnt))
    if len(sys.argv) == 2:
        for i in np.argsort(-s):
            x = D["fixture"][i]
            if x["label"] == 0 and s[i] >= r["fp1"]["threshold_logit"]:
                print(f"   {s[i]:.2f} {x['family']}/{x['source']}: {x['text'][:160]!r}")
