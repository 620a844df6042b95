"""Teacher interface, per-query score normalisation, the weighted ensemble and its disk cache.

A teacher scores each query's candidate list: ``score(queries, corpus, candidates)`` →
``{qid: scores (len(candidates[qid]),)}``. :class:`Ensemble` normalises each teacher's scores per
query (min-max or z-score), combines them by weight and scales the result, and caches the
combined (and per-teacher) scores in an ``.npz`` named by a hash of everything that fixes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

__all__ = ["Teacher", "Ensemble", "normalize", "candidates_hash"]

logger = logging.getLogger(__name__)


class Teacher(Protocol):
    name: str

    def fingerprint(self) -> dict: ...

    def score(self, queries: dict[str, str], corpus: dict[str, str],
              candidates: dict[str, Sequence[str]]) -> dict[str, np.ndarray]: ...


def normalize(scores: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Per-query normalisation of one teacher's scores over a candidate list.

    ``minmax``: (s - min) / (max - min), all 0 when the list is flat; ``zscore``: (s - mean) / std
    (std 0 → all 0); ``none``: unchanged.
    """
    s = np.asarray(scores, np.float64)
    if method == "none" or s.size == 0:
        return s.astype(np.float32)
    if method == "minmax":
        lo, hi = s.min(), s.max()
        return ((s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)).astype(np.float32)
    if method == "zscore":
        sd = s.std()
        return ((s - s.mean()) / sd if sd > 0 else np.zeros_like(s)).astype(np.float32)
    raise ValueError(f"unknown normalisation {method!r}: expected minmax, zscore or none")


def candidates_hash(queries: dict[str, str], corpus: dict[str, str], candidates: dict[str, Sequence[str]]) -> str:
    h = hashlib.sha256()
    for qid in sorted(candidates):
        h.update(qid.encode())
        h.update(queries[qid].encode())
        for d in candidates[qid]:
            h.update(b"\x00" + d.encode())
            h.update(hashlib.sha1(corpus[d].encode()).digest())
    return h.hexdigest()[:16]


class Ensemble:
    r"""Heterogeneous ensemble target :math:`t_{ij} = \sigma \sum_k w_k\, \mathrm{norm}(s^{(k)}_{i\cdot})_j`
    (the seed paper's recipe, arXiv 2411.04403 §3: dense + sparse teachers, scores normalised per
    query, then combined; σ is ``scale``).
    """

    def __init__(self, teachers: Sequence[Teacher], weights: Sequence[float] | None = None, *,
                 normalization: str = "minmax", scale: float = 1.0, cache_dir: str | Path | None = None):
        if not teachers:
            raise ValueError("an ensemble needs at least one teacher")
        weights = list(weights) if weights is not None else [1.0 / len(teachers)] * len(teachers)
        if len(weights) != len(teachers):
            raise ValueError(f"{len(teachers)} teachers but {len(weights)} weights")
        normalize(np.zeros(1), normalization)  # validates the name
        self.teachers, self.weights = list(teachers), [float(w) for w in weights]
        self.normalization, self.scale = normalization, float(scale)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    @staticmethod
    def key(teacher, data_hash: str) -> str:
        spec = {"teacher": teacher.fingerprint(), "data": data_hash}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def raw_scores(self, queries, corpus, candidates) -> dict[str, dict[str, np.ndarray]]:
        """Per-teacher raw scores, each read from / written to the cache under a hash of the
        teacher's config and the exact (query, candidates) data; ensembles reuse single teachers."""
        data_hash = candidates_hash(queries, corpus, candidates) if self.cache_dir is not None else ""
        raw = {}
        for t in self.teachers:
            path = None
            if self.cache_dir is not None:
                path = self.cache_dir / f"teacher-scores-{t.name}-{self.key(t, data_hash)}.npz"
                if path.exists():
                    logger.info("teacher %s: scores from cache %s", t.name, path)
                    raw[t.name] = _load_cache(path, [t.name], candidates)[t.name]
                    continue
            logger.info("scoring %d queries' candidates with teacher %s", len(candidates), t.name)
            raw[t.name] = t.score(queries, corpus, candidates)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                _save_cache(path, {t.name: raw[t.name]}, candidates)
                logger.info("teacher %s: scores cached at %s", t.name, path)
        return raw

    def combine(self, raw: dict[str, dict[str, np.ndarray]], candidates) -> dict[str, dict[str, float]]:
        out = {}
        for qid, cands in candidates.items():
            total = np.zeros(len(cands), np.float64)
            for t, w in zip(self.teachers, self.weights):
                total += w * normalize(raw[t.name][qid], self.normalization)
            out[qid] = dict(zip(cands, (self.scale * total).astype(np.float32).tolist()))
        return out

    def __call__(self, queries, corpus, candidates) -> dict[str, dict[str, float]]:
        return self.combine(self.raw_scores(queries, corpus, candidates), candidates)


def _save_cache(path: Path, raw, candidates) -> None:
    qids = sorted(candidates)
    lens = np.asarray([len(candidates[q]) for q in qids], np.int64)
    arrays = {"qids": np.asarray(qids), "lens": lens,
              "docs": np.asarray([d for q in qids for d in candidates[q]])}
    for name, per_q in raw.items():
        arrays[f"t_{name}"] = np.concatenate([per_q[q] for q in qids]).astype(np.float32) if qids else np.zeros(0, np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _load_cache(path: Path, names, candidates):
    with np.load(path, allow_pickle=False) as z:
        qids = [str(q) for q in z["qids"]]
        offs = np.concatenate([[0], np.cumsum(z["lens"])])
        docs = z["docs"]
        out = {}
        for name in names:
            vals = z[f"t_{name}"]
            out[name] = {}
            for i, q in enumerate(qids):
                if [str(d) for d in docs[offs[i]:offs[i + 1]]] != list(candidates[q]):
                    raise ValueError(f"{path}: cached candidates for {q} differ; delete the cache")
                out[name][q] = vals[offs[i]:offs[i + 1]]
    return out
