"""A second generator, with statistics unlike benchmarks/synthetic.py's, so no figure rests on one generator.

Differences from ``synthetic.py``: a pure Zipf term law (exponent 1.1, no flattened head), so a
few terms sit in a large share of documents; log-normal document lengths (median ~110, a long
tail up to 600 non-zeros); heavy-tailed log-normal weights (sigma 0.9: a few dominant terms per
vector); ~50 non-zeros per query, like SPLADE-tiny queries, of which ~60% are terms of a source
document (its heaviest ones more often), ~25% terms of the same topics and the rest background
noise, with query weights redrawn from their own heavy-tailed law (queries and documents are
correlated in terms, not copied in weights).

    python benchmarks/zipf_vectors.py --n-docs 100000 --n-queries 1000 --out /tmp/zipf
    python benchmarks/zipf_vectors.py N_DOCS N_QUERIES OUT_DIR          # the same, positional
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from lsr.index.sparse import SparseBatch, save_vectors

VOCAB = 30522


def _rows(terms: np.ndarray, weights: np.ndarray, lengths: np.ndarray, dim: int) -> SparseBatch:
    """(n, m) draws cut to per-row lengths -> SparseBatch; a term drawn twice keeps its largest weight."""
    n, m = terms.shape
    mask = np.arange(m)[None, :] < lengths[:, None]
    key = (np.repeat(np.arange(n, dtype=np.int64), m).reshape(n, m)[mask] * dim + terms[mask])
    w = weights[mask]
    order = np.lexsort((-w, key))
    key, w = key[order], w[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    key, w = key[first], w[first]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(key // dim, minlength=n))]).astype(np.int64)
    return SparseBatch(indptr, (key % dim).astype(np.int32), w.astype(np.float32), dim)


class ZipfGenerator:
    """Term law and topics fixed by ``seed``; documents drawn in chunks of fixed seeds."""

    def __init__(self, seed: int = 7, dim: int = VOCAB, zipf_a: float = 1.1, n_topics: int = 3000,
                 topic_size: int = 300):
        self.seed, self.dim = seed, dim
        rng = np.random.default_rng([seed, 0])
        p = 1.0 / np.arange(1, dim + 1, dtype=np.float64) ** zipf_a
        p /= p.sum()
        self.rank_term = rng.permutation(dim).astype(np.int64)  # popularity rank -> term id
        self.cdf = np.cumsum(p)
        self.rarity = np.empty(dim)
        self.rarity[self.rank_term] = np.linspace(0.0, 1.0, dim)
        pt = p ** 0.6  # topics favour mid-frequency terms
        cdf_t = np.cumsum(pt / pt.sum())
        draws = np.minimum(np.searchsorted(cdf_t, rng.random((n_topics, topic_size))), dim - 1)
        self.topics = self.rank_term[draws]
        self.n_topics = n_topics
        self.doc_topics: np.ndarray | None = None

    def _background(self, rng: np.random.Generator, shape: tuple[int, ...] | int) -> np.ndarray:
        return self.rank_term[np.minimum(np.searchsorted(self.cdf, rng.random(shape)), self.dim - 1)]

    def _weights(self, rng: np.random.Generator, terms: np.ndarray, sigma: float) -> np.ndarray:
        w = rng.lognormal(-0.6, sigma, terms.shape) * (0.3 + 1.4 * self.rarity[terms])
        return np.minimum(w, 8.0).astype(np.float32)

    def documents(self, n: int, *, chunk: int = 50_000, workers: int | None = None) -> SparseBatch:
        """``n`` documents; their topics (n, 2) stay in ``self.doc_topics`` for :meth:`queries`.
        Chunks have seeds of their own, so they are drawn in parallel processes (``workers``,
        default: one per core, at most one per chunk) with the same result as one after another."""
        starts = list(range(0, n, chunk))
        workers = min(len(starts), os.cpu_count() or 1) if workers is None else max(1, workers)
        jobs = [(c // chunk, min(chunk, n - c)) for c in starts]
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                parts = list(pool.map(self._doc_chunk, *zip(*jobs)))
        else:
            parts = [self._doc_chunk(ci, m) for ci, m in jobs]
        self.doc_topics = np.concatenate([t for _, t in parts]) if parts else np.empty((0, 2), np.int64)
        return SparseBatch.concat([b for b, _ in parts])

    def _doc_chunk(self, ci: int, m: int) -> tuple[SparseBatch, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, ci])
        lengths = np.clip(rng.lognormal(np.log(110), 0.55, m), 12, 600).astype(np.int64)
        draws = int(lengths.max() * 1.3) + 1
        topics = rng.integers(0, self.n_topics, (m, 2))
        which = rng.integers(0, 2, (m, draws))
        slot = rng.integers(0, self.topics.shape[1], (m, draws))
        topic_terms = self.topics[topics[np.arange(m)[:, None], which], slot]
        use_topic = rng.random((m, draws)) < 0.5
        terms = np.where(use_topic, topic_terms, self._background(rng, (m, draws)))
        w = self._weights(rng, terms, 0.9)
        w = np.where(use_topic, w * 1.5, w).astype(np.float32)
        # a document is cut to its length after duplicates merge: oversample, then keep `lengths` draws
        return _rows(terms, w, np.minimum(lengths * 13 // 10, draws), self.dim), topics

    def queries(self, n: int, docs: SparseBatch, *, mean_nnz: int = 50) -> SparseBatch:
        """Queries seeded from random documents of ``docs``; see the module docstring."""
        rng = np.random.default_rng([self.seed, 2])
        src = rng.integers(0, len(docs), n)
        m = int(mean_nnz * 1.6)
        terms = np.zeros((n, m), np.int64)
        lengths = np.clip(rng.normal(mean_nnz * 1.05, mean_nnz * 0.3, n), 8, m).astype(np.int64)
        for i, d in enumerate(src.tolist()):
            idx, val = docs.row(d)
            n_doc = min(idx.size, int(lengths[i] * 0.6))
            # heavier document terms are likelier query terms
            p = val.astype(np.float64) ** 2
            pick = rng.choice(idx.size, n_doc, replace=False, p=p / p.sum()) if n_doc else np.zeros(0, np.int64)
            terms[i, :n_doc] = idx[pick]
            n_top = int(lengths[i] * 0.25)
            # topic terms: drawn from the source document's own topics (unknown: a random topic)
            known = getattr(self, "doc_topics", None) is not None and self.doc_topics.shape[0] == len(docs)
            topic = self.doc_topics[d, rng.integers(0, 2)] if known else rng.integers(0, self.n_topics)
            terms[i, n_doc : n_doc + n_top] = rng.choice(self.topics[topic], n_top)
            terms[i, n_doc + n_top :] = self._background(rng, m - n_doc - n_top)
        w = self._weights(rng, terms, 1.0)
        return _rows(terms, w, lengths, self.dim)


def generate(n_docs: int, n_queries: int, seed: int = 7) -> tuple[SparseBatch, SparseBatch]:
    """(documents, queries) for the given sizes; identical for identical arguments."""
    g = ZipfGenerator(seed)
    docs = g.documents(n_docs)
    return docs, g.queries(n_queries, docs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and not any(a.startswith("-") for a in argv):  # the positional form
        argv = ["--n-docs", argv[0], "--n-queries", argv[1], "--out", argv[2]]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-docs", type=int, default=100_000)
    ap.add_argument("--n-queries", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True, help="folder for docs.npz and queries.npz")
    args = ap.parse_args(argv)
    if args.n_docs < 1 or args.n_queries < 0:
        ap.error("--n-docs must be >= 1 and --n-queries >= 0")
    docs, queries = generate(args.n_docs, args.n_queries, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    save_vectors(args.out / "docs.npz", docs)
    save_vectors(args.out / "queries.npz", queries)
    print(f"{len(docs)} docs ({docs.nnz / len(docs):.1f} nnz), {len(queries)} queries "
          f"({queries.nnz / max(len(queries), 1):.1f} nnz) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
