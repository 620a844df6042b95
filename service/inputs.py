"""Checks of request content at the HTTP edge, beyond what the schemas can say: limits from the
server's settings, vectors against the collection's vocabulary, texts that encode to nothing.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from lsr.index.sparse import SparseBatch

from .collection import MAX_WEIGHT, Collection
from .config import Limits
from .errors import ApiError
from .schemas import MAX_TERM_ID, _VectorFields


def check_batch(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise ApiError(422, "batch_too_large", f"{n} {what} exceed the batch limit of {limit}")


def check_text(text: str | None, what: str, limits: Limits) -> None:
    if text is not None and len(text) > limits.max_text_chars:
        raise ApiError(422, "text_too_long", f"{what}: text has {len(text)} characters, limit {limits.max_text_chars}")


def check_query_text(text: str, what: str, limits: Limits) -> None:
    check_text(text, what, limits)
    if not text.strip():
        raise ApiError(422, "empty_query", f"{what}: the text is empty or only whitespace")


def check_metadata(metadata: dict[str, Any] | None, what: str, limits: Limits) -> None:
    if metadata is None:
        return
    size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    if size > limits.max_metadata_bytes:
        raise ApiError(422, "metadata_too_large", f"{what}: metadata is {size} bytes, limit {limits.max_metadata_bytes}")


def need_model(col: Collection, what: str) -> str:
    model: str | None = col.config.get("model")
    if model is None:
        raise ApiError(422, "no_model", f"{what}: collection {col.name!r} has no model; send vector or vector_ids")
    return model


def check_encoded(batch: SparseBatch, what: list[str]) -> None:
    """A text whose encoding has no terms cannot match anything: say so instead of returning nothing."""
    empty = np.flatnonzero(np.diff(batch.indptr) == 0)
    if empty.size:
        raise ApiError(422, "no_terms", f"{what[int(empty[0])]}: the text has no terms in the model's vocabulary "
                                        "(empty, punctuation or emoji only?)")


def to_vector(item: _VectorFields, col: Collection, lookup: dict[str, int] | None, what: str,
              limits: Limits) -> tuple[np.ndarray, np.ndarray] | None:
    """``vector`` / ``vector_ids`` of a request item as sorted ``(int32 ids, float32 weights)``; None if neither."""
    if item.vector is not None and item.vector_ids is not None:
        raise ApiError(422, "invalid", f"{what}: give either vector or vector_ids, not both")
    pairs: dict[int, float] = {}
    if item.vector is not None:
        for tok, weight in item.vector.items():
            if lookup is not None:
                tid = lookup.get(tok)
                if tid is None:
                    raise ApiError(422, "invalid_vector", f"{what}: token {tok!r} is not in the collection's vocabulary")
            else:
                tid = _term_id(tok)
                if tid is None:
                    raise ApiError(
                        422, "invalid_vector",
                        f"{what}: token {tok[:40]!r} given but collection {col.name!r} has no model vocabulary; "
                        "use term ids (0 to dim - 1)",
                    )
            pairs[tid] = pairs.get(tid, 0.0) + float(weight)
    elif item.vector_ids is not None:
        pairs = item.vector_ids  # pydantic gave int keys in [0, 2^31) and finite weights in (0, cap]
    else:
        return None
    n = len(pairs)
    if n > limits.max_terms:
        raise ApiError(422, "invalid_vector", f"{what}: {n} terms exceed the limit of {limits.max_terms}")
    ids = np.fromiter(pairs.keys(), np.int64, n)
    w = np.fromiter(pairs.values(), np.float64, n)
    if n and ids.max() >= col.dim:
        bad = int(ids[ids >= col.dim][0])
        raise ApiError(422, "invalid_vector", f"{what}: term id {bad} outside the vocabulary [0, {col.dim})")
    if n and not (np.isfinite(w).all() and (w > 0).all() and (w <= MAX_WEIGHT).all()):
        raise ApiError(422, "invalid_vector", f"{what}: weights must be finite, > 0 and <= {MAX_WEIGHT:g}")
    order = np.argsort(ids, kind="stable")
    return ids[order].astype(np.int32), w[order].astype(np.float32)


def _term_id(tok: str) -> int | None:
    """A decimal term id below 2^31 (the token of a collection without a vocabulary), else None."""
    if not (tok.isascii() and tok.isdigit()) or len(tok) > 10:
        return None
    tid = int(tok)
    return tid if tid <= MAX_TERM_ID else None
