"""Encode: texts to {token: weight} with the server's default model or one a collection uses."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from .. import schemas as S
from ..deps import Svc, read_key
from ..errors import ApiError
from ..inputs import check_text
from . import ERRORS

router = APIRouter(tags=["encode"], responses=ERRORS, dependencies=[Depends(read_key)])


@router.post("/v1/encode", response_model=S.EncodeResponse)
async def encode(req: S.EncodeRequest, svc: Svc) -> S.EncodeResponse:
    """Encode texts into {token: weight}; queries go through the same encoder (and batcher) as text searches."""
    model = req.model or svc.settings.model
    if model is None:
        raise ApiError(422, "no_model", "this server has no default model; name one")
    st = svc.store
    served = {svc.settings.model} | ({c.config.get("model") for c in st.collections.values()} if st else set())
    if model not in served:
        raise ApiError(422, "model_unavailable", f"model {model!r} is not served here (served: "
                                                 f"{sorted(m for m in served if m)})")
    for i, t in enumerate(req.texts):
        check_text(t, f"texts[{i}]", svc.limits)
    if req.kind == "query":
        if svc.models.is_table(model):
            batch = await svc.run(svc.search_pool, svc.models.encode_queries, model, list(req.texts))
        else:
            batch = await asyncio.wrap_future(svc.models.submit_queries(model, list(req.texts)))
    else:
        batch = await svc.run(svc.search_pool, svc.models.encode_documents, model, list(req.texts))
    if req.top_k is not None:
        batch = batch.prune(top_k=req.top_k)
    vecs = []
    for idx, val in batch:
        pairs = sorted(zip(idx.tolist(), val.tolist()), key=lambda p: -p[1])
        vecs.append({(batch.vocab[t] if batch.vocab is not None else str(t)): w for t, w in pairs})
    return S.EncodeResponse(model=model, vectors=vecs)
