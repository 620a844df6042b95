"""Losses against values computed by hand on tiny tensors, and where gradients flow."""

import math

import numpy as np
import pytest
import torch

from lsr.losses import (
    DFFLOPSLoss,
    FLOPSLoss,
    IdfTable,
    InfoNCELoss,
    KLDivLoss,
    L1Loss,
    MarginMSELoss,
    QuadraticWarmup,
    SparseRetrievalLoss,
    WeightedFLOPSLoss,
    df_flops_activation,
    l0_mask,
)

# q0 = [1, 0], q1 = [0, 2]; each query has a positive and one hard negative.
Q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
D = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 1.0]]])  # (B=2, m=2, V=2)
# scores q_i . d_{j,k}: q0: pos0=1, neg0=0, pos1=0, neg1=1 ; q1: pos0=0, neg0=2, pos1=2, neg1=2
# (own lists: q0 [1, 0], q1 [2, 2])


def test_infonce_in_batch_by_hand():
    loss = InfoNCELoss(temperature=1.0)(Q, D)
    # q0 logits over [pos0, neg0, pos1, neg1] = [1, 0, 0, 1], target pos0
    l0 = -(1 - math.log(math.e + 1 + 1 + math.e))
    # q1 logits = [0, 2, 2, 2], target pos1 (column 2)
    l1 = -(2 - math.log(1 + 3 * math.e**2))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_infonce_own_list_and_temperature():
    loss = InfoNCELoss(temperature=0.5, in_batch=False)(Q, D)
    l0 = -(2 - math.log(math.e**2 + 1))  # [1,0]/0.5
    l1 = math.log(2.0)  # [2,2]/0.5: a tie
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        InfoNCELoss(temperature=0)


def test_marginmse_by_hand():
    t = torch.tensor([[3.0, 1.0], [1.0, 0.0]])
    loss = MarginMSELoss()(Q, D, t)
    # student margins: q0 1-0=1, q1 2-2=0 ; teacher margins 2, 1
    assert loss.item() == pytest.approx(((1 - 2) ** 2 + (0 - 1) ** 2) / 2)
    with pytest.raises(ValueError):
        MarginMSELoss()(Q, D, None)


def test_kl_by_hand():
    t = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    loss = KLDivLoss(temperature=2.0)(Q, D, t)

    def sm(x):
        e = np.exp(np.asarray(x) - max(x))
        return e / e.sum()

    kl = 0.0
    for s, tt in (([0.5, 0.0], [1.0, 0.0]), ([1.0, 1.0], [0.0, 0.0])):
        p, ph = sm(tt), sm(s)
        kl += float((p * np.log(p / ph)).sum())
    assert loss.item() == pytest.approx(kl / 2, rel=1e-5)


R = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])


def test_flops_and_l1_by_hand():
    # column means [2, 0, 1] -> 4 + 0 + 1
    assert FLOPSLoss()(R).item() == pytest.approx(5.0)
    # also accepts (B, m, V)
    assert FLOPSLoss()(R.reshape(1, 2, 3)).item() == pytest.approx(5.0)
    assert L1Loss()(R).item() == pytest.approx((3 + 3) / 2)


def test_l0_threshold_mask():
    # row 0 has 2 non-zeros, row 1 has 1: threshold 1 masks row 1 out
    assert l0_mask(R, 1).flatten().tolist() == [1.0, 0.0]
    assert l0_mask(R, None).flatten().tolist() == [1.0, 1.0]
    # means [0.5, 0, 1] -> 0.25 + 1
    assert FLOPSLoss(l0_threshold=1)(R).item() == pytest.approx(1.25)
    assert L1Loss(l0_threshold=1)(R).item() == pytest.approx(1.5)


def test_weighted_flops_by_hand():
    idf = torch.tensor([1.0, 2.0, 4.0])
    c = 1 / idf
    c = c / c.mean()
    loss = WeightedFLOPSLoss(idf)(R)
    assert loss.item() == pytest.approx(float(c[0] * 4 + c[2] * 1), rel=1e-6)
    # a frequent (low-idf) term costs more than a rare one with the same mass
    same = torch.tensor([[1.0, 0.0, 1.0]])
    per_term = WeightedFLOPSLoss(idf).c
    assert per_term[0] > per_term[2]
    assert WeightedFLOPSLoss(idf, fn="none")(same).item() == pytest.approx(FLOPSLoss()(same).item())
    with pytest.raises(ValueError):
        WeightedFLOPSLoss(idf, fn="bogus")


def test_df_flops_activation_and_loss():
    a = df_flops_activation(torch.tensor([0.1, 1.0, 1e-6]), alpha=0.1, beta=5.0)
    assert a[0].item() == pytest.approx(0.5)
    assert a[1].item() == pytest.approx(1.0)
    assert a[2].item() < 1e-3
    loss = DFFLOPSLoss(3, alpha=0.1, beta=5.0, momentum=0.0)
    # momentum 0: DF fractions are this batch's [1, 0, 0.5]; weights a(1)=1, a(0)=~0, a(0.5)
    w2 = df_flops_activation(torch.tensor(0.5)).item()
    assert loss(R).item() == pytest.approx(4 * 1.0 + 1 * w2, rel=1e-5)


def test_quadratic_warmup():
    w = QuadraticWarmup(0.5, 10)
    assert [w(0), w(5), w(10), w(20)] == [0.0, pytest.approx(0.125), 0.5, 0.5]
    assert QuadraticWarmup(0.3, 0)(0) == 0.3


def test_combined_named_terms_and_warmup():
    crit = SparseRetrievalLoss(InfoNCELoss(), FLOPSLoss(), FLOPSLoss(), lambda_doc=1.0, lambda_query=2.0, warmup_steps=4)
    out = crit(Q, D, None, step=2)
    assert set(out) == {"loss", "ranking", "reg_doc", "reg_query", "lambda_doc", "lambda_query"}
    expected = out["ranking"] + 0.25 * out["reg_doc"] + 0.5 * out["reg_query"]
    assert out["loss"].item() == pytest.approx(expected.item())


def test_gradients_inference_free_only_reach_idf_and_documents():
    torch.manual_seed(0)
    v = 6
    presence = torch.tensor([[1.0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0]])  # tokenised queries: constants
    doc_params = torch.nn.Parameter(torch.rand(2, 2, v))
    docs = torch.relu(doc_params)
    # frozen table: no parameter on the query side at all
    frozen = IdfTable(np.ones(v), trainable=False)
    q = frozen(presence)
    assert not q.requires_grad and not list(frozen.parameters())
    crit = SparseRetrievalLoss(InfoNCELoss(), FLOPSLoss(), None, lambda_doc=0.1)
    crit(q, docs)["loss"].backward()
    assert doc_params.grad is not None and doc_params.grad.abs().sum() > 0
    assert presence.grad is None
    # trainable table: gradient reaches exactly the query's tokens' entries
    table = IdfTable(np.ones(v), trainable=True)
    doc_params.grad = None
    crit(table(presence), torch.relu(doc_params))["loss"].backward()
    g = table.weight.grad
    assert g is not None
    assert torch.all(g[[3, 5]] == 0)  # tokens in no query get nothing
    assert g[[0, 1, 2, 4]].abs().min() > 0


def test_gradients_flops_reach_every_active_entry_only():
    x = torch.nn.Parameter(torch.tensor([[1.0, -1.0, 0.0]]))
    FLOPSLoss()(torch.relu(x)).backward()
    assert x.grad[0, 0] > 0 and x.grad[0, 1] == 0 and x.grad[0, 2] == 0


def test_auxiliary_infonce_term():
    t = torch.tensor([[3.0, 1.0], [1.0, 0.0]])
    crit = SparseRetrievalLoss(MarginMSELoss(), auxiliary={"infonce": (InfoNCELoss(), 0.5)})
    out = crit(Q, D, t)
    assert out["loss"].item() == pytest.approx(1.0 + 0.5 * InfoNCELoss()(Q, D).item())
    assert "infonce" in out
