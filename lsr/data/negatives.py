"""Hard negatives: top-ranked documents from BM25 or any lsr index, judged positives excluded."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

__all__ = ["mine_bm25", "mine_with_index"]

logger = logging.getLogger(__name__)


def _exclude(ranked_ids, qids, positives, depth):
    out = {}
    for qid, row in zip(qids, ranked_ids):
        pos = set(positives.get(qid, ()))
        out[qid] = [d for d in row if d is not None and d not in pos][:depth]
    return out


def mine_bm25(queries: dict[str, str], corpus: dict[str, str], positives: dict[str, Sequence[str]], *,
              depth: int = 50, tokenizer=None, bm25=None) -> dict[str, list[str]]:
    """``{qid: [doc ids]}``: BM25's top ``depth`` documents for each query in ``positives``,
    positives removed, best first."""
    from lsr.teachers.bm25 import BM25

    bm = bm25 or BM25(list(corpus.values()), list(corpus.keys()), tokenizer=tokenizer)
    qids = list(positives)
    max_pos = max((len(p) for p in positives.values()), default=0)
    ids, _ = bm.search([queries[q] for q in qids], k=depth + max_pos)
    return _exclude(ids, qids, positives, depth)


def mine_with_index(index, query_vectors, qids: Sequence[str], positives: dict[str, Sequence[str]], *,
                    depth: int = 50, **search_kw) -> dict[str, list[str]]:
    """Hard negatives from any ``lsr.index`` index (``ExactIndex``/``SeismicIndex``) built with
    string document ids, searched with ``query_vectors`` (a SparseBatch in ``qids`` order)."""
    max_pos = max((len(positives.get(q, ())) for q in qids), default=0)
    hits = index.search(query_vectors, k=depth + max_pos, **search_kw)
    ids = np.asarray(hits.ids, dtype=object)
    ids = [[None if (x is None or (isinstance(x, (int, np.integer)) and x < 0)) else str(x) for x in row] for row in ids]
    return _exclude(ids, list(qids), positives, depth)
