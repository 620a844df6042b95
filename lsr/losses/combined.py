"""The training objective: a ranking loss plus warmed-up sparsity regularisers on each side,
returned as a dict of named terms (``loss``, ``ranking``, ``reg_doc``, ``reg_query``, λs).
"""

from __future__ import annotations

import torch
from torch import nn

from lsr.losses.flops import QuadraticWarmup

__all__ = ["SparseRetrievalLoss"]


class SparseRetrievalLoss(nn.Module):
    r""":math:`\mathcal{L} = \mathcal{L}_\mathrm{rank} + \lambda_d(t)\,\ell(D) + \lambda_q(t)\,\ell(Q)`
    with :math:`\lambda(t) = \lambda \min(1, t/T)^2` (:class:`QuadraticWarmup`).

    ``auxiliary`` adds weighted ranking terms, e.g. ``{"infonce": (InfoNCELoss(), 1.0)}`` next to
    a distillation loss so the judged positives supervise directly too.
    ``reg_query=None`` (inference-free: the query side is a table, not a model) drops the query term.
    ``forward(q (B, V), docs (B, m, V), teacher_scores (B, m) | None, step)`` returns a dict whose
    ``loss`` is the value to backpropagate; every other entry is detached for logging.
    """

    def __init__(
        self,
        ranking: nn.Module,
        reg_doc: nn.Module | None = None,
        reg_query: nn.Module | None = None,
        lambda_doc: float = 0.0,
        lambda_query: float = 0.0,
        warmup_steps: int = 0,
        ranking_weight: float = 1.0,
        auxiliary: dict[str, tuple[nn.Module, float]] | None = None,
    ):
        super().__init__()
        self.ranking = ranking
        self.reg_doc = reg_doc
        self.reg_query = reg_query
        self.lambda_doc = QuadraticWarmup(lambda_doc, warmup_steps)
        self.lambda_query = QuadraticWarmup(lambda_query, warmup_steps)
        self.ranking_weight = float(ranking_weight)
        aux = auxiliary or {}
        self.auxiliary = nn.ModuleDict({k: m for k, (m, _) in aux.items()})
        self.auxiliary_weights = {k: float(w) for k, (_, w) in aux.items()}

    def forward(self, q, docs, teacher_scores=None, step: int = 0) -> dict[str, torch.Tensor]:
        rank = self.ranking(q, docs, teacher_scores)
        total = self.ranking_weight * rank
        out = {"ranking": rank.detach()}
        for name, mod in self.auxiliary.items():
            val = mod(q, docs, teacher_scores)
            total = total + self.auxiliary_weights[name] * val
            out[name] = val.detach()
        for side, reg, lam, reps in (("doc", self.reg_doc, self.lambda_doc, docs),
                                     ("query", self.reg_query, self.lambda_query, q)):
            if reg is not None:
                weight = lam(step)
                value = reg(reps)
                total = total + weight * value
                out[f"reg_{side}"] = value.detach()
                out[f"lambda_{side}"] = torch.tensor(weight)
        out["loss"] = total
        return out
