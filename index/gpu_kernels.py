"""Triton kernels for the GPU scoring path (CUDA only; imported lazily by :mod:`lsr.index.gpu`).

One kernel: the exact scores of a flat list of (query, document) candidate pairs on the forward
index. Each program takes ``BLOCK_C`` candidates and walks their rows ``BLOCK_N`` non-zeros at a
time: the rows are contiguous (coalesced reads of int32 components and float16 values) and the
query weights are gathered from the query block's dense rows, which stay in L2 because the
candidates come grouped by query. The torch-op path in :mod:`lsr.index.gpu` computes the same
sums and is what runs on the CPU; the two agree to float32 rounding.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["available", "score_pairs"]

_KERNEL: tuple[Any, Any] | None = None  # (the triton module, the compiled kernel)


def available(device: object) -> bool:
    """True where the Triton path can run: a CUDA device, Triton importable, and not switched off
    with ``LSR_GPU_TRITON=0``."""
    if getattr(device, "type", str(device)) != "cuda" or os.environ.get("LSR_GPU_TRITON", "1") == "0":
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def _kernel() -> tuple[Any, Any]:
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    # Triton ships no type information (the decorator is untyped), and it reads parameter
    # annotations as its own hints (tl.constexpr, pointer dtypes), so the kernel's parameters stay
    # unannotated: the two ignores below are for that and nothing else ("unused-ignore" because
    # they are needed only where the module is held to the strict flags).
    # do_not_specialize: one compiled kernel for any batch
    @triton.jit(do_not_specialize=["n_cand", "q_stride"])  # type: ignore[untyped-decorator, unused-ignore]
    def score_pairs_kernel(cand_q, cand_doc, n_cand, fwd_ptr, fwd_idx, fwd_val, qdense, q_stride, out,  # type: ignore[no-untyped-def, unused-ignore]
                           BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
        pid = tl.program_id(0)
        offs_c = pid.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        live = offs_c < n_cand
        doc = tl.load(cand_doc + offs_c, mask=live, other=0).to(tl.int64)
        q = tl.load(cand_q + offs_c, mask=live, other=0).to(tl.int64)
        start = tl.load(fwd_ptr + doc, mask=live, other=0)
        length = tl.load(fwd_ptr + doc + 1, mask=live, other=0) - start
        longest = tl.max(length, 0)
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        qrow = qdense + q * q_stride
        for j in range(0, longest, BLOCK_N):
            offs_n = j + tl.arange(0, BLOCK_N)
            m = offs_n[None, :] < length[:, None]
            pos = start[:, None] + offs_n[None, :]
            comp = tl.load(fwd_idx + pos, mask=m, other=0)
            val = tl.load(fwd_val + pos, mask=m, other=0.0).to(tl.float32)
            w = tl.load(qrow[:, None] + comp, mask=m, other=0.0)
            acc += tl.sum(w * val, axis=1)
        tl.store(out + offs_c, acc, mask=live)

    _KERNEL = (triton, score_pairs_kernel)
    return _KERNEL


def score_pairs(cand_q: torch.Tensor, cand_doc: torch.Tensor, fwd_ptr: torch.Tensor, fwd_idx32: torch.Tensor,
                fwd_val16: torch.Tensor, qdense: torch.Tensor, *, block_c: int = 32, block_n: int = 64) -> torch.Tensor:
    """Scores of pairs ``(cand_q[i], cand_doc[i])``: ``sum_j qdense[q, idx[j]] * val[j]`` over the
    document's row ``fwd_ptr[d]:fwd_ptr[d+1]``. ``qdense`` is a contiguous float32 ``(n, dim)``."""
    import torch

    triton, kern = _kernel()
    n = int(cand_q.numel())
    out = torch.empty(n, dtype=torch.float32, device=qdense.device)
    if n == 0:
        return out
    grid = (triton.cdiv(n, block_c),)
    kern[grid](cand_q, cand_doc, n, fwd_ptr, fwd_idx32, fwd_val16, qdense, qdense.stride(0), out,
               BLOCK_C=block_c, BLOCK_N=block_n, num_warps=4)
    return out
