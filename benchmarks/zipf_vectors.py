"""A second generator, unlike benchmarks/synthetic.py: Zipf term popularity, log-normal (heavy-tailed)
weights, ~50 non-zeros per query drawn from a document's terms plus noise (correlated).

    python benchmarks/zipf_vectors.py N_DOCS N_QUERIES OUT_DIR     # OUT_DIR/docs.npz, OUT_DIR/queries.npz
"""
import sys
from pathlib import Path

import numpy as np

from lsr.index import SparseBatch, save_vectors

n, nq, dim = int(sys.argv[1]), int(sys.argv[2]), 30522
rng = np.random.default_rng(7)
pop = 1.0 / np.arange(1, dim + 1) ** 1.1
pop /= pop.sum()
perm = rng.permutation(dim)
def row(k):
    t = np.unique(perm[rng.choice(dim, k, p=pop)])
    return {int(i): float(w) for i, w in zip(t, rng.lognormal(0, 1.0, t.size))}
docs = [row(int(rng.integers(60, 300))) for _ in range(n)]
qs = []
for _ in range(nq):
    d = docs[int(rng.integers(n))]
    keys = list(d)
    pick = rng.choice(keys, min(35, len(keys)), replace=False)
    q = {int(t): float(rng.lognormal(0, 0.8)) for t in pick}
    q.update(row(15))
    qs.append(q)
out = Path(sys.argv[3]); out.mkdir(parents=True, exist_ok=True)
save_vectors(out / "docs.npz", SparseBatch.from_dicts(docs, dim=dim))
save_vectors(out / "queries.npz", SparseBatch.from_dicts(qs, dim=dim))
print(f"{n} docs ({np.mean([len(d) for d in docs]):.1f} nnz), {nq} queries ({np.mean([len(q) for q in qs]):.1f} nnz) in {out}")
