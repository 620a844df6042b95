"""SPLADE activation, pooling and masking against hand-computed values."""

import math

import pytest
import torch

from lsr.models.pooling import activate, head_pool, splade_pool


def test_activation_by_hand():
    x = torch.tensor([-2.0, 0.0, 1.0, math.e - 1])
    assert activate(x).tolist() == pytest.approx([0.0, 0.0, math.log(2.0), 1.0])
    assert activate(x, "log1p_relu").tolist() == pytest.approx([0.0, 0.0, math.log(1 + math.log(2.0)), math.log(2.0)])


def _hand_case():
    # batch of 2, 3 tokens, vocabulary of 4; row 1's last token is padding and holds the largest logits
    logits = torch.tensor([
        [[1.0, -1.0, 0.0, 3.0],
         [2.0, -2.0, 0.5, 0.0],
         [0.0, -3.0, 4.0, 1.0]],
        [[0.5, 1.0, -1.0, 0.0],
         [-1.0, 2.0, -1.0, 1.0],
         [9.0, 9.0, 9.0, 9.0]],
    ])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logits, mask


def test_max_pooling_by_hand():
    logits, mask = _hand_case()
    f = lambda v: math.log1p(max(v, 0.0))  # noqa: E731
    expected = [
        [f(2.0), 0.0, f(4.0), f(3.0)],
        [f(0.5), f(2.0), 0.0, f(1.0)],  # the padded 9.0s must not appear
    ]
    out = splade_pool(logits, mask, "max")
    assert out.tolist() == [pytest.approx(r) for r in expected]


def test_sum_pooling_by_hand():
    logits, mask = _hand_case()
    f = lambda v: math.log1p(max(v, 0.0))  # noqa: E731
    expected = [
        [f(1) + f(2) + f(0), 0.0, f(0.5) + f(4), f(3) + f(0) + f(1)],
        [f(0.5), f(1) + f(2), 0.0, f(1)],
    ]
    out = splade_pool(logits, mask, "sum")
    assert out.tolist() == [pytest.approx(r) for r in expected]


def test_all_masked_row_is_zero():
    logits = torch.randn(2, 3, 5)
    mask = torch.tensor([[0, 0, 0], [1, 0, 0]])
    for pooling in ("max", "sum"):
        out = splade_pool(logits, mask, pooling)
        assert torch.all(out[0] == 0)
        assert torch.all(torch.isfinite(out))


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_chunked_head_matches_full_logits(pooling, activation):
    torch.manual_seed(0)
    B, L, H, V = 3, 6, 8, 1000
    hidden, weight, bias = torch.randn(B, L, H), torch.randn(V, H), torch.randn(V)
    mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0], [0] * 6])
    full = splade_pool(hidden @ weight.T + bias, mask, pooling, activation)
    chunked = head_pool(hidden, mask, weight, bias, pooling, activation, chunk_bytes=1)  # smallest chunks
    assert torch.allclose(full, chunked, atol=1e-5)
    assert torch.all(chunked[2] == 0)


def test_max_pooling_gradient_reaches_argmax_token_only():
    logits, mask = _hand_case()
    logits = logits.clone().requires_grad_(True)
    splade_pool(logits, mask, "max")[0, 2].backward()
    g = logits.grad
    assert g[0, 2, 2] == pytest.approx(1 / (1 + 4.0))  # d/dx log1p(x) at the max token
    assert float(g.abs().sum()) == pytest.approx(1 / 5.0)


def test_bad_arguments():
    logits, mask = _hand_case()
    with pytest.raises(ValueError, match="pooling"):
        splade_pool(logits, mask, "mean")
    with pytest.raises(ValueError, match="activation"):
        splade_pool(logits, mask, "max", "gelu")
    with pytest.raises(ValueError, match="expected logits"):
        splade_pool(logits[0], mask)
