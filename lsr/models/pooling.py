"""SPLADE pooling: vocabulary logits -> log(1 + relu(x)) -> max (or sum) over the unmasked tokens.

Two forms: :func:`splade_pool` over full ``(B, L, V)`` logits (differentiable; used in training), and
:func:`head_pool`, which applies the output projection in vocabulary chunks so the ``(B, L, V)``
tensor never exists at once (inference; the same numbers up to float rounding).
"""

from __future__ import annotations

import torch

__all__ = ["splade_pool", "activate", "head_pool", "POOLINGS", "ACTIVATIONS"]

POOLINGS = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")


def check_pooling(pooling: str, activation: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def activate(x: torch.Tensor, activation: str = "relu") -> torch.Tensor:
    """``log1p(relu(x))``; ``log1p_relu`` applies log1p twice (OpenSearch's variant)."""
    y = torch.log1p(torch.relu(x))
    if activation == "log1p_relu":
        y = torch.log1p(y)
    return y


def splade_pool(logits: torch.Tensor, mask: torch.Tensor, pooling: str = "max", activation: str = "relu") -> torch.Tensor:
    """Pool ``(B, L, V)`` logits over the tokens where ``mask`` (``(B, L)``, 0/1 or bool) is set -> ``(B, V)``.

    Max pooling takes the max of the raw logits first: ``log1p(relu(.))`` is monotone, so
    ``max_t f(x_t) == f(max_t x_t)`` and the activation runs on ``(B, V)`` instead of ``(B, L, V)``.
    A row with no unmasked token gives zeros.
    """
    check_pooling(pooling, activation)
    if logits.dim() != 3 or mask.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, L, V) and mask (B, L), got {tuple(logits.shape)} and {tuple(mask.shape)}")
    keep = mask.bool().unsqueeze(-1)
    if pooling == "max":
        x = logits.masked_fill(~keep, float("-inf")).amax(dim=1)
        return activate(x, activation)
    return (activate(logits, activation) * keep.to(logits.dtype)).sum(dim=1)


def head_pool(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pooling: str = "max",
    activation: str = "relu",
    chunk_bytes: int | None = None,
    fold_bias: bool | None = None,
) -> torch.Tensor:
    """``splade_pool(hidden @ weight.T + bias, mask)`` computed in vocabulary chunks -> float32 ``(B, V)``.

    The MLM projection (``V`` x ``H``) dominates a small encoder's cost, and its ``(B, L, V)`` output
    is far larger than the caches: projecting a narrow slice of the vocabulary at a time and
    reducing it at once skips the full tensor and the activation over it (``max`` commutes with the
    monotone activation). ``chunk_bytes`` bounds one slice of logits: default 32 MiB on CPU (smaller
    slices are faster on an idle machine but each slice is a parallel region, and on busy shared cores
    many small regions cost more than they save), 512 MiB on GPU.

    ``fold_bias`` (default: on GPUs, where a slice's passes over memory are the cost): max pooling
    without masking the logits. Both activations start with ``relu``, so a padding position only has
    to score ``<= 0`` to be harmless: its hidden state is zeroed and the bias rides on an extra input
    column that is 1 on real tokens and 0 on padding (``[h, 1] . [w, b] = h.w + b``), so padding
    scores exactly 0 and each slice is one matrix product and one ``amax``, with no masked copy of
    the slice. On CPUs the product dominates and its wider inner dimension costs more than the mask
    saves (9% slower on SPLADE-tiny), so the mask stays there. Under autocast the folded inputs are
    cast once, not once per slice.
    """
    check_pooling(pooling, activation)
    B, L, H = hidden.shape
    V = weight.shape[0]
    dev = hidden.device
    if chunk_bytes is None:
        chunk_bytes = (32 << 20) if dev.type == "cpu" else (512 << 20)
    if fold_bias is None:
        fold_bias = dev.type != "cpu"
    if pooling == "max" and fold_bias:
        dtype = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else hidden.dtype
        flat, w = _masked_projection_inputs(hidden, mask, weight, bias, dtype)
        chunk = int(min(V, max(64, chunk_bytes // max(1, B * L * flat.element_size()))))
        out = torch.empty(B, V, dtype=torch.float32, device=dev)
        for s in range(0, V, chunk):
            e = min(V, s + chunk)
            out[:, s:e] = (flat @ w[s:e].T).view(B, L, e - s).amax(dim=1)
        return activate(out, activation)  # rows with no real token: 0 -> 0
    chunk = int(min(V, max(64, chunk_bytes // max(1, B * L * hidden.element_size()))))
    keep = mask.bool().unsqueeze(-1)
    flat = hidden.reshape(B * L, H)
    out = torch.empty(B, V, dtype=torch.float32, device=dev)
    for s in range(0, V, chunk):
        e = min(V, s + chunk)
        w = weight[s:e]
        lc = (flat @ w.T if bias is None else torch.addmm(bias[s:e], flat, w.T)).view(B, L, e - s)
        if pooling == "max":
            out[:, s:e] = lc.masked_fill_(~keep, float("-inf")).amax(dim=1)
        else:
            out[:, s:e] = activate(lc.float(), activation).masked_fill_(~keep, 0.0).sum(dim=1)
    return activate(out, activation) if pooling == "max" else out  # max: a row with no real token, -inf -> 0


def _masked_projection_inputs(hidden, mask, weight, bias, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B * L, K)`` inputs and ``(V, K)`` weights whose product is the logits on real tokens and 0 on
    padding; ``K`` is ``H`` (no bias) or ``H + 1`` rounded up to a multiple of 8 (tensor-core shapes)."""
    B, L, H = hidden.shape
    real = mask.reshape(B * L, 1).bool()
    h = hidden.reshape(B * L, H).to(dtype).masked_fill(~real, 0.0)
    if bias is None:
        return h, weight.to(dtype)
    K = -(-(H + 1) // 8) * 8
    flat = torch.zeros(B * L, K, dtype=dtype, device=hidden.device)
    flat[:, :H] = h
    flat[:, H : H + 1] = real
    w = torch.zeros(weight.shape[0], K, dtype=dtype, device=weight.device)
    w[:, :H] = weight
    w[:, H] = bias
    return flat, w
