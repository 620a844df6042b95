"""Triton kernels for the GPU scoring path (CUDA only; imported lazily by :mod:`lsr.index.gpu`).

The approximate path's two steps that dominated a batch as chains of torch ops, each one kernel:
``summary_scores`` joins each (query, term) pair's query components with the term's block
summaries (a binary search per component, then atomic adds into the pair's row of padded
summary scores); ``score_blocks`` marks the documents of selected blocks in the query's seen-set
(a bit per query and row, set with an atomic OR; a document already there is dropped) and scores
the rest exactly into the query's row of a padded score matrix, so candidates need no sort to be
de-duplicated. Rows are read contiguously (int32 components, float values) and query weights
gathered from the tile's dense query rows, which stay in L2. The torch-op path in
:mod:`lsr.index.gpu` computes the same sums and is what runs on the CPU; the two agree to
float32 rounding (CI checks it under Triton's CPU interpreter).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["available", "score_blocks", "scoring", "summary_scores"]

_FUSED: dict[str, Any] | None = None  # the approximate path's kernels, compiled on first use
# A Triton function that the kernels call, made in _fused(): jit code finds callees among the
# module's globals, not in the enclosing function.
_score_rows: Any = None


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


def scoring() -> str:
    """How candidates are scored: ``"rows"`` (default: fixed-width chunks of each query's candidate
    row) or ``"blocks"`` (a program per selected block), from ``LSR_GPU_SCORING``."""
    mode = os.environ.get("LSR_GPU_SCORING", "rows")
    if mode not in ("rows", "blocks"):
        raise ValueError(f"LSR_GPU_SCORING must be 'rows' or 'blocks', got {mode!r}")
    return mode


def _fused() -> dict[str, Any]:
    global _FUSED, _score_rows
    if _FUSED is not None:
        return _FUSED
    import triton
    import triton.language as tl

    # Triton ships no type information (the decorator is untyped), and it reads parameter
    # annotations as its own hints (tl.constexpr, pointer dtypes), so the kernels' parameters stay
    # unannotated: the ignores below are for that and nothing else ("unused-ignore" because they
    # are needed only where the module is held to the strict flags).
    # do_not_specialize: one compiled kernel for any batch
    @triton.jit(do_not_specialize=["n_query_cols", "dim", "max_blocks"])  # type: ignore[untyped-decorator, unused-ignore]
    def summary_kernel(terms, tbase, q_comp, q_val, q_len, n_query_cols, ent_ptr, ent_key, ent_blk, ent_val,  # type: ignore[no-untyped-def, unused-ignore]
                       ssum, dim, max_blocks, C: tl.constexpr, STEPS: tl.constexpr, BLOCK_J: tl.constexpr,
                       BLOCK_E: tl.constexpr):
        pair = tl.program_id(0).to(tl.int64)
        t = tl.load(terms + pair).to(tl.int64)
        if t >= 0:
            q = pair // C
            e_lo = tl.load(ent_ptr + t)
            e_hi = tl.load(ent_ptr + t + 1)
            first_blk = tl.load(tbase + pair)
            n = tl.load(q_len + q).to(tl.int64)
            row = ssum + pair * max_blocks
            for j0 in range(0, n, BLOCK_J):
                offs_j = j0 + tl.arange(0, BLOCK_J)
                mj = offs_j < n
                comp = tl.load(q_comp + q * n_query_cols + offs_j, mask=mj, other=0).to(tl.int64)
                w = tl.load(q_val + q * n_query_cols + offs_j, mask=mj, other=0.0)
                key = t * dim + comp
                # lower and upper bound of `key` in the term's entries, side by side
                lo = tl.zeros([BLOCK_J], dtype=tl.int64) + e_lo
                hi = tl.zeros([BLOCK_J], dtype=tl.int64) + e_hi
                lo2 = tl.zeros([BLOCK_J], dtype=tl.int64) + e_lo
                hi2 = tl.zeros([BLOCK_J], dtype=tl.int64) + e_hi
                for _ in tl.static_range(STEPS):
                    a = (lo < hi) & mj
                    mid = (lo + hi) // 2
                    v = tl.load(ent_key + mid, mask=a, other=0).to(tl.int64)
                    lo = tl.where(a & (v < key), mid + 1, lo)
                    hi = tl.where(a & (v >= key), mid, hi)
                    a2 = (lo2 < hi2) & mj
                    mid2 = (lo2 + hi2) // 2
                    v2 = tl.load(ent_key + mid2, mask=a2, other=0).to(tl.int64)
                    lo2 = tl.where(a2 & (v2 <= key), mid2 + 1, lo2)
                    hi2 = tl.where(a2 & (v2 > key), mid2, hi2)
                cnt = tl.where(mj, lo2 - lo, 0)
                longest = tl.max(cnt, 0)
                for e0 in range(0, longest, BLOCK_E):
                    offs_e = e0 + tl.arange(0, BLOCK_E)
                    m = offs_e[None, :] < cnt[:, None]
                    pos = lo[:, None] + offs_e[None, :]
                    blk = tl.load(ent_blk + pos, mask=m, other=0).to(tl.int64)
                    val = tl.load(ent_val + pos, mask=m, other=0.0).to(tl.float32)
                    tl.atomic_add(row + (blk - first_blk), w[:, None] * val, mask=m)

    # The seen-set test is a kernel of its own, over 1-D tensors as wide as the program's threads:
    # where a tensor is replicated over threads (as a 1-D slice of a 2-D tile is), only one thread
    # of each replica runs an atomic and the others do not see the value it returns, so an atomic's
    # result is only stored here, never broadcast into the scoring tile.
    @triton.jit(do_not_specialize=["seen_stride", "out_stride"])  # type: ignore[untyped-decorator, unused-ignore]
    def mark_kernel(sel_q, sel_blk, sel_col, block_ptr, block_docs, seen, seen_stride, out_r, out_stride,  # type: ignore[no-untyped-def, unused-ignore]
                    BLOCK: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        q = tl.load(sel_q + pid).to(tl.int64)
        b = tl.load(sel_blk + pid).to(tl.int64)
        col = tl.load(sel_col + pid)
        d0 = tl.load(block_ptr + b)
        d1 = tl.load(block_ptr + b + 1)
        seen_row = seen + q * seen_stride
        for c0 in range(d0, d1, BLOCK):
            offs = c0 + tl.arange(0, BLOCK)
            live = offs < d1
            doc = tl.load(block_docs + offs, mask=live, other=0).to(tl.int64)
            # shifted in int32 (1 << 31 is the sign bit), not narrowed from int64 afterwards
            bit = tl.full([BLOCK], 1, tl.int32) << (doc & 31).to(tl.int32)
            old = tl.atomic_or(seen_row + (doc >> 5), bit, mask=live)
            first = (old & bit) == 0
            tl.store(out_r + q * out_stride + col + (offs - d0), tl.where(first, doc, -1).to(tl.int32), mask=live)

    # The exact scores of the candidates at out_r[dst] (rows; -1: seen before, by mark_kernel) into
    # out_s[dst]: each row's non-zeros read contiguously, query weights gathered from qrow.
    @triton.jit  # type: ignore[untyped-decorator, unused-ignore]
    def score_rows(out_s, out_r, dst, live, fwd_ptr, fwd_idx, fwd_val, qrow,  # type: ignore[no-untyped-def, unused-ignore]
                   BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
        doc = tl.load(out_r + dst, mask=live, other=-1).to(tl.int64)
        fresh = live & (doc >= 0)
        start = tl.load(fwd_ptr + doc, mask=fresh, other=0)
        length = tl.load(fwd_ptr + doc + 1, mask=fresh, other=0) - start
        longest = tl.max(length, 0)
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for j in range(0, longest, BLOCK_N):
            offs_n = j + tl.arange(0, BLOCK_N)
            m = offs_n[None, :] < length[:, None]
            p = start[:, None] + offs_n[None, :]
            comp = tl.load(fwd_idx + p, mask=m, other=0)
            val = tl.load(fwd_val + p, mask=m, other=0.0).to(tl.float32)
            wq = tl.load(qrow + comp, mask=m, other=0.0)
            acc += tl.sum(wq * val, axis=1)
        tl.store(out_s + dst, tl.where(fresh & (acc > 0), acc, float("-inf")), mask=live)

    _score_rows = score_rows

    @triton.jit(do_not_specialize=["q_stride", "out_stride"])  # type: ignore[untyped-decorator, unused-ignore]
    def blocks_kernel(sel_q, sel_blk, sel_col, block_ptr, fwd_ptr, fwd_idx, fwd_val, qdense, q_stride,  # type: ignore[no-untyped-def, unused-ignore]
                      out_s, out_r, out_stride, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        q = tl.load(sel_q + pid).to(tl.int64)
        b = tl.load(sel_blk + pid).to(tl.int64)
        col = tl.load(sel_col + pid)
        d0 = tl.load(block_ptr + b)
        d1 = tl.load(block_ptr + b + 1)
        qrow = qdense + q * q_stride
        for c0 in range(d0, d1, BLOCK_C):
            offs = c0 + tl.arange(0, BLOCK_C)
            live = offs < d1
            dst = q * out_stride + col + (offs - d0)
            _score_rows(out_s, out_r, dst, live, fwd_ptr, fwd_idx, fwd_val, qrow, BLOCK_C, BLOCK_N)

    # Scoring over the padded candidate matrix itself: one program per (query, BLOCK_C columns) of
    # the rows mark_kernel wrote, so every program holds BLOCK_C candidates whatever the blocks'
    # sizes (a program per block idles most lanes: blocks hold about ten documents). Programs past
    # a query's candidates return at once.
    @triton.jit(do_not_specialize=["n_chunks", "q_stride", "out_stride"])  # type: ignore[untyped-decorator, unused-ignore]
    def rows_kernel(per_q, n_chunks, fwd_ptr, fwd_idx, fwd_val, qdense, q_stride,  # type: ignore[no-untyped-def, unused-ignore]
                    out_s, out_r, out_stride, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        q = pid // n_chunks
        c0 = (pid % n_chunks) * BLOCK_C
        n = tl.load(per_q + q)
        if c0 < n:
            offs = c0 + tl.arange(0, BLOCK_C)
            live = offs < n
            dst = q * out_stride + offs
            _score_rows(out_s, out_r, dst, live, fwd_ptr, fwd_idx, fwd_val, qdense + q * q_stride, BLOCK_C, BLOCK_N)

    _FUSED = {"triton": triton, "summary": summary_kernel, "mark": mark_kernel, "blocks": blocks_kernel,
              "rows": rows_kernel}
    return _FUSED


def _flat(**tensors: torch.Tensor) -> None:
    """The kernels index their arguments as flat, row-major arrays: refuse any other layout (a
    view with stride 0 or a column of a matrix would be read out of bounds)."""
    for name, t in tensors.items():
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (shape {tuple(t.shape)}, strides {t.stride()})")


def summary_scores(terms: torch.Tensor, tbase: torch.Tensor, q_comp: torch.Tensor, q_val: torch.Tensor,
                   q_len: torch.Tensor, ent_ptr: torch.Tensor, ent_key: torch.Tensor, ent_blk: torch.Tensor,
                   ent_val: torch.Tensor, ssum: torch.Tensor, *, dim: int, max_blocks: int, steps: int,
                   block_j: int = 64, block_e: int = 16) -> None:
    """Add into ``ssum`` (flat ``(n_pairs, max_blocks)`` float32) each (query, term) pair's summary
    scores: for pair ``p = q * C + s`` with term ``t = terms[q, s]`` (``-1``: no term), every entry
    of ``t``'s summaries whose component is one of query ``q``'s adds ``weight * value`` at
    ``block - tbase[q, s]``. ``ent_key`` holds ``term * dim + component``, sorted; ``steps``
    binary-search steps must cover the longest term's entries."""
    k = _fused()
    n_pairs, c = terms.shape
    if n_pairs * c == 0:
        return
    _flat(terms=terms, tbase=tbase, q_comp=q_comp, q_val=q_val, q_len=q_len, ent_ptr=ent_ptr, ent_key=ent_key,
          ent_blk=ent_blk, ent_val=ent_val, ssum=ssum)
    k["summary"][(n_pairs * c,)](terms, tbase, q_comp, q_val, q_len, q_comp.stride(0), ent_ptr, ent_key, ent_blk,
                                 ent_val, ssum, dim, max_blocks, C=c, STEPS=steps, BLOCK_J=block_j,
                                 BLOCK_E=block_e, num_warps=4)


def score_blocks(sel_q: torch.Tensor, sel_blk: torch.Tensor, sel_col: torch.Tensor, block_ptr: torch.Tensor,
                 block_docs: torch.Tensor, fwd_ptr: torch.Tensor, fwd_idx32: torch.Tensor, fwd_val16: torch.Tensor,
                 qdense: torch.Tensor, seen: torch.Tensor, out_s: torch.Tensor, out_r: torch.Tensor, *,
                 per_q: torch.Tensor | None = None, block_c: int = 16, block_n: int = 64) -> None:
    """For each selected block ``sel_blk[i]`` of query ``sel_q[i]``: its documents' rows into
    ``out_r[q, sel_col[i] + j]`` (int32; ``-1`` where the document is already in the query's row
    of ``seen``, whose bits are then set) and their exact scores into ``out_s`` (``-inf`` where
    the score is not positive or the row is ``-1``). Two launches: the seen-set marks, then the
    scores: with ``per_q`` (each query's candidate count, the filled width of its rows of
    ``out_r``) over ``BLOCK_C``-column chunks of the candidate matrix, else one program per block."""
    k = _fused()
    n = int(sel_q.numel())
    if n == 0:
        return
    _flat(sel_q=sel_q, sel_blk=sel_blk, sel_col=sel_col, block_ptr=block_ptr, block_docs=block_docs, fwd_ptr=fwd_ptr,
          fwd_idx32=fwd_idx32, fwd_val16=fwd_val16, qdense=qdense, seen=seen, out_s=out_s, out_r=out_r,
          **({"per_q": per_q} if per_q is not None else {}))
    k["mark"][(n,)](sel_q, sel_blk, sel_col, block_ptr, block_docs, seen, seen.stride(0), out_r, out_r.stride(0),
                    BLOCK=32, num_warps=1)
    if per_q is None:  # one program per selected block
        k["blocks"][(n,)](sel_q, sel_blk, sel_col, block_ptr, fwd_ptr, fwd_idx32, fwd_val16, qdense, qdense.stride(0),
                          out_s, out_r, out_s.stride(0), BLOCK_C=block_c, BLOCK_N=block_n, num_warps=4)
        return
    nq, width = out_r.shape
    n_chunks = max(1, -(-width // block_c))
    k["rows"][(nq * n_chunks,)](per_q, n_chunks, fwd_ptr, fwd_idx32, fwd_val16, qdense, qdense.stride(0),
                                out_s, out_r, out_s.stride(0), BLOCK_C=block_c, BLOCK_N=block_n, num_warps=4)
