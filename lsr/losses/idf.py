"""The query-weight table of inference-free models: a (V,) table, initialised to the IDF of
:mod:`lsr.index.stats`, trainable with its own learning rate.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["IdfTable"]


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
