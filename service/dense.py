"""Dense embedding models of hybrid collections, loaded once per process (torch, lazily).

A collection created with ``dense_model`` keeps one embedding per document; this module owns the
encoders that make them (from document text at upsert, from query text at search).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def encoder(name: str) -> Any:
    """The :class:`lsr.models.dense.DenseEncoder` for ``name`` (a short name or a folder)."""
    with _LOCK:
        enc = _MODELS.get(name)
        if enc is None:
            from lsr.models.dense import DenseEncoder

            enc = _MODELS[name] = DenseEncoder.load(name, device="cpu")
        return enc


def dimension(name: str) -> int:
    return int(encoder(name).dim)


def encode(name: str, texts: list[str]) -> np.ndarray:
    """(len(texts), dim) float32 embeddings."""
    out: np.ndarray = encoder(name).encode(texts, batch_size=32)
    return out
