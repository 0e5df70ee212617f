"""Active features per 1 KiB of text (sum over all 48/16 windows, and unique per text)."""
import numpy as np, common as c
D = c.datasets()
for name in ("fixture", "wild", "train"):
    Xw, Xc, own = c.build(D[name], name, char=True)
    kib = sum(len(r["text"].encode()) for r in D[name]) / 1024
    toks = sum(len(c.tic.tokens(r["text"])) for r in D[name])
    print(f"{name}: windows/KiB={Xw.shape[0]/kib:.1f} tokens/KiB={toks/kib:.0f} "
          f"word feats/KiB (all windows)={Xw.nnz/kib:.0f} char feats/KiB={Xc.nnz/kib:.0f} "
          f"word/window={Xw.nnz/Xw.shape[0]:.0f} char/window={Xc.nnz/Xw.shape[0]:.0f}")
