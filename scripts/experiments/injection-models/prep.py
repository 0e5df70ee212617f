import time, common as c
d = c.datasets()
for k, rows in d.items():
    t = time.time()
    Xw, Xc, own = c.build(rows, k, char=True)
    print(k, len(rows), Xw.shape[0], Xw.nnz, Xc.nnz, round(time.time() - t, 1), flush=True)
