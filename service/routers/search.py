"""Search: one query or a batch, by text (encoded with the collection's model) or by sparse vector."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from lsr.index.filter import MetadataFilter
from lsr.index.fusion import fuse
from lsr.index.sparse import SparseBatch

from .. import dense
from .. import schemas as S
from ..collection import Candidate, Collection, View
from ..deps import Col, Service, Svc, read_key
from ..errors import ApiError
from ..inputs import check_batch, check_encoded, check_query_text, need_model, to_vector
from . import ERRORS

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], responses=ERRORS,
                   dependencies=[Depends(read_key)])


def _json(content: Any) -> Response:
    # plain dicts serialised once, not re-validated through the response model (latency)
    return Response(json.dumps(content, ensure_ascii=False, allow_nan=False), media_type="application/json")


@router.post("/search", response_model=S.SearchResponse)
async def search(req: S.SearchRequest, col: Col, svc: Svc) -> Response:
    """Search by text (encoded with the collection's model) or by a sparse vector."""
    q = S.QueryIn(text=req.text, vector=req.vector, vector_ids=req.vector_ids, dense_vector=req.dense_vector)
    res = await _search(svc, col, [q], req, 1)
    return _json(res[0])


@router.post("/search/batch", response_model=S.BatchSearchResponse)
async def search_batch(req: S.BatchSearchRequest, col: Col, svc: Svc) -> Response:
    """Several queries in one call, searched on all of the server's search threads."""
    check_batch(len(req.queries), svc.limits.max_batch_queries, "queries")
    t0 = time.perf_counter()
    res = await _search(svc, col, req.queries, req, svc.settings.threads)
    return _json({"results": res, "took_ms": (time.perf_counter() - t0) * 1000})


async def _search(svc: Service, col: Collection, queries: list[S.QueryIn], knobs: S.Knobs,
                  threads: int) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    if knobs.k > svc.limits.max_k:
        raise ApiError(422, "invalid", f"k={knobs.k} exceeds the limit of {svc.limits.max_k}")
    many = len(queries) > 1
    hybrid = knobs.mode == "hybrid"
    dense_model: str | None = col.config.get("dense_model") if isinstance(col, Collection) else None
    if hybrid and not dense_model:
        raise ApiError(422, "invalid", f"mode=hybrid: collection {col.name!r} has no dense_model")
    dense_texts: list[str] = []
    for i, q in enumerate(queries):
        what = f"queries[{i}]" if many else "query"
        if q.dense_vector is not None and not hybrid:
            raise ApiError(422, "invalid", f"{what}: dense_vector needs mode=hybrid")
        if hybrid and q.dense_vector is None:
            if q.text is None:
                raise ApiError(422, "invalid", f"{what}: mode=hybrid needs text or dense_vector for the dense side")
            dense_texts.append(q.text)
        if hybrid and q.dense_vector is not None and len(q.dense_vector) != col.dense_dim:
            raise ApiError(422, "invalid", f"{what}: dense_vector has {len(q.dense_vector)} values, the collection's "
                           f"dense model gives {col.dense_dim}")
    lookup = svc.col_vocab(col)[1] if any(q.vector is not None for q in queries) else None
    vecs: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(queries)
    texts: list[str] = []
    where: list[int] = []
    names: list[str] = []
    for i, q in enumerate(queries):
        what = f"queries[{i}]" if many else "query"
        v = to_vector(q, col, lookup, what, svc.limits)
        if v is not None and q.text is not None and not hybrid:  # hybrid: the text is for the dense side
            raise ApiError(422, "invalid", f"{what}: give text or a vector, not both")
        if v is None:
            if q.text is None:
                raise ApiError(422, "invalid", f"{what}: give text, vector or vector_ids")
            check_query_text(q.text, what, svc.limits)
            texts.append(q.text)
            where.append(i)
            names.append(what)
        vecs[i] = v
    model = need_model(col, "query") if texts else ""
    encoded = None
    if texts and not svc.models.is_table(model):
        # a model forward pass: the model's batcher joins this with other requests' queries
        encoded = await asyncio.wrap_future(svc.models.submit_queries(model, texts))

    def work() -> list[dict[str, Any]]:
        enc = encoded
        if texts and enc is None:  # a weight table: tokenise here, on the search thread
            enc = svc.models.encode_queries(model, texts)
        if enc is not None:
            enc.check_dim(col.dim, "encoded queries")
            check_encoded(enc, names)
            for j, i in enumerate(where):
                vecs[i] = enc.row(j)
        filled = cast("list[tuple[np.ndarray, np.ndarray]]", vecs)  # every query has its vector by now
        if hybrid and dense_model:
            emb = dense.encode(dense_model, dense_texts) if dense_texts else None
            rows, j = [], 0
            for q in queries:
                if q.dense_vector is not None:
                    rows.append(np.asarray(q.dense_vector, np.float32))
                else:
                    rows.append(cast(np.ndarray, emb)[j])
                    j += 1
            return _run_hybrid(svc, col, _batch(filled, col.dim), np.stack(rows), knobs, threads, t0)
        return _run(svc, col, _batch(filled, col.dim), knobs, threads, t0)

    return await svc.run(svc.search_pool, work)


def _batch(vecs: list[tuple[np.ndarray, np.ndarray]], dim: int) -> SparseBatch:
    lens = [v[0].size for v in vecs]
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    if sum(lens):
        ind = np.concatenate([v[0] for v in vecs]).astype(np.int32)
        val = np.concatenate([v[1] for v in vecs]).astype(np.float32)
    else:
        ind, val = np.zeros(0, np.int32), np.zeros(0, np.float32)
    return SparseBatch(indptr, ind, val, dim)


def _run(svc: Service, col: Collection, qb: SparseBatch, knobs: S.Knobs, threads: int, t0: float) -> list[dict[str, Any]]:
    extra: dict[str, Any] = {}
    if knobs.filter is not None:
        if not isinstance(col, Collection):
            raise ApiError(422, "invalid", "filter: not supported on a sharded collection")
        extra["flt"] = MetadataFilter.parse(knobs.filter)
    view, results = col.search(qb, knobs.k, {"query_cut": knobs.query_cut, "heap_factor": knobs.heap_factor},
                               threads, allow_partial=knobs.allow_partial, **extra)
    vocab = svc.col_vocab(col)[0] if knobs.explain else None
    took = (time.perf_counter() - t0) * 1000
    out = []
    for qi, cands in enumerate(results):
        hits = []
        q_idx, q_val = qb.row(qi)
        for c in cands:
            doc = view.document(c, text=knobs.include_text)
            hit = {"id": c.id, "score": c.score, "metadata": doc.get("metadata"),
                   "text": doc.get("text") if knobs.include_text else None}
            if knobs.explain:
                hit["explanation"] = _explain(view, c, q_idx, q_val, vocab)
                hit["score"] = hit["explanation"]["score"]  # exact re-score: contributions sum to it
            hits.append(hit)
        if knobs.explain:
            hits.sort(key=lambda h: (-h["score"], h["id"]))
        res: dict[str, Any] = {"hits": hits, "took_ms": took}
        if view.missing_shards:  # a sharded collection answered without some shards (allow_partial)
            res.update(partial=True, missing_shards=list(view.missing_shards))
        out.append(res)
    return out


def _run_hybrid(svc: Service, col: Collection, qb: SparseBatch, qd: np.ndarray, knobs: S.Knobs, threads: int,
                t0: float) -> list[dict[str, Any]]:
    """Each side's top ``candidates`` (sparse: the index search; dense: exact dot products), fused
    over their union; a candidate missing from one side's list is scored exactly on that side."""
    flt = MetadataFilter.parse(knobs.filter) if knobs.filter is not None else None
    cand_k = knobs.candidates or max(knobs.k, 100)
    view, sparse_res = col.search(qb, cand_k, {"query_cut": knobs.query_cut, "heap_factor": knobs.heap_factor},
                                  threads, flt=flt)
    dense_res = view.dense_search(qd, cand_k, flt)
    vocab = svc.col_vocab(col)[0] if knobs.explain else None
    out = []
    for qi in range(qd.shape[0]):
        q_idx, q_val = qb.row(qi)
        by_id = {c.id: c for c in dense_res[qi]}
        by_id.update({c.id: c for c in sparse_res[qi]})

        def sparse_of(ids: list[str]) -> list[float]:
            return [_sparse_dot(view, by_id[d], q_idx, q_val) for d in ids]

        def dense_of(ids: list[str], qi: int = qi) -> list[float]:
            return [float(np.dot(cast(np.ndarray, view.dense_vector(by_id[d])), qd[qi])) for d in ids]

        fused = fuse([(c.id, c.score) for c in sparse_res[qi]], [(c.id, c.score) for c in dense_res[qi]],
                     method=knobs.fusion, alpha=0.5 if knobs.alpha is None else knobs.alpha, k=knobs.k,
                     sparse_of=sparse_of, dense_of=dense_of)
        hits = []
        for doc_id, score in fused:
            c = by_id[doc_id]
            doc = view.document(c, text=knobs.include_text)
            hit = {"id": doc_id, "score": score, "sparse_score": sparse_of([doc_id])[0],
                   "dense_score": dense_of([doc_id])[0], "metadata": doc.get("metadata"),
                   "text": doc.get("text") if knobs.include_text else None}
            if knobs.explain:
                hit["explanation"] = _explain(view, c, q_idx, q_val, vocab)
            hits.append(hit)
        out.append({"hits": hits, "took_ms": (time.perf_counter() - t0) * 1000})
    return out


def _sparse_dot(view: View, cand: Candidate, q_idx: np.ndarray, q_val: np.ndarray) -> float:
    d_idx, d_val = view.vector(cand)
    _, qi_pos, di_pos = np.intersect1d(q_idx, d_idx, assume_unique=True, return_indices=True)
    return float(np.dot(q_val[qi_pos].astype(np.float64), d_val[di_pos].astype(np.float64)))


def _explain(view: View, cand: Candidate, q_idx: np.ndarray, q_val: np.ndarray,
             vocab: list[str] | None) -> dict[str, Any]:
    d_idx, d_val = view.vector(cand)
    common, qi_pos, di_pos = np.intersect1d(q_idx, d_idx, assume_unique=True, return_indices=True)
    contrib = q_val[qi_pos].astype(np.float64) * d_val[di_pos].astype(np.float64)
    order = np.argsort(-contrib, kind="stable")
    terms = [
        {"term": vocab[int(common[j])] if vocab is not None else str(int(common[j])),
         "term_id": int(common[j]), "query_weight": float(q_val[qi_pos[j]]),
         "doc_weight": float(d_val[di_pos[j]]), "contribution": float(contrib[j])}
        for j in order
    ]
    return {"score": float(contrib.sum()), "terms": terms}
