"""Collection statistics: document frequencies, the BM25-form IDF and FLOPS (the one implementation)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
from numpy.typing import ArrayLike

from .sparse import SparseBatch

__all__ = ["bm25_idf", "document_frequencies", "flops"]


def bm25_idf(df: ArrayLike, n_docs: int) -> np.ndarray:
    r"""BM25 IDF :math:`\ln\big(1 + \frac{N - \mathrm{df} + 0.5}{\mathrm{df} + 0.5}\big)` (always > 0), float32."""
    d = np.asarray(df, dtype=np.float64)
    out: np.ndarray = np.log1p((n_docs - d + 0.5) / (d + 0.5)).astype(np.float32)
    return out


def document_frequencies(docs: SparseBatch | Iterable[Iterable[int]], dim: int | None = None) -> tuple[np.ndarray, int]:
    """``(df, n_docs)``: in how many documents each term id occurs.

    ``docs`` is a :class:`SparseBatch` (its non-zeros count) or an iterable of token-id sequences
    (repeats within a document count once; ids ``>= dim`` are ignored).
    """
    if isinstance(docs, SparseBatch):
        dim = docs.dim if dim is None else dim
        df = np.bincount(docs.indices[docs.values > 0], minlength=dim)[:dim].astype(np.int64)
        return df, len(docs)
    if dim is None:
        raise ValueError("document_frequencies over token ids needs dim")
    df = np.zeros(dim, np.int64)
    n = 0
    for ids in docs:
        u = np.unique(np.asarray(list(ids), dtype=np.int64))
        df[u[(u >= 0) & (u < dim)]] += 1
        n += 1
    return df, n


def flops(queries: SparseBatch, docs: SparseBatch) -> float:
    """Expected multiply-adds per query-document pair, ``sum_t P(q_t != 0) P(d_t != 0)`` (Paria et al. 2020).

    >>> q = SparseBatch.from_dicts([{0: 1.0}, {0: 1.0, 1: 1.0}], dim=3)
    >>> d = SparseBatch.from_dicts([{0: 1.0}, {1: 2.0}], dim=3)
    >>> flops(q, d)  # P(q0)=1 P(d0)=.5 + P(q1)=.5 P(d1)=.5
    0.75
    """
    if queries.dim != docs.dim:
        raise ValueError(f"queries have dim {queries.dim} but documents have dim {docs.dim}")
    (df_q, n_q), (df_d, n_d) = document_frequencies(queries), document_frequencies(docs)
    return float((df_q / max(n_q, 1)) @ (df_d / max(n_d, 1)))
