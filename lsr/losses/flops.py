r"""Sparsity regularisers: FLOPS, per-term-weighted (IDF-aware) FLOPS, DF-FLOPS, L1, the L0-style
threshold mask, and the quadratic warm-up of a regulariser's weight.

Which IDF-aware form is which:

* **implicit** (the seed paper, Geng et al. 2024, arXiv 2411.04403, "Towards Competitive Search
  Relevance for Inference-Free Learned Sparse Retrievers"): the query side of an inference-free
  model is the IDF table, the score is :math:`\sum_t \mathrm{idf}_t\, w_d(t)`, and plain
  :class:`FLOPSLoss` on the document side. The ranking gradient on :math:`w_d(t)` is scaled by
  :math:`\mathrm{idf}_t` while FLOPS is not, so per unit of score a low-IDF term costs more and
  is pruned first. Nothing in this module is needed for it beyond FLOPS; the model supplies it.
* **explicit** (:class:`WeightedFLOPSLoss`): FLOPS with a per-term weight :math:`c_t = f(\mathrm{idf}_t)`,
  by default :math:`1/\mathrm{idf}_t`, so frequent terms are penalised more on any model.
* **DF-FLOPS** (:class:`DFFLOPSLoss`, Porco et al. 2025, arXiv 2505.15070): the weight is a
  generalised logistic function of each term's document frequency *in the model's own vectors*,
  estimated on the fly, to shorten posting lists.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "FLOPSLoss",
    "WeightedFLOPSLoss",
    "DFFLOPSLoss",
    "L1Loss",
    "l0_mask",
    "QuadraticWarmup",
    "idf_term_weights",
    "df_flops_activation",
]


def l0_mask(reps: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Row mask (B, 1): 0 for vectors with at most ``threshold`` non-zeros, else 1.

    The L0-style threshold: a vector already sparser than the target is not pushed further (as in
    SPLADE-v3 / the seed paper's "no penalty under a length" rule). ``None`` keeps every row.
    """
    if threshold is None:
        return torch.ones(reps.shape[0], 1, dtype=reps.dtype, device=reps.device)
    nnz = (reps > 0).sum(-1, keepdim=True)
    return (nnz > threshold).to(reps.dtype)


class FLOPSLoss(nn.Module):
    r"""FLOPS (Paria et al. 2020, "Minimizing FLOPs to Learn Efficient Sparse Representations";
    SPLADE, Formal et al. 2021):

    .. math:: \ell_\mathrm{FLOPS} = \sum_t \Big(\frac1B \sum_i |w_{it}|\Big)^2

    the expected number of multiply-adds between two random vectors of the batch, relaxed.
    ``l0_threshold`` masks rows via :func:`l0_mask` (the mean still divides by B).
    """

    def __init__(self, l0_threshold: float | None = None):
        super().__init__()
        self.l0_threshold = l0_threshold

    def term_weights(self, reps: torch.Tensor) -> torch.Tensor | None:
        return None

    def forward(self, reps: torch.Tensor) -> torch.Tensor:
        reps = reps.reshape(-1, reps.shape[-1])
        masked = reps.abs() * l0_mask(reps, self.l0_threshold)
        mean = masked.mean(0)
        c = self.term_weights(reps)
        sq = mean * mean
        return (sq * c).sum() if c is not None else sq.sum()


def idf_term_weights(idf: torch.Tensor, fn: str = "inverse", eps: float = 1e-3) -> torch.Tensor:
    r"""Per-term FLOPS weights :math:`c_t = f(\mathrm{idf}_t)`.

    ``inverse``: :math:`1/\max(\mathrm{idf}_t, \epsilon)` (default); ``inverse_sqrt``:
    :math:`1/\sqrt{\cdot}`; ``exp``: :math:`e^{-\mathrm{idf}_t}`; ``none``: 1. Normalised to mean 1
    over the vocabulary so λ keeps its usual scale.
    """
    idf = idf.detach().clamp_min(eps)
    if fn == "inverse":
        c = 1.0 / idf
    elif fn == "inverse_sqrt":
        c = idf.rsqrt()
    elif fn == "exp":
        c = torch.exp(-idf)
    elif fn == "none":
        c = torch.ones_like(idf)
    else:
        raise ValueError(f"unknown idf weight function {fn!r}: expected inverse, inverse_sqrt, exp or none")
    return c / c.mean()


class WeightedFLOPSLoss(FLOPSLoss):
    r"""Explicit IDF-aware FLOPS: :math:`\ell = \sum_t c_t \big(\frac1B\sum_i |w_{it}|\big)^2` with
    :math:`c_t = f(\mathrm{idf}_t)` from :func:`idf_term_weights` (default :math:`1/\mathrm{idf}`,
    normalised to mean 1). Rare terms (high IDF) cost less, frequent ones more.
    """

    def __init__(self, idf: torch.Tensor, fn: str = "inverse", l0_threshold: float | None = None):
        super().__init__(l0_threshold)
        self.register_buffer("c", idf_term_weights(torch.as_tensor(idf, dtype=torch.float32), fn))

    def term_weights(self, reps: torch.Tensor) -> torch.Tensor:
        return self.c.to(reps.dtype)


def df_flops_activation(x: torch.Tensor, alpha: float = 0.1, beta: float = 5.0) -> torch.Tensor:
    r"""DF-FLOPS' generalised logistic :math:`a(x) = 1 / (1 + (x^{\log_\alpha 2} - 1)^\beta)` on the
    DF fraction :math:`x \in (0, 1]`: 0.5 at :math:`x=\alpha`, → 1 as :math:`x \to 1`, → 0 as
    :math:`x \to 0`; β sets the steepness.
    """
    x = x.clamp(1e-9, 1.0)
    p = math.log(2.0) / math.log(alpha)
    return 1.0 / (1.0 + (x.pow(p) - 1.0).clamp_min(0).pow(beta))


class DFFLOPSLoss(FLOPSLoss):
    r"""DF-FLOPS (Porco et al. 2025, arXiv 2505.15070):
    :math:`\ell = \sum_t w_t \big(\frac1B\sum_i r_{it}\big)^2`, :math:`w_t = a(\mathrm{DF}_t/|C|)`
    (:func:`df_flops_activation`). The paper re-estimates DF every 100 steps on validation
    vectors; here DF fractions are an exponential moving average (``momentum``) of the share of
    the batch's vectors in which each term is non-zero, optionally initialised from corpus DF.
    """

    def __init__(
        self,
        dim: int,
        alpha: float = 0.1,
        beta: float = 5.0,
        momentum: float = 0.99,
        init_df_fraction: torch.Tensor | None = None,
        l0_threshold: float | None = None,
    ):
        super().__init__(l0_threshold)
        self.alpha, self.beta, self.momentum = float(alpha), float(beta), float(momentum)
        init = torch.zeros(dim) if init_df_fraction is None else torch.as_tensor(init_df_fraction, dtype=torch.float32)
        self.register_buffer("df_fraction", init.clone())

    def term_weights(self, reps: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                frac = (reps.detach() > 0).float().mean(0)
                self.df_fraction.mul_(self.momentum).add_(frac, alpha=1 - self.momentum)
        return df_flops_activation(self.df_fraction, self.alpha, self.beta).to(reps.dtype)


class L1Loss(nn.Module):
    r"""L1: :math:`\ell = \frac1B \sum_i \sum_t |w_{it}|` (rows masked by ``l0_threshold``)."""

    def __init__(self, l0_threshold: float | None = None):
        super().__init__()
        self.l0_threshold = l0_threshold

    def forward(self, reps: torch.Tensor) -> torch.Tensor:
        reps = reps.reshape(-1, reps.shape[-1])
        return (reps.abs() * l0_mask(reps, self.l0_threshold)).sum(-1).mean()


class QuadraticWarmup:
    r"""Regulariser weight schedule :math:`\lambda_t = \lambda \cdot \min(1, t/T)^2` (SPLADE,
    Formal et al. 2021). ``T = 0`` gives λ from the first step."""

    def __init__(self, lam: float, steps: int):
        if steps < 0:
            raise ValueError(f"warm-up steps must be >= 0, got {steps}")
        self.lam, self.steps = float(lam), int(steps)

    def __call__(self, step: int) -> float:
        if self.steps == 0:
            return self.lam
        return self.lam * min(1.0, step / self.steps) ** 2
