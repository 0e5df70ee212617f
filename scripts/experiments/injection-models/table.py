"""Summary table from results/*.json (val-chosen thresholds) plus an oracle comparison at
fixture ordinary+harmful-direct FP <= 1 % (10/1080) to rank models without threshold noise."""
import json, sys, numpy as np, common as c
import exp
D = exp.D
H = D["hijack"]

exp.assign_split("default")
split = np.array([r["split"] for r in H])
fx = D["fixture"]
od = np.array([x["label"] == 0 and x["family"] in ("benign-ordinary", "benign-harmful-direct") for x in fx])
sec = np.array([x["family"] == "benign-security-discussion" for x in fx])
names = sys.argv[1:]
print("model | thr | unseen-src | unseen-row | wild | ord+hd FP /1080 | sec FP /100")
for n in names:
    fn = n.replace(",", "_")
    r = json.load(open(f"{c.WORK}/results/{fn}.json")); s = np.load(f"{c.WORK}/results/{fn}.scores.npz")
    for tn in ("fp0.5", "fp1"):
        x = r[tn]; f = x["fixture"]
        print(f"{n} | val{tn[2:]}% | {x['hijack']['unseen-source'][2]:.3f} | {x['hijack']['unseen-row'][2]:.3f} | "
              f"{x['wild'][2]:.3f} | {f['benign-ordinary'][0] + f['benign-harmful-direct'][0]} | {f['benign-security-discussion'][0]}")
    b = np.sort(s["fixture"][od])[::-1]
    t = b[10] + 1e-9
    sh, sw, sf = s["hijack"], s["wild"], s["fixture"]
    print(f"{n} | oracle1% | {(sh[split == 'unseen-source'] >= t).mean():.3f} | {(sh[split == 'unseen-row'] >= t).mean():.3f} | "
          f"{(sw >= t).mean():.3f} | {(sf[od] >= t).sum()} | {(sf[sec] >= t).sum()}")
