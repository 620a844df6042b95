"""Ranking losses: InfoNCE (in-batch + hard negatives) and distillation from teacher scores
(MarginMSE, KL). Each returns a scalar tensor; :class:`lsr.losses.SparseRetrievalLoss` names it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InfoNCELoss", "MarginMSELoss", "KLDivLoss", "RANKING_LOSSES"]


class InfoNCELoss(nn.Module):
    r"""Contrastive loss over in-batch and hard negatives.

    For query :math:`i` with positive :math:`d_i^+` and hard negatives :math:`d_{i,1..n}^-`, the
    candidates are every query's positive (the in-batch negatives) plus every hard negative:

    .. math:: \mathcal{L} = -\frac1B \sum_i \log
        \frac{e^{s(q_i, d_i^+)/\tau}}{\sum_{d \in D^+ \cup D^-} e^{s(q_i, d)/\tau}}

    with :math:`s` the dot product and :math:`\tau` the temperature (van den Oord et al. 2018,
    "Representation Learning with Contrastive Predictive Coding"; in-batch + hard negatives as in
    DPR, Karpukhin et al. 2020). ``in_batch=False`` keeps only the query's own list.

    ``forward(q (B, V), docs (B, 1 + n, V))``: ``docs[:, 0]`` is the positive.
    """

    def __init__(self, temperature: float = 1.0, in_batch: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.in_batch = bool(in_batch)

    def forward(self, q: torch.Tensor, docs: torch.Tensor, teacher_scores: torch.Tensor | None = None) -> torch.Tensor:
        b, m, v = docs.shape
        if not self.in_batch:
            logits = torch.einsum("bv,bmv->bm", q, docs) / self.temperature
            return F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=q.device))
        flat = docs.reshape(b * m, v)
        logits = q @ flat.T / self.temperature  # (B, B*m); positives sit at column i*m
        target = torch.arange(b, device=q.device) * m
        return F.cross_entropy(logits, target)


class MarginMSELoss(nn.Module):
    r"""MarginMSE distillation (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models
    with Cross-Architecture Knowledge Distillation").

    With a candidate list per query whose first entry is the positive:

    .. math:: \mathcal{L} = \frac{1}{B(m-1)} \sum_i \sum_{j \ge 1}
        \big((s_{i0} - s_{ij}) - (t_{i0} - t_{ij})\big)^2

    ``forward(q (B, V), docs (B, m, V), teacher_scores (B, m))``.
    """

    def forward(self, q: torch.Tensor, docs: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
        if teacher_scores is None:
            raise ValueError("MarginMSE needs teacher scores (configure [[teachers]])")
        s = torch.einsum("bv,bmv->bm", q, docs)
        t = teacher_scores.to(s.dtype)
        sm = s[:, :1] - s[:, 1:]
        tm = t[:, :1] - t[:, 1:]
        return F.mse_loss(sm, tm)


class KLDivLoss(nn.Module):
    r"""KL distillation over each query's candidate list (as in SPLADE++'s KL variant and the seed
    paper, Geng et al. 2024, arXiv 2411.04403):

    .. math:: \mathcal{L} = \frac1B \sum_i \sum_j p_{ij} \log\frac{p_{ij}}{\hat p_{ij}},\quad
        p_i = \mathrm{softmax}(t_i/\tau),\ \hat p_i = \mathrm{softmax}(s_i/\tau)

    ``forward(q (B, V), docs (B, m, V), teacher_scores (B, m))``.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, q: torch.Tensor, docs: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
        if teacher_scores is None:
            raise ValueError("KL distillation needs teacher scores (configure [[teachers]])")
        s = torch.einsum("bv,bmv->bm", q, docs) / self.temperature
        t = teacher_scores.to(s.dtype) / self.temperature
        return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")


RANKING_LOSSES = {"infonce": InfoNCELoss, "marginmse": MarginMSELoss, "kl": KLDivLoss}
