"""Dev evaluation inside training: encode a corpus and queries, score exactly (``lsr.index.ExactIndex``),
nDCG@10 / R@100 through ir-measures (a built-in nDCG@10 when it is not installed), non-zeros and FLOPS.
"""

from __future__ import annotations

import logging
import math

import numpy as np

__all__ = ["exact_run", "ndcg_at_10", "measure", "sparsity_stats", "evaluate_encoder"]

logger = logging.getLogger(__name__)


def exact_run(queries, docs, qids, dids, k: int = 100) -> dict[str, dict[str, float]]:
    """Top-``k`` of SparseBatch ``queries`` over ``docs`` by exact dot product, as ``{qid: {did: score}}``
    (documents with a positive score; :class:`lsr.index.ExactIndex`'s rules)."""
    from lsr.index import ExactIndex

    hits = ExactIndex.build(docs, ids=[str(d) for d in dids]).search(queries, k=k)
    return {q: {d: float(s) for d, s in zip(hits.ids[i], hits.scores[i]) if d is not None}
            for i, q in enumerate(qids)}


def ndcg_at_10(qrels, run) -> float:
    """Mean nDCG@10 (gain = relevance, log2 discount) over judged queries; ties broken by id."""
    vals = []
    for q, rels in qrels.items():
        ranked = sorted(run.get(q, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, (d, _) in enumerate(ranked))
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        vals.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(vals)) if vals else 0.0


def measure(qrels, run) -> dict[str, float]:
    try:
        import ir_measures
        from ir_measures import R, nDCG

        res = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], qrels, run)
        return {str(k): float(v) for k, v in res.items()}
    except ImportError:
        return {"nDCG@10": ndcg_at_10(qrels, run)}


def sparsity_stats(queries, docs) -> dict[str, float]:
    """Average non-zeros of SparseBatch ``queries`` and ``docs``, and FLOPS (:func:`lsr.index.stats.flops`)."""
    from lsr.index.stats import flops

    return {"nnz_q": float(queries.nnz / max(len(queries), 1)), "nnz_d": float(docs.nnz / max(len(docs), 1)),
            "flops": flops(queries, docs)}


def evaluate_encoder(enc, corpus: dict[str, str], queries: dict[str, str], qrels, *, batch_size: int = 64,
                     k: int = 100, doc_vectors=None):
    """nDCG@10, R@100, non-zeros and FLOPS of ``enc`` on ``queries`` judged in ``qrels``."""
    qids = [q for q in qrels if q in queries]
    dids = list(corpus)
    d = doc_vectors if doc_vectors is not None else enc.encode_documents([corpus[x] for x in dids], batch_size=batch_size)
    qv = enc.encode_queries([queries[q] for q in qids], batch_size=batch_size)
    run = exact_run(qv, d, qids, dids, k)
    out = measure({q: qrels[q] for q in qids}, run)
    out.update(sparsity_stats(qv, d))
    return out, run
