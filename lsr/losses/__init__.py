"""Training losses: ranking (InfoNCE, MarginMSE, KL), sparsity (FLOPS, IDF-aware FLOPS, DF-FLOPS,
L1, L0 threshold mask, quadratic warm-up) and the inference-free query-weight table
(IDF itself: :mod:`lsr.index.stats`).
"""

from lsr.losses.combined import SparseRetrievalLoss
from lsr.losses.flops import (
    DFFLOPSLoss,
    FLOPSLoss,
    L1Loss,
    QuadraticWarmup,
    WeightedFLOPSLoss,
    df_flops_activation,
    idf_term_weights,
    l0_mask,
)
from lsr.losses.idf import IdfTable
from lsr.losses.ranking import RANKING_LOSSES, InfoNCELoss, KLDivLoss, MarginMSELoss

__all__ = [
    "SparseRetrievalLoss",
    "InfoNCELoss",
    "MarginMSELoss",
    "KLDivLoss",
    "RANKING_LOSSES",
    "FLOPSLoss",
    "WeightedFLOPSLoss",
    "DFFLOPSLoss",
    "L1Loss",
    "QuadraticWarmup",
    "l0_mask",
    "idf_term_weights",
    "df_flops_activation",
    "IdfTable",
]
