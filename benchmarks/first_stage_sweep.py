"""First-stage parameter sweep on the cached stand-in vectors of benchmarks/first_stage.py (recall only, no index).

Reads the real pruned page / query vectors that ``benchmarks/first_stage.py`` cached
(``--workdir``/real-250.npz), makes the same corpus (the 250 real pages + synthetic pages drawn from
3 real pages each, same seed), computes exact MaxSim for every query over every page (page token
similarities are taken from one ``[m, pool]`` matmul, since every page is a set of pool rows), and
prints recall@10 against exact at 50/100/200/500 candidates for the mean first stage and MUVERA
configurations of 4,096 dims, raw and "centred" (the corpus mean token vector subtracted before
encoding: it leaves the MaxSim ranking unchanged, since ``q . (p - mu)`` shifts every page's score
for one query by the same amount).

Run::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/first_stage_sweep.py 10000 \
        > benchmarks/results/first_stage_sweep.txt
"""
import hashlib
import math
import os
import sys
import time

import numpy as np

from anchorprune.index.first_stage import MeanFirstStage, MuveraFirstStage, top_candidates

z = np.load(os.environ.get("REAL_NPZ", "/tmp/anchorprune-first-stage/real-250.npz"))
vecs, lengths, qv, ql = z["vecs"], z["lengths"], z["qvecs"], z["qlengths"]       # pool [T, d]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
off = np.concatenate([[0], np.cumsum(lengths)])
r = len(lengths)
rng = np.random.default_rng(0)                      # the same draw as benchmarks/first_stage.py corpus()
pages = [np.arange(off[i], off[i + 1]) for i in range(r)]
seen = {hashlib.blake2b(p.tobytes(), digest_size=16).digest() for p in pages}
while len(pages) < N:
    src = rng.choice(r, 3, replace=False)
    rows = np.sort(np.concatenate([off[s] + rng.choice(lengths[s], math.ceil(lengths[s] / 3), replace=False)
                                   for s in src]))
    key = hashlib.blake2b(rows.tobytes(), digest_size=16).digest()
    if key in seen:
        continue
    seen.add(key)
    pages.append(rows)
qo = np.concatenate([[0], np.cumsum(ql)])
Q = [qv[qo[i]:qo[i + 1]] for i in range(len(ql))]
flat = np.concatenate(pages)
starts = np.concatenate([[0], np.cumsum([len(p) for p in pages])])[:-1]


def exact(q: np.ndarray) -> np.ndarray:
    """Exact MaxSim of q [m, d] against every page [P]."""
    s = q @ vecs.T                                                   # [m, pool]
    return np.maximum.reduceat(s[:, flat], starts, axis=1).sum(0)


ex = [np.argsort(-exact(q))[:10] for q in Q]
mu = vecs.mean(0)
print("anisotropy: mean cos to mu", float((vecs @ (mu / np.linalg.norm(mu))).mean()), flush=True)


def run(name, enc_doc, enc_q) -> None:
    t = time.time()
    codes = np.stack([enc_doc(vecs[p]) for p in pages]).astype(np.float32)   # [P, D]
    te = time.time() - t
    out = []
    for c in (50, 100, 200, 500):
        rec = []
        for q, e in zip(Q, ex, strict=True):
            cand = top_candidates(codes, enc_q(q), c)
            top = cand[np.argsort(-exact(q)[cand])[:10]]
            rec.append(len(set(top) & set(e)) / 10)
        out.append(round(float(np.mean(rec)), 3))
    print(name, codes.shape[1], out, f"enc {te:.0f}s", flush=True)


m = MeanFirstStage(384)
run("mean", m.encode_document, m.encode_query)
for cfg in [dict(k_sim=4, d_proj=16, reps=16), dict(k_sim=5, d_proj=16, reps=8), dict(k_sim=3, d_proj=32, reps=16),
            dict(k_sim=2, d_proj=64, reps=16)]:
    f = MuveraFirstStage.create(384, **cfg)
    run(f"muvera {cfg}", f.encode_document, f.encode_query)
    run(f"muvera-centred {cfg}", lambda x, f=f: f.encode_document(x - mu), lambda q, f=f: f.encode_query(q - mu))
