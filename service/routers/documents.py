"""Documents: upsert a batch, get / delete one by id (ids may hold '/'), delete a batch."""

from __future__ import annotations

from typing import cast

import numpy as np
from fastapi import APIRouter, Depends, Path, Query

from .. import dense
from .. import schemas as S
from ..collection import DocIn
from ..deps import Col, Svc, read_key, write_key
from ..errors import ApiError
from ..inputs import check_batch, check_metadata, check_text, need_model, to_vector
from . import ERRORS

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"], responses=ERRORS)
# `:path` so an id holding '/' (sent percent-encoded, %2F) still names one document
DocIdPath = Path(..., max_length=512, description="document id, percent-encoded")


@router.post("", response_model=S.UpsertResult, dependencies=[Depends(write_key)])
async def upsert_documents(req: S.DocumentsUpsert, col: Col, svc: Svc) -> S.UpsertResult:
    """Add or replace documents (by id). Acknowledged once the write is fsynced in the log."""
    limits = svc.limits
    check_batch(len(req.documents), limits.max_batch_documents, "documents")
    lookup = svc.col_vocab(col)[1] if any(d.vector is not None for d in req.documents) else None
    docs: list[DocIn] = []
    to_encode: list[int] = []
    seen: dict[str, int] = {}
    for i, d in enumerate(req.documents):
        what = f"documents[{i}]"
        check_text(d.text, what, limits)
        doc_id = str(d.id)
        if doc_id in seen:
            raise ApiError(422, "duplicate_id", f"{what}: id {doc_id!r} repeats documents[{seen[doc_id]}]")
        seen[doc_id] = i
        check_metadata(d.metadata, what, limits)
        v = to_vector(d, col, lookup, what, limits)
        if v is None:
            if d.text is None:
                raise ApiError(422, "invalid", f"{what}: give text, vector or vector_ids")
            to_encode.append(i)
            v = (np.zeros(0, np.int32), np.zeros(0, np.float32))
        dv = np.asarray(d.dense_vector, np.float32) if d.dense_vector is not None else None
        docs.append(DocIn(doc_id, v[0], v[1], d.text, d.metadata, dv))
    if to_encode:
        model = need_model(col, "documents")
        enc = await svc.run(svc.search_pool, svc.models.encode_documents, model,
                            cast("list[str]", [req.documents[i].text for i in to_encode]))  # texts checked above
        enc.check_dim(col.dim, "encoded documents")
        for j, i in enumerate(to_encode):
            idx, val = enc.row(j)
            docs[i].indices, docs[i].values = idx.astype(np.int32), val.astype(np.float32)
    dense_model = col.config.get("dense_model")
    to_embed = [i for i, d in enumerate(req.documents) if d.dense_vector is None and d.text is not None]
    if dense_model and to_embed:  # hybrid collection: embed the texts of documents that bring no embedding
        emb = await svc.run(svc.search_pool, dense.encode, dense_model,
                            cast("list[str]", [req.documents[i].text for i in to_embed]))
        for j, i in enumerate(to_embed):
            docs[i].dense = emb[j]
    seq = await svc.run(svc.write_pool, col.upsert, docs)
    return S.UpsertResult(upserted=len(docs), ids=[d.id for d in docs], seq=seq)


@router.post("/delete", response_model=S.DeleteResult, dependencies=[Depends(write_key)])
async def delete_documents(req: S.DeleteRequest, col: Col, svc: Svc) -> S.DeleteResult:
    """Delete a batch of documents by id; ids not present are listed in not_found."""
    deleted, missing = await svc.run(svc.write_pool, col.delete, [str(i) for i in req.ids])
    return S.DeleteResult(deleted=deleted, not_found=missing)


@router.get("/{doc_id:path}", response_model=S.Document, dependencies=[Depends(read_key)])
async def get_document(col: Col, svc: Svc, doc_id: str = DocIdPath,
                       vector: bool = Query(False, description="include the stored sparse vector")) -> S.Document:
    doc = col.get(doc_id, with_vector=vector)
    if doc is None:
        raise ApiError(404, "not_found", f"document {doc_id!r} not found in collection {col.name!r}")
    if vector:
        vocab = svc.col_vocab(col)[0]
        doc["vector"] = {(vocab[t] if vocab is not None else str(t)): w for t, w in doc["vector"].items()}
    return S.Document(**doc)


@router.delete("/{doc_id:path}", response_model=S.DeleteResult, dependencies=[Depends(write_key)])
async def delete_document(col: Col, svc: Svc, doc_id: str = DocIdPath) -> S.DeleteResult:
    deleted, missing = await svc.run(svc.write_pool, col.delete, [doc_id])
    if not deleted:
        raise ApiError(404, "not_found", f"document {doc_id!r} not found in collection {col.name!r}")
    return S.DeleteResult(deleted=deleted, not_found=missing)
