"""Collections: list, create, describe, delete, merge."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from .. import dense
from .. import schemas as S
from ..collection import Collection
from ..deps import Col, NamePath, Store, Svc, read_key, write_key
from ..errors import ApiError
from . import ERRORS

router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=ERRORS)


def info(col: Collection) -> S.CollectionInfo:
    st = col.stats()
    return S.CollectionInfo(
        name=col.name, model=col.config.get("model"), dim=col.dim, index=col.config.get("index") or {},
        dense_model=col.config.get("dense_model"),
        documents=st["documents"], fresh_documents=st["fresh_documents"],
        segments=[S.SegmentInfo(**s) for s in st["segments"]],
        bytes=st["bytes"], wal_bytes=st.get("wal_bytes", 0), created_at=col.manifest.get("created_at", 0.0),
    )


@router.get("", response_model=S.CollectionList, dependencies=[Depends(read_key)])
async def list_collections(store: Store) -> S.CollectionList:
    """Every collection, once; one that failed to open is listed with `status: "failed"` and its
    `reason`; an open one that answers only in part (a sharded collection that lost a shard) with
    `status: "degraded"` and why."""
    failed = dict(store.failed)
    out = []
    for c in list(store.collections.values()):
        entry = info(c)
        if c.name in failed:
            entry.status, entry.reason = "degraded", failed.pop(c.name)
        out.append(entry)
    out += [S.CollectionInfo(name=n, status="failed", reason=r) for n, r in sorted(failed.items())]
    return S.CollectionList(collections=out)


@router.post("", response_model=S.CollectionInfo, status_code=201, dependencies=[Depends(write_key)],
             responses={409: {"model": S.Error, "description": "exists"}})
async def create_collection(req: S.CollectionCreate, store: Store, svc: Svc) -> S.CollectionInfo:
    """Create a collection. `model` omitted: the server's default model; `model: null`: vectors only."""
    model = req.model if "model" in req.model_fields_set else svc.settings.model
    dim = req.dim
    if model is not None:
        vocab = await svc.run(svc.write_pool, svc.models.vocab, model)
        if dim is not None and dim != len(vocab):
            raise ApiError(422, "invalid", f"dim={dim} but model {model!r} has a vocabulary of {len(vocab)}")
        dim = len(vocab)
    elif dim is None:
        raise ApiError(422, "invalid", "a collection without a model needs dim (the vocabulary size)")
    config = {"model": model, "dim": dim, "index": req.index.model_dump(exclude_none=True)}
    if req.dense_model is not None:
        try:
            config["dense_dim"] = await svc.run(svc.write_pool, dense.dimension, req.dense_model)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise ApiError(422, "invalid", f"dense_model {req.dense_model!r} cannot be loaded: {exc}") from None
        config["dense_model"] = req.dense_model
    col = await svc.run(svc.write_pool, store.create, req.name, config)
    svc.vocab_cache.pop(col.name, None)
    return info(col)


@router.get("/{name}", response_model=S.CollectionInfo, dependencies=[Depends(read_key)])
async def describe_collection(col: Col) -> S.CollectionInfo:
    return info(col)


@router.delete("/{name}", response_model=S.Deleted, dependencies=[Depends(write_key)])
async def delete_collection(store: Store, svc: Svc, name: str = NamePath) -> S.Deleted:
    store.get(name)
    await svc.run(svc.write_pool, store.delete, name)
    svc.vocab_cache.pop(name, None)
    return S.Deleted(deleted=name)


@router.post("/{name}/merge", response_model=S.MergeResult, dependencies=[Depends(write_key)])
async def merge_collection(col: Col, svc: Svc, compact: bool = Query(False)) -> S.MergeResult:
    """Fold fresh documents into a new Seismic segment now (and all segments into one with compact)."""
    merged = await svc.run(svc.write_pool, col.merge, force=True, compact=compact or None)
    return S.MergeResult(merged=merged, collection=info(col))
