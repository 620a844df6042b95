"""The IDF table of inference-free models: BM25-form IDF from document frequencies, and a
trainable (V,) query-weight table with its own learning rate.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

__all__ = ["bm25_idf", "document_frequencies", "IdfTable"]


def bm25_idf(df, n_docs: int) -> np.ndarray:
    r"""BM25 IDF :math:`\ln\big(1 + \frac{N - \mathrm{df} + 0.5}{\mathrm{df} + 0.5}\big)` (always > 0)."""
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)


def document_frequencies(token_ids: Iterable[Iterable[int]], dim: int) -> tuple[np.ndarray, int]:
    """Count in how many documents each term id occurs; returns ``(df (dim,), n_docs)``."""
    df = np.zeros(dim, np.int64)
    n = 0
    for ids in token_ids:
        u = np.unique(np.asarray(list(ids), dtype=np.int64))
        df[u] += 1
        n += 1
    return df, n


class IdfTable(nn.Module):
    r"""Query weights of an inference-free model: :math:`q_t = \mathrm{relu}(\theta_t)` for the
    query's tokens, :math:`\theta` initialised to the IDF. ``trainable=False`` keeps it a buffer.

    ``forward(presence (B, V))`` → ``presence * relu(θ)``: the only path from query text to the
    score, so with a frozen table no gradient reaches the query side at all.
    """

    def __init__(self, idf, trainable: bool = False):
        super().__init__()
        t = torch.as_tensor(np.asarray(idf), dtype=torch.float32).clone()
        if trainable:
            self.weight = nn.Parameter(t)
        else:
            self.register_buffer("weight", t)
        self.trainable = bool(trainable)

    def forward(self, presence: torch.Tensor) -> torch.Tensor:
        return presence * torch.relu(self.weight).to(presence.dtype)
