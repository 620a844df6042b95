"""Hybrid ranking: fuse a sparse and a dense result list of one query, by a convex combination of
per-query min-max normalised scores or by reciprocal rank fusion (RRF). NumPy only.

>>> fuse([("a", 9.0), ("b", 5.0)], [("b", 0.8), ("c", 0.7)], method="rrf", k=3)
[('b', 0.03252247488101534), ('a', 0.01639344262295082), ('c', 0.016129032258064516)]
>>> fuse([("a", 9.0), ("b", 5.0)], [("b", 0.8), ("c", 0.7)], alpha=0.5, k=2,
...      sparse_of=lambda ids: [0.0 for _ in ids], dense_of=lambda ids: [0.6 for _ in ids])
[('b', 0.7777777777777778), ('a', 0.5)]
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np

__all__ = ["minmax", "convex", "rrf", "fuse", "RRF_K", "METHODS"]

RRF_K = 60  # Cormack, Clarke and Buettcher (SIGIR 2009)
METHODS = ("convex", "rrf")
Id = TypeVar("Id", bound=Hashable)
Scorer = Callable[[list[Id]], Sequence[float] | np.ndarray]


def minmax(scores: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min) over one query's candidates; all equal: zeros (no influence)."""
    x = np.asarray(scores, np.float64)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def convex(sparse: np.ndarray, dense: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * minmax(dense) + (1 - alpha) * minmax(sparse)``: alpha 0 is sparse only, 1 dense only."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return alpha * minmax(dense) + (1.0 - alpha) * minmax(sparse)


def rrf(rankings: Sequence[Sequence[Id]], k: int = RRF_K) -> dict[Id, float]:
    """Reciprocal rank fusion: sum over the lists holding a document of 1 / (k + rank), rank from 1."""
    if k < 1:
        raise ValueError(f"the RRF constant must be >= 1, got {k!r}")
    out: dict[Id, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            out[doc] = out.get(doc, 0.0) + 1.0 / (k + rank)
    return out


def fuse(sparse: Sequence[tuple[Id, float]], dense: Sequence[tuple[Id, float]], *, method: str = "convex",
         alpha: float = 0.5, k: int = 10, rrf_k: int = RRF_K, sparse_of: Scorer[Id] | None = None,
         dense_of: Scorer[Id] | None = None) -> list[tuple[Id, float]]:
    """The top ``k`` of the union of two best-first ``(id, score)`` lists of one query.

    ``convex``: each side's scores are min-max normalised over the union; a candidate missing from
    a side's list gets that side's exact score from ``sparse_of`` / ``dense_of`` (called once with
    the missing ids), or, without one, the side's lowest listed score. ``rrf``: ranks only.
    Ties: the order of first appearance (sparse list first).
    """
    if method not in METHODS:
        raise ValueError(f"fusion method must be one of {METHODS}, got {method!r}")
    if method == "rrf":
        fused = rrf([[d for d, _ in sparse], [d for d, _ in dense]], rrf_k)
        ids = list(fused)
        scores = np.asarray([fused[d] for d in ids], np.float64)
    else:
        ids = list(dict.fromkeys([d for d, _ in sparse] + [d for d, _ in dense]))
        s = _side(ids, dict(sparse), sparse_of)
        dn = _side(ids, dict(dense), dense_of)
        scores = convex(s, dn, alpha)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[i], float(scores[i])) for i in order]


def _side(ids: list[Id], listed: dict[Id, float], score_of: Scorer[Id] | None) -> np.ndarray:
    out = np.empty(len(ids), np.float64)
    missing = [i for i, d in enumerate(ids) if d not in listed]
    for i, d in enumerate(ids):
        if d in listed:
            out[i] = listed[d]
    if missing:
        if score_of is not None:
            out[missing] = np.asarray(score_of([ids[i] for i in missing]), np.float64)
        else:
            out[missing] = min(listed.values()) if listed else 0.0
    return out
