"""Deterministic SPLADE-like synthetic data: documents and correlated queries as SparseBatch.

Vocabulary 30,522 (BERT uncased), Zipf-like term popularity, about 120 non-zeros per document
and 40 per query. Documents mix a few latent topics (each a set of terms drawn by popularity)
with background terms; weights follow a gamma law scaled up for rarer terms, like SPLADE's
log-saturated activations. A query is built from a random document: a share of its heaviest
terms with perturbed weights plus terms from the same topics, so each query has real neighbours.

    python benchmarks/synthetic.py --n-docs 100000 --n-queries 1000 --out /tmp/synth
    # writes /tmp/synth/docs.npz and /tmp/synth/queries.npz (lsr.save_vectors layout)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lsr.index.sparse import SparseBatch

VOCAB = 30522


class Generator:
    """Term popularity and topics fixed by ``seed``; documents drawn in chunks of fixed seeds."""

    def __init__(self, seed: int = 0, dim: int = VOCAB, n_topics: int = 2000, topic_size: int = 200,
                 zipf_a: float = 1.0, zipf_shift: float = 50.0):
        self.seed = seed
        self.dim = dim
        rng = np.random.default_rng([seed, 0])
        perm = rng.permutation(dim)  # popularity rank -> term id
        ranks = np.arange(dim, dtype=np.float64)
        p = 1.0 / (ranks + zipf_shift) ** zipf_a
        p /= p.sum()
        self.pop = np.empty(dim)
        self.pop[perm] = p
        self.cdf = np.cumsum(p)
        self.rank_term = perm
        # rarity in [0, 1]: 0 for the most popular term, 1 for the rarest
        self.rarity = np.empty(dim)
        self.rarity[perm] = np.linspace(0.0, 1.0, dim)
        # topics: terms drawn with a flattened popularity (topics are about mid-frequency terms)
        pt = p ** 0.5
        pt /= pt.sum()
        cdf_t = np.cumsum(pt)
        draws = np.searchsorted(cdf_t, rng.random((n_topics, topic_size)))
        self.topics = perm[np.minimum(draws, dim - 1)].astype(np.int32)
        self.n_topics = n_topics

    def _background(self, rng, shape):
        idx = np.searchsorted(self.cdf, rng.random(shape))
        return self.rank_term[np.minimum(idx, self.dim - 1)].astype(np.int32)

    def _weights(self, rng, terms):
        w = rng.gamma(2.0, 0.35, size=terms.shape) * (0.4 + 1.6 * self.rarity[terms])
        return np.minimum(w, 4.0).astype(np.float32)

    def _rows_to_batch(self, terms, weights, lengths):
        """(n, m) term/weight draws with per-row lengths -> SparseBatch, duplicates keep the max."""
        n, m = terms.shape
        mask = np.arange(m)[None, :] < lengths[:, None]
        rows = np.repeat(np.arange(n, dtype=np.int64), m).reshape(n, m)[mask]
        t = terms[mask].astype(np.int64)
        w = weights[mask]
        key = rows * self.dim + t
        order = np.lexsort((-w, key))
        key, w = key[order], w[order]
        first = np.ones(key.size, bool)
        first[1:] = key[1:] != key[:-1]
        key, w = key[first], w[first]
        r = key // self.dim
        counts = np.bincount(r, minlength=n)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return SparseBatch(indptr, (key % self.dim).astype(np.int32), w.astype(np.float32), self.dim)

    def documents(self, n: int, *, chunk: int = 50_000, mean_nnz: int = 120) -> SparseBatch:
        parts = []
        for c0 in range(0, n, chunk):
            parts.append(self._doc_chunk(c0 // chunk, min(chunk, n - c0), mean_nnz))
        return SparseBatch.concat(parts)

    def _doc_topics(self, rng, m):
        return rng.integers(0, self.n_topics, size=(m, 3))

    def _doc_chunk(self, ci: int, m: int, mean_nnz: int) -> SparseBatch:
        rng = np.random.default_rng([self.seed, 1, ci])
        draws = int(mean_nnz * 1.6)
        lengths = np.clip(rng.normal(mean_nnz * 1.12, mean_nnz * 0.3, size=m), 16, draws).astype(np.int64)
        topics = self._doc_topics(rng, m)
        which = rng.integers(0, 3, size=(m, draws))
        slot = rng.integers(0, self.topics.shape[1], size=(m, draws))
        topic_terms = self.topics[topics[np.arange(m)[:, None], which], slot]
        bg = self._background(rng, (m, draws))
        use_topic = rng.random((m, draws)) < 0.6
        terms = np.where(use_topic, topic_terms, bg)
        weights = self._weights(rng, terms)
        weights = np.where(use_topic, weights * 1.3, weights).astype(np.float32)
        return self._rows_to_batch(terms, weights, lengths)

    def queries(self, n: int, docs: SparseBatch, *, mean_nnz: int = 40) -> SparseBatch:
        """Queries seeded from random documents of ``docs`` (their heaviest terms + topic terms)."""
        rng = np.random.default_rng([self.seed, 2])
        src = rng.integers(0, len(docs), size=n)
        m = int(mean_nnz * 1.6)
        terms = np.zeros((n, m), np.int32)
        weights = np.zeros((n, m), np.float32)
        lengths = np.clip(rng.normal(mean_nnz * 1.05, mean_nnz * 0.25, size=n), 5, m).astype(np.int64)
        for i, d in enumerate(src.tolist()):
            idx, val = docs.row(d)
            n_from_doc = min(idx.size, int(lengths[i] * 0.45))
            top = np.argsort(-val, kind="stable")[: max(n_from_doc * 2, 1)]
            pick = rng.choice(top, size=min(n_from_doc, top.size), replace=False) if top.size else top
            a = pick.size
            terms[i, :a] = idx[pick]
            weights[i, :a] = val[pick] * rng.uniform(0.5, 1.5, size=a)
            rest = m - a
            bg = self._background(rng, rest)
            weights[i, a:] = self._weights(rng, bg) * 0.6
            terms[i, a:] = bg
        return self._rows_to_batch(terms, weights, lengths)


def generate(n_docs: int, n_queries: int, seed: int = 0) -> tuple[SparseBatch, SparseBatch]:
    """(documents, queries) for the given sizes; identical for identical arguments."""
    g = Generator(seed)
    docs = g.documents(n_docs)
    return docs, g.queries(n_queries, docs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-docs", type=int, default=100_000)
    ap.add_argument("--n-queries", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="folder for docs.npz and queries.npz")
    args = ap.parse_args(argv)
    from lsr.index.sparse import save_vectors

    docs, queries = generate(args.n_docs, args.n_queries, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    save_vectors(args.out / "docs.npz", docs)
    save_vectors(args.out / "queries.npz", queries)
    print(f"docs {docs!r} ({docs.nnz / len(docs):.1f} nnz/doc), queries {queries!r} ({queries.nnz / max(len(queries), 1):.1f} nnz/query)")


if __name__ == "__main__":
    main()
